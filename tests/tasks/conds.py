"""Tasks and predicates for the condition / trigger rule tests. Each call
appends its name to the file in $CONDS_LOG, so tests can count runs."""

from __future__ import annotations

import os
import time
from pathlib import Path


def _log(name: str) -> None:
    path = os.environ.get("CONDS_LOG")
    if path:
        with open(path, "a") as fh:
            fh.write(name + "\n")


def value(v=None, **kw):
    _log(os.environ["DAGRUN_TASK_ID"])
    return v


def echo(**kw):
    _log(os.environ["DAGRUN_TASK_ID"])
    return kw


def boom():
    _log(os.environ["DAGRUN_TASK_ID"])
    raise RuntimeError("boom")


def slow_once(marker: str):
    """Sleeps a minute the first time (long enough to be killed), then not."""
    _log(os.environ["DAGRUN_TASK_ID"])
    m = Path(marker)
    if not m.exists():
        m.write_text("x")
        time.sleep(60)
    return "slow"


def truthy(v):
    _log("pred:" + os.environ["DAGRUN_TASK_ID"])
    return bool(v)


def never():
    _log("pred:" + os.environ["DAGRUN_TASK_ID"])
    return False


def only_a(a):
    """Declares only `a` of the task's inputs and kwargs."""
    _log(f"pred:{os.environ['DAGRUN_TASK_ID']}:{a}")
    return a == 1


def flaky(marker):
    """Raises on its first call, then says yes."""
    _log("pred:" + os.environ["DAGRUN_TASK_ID"])
    m = Path(marker)
    if not m.exists():
        m.write_text("x")
        raise ConnectionError("not yet")
    return True


def extra(v, missing):
    return True
