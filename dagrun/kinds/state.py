"""State across runs: a task whose callable declares a parameter `state`
receives a dict scoped to (pipeline, task) and what it leaves there is handed
to the same task in the next run of the pipeline (an incremental-ETL watermark).

Where it lives, and in which order it is written:
1. the task's `completed` journal record carries the new state (`saved_state`:
   same checksum, same durability as the record);
2. then STATE_DIR/state/PIPELINE/TASK, one checksummed frame written
   atomically: outside any run folder, so `gc` never touches it.
A crash between 1 and 2 is repaired on resume: a completed record whose state
is newer than the file rewrites it. A failed attempt sends nothing back: its
changes are discarded. Two overlapping runs of one pipeline: the later
completion wins (use `--if-running` to keep runs from overlapping).
"""

from __future__ import annotations

import functools
import inspect
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from dagrun.errors import UsageError

if TYPE_CHECKING:
    from dagrun.scheduler import Scheduler

FORMAT = 1
PARAM = "state"
RECORD_FIELD = "saved_state"  # in the completed record ("state" is the task's state)


@functools.lru_cache(maxsize=4096)
def wants_state(call: str) -> bool:
    """Whether the callable declares a parameter named `state` (resolved in the
    parent, where validate already imported it)."""
    from dagrun.callables import resolve

    try:
        return PARAM in inspect.signature(resolve(call)).parameters
    except Exception:  # unresolvable here: the worker reports the real error
        return False


def supplied(t: Any) -> bool:
    """dagrun supplies `state` unless the spec itself passes an argument of that name."""
    return PARAM not in t.kwargs and PARAM not in t.inputs and wants_state(t.call)


class StateStore:
    """STATE_DIR/state/PIPELINE/TASK files."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root) / "state"

    def path(self, pipeline: str, task: str) -> Path:
        from dagrun.spec.model import TASK_ID

        for what, name in (("pipeline", pipeline), ("task", task)):
            if not TASK_ID.fullmatch(name):
                raise UsageError(f"invalid {what} name {name!r}")
        return self.root / pipeline / task

    def read(self, pipeline: str, task: str) -> dict[str, Any] | None:
        """The stored entry ({"state", "at", "run"}), None if there is none; a
        corrupt file is an error naming it (never silently an empty state)."""
        from dagrun.errors import StateIOError
        from dagrun.store.fs import read_state_file
        from dagrun.store.records import unframe

        path = self.path(pipeline, task)
        try:
            entry = unframe(read_state_file(path))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise StateIOError(f"state file {path} is unreadable or corrupt ({exc}); "
                               f"`dagrun state reset {pipeline} {task}` discards it") from None
        if not isinstance(entry, dict) or not isinstance(entry.get("state"), dict):
            raise StateIOError(f"state file {path} is not a dagrun state file")
        return entry

    def load(self, pipeline: str, task: str) -> dict[str, Any]:
        entry = self.read(pipeline, task)
        return dict(entry["state"]) if entry else {}

    def save(self, pipeline: str, task: str, state: dict[str, Any], *, at: float | None = None,
             run: str | None = None, only_if_newer: bool = False) -> bool:
        from dagrun.store.fs import make_private_dir, write_atomic
        from dagrun.store.records import frame

        at = time.time() if at is None else at
        if only_if_newer:
            try:
                entry = self.read(pipeline, task)
            except Exception:
                entry = None
            if entry is not None and isinstance(entry.get("at"), (int, float)) \
                    and entry["at"] >= at:
                return False
        path = self.path(pipeline, task)
        make_private_dir(path.parent)
        write_atomic(path, frame({"v": FORMAT, "pipeline": pipeline, "task": task,
                                  "run": run, "at": at, "state": state}))
        return True

    def tasks(self, pipeline: str) -> list[str]:
        folder = self.root / pipeline
        try:
            return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))
        except FileNotFoundError:
            return []

    def reset(self, pipeline: str, task: str | None) -> list[str]:
        gone = []
        for tid in ([task] if task else self.tasks(pipeline)):
            try:
                self.path(pipeline, tid).unlink()
                gone.append(tid)
            except FileNotFoundError:
                pass
        return gone


def take_carried(sched: Scheduler) -> list[tuple[str, dict[str, Any], float]]:
    if not sched._carried:
        return []
    at = {r["task"]: r["at"] for r in sched._records if r.get("state") == "completed"}
    out = [(tid, state, at.get(tid, sched.wall())) for tid, state in sched._carried.items()]
    sched._carried.clear()
    return out


def save_states(sched: Scheduler, saved: list[tuple[str, dict[str, Any], float]]) -> None:
    """After the completed records (which carry the states) are on disk."""
    assert sched.states is not None
    for tid, state, at in saved:
        sched.states.save(sched.spec.name, tid, state, at=at, run=sched.run_id)


def repair(store: StateStore, pipeline: str, run_id: str,
           completed: dict[str, dict[str, Any]]) -> None:
    """Resume: `completed` task -> its completed record; a record carrying a
    state newer than the file (a crash between the two writes) rewrites it."""
    for tid, rec in completed.items():
        if isinstance(rec.get(RECORD_FIELD), dict):
            store.save(pipeline, tid, rec[RECORD_FIELD], at=rec.get("at"), run=run_id,
                       only_if_newer=True)


# ------------------------------------------------------------------ worker side


def task_kwargs(msg: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The callable's kwargs, with `state` added when dagrun supplies it."""
    carried = msg.get("state")
    if carried is None:
        return msg["kwargs"], None
    return {**msg["kwargs"], PARAM: carried}, carried


def checked(state: Any) -> Any:
    """The state the task leaves, as it will be stored (plain JSON data)."""
    if not isinstance(state, dict):
        raise TypeError(f"the task's `state` is a {type(state).__name__}, not a dict")
    try:
        orjson.dumps(state)
    except TypeError as exc:
        raise TypeError(f"the task left data in `state` that is not JSON-serialisable: "
                        f"{exc}") from None
    return state
