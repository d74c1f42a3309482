"""Resume: open a run, check an edited spec against it, load and repair its
journal (store/repair.py), then hand it to the driver — or, on a run that
already succeeded, return its stored result."""

from __future__ import annotations

import gc
import os
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from dagrun.callables import check_callables
from dagrun.driver import drive, settle_letters
from dagrun.errors import UsageError
from dagrun.executor import choice
from dagrun.graph import descendants
from dagrun.history import clear_live, mark_live
from dagrun.loading import resolve_durability, validate
from dagrun.model import RunResult
from dagrun.params import for_resume
from dagrun.spec import PipelineSpec

if TYPE_CHECKING:
    from dagrun.report import Guarded
    from dagrun.report import QuietReporter as Reporter
    from dagrun.store.repair import Repaired
    from dagrun.store.runs import RunInfo


def resume_run(
    run_id: str,
    *,
    state_dir: str | os.PathLike[str],
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
    succeeded, returns its stored result and runs nothing.
    """
    from dagrun.report import QuietReporter, guarded
    from dagrun.spec import snapshot
    from dagrun.store.records import RUN_FORMAT, frame, new_nonce
    from dagrun.store.runs import Lock, PipelineLock, StateDir, file_identity, write_atomic

    shown = guarded(reporter or QuietReporter())
    state = StateDir(state_dir)
    gc_pause = _GcPause()  # loading 100k tasks' state: 2x faster without the cyclic GC
    try:
        before = file_identity(state.run_path(run_id) / "run.json")  # run_path checks the id
        info = state.open_run(run_id)  # exit 2 naming run.json if unreadable
    except BaseException:
        gc_pause.end()
        raise
    lock = Lock(info.path / "lock", f"run {run_id}")
    plock: PipelineLock | None = None
    try:
        lock.acquire()
        mark_live(info.path)
        if file_identity(info.path / "run.json") != before:
            info = state.open_run(run_id)  # a `resume --spec` replaced it meanwhile
        # Tasks that read a secret param are resolved again (params.py).
        spec, param_settings = for_resume(info.spec, info.meta["settings"], params,
                                          os.environ, run_id, fresh=False)
        changed: set[str] = set()
        if spec_path is not None:
            new, param_settings = for_resume(validate(spec_path), info.meta["settings"],
                                             params, os.environ, run_id, fresh=True)
            _check_same_pipeline(run_id, spec, new, allow_removed)
            changed = {tid for tid, t in new.tasks.items()
                       if tid not in spec.tasks or spec.tasks[tid].definition() != t.definition()}
            spec = new
        mode = resolve_durability(durability or info.meta["settings"].get("durability"), spec)
        anchors = {tid: a for tid, a in _anchors(info).items() if tid in spec.tasks}
        repaired = _load_and_repair(info, spec, changed, retry_tasks, retry_failed, shown,
                                    anchors)
        # The re-run tasks' chains restart from fresh anchors (store/repair.py):
        # every record they had before is superseded.
        reset = {tid: new_nonce() for tid in changed | descendants(spec.tasks, changed)}
        anchors.update(reset)
        repaired.heads.update(reset)
        gc_pause.end()
        if not repaired.changed and repaired.previously == "succeeded" and all(
                st.state.value == "completed" for st in repaired.statuses.values()):
            from dagrun.results import stored_result

            result = stored_result(run_id, repaired.statuses)
            settle_letters(info, spec, repaired.statuses, repaired.unsettled_letters)
            shown.message(f"run {run_id} already succeeded; nothing to run")
            shown.start(run_id, spec, repaired.statuses)
            shown.finish(result)
            return result
        if spec_path is None:
            # As `run` does: a task module that has gone (a deleted file, a moved
            # project) is one clear error, not every task failing its retries.
            check_callables(spec)
        settings = dict(info.meta["settings"])
        settings["durability"] = mode
        # The run's own executor, unless --executor or DAGRUN_EXECUTOR says otherwise.
        settings.update(choice.run_settings(executor, executor_timeout,
                                            settings.get("executor"), settings))
        settings.update(param_settings)
        if deadline is not None:
            settings["deadline"] = deadline
        elif spec_path is not None:
            settings["deadline"] = spec.deadline
        if spec_path is not None:
            # The new snapshot and the resets (anchors) replace the old ones in
            # one atomic write: no kill can leave one without the other, and no
            # corrupt journal line can undo a reset.
            meta = {**info.meta, "v": RUN_FORMAT, "pipeline": spec.name,
                    "settings": settings, "spec": snapshot.to_dict(spec), "anchors": anchors}
            write_atomic(info.path / "run.json", frame(meta))
        plock = PipelineLock(state, spec.name)
        plock.hold_shared(run_id)
        return drive(info, spec, repaired.statuses, settings, reporter=shown, lock=lock,
                     unsettled_letters=repaired.unsettled_letters, heads=repaired.heads,
                     notes=repaired.lines, emitted=repaired.events, metrics_file=metrics_file)
    finally:
        gc_pause.end()
        gc.unfreeze()  # a library caller's later collections see everything again
        if plock is not None:
            plock.release()
        clear_live(info.path)  # only our own marker
        lock.release()


def _check_same_pipeline(run_id: str, old: PipelineSpec, new: PipelineSpec,
                         allow_removed: bool) -> None:
    if new.name != old.name:
        raise UsageError(f"run {run_id!r} is a run of pipeline {old.name!r}, the spec given "
                         f"is pipeline {new.name!r}: resume --spec takes an edited spec of "
                         "the same pipeline")
    removed = [tid for tid in old.tasks if tid not in new.tasks]
    if removed and not allow_removed:
        shown = ", ".join(removed[:10]) + (f" and {len(removed) - 10} more"
                                           if len(removed) > 10 else "")
        raise UsageError(f"the new spec drops {len(removed)} task(s) of run {run_id!r}: "
                         f"{shown}; pass --allow-removed to drop them from the run")


def _anchors(info: RunInfo) -> dict[str, str]:
    found = info.meta.get("anchors")
    if not isinstance(found, dict):
        return {}
    return {tid: a for tid, a in found.items() if isinstance(a, str)}


def _load_and_repair(info: RunInfo, spec: PipelineSpec, changed: set[str],
                     retry_tasks: Iterable[str] | None, retry_failed: bool,
                     reporter: Guarded, anchors: dict[str, str]) -> Repaired:
    """The run's journal, verified line by line (bad lines named in warnings),
    folded and repaired into the task states to resume from."""
    from dagrun.store.journal import read_journal
    from dagrun.store.repair import broken_chain_lines, fold, repair

    contents = read_journal(info.journal_path)
    for number in contents.bad_lines:
        reporter.message(f"warning: {info.journal_path} line {number} is corrupt "
                         "(checksum mismatch); ignored — its task re-runs if that was "
                         "its last record")
    if contents.torn_tail:
        reporter.message(f"ignored the torn last line of {info.journal_path} "
                         "(cut short when dagrun stopped)")
    folded = fold(contents.records, contents.digests, spec.tasks, run_id=info.run_id,
                  nonce=info.meta["nonce"], anchors=anchors, lines=contents.lines)
    del contents
    if folded.malformed:
        reporter.message(f"warning: {info.journal_path}: ignored {folded.malformed} "
                         "records of an unknown format")
    if folded.foreign:
        reporter.message(f"warning: {info.journal_path}: ignored {folded.foreign} records "
                         "of another run (copied or appended from elsewhere)")
    for line in broken_chain_lines(info.journal_path, folded.broken):
        reporter.message(line)
    from dagrun.kinds.fanout import split_ids

    retry, retry_elements = split_ids(retry_tasks or ())  # TASK[i]: one element of a map
    unknown = sorted(retry - set(spec.tasks))
    if unknown:
        raise UsageError(f"run {info.run_id!r} has no task {unknown[0]!r}")
    if retry_failed:
        retry |= {tid for tid, rec in folded.last.items() if rec["state"] == "dead_lettered"}
    for tid in sorted(retry):
        rec = folded.last.get(tid)
        if rec is None or rec["state"] != "dead_lettered":
            reporter.message(f"task {tid} is {rec['state'] if rec else 'pending'}, "
                             "not dead-lettered: nothing to retry")
    from dagrun.driver import state_root
    from dagrun.kinds import state as carried

    # A crash between a completed record and its state file: the record wins.
    carried.repair(carried.StateStore(state_root(info)), spec.name, info.run_id,
                   {tid: rec for tid, rec in folded.last.items() if carried.RECORD_FIELD in rec})
    repaired = repair(spec, folded, retry=retry, changed=changed,
                      retry_elements=retry_elements)
    repaired.events = folded.events
    return repaired


class _GcPause:
    """Pauses the cyclic GC while state is loaded; at the end, freezes what was
    loaded (it lives as long as the run: later collections need not scan it)."""

    def __init__(self) -> None:
        self._was = gc.isenabled()
        self._active = True
        gc.disable()

    def end(self) -> None:
        if self._active:
            self._active = False
            gc.freeze()
            if self._was:
                gc.enable()


