"""Which executor a run uses, and the settings it is built from.

The choice is a string: `local`, `dask` (a LocalCluster dagrun starts and
stops) or a scheduler address (`dask://HOST:PORT`, stored as
`tcp://HOST:PORT`; `tcp://…` and `tls://…` are kept as given, for Dask).
Precedence: --executor (the API's `executor=`), then DAGRUN_EXECUTOR, then
the spec's `[pipeline] executor` (for `resume`: the run's stored choice).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dagrun.errors import UsageError

ENV = "DAGRUN_EXECUTOR"
DEFAULT_TIMEOUT = 60.0  # seconds to reach a scheduler (and see a worker), --executor-timeout
FORMS = "local, dask, dask://HOST:PORT, tcp://HOST:PORT or tls://HOST:PORT"
MISSING = ("the dask executor needs the 'distributed' package: "
           "pip install 'dagrun[dask]'")


def parse(value: Any) -> str | None:
    """The canonical form of an executor choice, or None if it is not one."""
    if not isinstance(value, str):
        return None
    text = value.strip()
    if text in ("local", "dask"):
        return text
    scheme, sep, rest = text.partition("://")
    if not sep or scheme not in ("dask", "tcp", "tls") or not _address(rest, scheme == "dask"):
        return None
    return f"tcp://{rest}" if scheme == "dask" else text


def _address(rest: str, port_required: bool) -> bool:
    if not rest or any(c.isspace() or c in "/?#@" for c in rest):
        return False
    host, colon, port = rest.rpartition(":")
    if not colon:
        return not port_required
    if host.startswith("["):  # [::1]:8786
        host = host[1:-1] if host.endswith("]") else ""
    return bool(host) and port.isdigit() and 0 < int(port) < 65536


def check(value: Any, where: str) -> str:
    """parse(), or a UsageError naming `where` (an option or variable)."""
    parsed = parse(value)
    if parsed is None:
        raise UsageError(f"{where} must be {FORMS}, got {value!r}")
    return parsed


def resolve(given: str | None, env: Mapping[str, str], fallback: str | None) -> str:
    """The executor by precedence: `given` (--executor), DAGRUN_EXECUTOR, `fallback`
    (the spec's, or the run's stored one), else local."""
    if given is not None:
        return check(given, "--executor")
    if env.get(ENV, "").strip():
        return check(env[ENV], ENV)
    return fallback or "local"


def timeout(value: float | None, stored: Any = None) -> float:
    if value is not None:
        if not value > 0:
            raise UsageError(f"--executor-timeout must be positive, got {value!r}")
        return float(value)
    return float(stored) if isinstance(stored, (int, float)) and stored > 0 else DEFAULT_TIMEOUT


def backend_name(choice: str) -> str:
    return "local" if choice == "local" else "dask"


def require(choice: str) -> None:
    """Fail early (exit 2, before a run is created) when the chosen backend cannot
    be built here: `distributed` missing, or no such backend registered."""
    from dagrun.executor.base import BACKENDS

    name = backend_name(choice)
    if name == "dask":
        try:
            found = importlib.util.find_spec("distributed") is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            raise UsageError(MISSING)
    if name not in BACKENDS:
        raise UsageError(f"the {name} executor is not available in this version of dagrun "
                         f"(known: {', '.join(sorted(BACKENDS))})")


def run_settings(given: str | None, timeout_s: float | None, fallback: str | None,
                 stored: Mapping[str, Any]) -> dict[str, Any]:
    """The executor settings a run stores (run.json), by precedence and checked:
    a choice that cannot be used here fails (exit 2) before anything starts."""
    import os

    chosen = resolve(given, os.environ, fallback)
    require(chosen)
    return {"executor": chosen,
            "executor_timeout": timeout(timeout_s, stored.get("executor_timeout"))}


def prepare(settings: Mapping[str, Any], spec: Any, run_path: Path) -> dict[str, Any]:
    """The run's settings for the executor factory: `executor` becomes the backend's
    name, and for dask the settings it reads are added (those already given, e.g.
    by a library caller, are kept): `address` (None: start a LocalCluster),
    `connect_timeout`, `scratch_dir` (under the run's folder: Dask's scratch and
    uploads stay in the state dir) and `ship` (the zip of the pipeline's own
    code, executor/shipping.py, or None)."""
    chosen = settings.get("executor") or "local"
    name = backend_name(chosen)
    out = {**settings, "executor": name}
    if name == "local":
        return out
    require(chosen)
    from dagrun.executor.shipping import build_zip
    from dagrun.store.fs import make_private_dir

    if chosen != "dask":
        out["address"] = chosen
    out.setdefault("address", None)
    out.setdefault("connect_timeout", timeout(None, settings.get("executor_timeout")))
    scratch = Path(out.get("scratch_dir") or run_path / "dask")
    make_private_dir(scratch)
    out["scratch_dir"] = str(scratch)
    if "ship" not in out:
        state_root = run_path.parent.parent  # STATE_DIR/runs/RUN_ID -> STATE_DIR
        out["ship"] = build_zip(spec, scratch, exclude=[state_root])
    return out
