"""Run wiring: lock the run, build the journal, the event bus and its
listeners, the breakers' gate and the executor, route signals to the loop,
and run the scheduler; shared by run, resume and dlq retry."""

from __future__ import annotations

import gc
import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from operator import attrgetter, is_
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dagrun.model import RunResult, TaskStatus
from dagrun.spec import PipelineSpec

if TYPE_CHECKING:
    from dagrun.dlq import DeadLetterOffice
    from dagrun.executor.base import Executor
    from dagrun.report import Guarded
    from dagrun.report import QuietReporter as Reporter
    from dagrun.scheduling import CancelToken
    from dagrun.store.runs import RunInfo


def drive(info: RunInfo, spec: PipelineSpec, statuses: dict[str, TaskStatus] | None,
          settings: dict[str, Any], *, reporter: Reporter | Guarded | None = None,
          lock: Any = None, unsettled_letters: set[str] | None = None,
          heads: dict[str, str] | None = None, notes: list[str] | None = None,
          emitted: set[str] | None = None,
          metrics_file: str | os.PathLike[str] | None = None) -> RunResult:
    """Lock the run (unless `lock`, already held, is given) and execute the
    scheduler loop on it: shared by run and resume."""
    from dagrun.callables import add_import_paths
    from dagrun.events import EventBus
    from dagrun.executor import choice
    from dagrun.executor.base import create
    from dagrun.kinds.state import StateStore
    from dagrun.listeners import logfile
    from dagrun.report import QuietReporter, guarded
    from dagrun.scheduler import Scheduler
    from dagrun.scheduling import CancelToken
    from dagrun.store.journal import Journal
    from dagrun.store.live import clear_live, mark_live
    from dagrun.store.records import Chain
    from dagrun.store.runs import Lock

    add_import_paths(spec)
    own_lock = lock is None
    if own_lock:
        lock = Lock(info.path / "lock", f"run {info.run_id}")
        lock.acquire()
        mark_live(info.path)
    try:
        journal = Journal(info.journal_path, settings["durability"],
                          Chain(info.run_id, info.meta["nonce"], dict(heads or {})))
        token = CancelToken()
        if statuses is None:
            statuses = {tid: TaskStatus() for tid in spec.tasks}
        # A broken stderr switches the display off; it never stops a run.
        bus = EventBus([guarded(reporter or QuietReporter())])
        runlog = logfile.for_run(info.path, info.run_id)  # RUN/dagrun.log
        bus.add(runlog)
        office = settle_letters(info, spec, statuses, unsettled_letters or set())
        bus.add(office)
        if metrics_file:
            from dagrun.listeners.metrics import MetricsListener

            bus.add(MetricsListener(metrics_file, state_root(info)))
        gate = breaker_gate(info, spec, notify=bus.note)
        cache = cache_plug(info, spec, statuses, settings)
        if cache is not None:
            bus.add(cache)  # stores the completions of tasks that missed
        settings = choice.prepare(settings, spec, info.path)  # the backend and its settings
        try:
            executor = create(settings.get("executor") or "local", {
                "workers": settings["workers"], "base_dir": spec.base_dir,
                "max_tasks_per_worker": spec.max_tasks_per_worker,
                "notify": bus.note, **task_logs(info, bus),
                **{k: settings[k] for k in EXECUTOR_KEYS if k in settings}})
            try:
                with _signals_to(token, executor), _frozen_heap():
                    executor.start()
                    scheduler = Scheduler(
                        spec, info.run_id, journal, executor, bus,
                        statuses=statuses, cancel=token,
                        deadline=settings.get("deadline") or None,  # 0: none
                        gate=gate, notes=notes, waits=event_waits(info, spec, emitted),
                        states=StateStore(state_root(info)), cache=cache)
                    try:
                        return scheduler.run()
                    except BaseException:
                        bus.abort()  # e.g. a full disk: the live display lets go
                        raise
            finally:
                executor.shutdown()
                runlog.write.close()
        finally:
            journal.close()
    finally:
        if own_lock:
            clear_live(info.path)
            lock.release()


# Run settings a backend other than "local" reads (executor/dask_client.py).
EXECUTOR_KEYS = ("address", "connect_timeout", "scratch_dir", "ship")


def task_logs(info: RunInfo, bus: Any) -> dict[str, Any]:
    """Executor settings for per-task logs (RUN/logs/) and their echo, which is
    off unless a listener shows task output (not --quiet, not --json off a TTY)."""
    from dagrun.errors import DagrunError
    from dagrun.events import TaskOutput
    from dagrun.store.fs import make_private_dir

    log_dir = info.path / "logs"
    try:
        make_private_dir(log_dir)
    except (OSError, DagrunError):
        return {}  # tasks then print to stderr, as without logs
    settings: dict[str, Any] = {"log_dir": str(log_dir)}
    if any(getattr(lst, "wants_output", False) for lst in bus.listeners):
        settings["output"] = lambda task, line: bus.emit(TaskOutput(task, line))
    return settings


def breaker_gate(info: RunInfo, spec: PipelineSpec, notify: Any = None) -> Any:
    """The circuit breakers guarding the spec's tasks, as the scheduler's gate."""
    if not any(map(attrgetter("breaker"), spec.tasks.values())):  # (C-level scans: per task)
        return None
    from dagrun.breaker import BreakerGate, BreakerStore

    return BreakerGate(spec, BreakerStore(state_root(info)), notify=notify)


def cache_plug(info: RunInfo, spec: PipelineSpec, statuses: dict[str, TaskStatus],
               settings: dict[str, Any]) -> Any:
    """The scheduler's cache plug (dagrun/cache/plug.py), if any task caches or
    declares files_out."""
    tasks = spec.tasks.values()
    if not any(map(attrgetter("files_out"), tasks)) and all(
            map(partial(is_, None), map(attrgetter("cache"), tasks))):
        return None  # cache/plug.py's wanted(), inlined: a run without caching imports none of it
    from dagrun.cache.plug import CachePlug
    from dagrun.cache.store import CacheStore

    return CachePlug.for_run(spec, info.run_id, CacheStore(state_root(info)), statuses,
                             settings)


def event_waits(info: RunInfo, spec: PipelineSpec, emitted: set[str] | None) -> Any:
    """The scheduler's event plug (kinds/events.py), if any task waits for events."""
    if not any(map(attrgetter("wait_for"), spec.tasks.values())):
        return None
    from dagrun.kinds.events import EventWaits

    return EventWaits(spec, info.path, emitted or set())


@contextmanager
def _frozen_heap() -> Iterator[None]:
    """What exists when the run starts (modules, the spec, the statuses, the
    caller's own objects) is out of the cyclic collector's sight until the run
    ends (gc.freeze): the collections a run triggers traverse only what it
    allocates (they took ~5% of a 10,000 short-task run before), and workers,
    forked after it, do not write to (and so copy) the parent's pages when they
    collect. A caller's own freeze is left as it is."""
    if gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


@contextmanager
def _signals_to(token: CancelToken, executor: Executor) -> Iterator[None]:
    """SIGINT/SIGTERM/SIGHUP (a closed terminal, a dropped ssh session) request
    cancellation; a wake-up pipe interrupts the poll."""
    # Only the main thread may set signal handlers. Without the threading module
    # no other thread runs Python code (importing it only to ask: ~0.6 ms a run).
    threading = sys.modules.get("threading")
    if threading is not None and threading.current_thread() is not threading.main_thread():
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


def settle_letters(info: RunInfo, spec: PipelineSpec, statuses: dict[str, TaskStatus],
                   unsettled: set[str]) -> DeadLetterOffice:
    """The run's dead-letter office, with what a dead process left unsettled settled."""
    from dagrun.dlq import DeadLetterOffice, DeadLetterQueue

    office = DeadLetterOffice(DeadLetterQueue(state_root(info)), info.run_id, spec, statuses)
    office.reconcile(unsettled)
    return office


def state_root(info: RunInfo) -> Path:
    return info.path.parent.parent  # STATE_DIR/runs/RUN_ID -> STATE_DIR
