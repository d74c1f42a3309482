"""The library's operations on a state directory that run no task: dead
letters (list, show, purge), run history (runs, status, last_unfinished, gc),
the cache and the circuit breakers. Kept apart from api.py, which starts and
resumes runs (dlq_retry, a resume, stays there) and re-exports every name here,
so that `dagrun.api` remains the one public entry point."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dagrun.dlq import Letter
    from dagrun.history import Deleted, Listing, RunView

DEFAULT_STATE_DIR = ".dagrun"

__all__ = ["DEFAULT_STATE_DIR", "breaker_list", "breaker_reset", "cache_clear", "cache_list",
           "dlq_list", "dlq_purge", "dlq_show", "gc", "last_unfinished", "runs", "status"]


# ---------------------------------------------------------------- dead letters


def dlq_list(*, state_dir: str | os.PathLike[str] = DEFAULT_STATE_DIR,
             run_id: str | None = None) -> tuple[list[Letter], list[str]]:
    """Every readable letter (of one run, or all), oldest run first; and the
    paths of corrupt letters (checksum failed), which are skipped."""
    from dagrun.dlq import DeadLetterQueue

    letters, corrupt = [], []
    for rid, task, letter in DeadLetterQueue(state_dir).scan(run_id):
        if letter is None:
            corrupt.append(f"{rid}/{task}")
        else:
            letters.append(letter)
    return letters, corrupt


def dlq_show(run_id: str, task: str, *,
             state_dir: str | os.PathLike[str] = DEFAULT_STATE_DIR) -> Letter:
    from dagrun.dlq import DeadLetterQueue

    return DeadLetterQueue(state_dir).get(run_id, task)


def dlq_purge(*, state_dir: str | os.PathLike[str] = DEFAULT_STATE_DIR,
              run_id: str | None = None, older_than: float | None = None,
              dry_run: bool = False) -> list[tuple[str, str]]:
    """Delete the letters of `run_id` and/or older than `older_than` seconds (both
    None: every letter); the (run id, task) of each deleted (with `dry_run`: that
    would be). An unknown run is an error, as for dlq_show."""
    from dagrun.dlq import DeadLetterQueue
    from dagrun.errors import UnknownRun
    from dagrun.store.runs import StateDir

    queue = DeadLetterQueue(state_dir)
    state = StateDir(state_dir)
    if run_id is not None and not queue.tasks(run_id) and not (
            state.run_path(run_id) / "run.json").exists():
        raise UnknownRun(f"no run {run_id!r} and no dead letters of it in {state.root} "
                         "(check the run id and --state-dir)")
    return queue.purge(run_id=run_id, older_than=older_than, dry_run=dry_run)


# ---------------------------------------------------------------- history (history.py)


def runs(*, state_dir: str | os.PathLike[str] = DEFAULT_STATE_DIR, limit: int | None = None,
         pipeline: str | None = None, status: str | None = None) -> Listing:
    """Runs newest first, with their status (running, crashed, succeeded,
    failed, cancelled) and task counts; read-only, takes no lock."""
    from dagrun.history import list_runs
    from dagrun.store.runs import StateDir

    return list_runs(StateDir(state_dir), limit=limit, pipeline=pipeline, status=status)


def status(run_id: str, *, state_dir: str | os.PathLike[str] = DEFAULT_STATE_DIR) -> RunView:
    """One run's status and tasks (UnknownRun if none); read-only, takes no lock."""
    from dagrun.history import read_run
    from dagrun.store.runs import StateDir

    return read_run(StateDir(state_dir), run_id)


def last_unfinished(*, state_dir: str | os.PathLike[str] = DEFAULT_STATE_DIR,
                    pipeline: str | None = None) -> str:
    """The id of the newest crashed or cancelled run (UnknownRun if none)."""
    from dagrun.history import last_unfinished as find
    from dagrun.store.runs import StateDir

    return find(StateDir(state_dir), pipeline)


def gc(*, state_dir: str | os.PathLike[str] = DEFAULT_STATE_DIR, keep: int | None = None,
       older_than: float | None = None, dry_run: bool = False) -> tuple[list[Deleted], list[str]]:
    """Delete finished runs (see history.gc); what was deleted, and why others were kept."""
    from dagrun.history import gc as collect
    from dagrun.store.runs import StateDir

    return collect(StateDir(state_dir), keep=keep, older_than=older_than, dry_run=dry_run)


def cache_list(pipeline: str | None = None, *,
               state_dir: str | os.PathLike[str] = DEFAULT_STATE_DIR) -> list[dict[str, Any]]:
    """Cached task results (of `pipeline`): task, run_id, created_at, expires_at, ..."""
    from dagrun.cache.store import CacheStore, listing

    return listing(CacheStore(state_dir), pipeline)


def cache_clear(pipeline: str | None = None, task: str | None = None, *,
                state_dir: str | os.PathLike[str] = DEFAULT_STATE_DIR) -> int:
    """Forget cached results of `task` of `pipeline`, of `pipeline`, or all; how many."""
    from dagrun.cache.store import CacheStore, clear

    return clear(CacheStore(state_dir), pipeline, task)


def breaker_list(*, state_dir: str | os.PathLike[str] = DEFAULT_STATE_DIR) -> list[dict[str, Any]]:
    """Every stored breaker: name, state, failures, reopens_at (wall clock or None)."""
    import time

    from dagrun.breaker import BreakerStore

    store = BreakerStore(state_dir)
    now = time.time()
    return [store.describe(name, now) for name in store.names()]


def breaker_reset(name: str, *, state_dir: str | os.PathLike[str] = DEFAULT_STATE_DIR) -> None:
    """Close breaker `name` (UsageError if there is none)."""
    from dagrun.breaker import BreakerStore

    BreakerStore(state_dir).reset(name)
