"""The library: run(), validate() and friends. Returns results, never prints
(reporters do, and the caller chooses one); raises DagrunError subclasses for
user errors. The CLI is a thin layer over this module."""

from __future__ import annotations

import gc
import os
import signal
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dagrun.callables import check_callables
from dagrun.errors import UsageError
from dagrun.graph import check_graph, descendants
from dagrun.model import RunResult, TaskStatus
from dagrun.spec import DEFAULT_DURABILITY, DURABILITY_MODES, PipelineSpec, load_spec

if TYPE_CHECKING:
    from dagrun.dlq import Letter
    from dagrun.executor.base import Executor
    from dagrun.report import QuietReporter as Reporter
    from dagrun.scheduler import CancelToken
    from dagrun.store.repair import Repaired
    from dagrun.store.runs import RunInfo

DEFAULT_STATE_DIR = ".dagrun"


def load(spec: Any) -> PipelineSpec:
    """A PipelineSpec from a path, a PipelineSpec or a Pipeline builder (not checked)."""
    if isinstance(spec, PipelineSpec):
        return spec
    if callable(getattr(spec, "to_spec", None)):  # a Pipeline (which imports this module)
        result = spec.to_spec()
        if isinstance(result, PipelineSpec):
            return result
    if isinstance(spec, (str, os.PathLike)):
        return load_spec(spec)
    raise UsageError(f"expected a spec path, PipelineSpec or Pipeline, got {type(spec).__name__}")


def validate(spec: Any) -> PipelineSpec:
    """Load and check a spec: keys, graph, and that every callable imports and
    accepts its arguments. Runs nothing, writes nothing."""
    pipeline = load(spec)
    check_graph(pipeline)
    check_callables(pipeline)
    return pipeline


def resolve_durability(value: str | None, spec: PipelineSpec) -> str:
    mode = value or spec.durability or DEFAULT_DURABILITY
    if mode not in DURABILITY_MODES:
        raise UsageError(f"--durability must be one of {', '.join(DURABILITY_MODES)}, "
                         f"got {mode!r}")
    return mode


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
) -> RunResult:
    """Validate `spec`, create a new run under `state_dir` and execute it.

    `if_running` (skip|wait|fail): what to do when another run of the same
    pipeline is live — skip raises PipelineBusy (exit 0, nothing started),
    fail raises RunLocked (exit 3), wait waits up to `wait_timeout` seconds
    (None: as long as it takes), then raises RunLocked. Without it, runs of
    one pipeline may overlap.
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
    settings = {"workers": workers or pipeline.workers or os.cpu_count() or 1,
                "durability": mode,
                "deadline": deadline if deadline is not None else pipeline.deadline}
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
        info = state.create_run(rid, pipeline, settings)
        return drive(info, pipeline, None, settings, reporter=reporter)
    finally:
        plock.release()


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

    reporter = guarded(reporter or QuietReporter())
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
        if file_identity(info.path / "run.json") != before:
            info = state.open_run(run_id)  # a `resume --spec` replaced it meanwhile
        spec = info.spec
        changed: set[str] = set()
        if spec_path is not None:
            new = validate(spec_path)
            _check_same_pipeline(run_id, spec, new, allow_removed)
            changed = {tid for tid, t in new.tasks.items()
                       if tid not in spec.tasks or spec.tasks[tid].definition() != t.definition()}
            spec = new
        mode = resolve_durability(durability or info.meta["settings"].get("durability"), spec)
        anchors = {tid: a for tid, a in _anchors(info).items() if tid in spec.tasks}
        repaired = _load_and_repair(info, spec, changed, retry_tasks, retry_failed, reporter,
                                    anchors)
        # The re-run tasks' chains restart from fresh anchors (store/repair.py):
        # every record they had before is superseded.
        reset = {tid: new_nonce() for tid in changed | descendants(spec.tasks, changed)}
        anchors.update(reset)
        repaired.heads.update(reset)
        gc_pause.end()
        if not repaired.changed and repaired.previously == "succeeded" and all(
                st.state.value == "completed" for st in repaired.statuses.values()):
            from dagrun.scheduler import stored_result

            result = stored_result(run_id, repaired.statuses)
            _settle_letters(info, spec, repaired.statuses, repaired.unsettled_letters)
            reporter.message(f"run {run_id} already succeeded; nothing to run")
            reporter.start(run_id, spec, repaired.statuses)
            reporter.finish(result)
            return result
        if spec_path is None:
            # As `run` does: a task module that has gone (a deleted file, a moved
            # project) is one clear error, not every task failing its retries.
            check_callables(spec)
        settings = dict(info.meta["settings"])
        settings["durability"] = mode
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
        return drive(info, spec, repaired.statuses, settings, reporter=reporter, lock=lock,
                     unsettled_letters=repaired.unsettled_letters, heads=repaired.heads,
                     notes=repaired.lines)
    finally:
        gc_pause.end()
        gc.unfreeze()  # a library caller's later collections see everything again
        if plock is not None:
            plock.release()
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


def _settle_letters(info: RunInfo, spec: PipelineSpec, statuses: dict[str, TaskStatus],
                    unsettled: set[str]) -> Any:
    """The run's dead-letter office, with what a dead process left unsettled settled."""
    from dagrun.dlq import DeadLetterOffice, DeadLetterQueue

    office = DeadLetterOffice(DeadLetterQueue(_state_root(info)), info.run_id, spec, statuses)
    office.reconcile(unsettled)
    return office


def _state_root(info: RunInfo) -> Path:
    return info.path.parent.parent  # STATE_DIR/runs/RUN_ID -> STATE_DIR


def _load_and_repair(info: RunInfo, spec: PipelineSpec, changed: set[str],
                     retry_tasks: Iterable[str] | None, retry_failed: bool,
                     reporter: Reporter, anchors: dict[str, str]) -> Repaired:
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
    retry = set(retry_tasks or ())
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
    return repair(spec, folded, retry=retry, changed=changed)


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


def drive(info: RunInfo, spec: PipelineSpec, statuses: dict[str, TaskStatus] | None,
          settings: dict[str, Any], *, reporter: Reporter | None = None,
          lock: Any = None, unsettled_letters: set[str] | None = None,
          heads: dict[str, str] | None = None, notes: list[str] | None = None) -> RunResult:
    """Lock the run (unless `lock`, already held, is given) and execute the
    scheduler loop on it: shared by run and resume."""
    from dagrun.callables import add_import_paths
    from dagrun.events import EventBus
    from dagrun.executor.base import create
    from dagrun.report import QuietReporter, guarded
    from dagrun.scheduler import CancelToken, Scheduler
    from dagrun.store.journal import Journal
    from dagrun.store.records import Chain
    from dagrun.store.runs import Lock

    add_import_paths(spec)
    own_lock = lock is None
    if own_lock:
        lock = Lock(info.path / "lock", f"run {info.run_id}")
        lock.acquire()
    try:
        journal = Journal(info.journal_path, settings["durability"],
                          Chain(info.run_id, info.meta["nonce"], dict(heads or {})))
        token = CancelToken()
        if statuses is None:
            statuses = {tid: TaskStatus() for tid in spec.tasks}
        # A broken stderr switches the display off; it never stops a run.
        bus = EventBus([guarded(reporter or QuietReporter())])
        office = _settle_letters(info, spec, statuses, unsettled_letters or set())
        bus.add(office)
        gate = breaker_gate(info, spec, notify=bus.note)
        try:
            executor = create(settings.get("executor") or "local", {
                "workers": settings["workers"], "base_dir": spec.base_dir,
                "max_tasks_per_worker": spec.max_tasks_per_worker,
                "notify": bus.note})
            try:
                with _signals_to(token, executor):
                    executor.start()
                    scheduler = Scheduler(
                        spec, info.run_id, journal, executor, bus,
                        statuses=statuses, cancel=token,
                        deadline=settings.get("deadline") or None,  # 0: none
                        gate=gate, notes=notes)
                    try:
                        return scheduler.run()
                    except BaseException:
                        bus.abort()  # e.g. a full disk: the live display lets go
                        raise
            finally:
                executor.shutdown()
        finally:
            journal.close()
    finally:
        if own_lock:
            lock.release()


def breaker_gate(info: RunInfo, spec: PipelineSpec, notify: Any = None) -> Any:
    """The circuit breakers guarding the spec's tasks, as the scheduler's gate."""
    from dagrun.breaker import BreakerGate, BreakerStore

    if not any(t.breaker for t in spec.tasks.values()):
        return None
    return BreakerGate(spec, BreakerStore(_state_root(info)), notify=notify)


@contextmanager
def _signals_to(token: CancelToken, executor: Executor) -> Iterator[None]:
    """SIGINT/SIGTERM/SIGHUP (a closed terminal, a dropped ssh session) request
    cancellation; a wake-up pipe interrupts the poll."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    read_fd, write_fd = os.pipe()
    os.set_blocking(read_fd, False)
    os.set_blocking(write_fd, False)

    def handler(signum: int, _frame: Any) -> None:
        token.request(signal.Signals(signum).name)
        if token.force:
            executor.cancel(0, force=True)

    old = {s: signal.signal(s, handler)
           for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    old_fd = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    executor.add_wakeup_fd(read_fd)
    try:
        yield
    finally:
        signal.set_wakeup_fd(old_fd)
        for s, h in old.items():
            signal.signal(s, h)
        os.close(read_fd)
        os.close(write_fd)


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


def dlq_retry(run_id: str, tasks: list[str] | tuple[str, ...] = (), *,
              state_dir: str | os.PathLike[str] = DEFAULT_STATE_DIR,
              durability: str | None = None, deadline: float | None = None,
              reporter: Reporter | None = None) -> RunResult:
    """Resume `run_id`, giving the dead-lettered `tasks` (default: every task of the
    run with a letter) a fresh retry budget, with their skipped dependents. A task
    that completes loses its letter (the on_completed hook)."""
    from dagrun.dlq import DeadLetterQueue
    from dagrun.store.runs import StateDir

    info = StateDir(state_dir).open_run(run_id)  # an unknown run: the same error as resume
    queue = DeadLetterQueue(state_dir)
    tasks_now = info.spec.tasks
    lettered = [t for t in queue.tasks(run_id) if t in tasks_now]
    gone = [t for t in queue.tasks(run_id) if t not in tasks_now]
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
                  deadline=deadline, reporter=reporter)
