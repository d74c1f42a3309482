"""dagrun: a fast, crash-proof batch runner for pipelines of dependent Python tasks.

    import dagrun
    result = dagrun.run("pipelines/etl.toml", state_dir=".dagrun")
    print(result.status, result.to_dict())
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["DagrunError", "Pipeline", "RunResult", "emit", "resume", "run", "validate"]


def __getattr__(name: str) -> Any:  # lazy, so `dagrun --help` imports little
    if name in ("run", "resume", "validate"):
        from dagrun import api

        return getattr(api, name)
    if name == "Pipeline":
        from dagrun.pipeline import Pipeline

        return Pipeline
    if name == "RunResult":
        from dagrun.model import RunResult

        return RunResult
    if name == "emit":  # from inside a task: kinds/events.py
        from dagrun.kinds.events import emit

        return emit
    if name == "DagrunError":
        from dagrun.errors import DagrunError

        return DagrunError
    raise AttributeError(name)
