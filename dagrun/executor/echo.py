"""The echo of task output: the parent reads what tasks write to their
workers' log files and hands it on line by line, with the task it belongs to.

Costs nothing per task that prints nothing: a result carries its log range, so
the parent reads only when the range is not empty; while a task runs, the log
is looked at (one fstat per busy worker) at most every INTERVAL seconds.

Attribution: a worker runs one task at a time, in the order sent. While it
holds one attempt, whatever is new in its log is that attempt's; while it holds
two (a short task's successor queued behind it) the boundary is unknown until
the first result arrives with its end offset, so that worker is not tailed.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable

from dagrun.executor.procs import Worker, close

INTERVAL = 0.1  # seconds between looks at running tasks' logs
# A task that prints faster than a terminal can show: the echo skips ahead and
# says so (the log keeps everything).
MAX_BACKLOG = 4 << 20  # bytes


class Echo:
    def __init__(self, log_dir: str, output: Callable[[str, str], None]) -> None:
        self.log_dir = log_dir
        self.output = output
        self._next = 0.0

    def path(self, worker: Worker) -> str:
        return os.path.join(self.log_dir, f"worker-{worker.pid}.log")

    def opened(self, worker: Worker) -> None:
        """At spawn, before the worker runs anything: where its new output will begin."""
        try:
            worker.log_fd = os.open(self.path(worker), os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC
                                    | getattr(os, "O_NOFOLLOW", 0), 0o600)
            worker.log_pos = os.fstat(worker.log_fd).st_size
        except OSError:
            worker.log_fd = -1

    def tail(self, workers: Iterable[Worker]) -> None:
        now = time.monotonic()
        if now < self._next:
            return
        self._next = now + INTERVAL
        for w in workers:
            if w.log_fd >= 0 and len(w.inflight) == 1:
                try:
                    size = os.fstat(w.log_fd).st_size
                except OSError:
                    continue
                if size > w.log_pos:
                    self._read(w, w.inflight[0][1].task_id, size, final=False)

    def finished(self, worker: Worker, task_id: str, end: int | None) -> None:
        """The attempt ended (its result says where its output ends; None: it
        died, so everything written so far is its)."""
        if worker.log_fd < 0:
            return
        if end is None:
            try:
                end = os.fstat(worker.log_fd).st_size
            except OSError:
                return
        if end > worker.log_pos or worker.log_line:
            self._read(worker, task_id, end, final=True)

    def closed(self, worker: Worker) -> None:
        close(worker.log_fd)
        worker.log_fd = -1

    def _read(self, w: Worker, task_id: str, end: int, *, final: bool) -> None:
        if end - w.log_pos > MAX_BACKLOG:
            skipped = end - MAX_BACKLOG - w.log_pos
            self.output(task_id, f"… {skipped} bytes not shown here (see `dagrun logs`)")
            w.log_pos += skipped
            w.log_line.clear()
        while w.log_pos < end:
            try:
                chunk = os.pread(w.log_fd, min(end - w.log_pos, 1 << 16), w.log_pos)
            except OSError:
                break
            if not chunk:
                break
            w.log_pos += len(chunk)
            w.log_line += chunk
            *lines, rest = w.log_line.split(b"\n")
            for line in lines:
                self.output(task_id, line.decode("utf-8", "replace"))
            w.log_line = bytearray(rest)
        if final and w.log_line:
            self.output(task_id, w.log_line.decode("utf-8", "replace"))
            w.log_line.clear()
