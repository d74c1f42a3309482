"""`dagrun logs RUN_ID TASK [--attempt N] [--follow]`: an attempt's output."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import click

from dagrun.cli.options import state_dir_option

if TYPE_CHECKING:
    from dagrun.store.runs import RunInfo

FOLLOW_POLL = 0.1  # seconds between looks at a live attempt's log


@click.command()
@click.argument("run_id")
@click.argument("task")
@click.option("--attempt", type=click.IntRange(min=1), help="Which attempt (default: the "
              "last one).")
@click.option("--follow", "-f", is_flag=True, help="Keep printing a running attempt's "
              "output until it ends.")
@state_dir_option
def logs(run_id: str, task: str, attempt: int | None, follow: bool, state_dir: str) -> int:
    """Print what TASK's attempt wrote to stdout and stderr (its subprocesses too)."""
    from dagrun import logs as logs_mod
    from dagrun.cli.output import write_stdout
    from dagrun.errors import UsageError
    from dagrun.store.runs import StateDir

    state = StateDir(state_dir)
    info = state.open_run(run_id)  # UnknownRun (exit 2) names the state dir
    if task not in info.spec.tasks:
        raise UsageError(f"run {run_id!r} in {state.root} has no task {task!r}")
    where = logs_mod.locate(info.path, task, attempt)
    if where is None:
        known = sorted(logs_mod.attempts(info.path, task))
        what = (f"no attempt {attempt}" if attempt else "no attempt yet")
        have = f" (attempts: {', '.join(map(str, known))})" if known else ""
        if not known and attempt is None and (have := _cached(state_dir, run_id, task)):
            what = "no attempt"  # a cache hit: it never will
        raise UsageError(f"task {task!r} of run {run_id!r} in {state.root} has {what}{have}")
    if not follow:
        if where.path is not None:
            write_stdout(logs_mod.read_range(where.path, where.start, where.end))
        return 0
    _follow(info, task, where.number, write_stdout)
    return 0


def _follow(info: RunInfo, task: str, number: int, write: Callable[[bytes], None]) -> None:
    """Print the attempt's output as it grows; return once it has ended (its
    result is recorded or its worker moved on) or the run's process is gone."""
    import time

    from dagrun import logs as logs_mod
    from dagrun.store.fs import pid_alive
    from dagrun.store.runs import Lock

    path = info.path
    lock = Lock(path / "lock", "")
    pos = None
    while True:
        where = logs_mod.locate(path, task, number)
        # Read before deciding: the owner may end between the two looks.
        live = (owner := lock.owner()) is not None and pid_alive(owner)
        if where is not None and where.path is not None:
            if pos is None:
                pos = where.start
            end = where.end
            data = logs_mod.read_range(where.path, pos, end)
            if end is None and not (where.finished or not live):
                data = data[:data.rfind(b"\n") + 1]  # whole lines while it runs
            if data:
                write(data)
                pos += len(data)
        if where is None or where.finished or not live:
            return
        time.sleep(FOLLOW_POLL)


def _cached(state_dir: str, run_id: str, task: str) -> str:
    """Where the output of a cache hit (no attempt in this run) came from."""
    from dagrun import api
    from dagrun.errors import DagrunError
    from dagrun.store.runs import StateDir

    extra = api.status(run_id, state_dir=state_dir).tasks[task].extra or {}
    source = extra.get("cached_from")
    if not isinstance(source, str) or not source:
        return ""
    made = f": its result came from the cache, made by run {source}"
    try:
        gone = not (StateDir(state_dir).run_path(source) / "run.json").exists()
    except (DagrunError, OSError):  # not a run id (a hand-edited journal), unreadable
        return made
    if gone:  # an entry outlives `gc` of its run (it holds the output), the logs do not
        return f"{made}, since deleted (`dagrun gc`), with its logs"
    return f"{made} (`dagrun logs {source} {task}`)"
