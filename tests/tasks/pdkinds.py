"""Tasks for the events and state-across-runs tests (kinds/events.py, kinds/state.py)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import dagrun

# Generous: a shared CI machine may take seconds to schedule the other task.
PATIENCE = 60.0


def _wait_file(path: str) -> None:
    end = time.monotonic() + PATIENCE
    while not os.path.exists(path):
        if time.monotonic() > end:
            raise TimeoutError(f"{path} never appeared")
        time.sleep(0.01)


def emit_and_wait(name: str, marker: str, log: str = "") -> str:
    """Emits `name`, then stays running until the waiter has started (`marker`)."""
    if log:
        with open(log, "a") as fh:
            fh.write("emitter ran\n")
    assert dagrun.emit(name) is True
    _wait_file(marker)
    return "emitter done"


def emit_only(name: str, log: str) -> str:
    with open(log, "a") as fh:
        fh.write("emitter ran\n")
    dagrun.emit(name)
    return "emitted"


def touch(marker: str) -> str:
    Path(marker).write_text("started")
    return "waited"


def emit_outside() -> bool:
    return dagrun.emit("x")


def counter(state: dict) -> int:
    state["n"] = state.get("n", 0) + 1
    return state["n"]


def flaky_counter(state: dict) -> object:
    """Attempt 1 changes its state, then fails: attempt 2 must not see the change."""
    seen = state.get("n")
    state["n"] = 999
    if os.environ["DAGRUN_ATTEMPT"] == "1":
        raise RuntimeError("first attempt fails")
    state["n"] = (seen or 0) + 1
    return seen
