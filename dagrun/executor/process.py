"""The local backend: a small supervisor of long-lived, forked worker processes.

Why not concurrent.futures.ProcessPoolExecutor: it cannot kill one timed-out
task (the call keeps running), one dead worker breaks the whole pool, and its
workers outlive a killed parent. Here each worker is its own process group
with one request pipe and one result pipe; the parent (single-threaded)
enforces deadlines by signalling the group — SIGTERM, then SIGKILL after the
grace — reaps it, and forks a replacement. Messages are orjson, never pickles.

    dagrun (this process, one thread)            one worker's process group
    submit() ---- request pipe: wire frames ---> worker (worker.py): a task
    poll()   <--- result pipe: wire frames ----- at a time, PREFETCH queued
    poll()   <--- pidfd readable: it exited ---- worker
    lifeline pipe, never written --------------> sentinel: EOF (dagrun died)
                                                 -> SIGKILL to the group
    deadline, cancel: killpg SIGTERM, grace, SIGKILL; reap; fork a new one

Forking, killing and reaping are in procs.py, reading and writing the pipes
in pipes.py, the frames in wire.py, the AttemptResults built from frames and
deaths in results.py.
"""

from __future__ import annotations

import os
import selectors
import signal
import time
from collections.abc import Callable, Mapping
from typing import Any

from dagrun.executor import procs, results, wire
from dagrun.executor.base import clamp_wait
from dagrun.executor.echo import Echo
from dagrun.executor.pipes import Exited, Pipes, Reader, Writable
from dagrun.model import Attempt, AttemptResult

# Tasks queued on a worker beyond the one it runs: hides the pipe round-trip
# for short tasks. A queued task's deadline starts when the parent reads the
# result of the task before it, so it can only be late, never early.
PREFETCH = 1
SHORT_TASK = 0.005  # seconds
# After a failed fork (EAGAIN: a process limit; ENOMEM), how long until the next
# try: often enough to recover soon, rarely enough not to spin on a full table.
RESPAWN_DELAY = 1.0  # seconds


class ProcessExecutor(Pipes):
    def __init__(self, workers: int, *, base_dir: str | None = None,
                 max_tasks_per_worker: int | None = None,
                 notify: Callable[[str], None] | None = None,
                 log_dir: str | None = None,
                 output: Callable[[str, str], None] | None = None) -> None:
        self.size = max(1, workers)
        self.base_dir = base_dir
        self.log_dir = log_dir  # each worker's stdout and stderr: RUN/logs/worker-PID.log
        # Lines tasks print, as (task, line), for the display; None: nobody shows them.
        self._echo = Echo(log_dir, output) if log_dir and output else None
        self.max_tasks_per_worker = max_tasks_per_worker
        self.notify = notify or (lambda _text: None)
        self._missing = 0  # workers to fork again after a failed fork
        self._respawn_at = 0.0
        self._fork_error = ""
        self._warned: set[str] = set()
        self._workers: dict[int, procs.Worker] = {}  # by result fd
        self._sel = selectors.DefaultSelector()
        self._lifeline_r = self._lifeline_w = -1
        self._next_id = 0
        self._closing = False
        self._wakeup_fds: list[int] = []
        # Workers given requests since the last poll(), written there: one
        # write per worker for a dispatch's batch, not one per attempt.
        self._unflushed: list[procs.Worker] = []
        self._emitted: list[tuple[str, str]] = []  # (task, event) sent by running tasks

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> ProcessExecutor:
        return cls(settings["workers"], base_dir=settings.get("base_dir"),
                   max_tasks_per_worker=settings.get("max_tasks_per_worker"),
                   notify=settings.get("notify"), log_dir=settings.get("log_dir"),
                   output=settings.get("output"))

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        # Imported here, once, so that every fork (replacements included) inherits
        # them instead of importing them anew: ~40 ms saved per fresh worker.
        import dagrun.callables  # noqa: F401
        import dagrun.executor.worker  # noqa: F401

        self._lifeline_r, self._lifeline_w = os.pipe()
        self._missing = self.size
        self._replenish()
        if not self._workers:
            from dagrun.errors import ExecutorLost

            raise ExecutorLost(f"could not start any worker process: {self._fork_error}")

    def _replenish(self) -> None:
        """Fork the workers missing after failed forks; try again later on failure."""
        while self._missing:
            try:
                self._spawn()
            except OSError as exc:
                self._respawn_at = time.monotonic() + RESPAWN_DELAY
                self._fork_error = f"fork failed: {exc.strerror or exc}"
                self._warn(f"cannot start a worker ({self._fork_error}); running with "
                           f"{len(self._workers)} of {self.size}, retrying every "
                           f"{RESPAWN_DELAY:g}s")
                return
            self._missing -= 1

    def _warn(self, text: str) -> None:
        if text not in self._warned:  # one line per distinct problem, not per fork
            self._warned.add(text)
            self.notify(f"warning: {text}")

    def _spawn(self) -> None:
        if names := procs.other_threads():
            self._warn(f"{len(names)} thread(s) run in dagrun when it forks workers "
                       f"({', '.join(names[:3])}), probably started by a task module at "
                       "import; a worker may deadlock on a lock such a thread held")
        worker = procs.spawn(self._lifeline_r, self.base_dir, self.log_dir)
        if self._echo is not None:
            self._echo.opened(worker)
        self._workers[worker.res_fd] = worker
        self._sel.register(worker.res_fd, selectors.EVENT_READ, worker)
        if worker.pidfd >= 0:
            self._sel.register(worker.pidfd, selectors.EVENT_READ, Exited(worker))

    def take_emitted(self) -> list[tuple[str, str]]:
        """Events running tasks emitted (dagrun.emit) since the last call."""
        out, self._emitted = self._emitted, []
        return out

    def add_wakeup_fd(self, fd: int) -> None:
        self._wakeup_fds.append(fd)
        self._sel.register(fd, selectors.EVENT_READ, None)

    def add_reader(self, fd: int, on_readable: Callable[[], None]) -> None:
        """poll() calls `on_readable()` (and returns) when `fd` is readable; unlike
        a wake-up fd it is not drained (the Dask backend's helper reads requests so)."""
        self._sel.register(fd, selectors.EVENT_READ, Reader(on_readable))

    def cancel_where(self, match: Callable[[Attempt], bool], grace: float) -> None:
        """Start stopping the running attempts `match` selects (SIGTERM, SIGKILL
        after `grace`); their results come from poll(), cancelled."""
        now = time.monotonic()
        for w in self._workers.values():
            if w.inflight and w.kill_reason is None and match(w.inflight[0][1]):
                procs.begin_kill(w, "cancel", grace, now)

    def shutdown(self) -> None:
        self._closing = True
        for w in list(self._workers.values()):
            self._stop_writing(w)
            procs.close(w.req_fd)  # an idle worker exits when its pipe closes
            w.req_fd = -1  # closed: the number may be reused by the next fd opened
        end = time.monotonic() + 2.0
        while self._workers and time.monotonic() < end:
            self._wait(0.05)
        for w in list(self._workers.values()):
            procs.killpg(w.pid, signal.SIGKILL)
        while self._workers:
            self._wait(0.05)
        for fd in self._wakeup_fds:
            self._sel.unregister(fd)
        self._wakeup_fds.clear()
        self._sel.close()
        procs.close(self._lifeline_r)
        procs.close(self._lifeline_w)

    # ------------------------------------------------------------ dispatch

    def free_slots(self) -> int:
        return sum(1 for w in self._workers.values() if self._accepts(w))

    def _accepts(self, w: procs.Worker) -> bool:
        if w.kill_reason or w.retiring:
            return False
        limit = self.max_tasks_per_worker
        if limit and w.done + len(w.inflight) >= limit:
            return False  # never queue work on a worker past its quota: it retires
        if not w.inflight:
            return True
        # Queue behind a running task only when tasks are short, where the
        # round-trip would dominate; long tasks keep the load balanced instead.
        return len(w.inflight) <= PREFETCH and w.last_duration < SHORT_TASK

    def submit(self, attempt: Attempt) -> None:
        worker = self._pick()
        self._next_id += 1
        msg_id = self._next_id
        msg = {
            "id": msg_id, "run_id": attempt.run_id, "task": attempt.task_id,
            "attempt": attempt.number, "call": attempt.call, "kwargs": attempt.kwargs,
            "memory_limit": attempt.memory_limit, "map_index": attempt.map_index,
        }
        if attempt.state is not None:
            msg["state"] = attempt.state
        if attempt.when is not None:
            msg["when"] = attempt.when
        if attempt.loop is not None:
            msg["loop"] = attempt.loop
        payload = wire.encode(msg, msg_id)
        if not worker.inflight:
            worker.head_started = time.monotonic()
            worker.head_wall = time.time()
        worker.inflight.append((msg_id, attempt))
        if len(worker.inflight) == 1 and (attempt.timeout is not None
                                          or worker.due is not None):
            procs.refresh_due(worker)  # its head (and deadline) is this attempt
        if not worker.out:  # else it is already listed, or waiting for the pipe to drain
            self._unflushed.append(worker)
        worker.out += payload

    def _pick(self) -> procs.Worker:
        queued = None
        for w in self._workers.values():
            if not w.inflight and self._accepts(w):
                return w
            if queued is None and self._accepts(w):
                queued = w
        if queued is None:
            raise RuntimeError("submit() called with no free slot")
        return queued

    # ------------------------------------------------------------ results

    def poll(self, timeout: float | None) -> list[AttemptResult]:
        return self._wait(timeout)

    def _wait(self, timeout: float | None) -> list[AttemptResult]:
        if self._unflushed:
            for given in self._unflushed:
                self._flush(given)
            self._unflushed.clear()
        now = time.monotonic()
        if self._missing and not self._closing:
            if now >= self._respawn_at:
                self._replenish()
            if self._missing:
                timeout = self._respawn_at - now if timeout is None else min(
                    timeout, self._respawn_at - now)
        nearest = procs.nearest_deadline(self._workers.values())
        if nearest is not None:
            until = max(0.0, nearest - now)
            timeout = until if timeout is None else min(timeout, until)
        timeout = clamp_wait(timeout)
        out: list[AttemptResult] = []
        for key, _ in self._sel.select(timeout):
            worker: procs.Worker | Exited | Writable | Reader | None = key.data
            if worker is None:
                if not procs.drain(key.fd):
                    # Closed by its owner while still registered (the signal pipe,
                    # closed before shutdown() at the end of a run): forget it.
                    self._sel.unregister(key.fd)
                    self._wakeup_fds.remove(key.fd)
                continue
            # Identity, not fd number: a reaped worker's fds may already be reused
            # by its replacement within this same batch of events.
            if isinstance(worker, Exited):
                worker = worker.worker
                if self._workers.get(worker.res_fd) is worker:
                    if not worker.eof:
                        self._read(worker, out)  # results it sent before exiting
                    if self._workers.get(worker.res_fd) is worker:
                        self._reap(worker, out)
                continue
            if isinstance(worker, Reader):
                worker.on_readable()
                continue
            if isinstance(worker, Writable):
                worker = worker.worker
                if self._workers.get(worker.res_fd) is worker:
                    self._flush(worker)
                continue
            if self._workers.get(worker.res_fd) is worker:
                self._read(worker, out)
        if nearest is not None:  # (one set while reading is in the future: the next poll's)
            procs.enforce_deadlines(list(self._workers.values()), time.monotonic())
        if self._echo is not None:
            self._echo.tail(self._workers.values())
        return out

    def _finish(self, worker: procs.Worker, msg: dict | list) -> AttemptResult:
        _, attempt = worker.inflight.popleft()
        if isinstance(msg, list):
            r = results.from_plain(worker, attempt, msg)
            retire = False
        else:
            r = results.from_message(worker, attempt, msg)
            retire = bool(msg.get("retire"))
        if self._echo is not None and r.log is not None:
            self._echo.finished(worker, attempt.task_id, r.log["end"])
        worker.done += 1
        worker.last_duration = r.ended - r.started
        worker.head_started = time.monotonic()
        worker.head_wall = time.time()
        if worker.due is not None or (worker.inflight
                                      and worker.inflight[0][1].timeout is not None):
            procs.refresh_due(worker)  # the next attempt's deadline, or none
        if retire:
            worker.retiring = True  # it exits after this result (e.g. memory_limit breached)
        if (self.max_tasks_per_worker and worker.done >= self.max_tasks_per_worker
                and not worker.retiring):
            worker.retiring = True  # finishes what it holds, then exits on EOF
            self._stop_writing(worker)
            procs.close(worker.req_fd)
            worker.req_fd = -1  # closed: the number may be reused by the next fd opened
        return r

    def _reap(self, worker: procs.Worker, out: list[AttemptResult]) -> None:
        """The worker's result pipe closed: it exited. Report, clean up, replace."""
        status = procs.reap(worker.pid, worker.sentinel)
        if not worker.eof:
            self._sel.unregister(worker.res_fd)
        self._stop_writing(worker)
        if worker.pidfd >= 0:
            self._sel.unregister(worker.pidfd)
            procs.close(worker.pidfd)
        del self._workers[worker.res_fd]
        if self._echo is not None:
            if worker.inflight:
                self._echo.finished(worker, worker.inflight[0][1].task_id, None)
            self._echo.closed(worker)
        procs.close(worker.res_fd)
        procs.close(worker.req_fd)
        out.extend(results.from_death(worker, status, time.time()))
        if not self._closing:
            self._missing += 1
            self._replenish()

    # ------------------------------------------------------------ cancellation

    def cancel(self, grace: float, force: bool = False) -> list[AttemptResult]:
        if force:
            self._kill_now()
            return []
        now = time.monotonic()
        results: list[AttemptResult] = []
        for w in list(self._workers.values()):
            if w.inflight and w.kill_reason != "cancel":
                if w.kill_reason is None:
                    procs.begin_kill(w, "cancel", grace, now)
                else:
                    w.kill_reason = "cancel"
                    procs.refresh_due(w)
        while any(w.kill_reason for w in self._workers.values()):
            results += self._wait(0.05)
        return results

    def _kill_now(self) -> None:
        """Skip the grace of everything being stopped (a second Ctrl-C); only
        signals, so a signal handler may call it while cancel() waits."""
        for w in self._workers.values():
            if w.kill_reason:
                procs.kill_hard(w)
