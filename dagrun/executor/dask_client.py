"""The Dask backend, dagrun's side: each attempt is one Dask task (its own key,
dagrun's priority, pure=False) that the worker side (dask_worker.py) hands to
a helper process running the local backend's machinery.

    dagrun loop (one thread)        Dask client thread          cluster
    submit() -- client.submit -------------------------------> run_attempt
    poll()   <- self-pipe byte <-- done callback: queue <------ result bytes
    poll(): gather the finished ones in one call; write their output to
            RUN/logs/dask-PID.log; AttemptResults

Retries are dagrun's: on the LocalCluster started here the scheduler's
allowed-failures is 0 (a worker dying mid-task fails it with KilledWorker);
on an external scheduler, which retries, the task function reports a second
execution of a key as the crash it is (dask_worker.run_attempt).

A scheduler that is lost (the client reconnects for up to connect_timeout) or
a cluster without workers for that long: poll() raises ExecutorLost; what was
in flight comes back from cancel() as cancelled, so the run is resumable.
"""

from __future__ import annotations

import logging
import os
import selectors
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from dagrun.errors import ExecutorLost
from dagrun.executor import procs
from dagrun.executor.base import clamp_wait
from dagrun.executor.dask_helper import attempt_to_dict
from dagrun.executor.dask_results import DaskResults
from dagrun.model import Attempt, AttemptResult

# Attempts handed to Dask per worker thread. More than one hides the round trip
# to the scheduler; for short tasks, where that round trip dominates, many more
# (Dask orders what is queued by priority, and a timeout counts from the start
# on the worker). Long tasks keep few queued: they show as running in dagrun.
QUEUE_PER_THREAD = 2
QUEUE_PER_THREAD_SHORT = 16
SHORT_TASK = 0.05  # seconds: the mean duration of recent attempts below which tasks are short
LOST_CHECK = 0.5  # seconds between looks at the connection while something is wrong


class DaskExecutor(DaskResults):
    def __init__(self, workers: int, *, address: str | None = None,
                 connect_timeout: float = 60.0, scratch_dir: str | None = None,
                 ship: str | None = None, base_dir: str | None = None,
                 log_dir: str | None = None,
                 max_tasks_per_worker: int | None = None,
                 output: Callable[[str, str], None] | None = None,
                 notify: Callable[[str], None] | None = None) -> None:
        self.size = max(1, workers)
        self.address = address
        self.connect_timeout = connect_timeout
        self.scratch_dir = scratch_dir or os.path.join(base_dir or os.getcwd(), ".dask")
        self.ship = ship
        self.base_dir = base_dir
        self.log_dir = log_dir
        # Sent with each attempt: the helper's children on every worker are
        # replaced after this many attempts, as the local pool's workers are.
        self.max_tasks_per_worker = max_tasks_per_worker
        self.output = output
        self.notify = notify or (lambda _text: None)
        self.cluster: Any = None
        self.client: Any = None
        self._sel = selectors.DefaultSelector()
        self._wake_r = self._wake_w = -1
        self._wakeup_fds: list[int] = []
        self._inflight: dict[str, tuple[Attempt, Any]] = {}  # by Dask key
        self._done: deque[Any] = deque()  # futures, appended by the client's thread
        self._lost: dict[str, Attempt] = {}  # cancelled by a lost connection
        self._trouble_since: float | None = None  # no scheduler / no workers since
        self._log_fd = -1
        self._log_name = f"dask-{os.getpid()}.log"
        self._emitted: deque[tuple[str, str]] = deque()  # appended by the client's thread
        self._topic: str | None = None
        self._lines: deque[tuple[str, str]] = deque()  # printed by running tasks (echo)
        self._force = False
        self._session = os.urandom(3).hex()
        self._ship_plugin = ""
        self._once = False  # the scheduler retries tasks: detect a second execution
        self._threads = 0
        self._mean_duration = 1.0  # of recent attempts (moving average); unknown: long
        self._threads_at = 0.0

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> DaskExecutor:
        timeout = settings.get("connect_timeout")
        return cls(settings.get("workers") or 1, address=settings.get("address"),
                   connect_timeout=60.0 if timeout is None else float(timeout),
                   scratch_dir=settings.get("scratch_dir"), ship=settings.get("ship"),
                   base_dir=settings.get("base_dir"), log_dir=settings.get("log_dir"),
                   max_tasks_per_worker=settings.get("max_tasks_per_worker"),
                   output=settings.get("output"), notify=settings.get("notify"))

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        import dask
        from distributed import Client

        from dagrun.executor.dask_worker import PLUGIN, DagrunPlugin

        # dagrun reports a lost scheduler itself, in one line (exit 5).
        logging.getLogger("distributed.client").setLevel(logging.CRITICAL)
        self._wake_r, self._wake_w = os.pipe()
        for fd in (self._wake_r, self._wake_w):
            os.set_blocking(fd, False)
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)
        os.makedirs(self.scratch_dir, exist_ok=True)
        config = {"temporary-directory": self.scratch_dir,
                  "distributed.client.scheduler-info-interval": "500ms",
                  "distributed.scheduler.allowed-failures": 0,
                  # dagrun owns the process tree: no Dask worker is restarted
                  # behind its back for memory it does not see anyway.
                  "distributed.worker.memory.terminate": False,
                  "distributed.admin.tick.limit": "1h"}
        try:
            with dask.config.set(config):
                if self.address is None:
                    self.cluster = self._local_cluster()
                target = self.cluster if self.cluster is not None else self.address
                self.client = Client(target, timeout=self.connect_timeout,
                                     set_as_default=False)
        except (OSError, TimeoutError) as exc:
            raise ExecutorLost(f"cannot reach the Dask scheduler at "
                               f"{self.address or 'a new LocalCluster'}: {_why(exc)}") from None
        except Exception as exc:  # e.g. RuntimeError: a LocalCluster's worker did not start
            what = "client" if self.address else "LocalCluster"
            raise ExecutorLost(f"could not start the Dask {what}: {type(exc).__name__}: "
                               f"{_why(exc)}") from None
        where = self.client.scheduler.address
        try:
            self.client.wait_for_workers(1, timeout=self.connect_timeout)
        except (OSError, TimeoutError) as exc:
            raise ExecutorLost(f"the Dask cluster at {where} has no worker after "
                               f"{self.connect_timeout:g}s: {_why(exc)}") from None
        try:
            self.client.register_plugin(DagrunPlugin(), name=PLUGIN)
            if self.ship:
                self._upload(self.ship)
        except Exception as exc:  # e.g. dagrun is not installed where the workers run
            raise ExecutorLost(f"the workers of the Dask cluster at {where} cannot take "
                               f"dagrun's worker plugin ({type(exc).__name__}: {_why(exc)}); "
                               "dagrun must be installed on every worker") from None
        self._once = self.cluster is None and _scheduler_retries(self.client)

    def _upload(self, path: str) -> None:
        """The pipeline's own modules (a zip) to every worker, present and future,
        into its local directory, not imported there (dask_worker.run_attempt
        puts it on the helper's path). A plugin of this run's, removed at the end."""
        from distributed.diagnostics.plugin import UploadFile

        try:
            plugin = UploadFile(path, load=False)
        except TypeError:  # an older distributed: it also imports the zip's modules
            plugin = UploadFile(path)
        self._ship_plugin = f"dagrun-ship-{self._session}"
        self.client.register_plugin(plugin, name=self._ship_plugin)

    def _tidy_scheduler(self) -> None:
        """What this run left on a scheduler that outlives it: the shipped code's
        plugin, the markers of attempts started."""
        from dagrun.executor.dask_worker import ATTEMPTS

        try:
            if self._ship_plugin:
                self.client.unregister_worker_plugin(self._ship_plugin)
            if self._once:
                self.client.set_metadata([ATTEMPTS, self._session], None)
        except Exception:  # the scheduler is gone, and with it what was left there
            pass

    def _local_cluster(self) -> Any:
        from distributed import LocalCluster

        return LocalCluster(n_workers=self.size, threads_per_worker=1, processes=True,
                            host="127.0.0.1", dashboard_address=None,
                            local_directory=self.scratch_dir, memory_limit=0,
                            silence_logs=logging.ERROR)

    def add_wakeup_fd(self, fd: int) -> None:
        self._wakeup_fds.append(fd)
        self._sel.register(fd, selectors.EVENT_READ, None)

    def take_emitted(self) -> list[tuple[str, str]]:
        """Events running tasks emitted (dagrun.emit), forwarded by their workers."""
        out = []
        while self._emitted:
            out.append(self._emitted.popleft())
        return out

    def _subscribe(self, run_id: str) -> None:
        from dagrun.executor.dask_worker import EMIT_TOPIC, LINES_TOPIC

        self._topic = EMIT_TOPIC + run_id

        def emitted(event: Any) -> None:  # on the client's thread
            msg = event[1] if isinstance(event, tuple) else event
            self._emitted.append((msg["task"], msg["event"]))
            self._on_done(None)

        def printed(event: Any) -> None:  # on the client's thread
            msg = event[1] if isinstance(event, tuple) else event
            self._lines.extend((task, line) for task, line in msg["lines"])
            self._on_done(None)

        self.client.subscribe_topic(self._topic, emitted)
        if self.output is not None:
            self.client.subscribe_topic(LINES_TOPIC + run_id, printed)

    def _echo(self) -> None:
        """Lines running tasks printed, to the display (on this thread: listeners
        are not thread-safe); the log file gets them with each attempt's result."""
        if self.output is None:
            return
        while self._lines:
            task, line = self._lines.popleft()
            self.output(task, line)

    def shutdown(self) -> None:
        if self.cluster is None and getattr(self.client, "status", None) == "running":
            self._tidy_scheduler()
        for closing in (self.client, self.cluster):
            if closing is None:
                continue
            try:
                closing.close(timeout=10) if closing is self.client else closing.close()
            except Exception as exc:  # shutting down: report, never mask the run's end
                self.notify(f"warning: closing the Dask {type(closing).__name__}: {exc}")
        self.client = self.cluster = None
        self._sel.close()
        for fd in (self._wake_r, self._wake_w, self._log_fd):
            if fd >= 0:
                os.close(fd)
        self._wake_r = self._wake_w = self._log_fd = -1

    # ------------------------------------------------------------ dispatch

    def free_slots(self) -> int:
        now = time.monotonic()
        if now - self._threads_at > LOST_CHECK:
            self._threads_at = now
            info = getattr(self.client, "_scheduler_identity", None) or {}
            self._threads = int(info.get("total_threads") or 0)
        # Never none: with no worker yet, one attempt waits in Dask (and poll()
        # gives up on the cluster after connect_timeout).
        depth = QUEUE_PER_THREAD_SHORT if self._mean_duration < SHORT_TASK else QUEUE_PER_THREAD
        return max(1, self._threads * depth) - len(self._inflight)

    def submit(self, attempt: Attempt) -> None:
        from dagrun.executor.dask_worker import run_attempt

        key = _key(attempt, self._session)
        if self._topic is None and self.client is not None:
            self._subscribe(attempt.run_id)
        if self.client is None or self.client.status != "running":
            self._inflight[key] = (attempt, None)  # poll() decides: reconnect or lost
            return
        paths = [p for p in sys.path if p] if self.cluster is not None else (
            [] if self.ship or not self.base_dir else [self.base_dir])
        future = self.client.submit(
            run_attempt, key, attempt_to_dict(attempt), paths,
            os.path.basename(self.ship) if self.ship else None,
            self._session if self._once else None, self.output is not None,
            self.max_tasks_per_worker, key=key, pure=False, priority=attempt.priority)
        self._inflight[key] = (attempt, future)
        future.add_done_callback(self._on_done)

    def _on_done(self, future: Any | None) -> None:
        """On the client's callback thread: hand over, wake poll()."""
        self._done.append(future)
        try:
            os.write(self._wake_w, b"x")
        except (BlockingIOError, OSError):
            pass  # full (poll() will see the queue) or closed (shutting down)

    # ------------------------------------------------------------ results

    def poll(self, timeout: float | None) -> list[AttemptResult]:
        if self._trouble_since is not None or self._lost:
            timeout = LOST_CHECK if timeout is None else min(timeout, LOST_CHECK)
        if not self._done:
            for key, _ in self._sel.select(clamp_wait(timeout)):
                if not procs.drain(key.fd) and key.fd in self._wakeup_fds:
                    self._sel.unregister(key.fd)  # closed by its owner
                    self._wakeup_fds.remove(key.fd)
        else:
            procs.drain(self._wake_r)
        out = self._collect()
        self._echo()
        self._check_cluster(out)
        return out

    def _resubmit(self) -> None:
        """Attempts submitted while the client was reconnecting."""
        waiting = [a for a, f in self._inflight.values() if f is None]
        for attempt in waiting:
            del self._inflight[_key(attempt, self._session)]
            self.submit(attempt)

    # ------------------------------------------------------------ cancellation

    def cancel(self, grace: float, force: bool = False) -> list[AttemptResult]:
        if force:
            self._force = True  # only a flag: this may run in a signal handler
            return []
        now = time.time()
        held = [a for a, _ in self._inflight.values()] + list(self._lost.values())
        futures = [f for _, f in self._inflight.values() if f is not None]
        self._inflight.clear()
        self._lost.clear()
        if futures and getattr(self.client, "status", None) == "running":
            try:
                self.client.cancel(futures)
            except Exception:
                futures = []  # the cluster is gone, and with it what ran there
            # The workers stop them (SIGTERM, grace, SIGKILL) once they see the
            # cancellation; give them that long before a shutdown cuts it short.
            end = time.monotonic() + grace + 2 * 0.25 if futures else 0.0
            while time.monotonic() < end and not self._force:
                time.sleep(0.05)
        return [AttemptResult(a.task_id, a.number, cancelled=True, started=now, ended=now,
                              map_index=a.map_index) for a in held]


def _key(attempt: Attempt, session: str) -> str:
    """The attempt's Dask key; `session` (one per executor) keeps a resumed run's
    attempts apart from what a cluster may still hold of the process before."""
    element = "" if attempt.map_index is None else f"[{attempt.map_index}]"
    return f"dagrun-{attempt.run_id}-{attempt.task_id}{element}-{attempt.number}-{session}"


def _scheduler_retries(client: Any) -> bool:
    """Whether the scheduler runs a task again when its worker dies (its
    allowed-failures, which a client cannot change, is not 0); True if unknown."""
    def allowed(dask_scheduler: Any) -> int:
        return int(dask_scheduler.allowed_failures)

    try:
        return bool(client.run_on_scheduler(allowed))
    except Exception:  # e.g. a scheduler that refuses to run client code
        return True


def _why(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
