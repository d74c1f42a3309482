"""The library: run(), validate() and friends. Returns results, never prints
(reporters do, and the caller chooses one); raises DagrunError subclasses for
user errors. The CLI is a thin layer over this module. The operations that
run no task (dead letters, history, cache, breakers) live in state_api.py and
are re-exported here."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from dagrun.errors import UsageError
from dagrun.loading import load, resolve_durability, validate
from dagrun.model import RunResult
from dagrun.state_api import (
    DEFAULT_STATE_DIR,
    breaker_list,
    breaker_reset,
    cache_clear,
    cache_list,
    dlq_list,
    dlq_purge,
    dlq_show,
    gc,
    last_unfinished,
    runs,
    status,
)

if TYPE_CHECKING:
    from dagrun.report import QuietReporter as Reporter

__all__ = ["DEFAULT_STATE_DIR", "breaker_list", "breaker_reset", "cache_clear", "cache_list",
           "dlq_list", "dry_run", "dlq_purge",
           "dlq_retry", "dlq_show", "gc", "last_unfinished", "load", "resolve_durability",
           "resume", "run", "runs", "status", "validate"]


IF_RUNNING = ("skip", "wait", "fail")


def run(
    spec: Any,
    *,
    state_dir: str | os.PathLike[str] = DEFAULT_STATE_DIR,
    run_id: str | None = None,
    workers: int | None = None,
    durability: str | None = None,
    deadline: float | None = None,
    if_running: str | None = None,
    wait_timeout: float | None = None,
    reporter: Reporter | None = None,
    params: Mapping[str, Any] | None = None,
    metrics_file: str | os.PathLike[str] | None = None,
    only: str | Iterable[str] = (),
    from_: str | Iterable[str] = (),
    until: str | Iterable[str] = (),
    no_cache: bool = False,
    refresh: Iterable[str] = (),
    executor: str | None = None,
    executor_timeout: float | None = None,
) -> RunResult:
    """Validate `spec`, create a new run under `state_dir` and execute it.

    `executor`: local, dask or a Dask scheduler's address (executor/choice.py;
    default: DAGRUN_EXECUTOR, else the spec's `executor`, else local);
    `executor_timeout`: seconds to reach the cluster (default 60).

    `params`: values of the spec's [params] (over DAGRUN_PARAM_<name> from
    the environment, over the defaults); substituted into the tasks' kwargs.

    `if_running` (skip|wait|fail): what to do when another run of the same
    pipeline is live — skip raises PipelineBusy (exit 0, nothing started),
    fail raises RunLocked (exit 3), wait waits up to `wait_timeout` seconds
    (None: as long as it takes), then raises RunLocked. Without it, runs of
    one pipeline may overlap. `metrics_file`: keep a Prometheus text file there
    (listeners/metrics.py). `no_cache`: no task takes a cached result (their
    results are stored still); `refresh`: these tasks run and store a new one.

    `only`, `from_`, `until` (task ids): a partial run (selection.py) — those
    tasks, the tasks downstream of `from_` (forced), the tasks `until` needs
    (both: what lies between); the outputs of their upstreams outside the run
    are taken from the newest earlier run of the pipeline in which each
    completed. Tasks outside are not part of the run.
    """
    from dagrun.errors import PipelineBusy, RunLocked
    from dagrun.store.runs import PipelineLock, StateDir, check_run_id, new_run_id

    pipeline = validate(spec)
    if workers is not None and workers < 1:
        raise UsageError(f"--workers must be at least 1, got {workers}")
    if if_running is not None and if_running not in IF_RUNNING:
        raise UsageError(f"--if-running must be one of {', '.join(IF_RUNNING)}, "
                         f"got {if_running!r}")
    mode = resolve_durability(durability, pipeline)
    rid = check_run_id(run_id) if run_id is not None else new_run_id()
    pipeline, param_settings = _bind_params(pipeline, params, rid)
    selection = None
    if any(isinstance(ids, str) or ids for ids in (only, from_, until)):
        # (only a partial run imports selection.py; only="" is a task id, refused there)
        from dagrun.selection import Selection
        from dagrun.selection import check as check_selection

        selection = Selection(*(tuple(dict.fromkeys([ids] if isinstance(ids, str) else ids))
                                for ids in (only, from_, until)))  # only="report": one task
        check_selection(pipeline, selection)  # a typo fails before any lock is waited for
    settings = {"workers": workers or pipeline.workers or os.cpu_count() or 1,
                "durability": mode,
                "deadline": deadline if deadline is not None else pipeline.deadline,
                **param_settings, **_cache_settings(pipeline, no_cache, refresh)}
    from dagrun.executor import choice

    settings.update(choice.run_settings(executor, executor_timeout, pipeline.executor, {}))
    state = StateDir(state_dir)
    plock = PipelineLock(state, pipeline.name)
    try:
        if if_running is None:
            plock.hold_shared(rid)
        elif not plock.claim(rid, wait_timeout if if_running == "wait" else 0):
            who = plock.owner()
            if if_running == "skip":
                raise PipelineBusy(f"a previous run of pipeline {pipeline.name!r} is still "
                                   f"going{who}; skipping (nothing started)")
            waited = f" after waiting {wait_timeout:g}s" if if_running == "wait" else ""
            raise RunLocked(f"pipeline {pipeline.name!r} has a live run{who}{waited} "
                            "(--if-running " + if_running + ")")
        if selection:
            pipeline = _select(pipeline, selection, state, settings, reporter)
        _note_never_cached(pipeline, reporter)
        info = state.create_run(rid, pipeline, settings)
        from dagrun.driver import drive

        return drive(info, pipeline, None, settings, reporter=reporter,
                     metrics_file=metrics_file)
    finally:
        plock.release()


def dry_run(
    spec: Any,
    *,
    state_dir: str | os.PathLike[str] = DEFAULT_STATE_DIR,
    params: Mapping[str, Any] | None = None,
    only: str | Iterable[str] = (),
    from_: str | Iterable[str] = (),
    until: str | Iterable[str] = (),
    no_cache: bool = False,
    refresh: Iterable[str] = (),
) -> dict[str, Any]:
    """What `run` with these arguments would run and why, running nothing,
    creating no run, taking no lock and writing nothing under `state_dir`.

    {"pipeline": name, "tasks": {ID: {"run": bool, "reason": str, "detail"?,
    "cached_from"?}}, "taken": {ID: {"run_id": str, "cached": bool}},
    "notes": [str]} — the selected tasks only (in the spec's order); `taken`:
    the outside upstreams' outputs a partial run would take. Reasons:
    cached, no cache, new, code/input/file/version changed, expired, forced,
    "upstream X runs" (its output, so the task's key, is known only then).
    """
    from dagrun.cache.plan import plan
    from dagrun.cache.plug import CachePlug
    from dagrun.cache.store import CacheStore
    from dagrun.selection import Selection, select
    from dagrun.selection import check as check_selection
    from dagrun.store.runs import StateDir

    pipeline = validate(spec)
    pipeline, _ = _bind_params(pipeline, params, "dry-run")
    selection = Selection(*(tuple(dict.fromkeys([ids] if isinstance(ids, str) else ids))
                            for ids in (only, from_, until)))
    check_selection(pipeline, selection)
    settings = _cache_settings(pipeline, no_cache, refresh)
    state = StateDir(state_dir)
    full = pipeline
    taken: dict[str, Any] = {}
    notes: list[str] = []
    given: dict[str, Any] = {}
    forced = dict.fromkeys(settings.get("refresh", ()), "--refresh")
    if selection:
        chosen = select(pipeline, selection, _finder(pipeline, state, settings))
        chosen.check_refresh(selection, settings.get("refresh", ()))
        pipeline, notes, given = chosen.spec, chosen.notes, chosen.given
        taken = {tid: {"run_id": t.run_id, "cached": t.cached}
                 for tid, t in sorted(chosen.taken.items())}
        forced.update(dict.fromkeys(sorted(chosen.forced), "--from"))
    if no_cache:
        forced = dict.fromkeys(pipeline.tasks, "--no-cache")
    plug = CachePlug(pipeline, "dry-run", CacheStore(state.root), {}, given=given)
    verdicts = plan(plug, forced)
    return {"pipeline": full.name,
            "tasks": {tid: verdicts[tid].as_dict() for tid in pipeline.tasks},
            "taken": taken, "notes": notes}


def _select(pipeline: Any, selection: Any, state: Any, settings: dict[str, Any],
            reporter: Reporter | None) -> Any:
    """The partial run's spec (selection.py); its record goes into `settings`."""
    from dagrun.selection import select

    chosen = select(pipeline, selection, _finder(pipeline, state, settings))
    chosen.check_refresh(selection, settings.get("refresh", ()))
    settings["selection"] = chosen.record(selection)
    if reporter is not None:
        for line in chosen.notes:
            reporter.message(line)
        by_run: dict[str, list[str]] = {}
        for tid, taken in sorted(chosen.taken.items()):
            src = f"the cache (run {taken.run_id})" if taken.cached else f"run {taken.run_id}"
            by_run.setdefault(src, []).append(tid)
        took = "".join(f"; taking {', '.join(tids)} from {src}" for src, tids in by_run.items())
        reporter.message(f"partial run ({selection.describe()}): {len(chosen.spec.tasks)} of "
                         f"{len(pipeline.tasks)} tasks{took}")
    return chosen.spec


def _note_never_cached(pipeline: Any, reporter: Reporter | None) -> None:
    """One line on the tasks whose `cache` is set but never used (params.bind):
    why they run every time, though a dry run says it too."""
    never = [tid for tid, t in pipeline.tasks.items() if t.cache is not None and t.cache.never]
    if never and reporter is not None:
        more = f" and {len(never) - 3} more" if len(never) > 3 else ""
        reporter.message(f"not cached: {', '.join(never[:3])}{more} (their kwargs use "
                         "${run.id}, so their cache key would be new every run)")


def _finder(pipeline: Any, state: Any, settings: Mapping[str, Any]) -> Any:
    """Where a partial run's outside outputs come from: the cache (with the
    run's --no-cache/--refresh), else the newest run where each completed."""
    from dagrun.selection import taken_outputs

    cache = None
    if any(t.cache is not None for t in pipeline.tasks.values()):
        from dagrun.cache.plug import CachePlug
        from dagrun.cache.store import CacheStore

        cache = CachePlug.for_run(pipeline, "", CacheStore(state.root), {}, settings)
    return lambda wanted: taken_outputs(state, pipeline, wanted, cache)


def _cache_settings(pipeline: Any, no_cache: bool, refresh: Iterable[str]) -> dict[str, Any]:
    """Kept in run.json, so that a resume of the run honours them."""
    refresh = list(dict.fromkeys(refresh))
    for tid in refresh:
        if tid not in pipeline.tasks:
            from dagrun.spec.checks import did_you_mean

            raise UsageError(f"--refresh {tid}: no such task in pipeline "
                             f"{pipeline.name!r}{did_you_mean(tid, pipeline.tasks)}")
    return {**({"no_cache": True} if no_cache else {}),
            **({"refresh": refresh} if refresh else {})}


def _bind_params(pipeline: Any, params: Mapping[str, Any] | None,
                 run_id: str) -> tuple[Any, dict[str, Any]]:
    import datetime

    from dagrun.params import bind, resolve, settings_for

    run_date = datetime.date.today().isoformat()
    values = resolve(pipeline, params, os.environ, run_id=run_id, run_date=run_date)
    bound = bind(pipeline, values, run_id=run_id, run_date=run_date, fresh=True)
    return bound, settings_for(pipeline, values, run_date)


def resume(
    run_id: str,
    *,
    state_dir: str | os.PathLike[str] = DEFAULT_STATE_DIR,
    spec_path: str | os.PathLike[str] | None = None,
    retry_failed: bool = False,
    retry_tasks: Iterable[str] | None = None,
    durability: str | None = None,
    deadline: float | None = None,
    reporter: Reporter | None = None,
    allow_removed: bool = False,
    params: Mapping[str, Any] | None = None,
    metrics_file: str | os.PathLike[str] | None = None,
    executor: str | None = None,
    executor_timeout: float | None = None,
) -> RunResult:
    """Repair the run's persisted state and continue it (see store/repair.py).

    `retry_tasks` gives those dead-lettered tasks a fresh retry budget (their
    skipped dependents run again too); `retry_failed` does so for every
    dead-lettered task. `spec_path`: resume with an edited spec of the same
    pipeline — tasks whose definition changed re-run with their descendants;
    one that drops tasks needs `allow_removed`. On a run that already
    succeeded, returns its stored result and runs nothing. `params`: the
    values of the run's secret params (else read from DAGRUN_PARAM_<name>);
    the others keep the values the run was started with. `executor`,
    `executor_timeout`: as for run(); default: DAGRUN_EXECUTOR, else the run's own.
    """
    from dagrun.resuming import resume_run

    return resume_run(run_id, state_dir=state_dir, spec_path=spec_path,
                      retry_failed=retry_failed, retry_tasks=retry_tasks,
                      durability=durability, deadline=deadline, reporter=reporter,
                      allow_removed=allow_removed, params=params, metrics_file=metrics_file,
                      executor=executor, executor_timeout=executor_timeout)


# ---------------------------------------------------------------- dead letters (state_api.py)


def dlq_retry(run_id: str, tasks: list[str] | tuple[str, ...] = (), *,
              state_dir: str | os.PathLike[str] = DEFAULT_STATE_DIR,
              durability: str | None = None, deadline: float | None = None,
              reporter: Reporter | None = None,
              params: Mapping[str, Any] | None = None,
              metrics_file: str | os.PathLike[str] | None = None,
              executor: str | None = None, executor_timeout: float | None = None) -> RunResult:
    """Resume `run_id`, giving the dead-lettered `tasks` (default: every task of the
    run with a letter) a fresh retry budget, with their skipped dependents. A task
    that completes loses its letter (the on_completed hook)."""
    from dagrun.dlq import DeadLetterQueue
    from dagrun.store.runs import StateDir

    info = StateDir(state_dir).open_run(run_id)  # an unknown run: the same error as resume
    queue = DeadLetterQueue(state_dir)
    tasks_now = info.spec.tasks
    from dagrun.kinds.fanout import base_task  # letters of map elements: TASK[i]

    lettered = [t for t in queue.tasks(run_id) if base_task(t) in tasks_now]
    gone = [t for t in queue.tasks(run_id) if base_task(t) not in tasks_now]
    if gone and not tasks and reporter is not None:
        reporter.message(f"ignoring letters of tasks no longer in the run's spec: "
                         f"{', '.join(gone)} (`dagrun dlq purge --run-id {run_id}` deletes them)")
    if tasks:
        for task in tasks:
            queue.get(run_id, task)  # a clear error for a task without a letter
        chosen = list(dict.fromkeys(tasks))
    elif lettered:
        chosen = lettered
    else:
        raise UsageError(f"run {run_id!r} has no dead letters in {state_dir} "
                         "(see `dagrun dlq list`)")
    return resume(run_id, state_dir=state_dir, retry_tasks=chosen, durability=durability,
                  deadline=deadline, reporter=reporter, params=params,
                  metrics_file=metrics_file, executor=executor,
                  executor_timeout=executor_timeout)
