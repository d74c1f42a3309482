"""Worker-process plumbing of the local backend: fork a worker and its
sentinel with their pipes, watch the worker's exit, kill (deadlines, grace,
SIGKILL) and reap its group, and say why it died. The supervisor loop that
uses them is process.py; the results it reports are built in results.py.

A worker is the leader of its own process group; its sentinel joins that
group, so one killpg reaches the task, everything it started and the
sentinel. The supervisor owns the Worker records and every fd in them.
"""

from __future__ import annotations

import os
import signal
import sys
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from dagrun.model import Attempt, TaskError

WORKER_LOST_PIPE = 70  # worker.py's exit code when its own loop fails


@dataclass(eq=False)
class Worker:
    """One worker process as the parent sees it: its pipes, and what it runs."""

    pid: int
    req_fd: int
    res_fd: int
    sentinel: int
    pidfd: int = -1  # readable when the worker exits (Linux >= 5.3), see spawn()
    buf: bytearray = field(default_factory=bytearray)
    out: bytearray = field(default_factory=bytearray)  # request bytes not yet written
    writing: bool = False  # req_fd registered for EVENT_WRITE
    eof: bool = False  # result pipe closed; waiting for the pidfd to reap
    inflight: deque[tuple[int, Attempt]] = field(default_factory=deque)
    head_started: float = 0.0  # when the first in-flight attempt started (parent clock)
    head_wall: float = 0.0  # the same, wall clock: the start of an attempt that dies
    done: int = 0
    kill_reason: str | None = None  # "timeout" | "cancel" | "memory" while being killed
    kill_at: float | None = None
    killed_hard: bool = False
    retiring: bool = False
    protocol_detail: str = ""  # what was wrong on the result pipe (kill_reason "protocol")
    last_duration: float = 1.0  # of its last task; unknown counts as long
    log_fd: int = -1  # the parent's read fd on the worker's log file (the echo)
    log_pos: int = -1  # how far the echo has read it; -1: not opened yet
    log_line: bytearray = field(default_factory=bytearray)  # a line not yet complete
    # The earlier of `deadline` and `kill_at`, kept by refresh_due() wherever
    # either changes: the loop reads it for every worker on every turn.
    due: float | None = None

    @property
    def deadline(self) -> float | None:
        if not self.inflight or self.kill_reason:
            return None
        timeout = self.inflight[0][1].timeout
        return None if timeout is None else self.head_started + timeout


def other_threads() -> list[str]:
    """Names of the threads besides this one: a fork copies their held locks.
    (None without the threading module: it is what starts them, and importing
    it only to ask costs ~0.6 ms of every run.)"""
    threading = sys.modules.get("threading")
    if threading is None:
        return []
    return sorted(t.name for t in threading.enumerate() if t is not threading.current_thread())


def spawn(lifeline_r: int, base_dir: str | None, log_dir: str | None = None) -> Worker:
    """Fork a worker and its sentinel; OSError (EAGAIN, ENOMEM) leaves nothing behind."""
    req_r, req_w = os.pipe()
    res_r, res_w = os.pipe()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()  # else the child would inherit and re-flush our buffers
        except Exception:
            pass
    parent = os.getpid()
    try:
        pid = os.fork()
    except OSError:
        for fd in (req_r, req_w, res_r, res_w):
            close(fd)
        raise
    if pid == 0:
        from dagrun.executor.worker import worker_main

        worker_main(req_r, res_w, lifeline_r, parent, base_dir, log_dir)
    os.close(req_r)
    os.close(res_w)
    try:
        os.setpgid(pid, pid)  # also done by the child: whichever runs first wins
    except OSError:
        pass
    try:
        sentinel = os.fork()
    except OSError:
        # Without its sentinel the worker's group could outlive dagrun: drop it.
        killpg(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        close(req_w)
        close(res_r)
        raise
    if sentinel == 0:
        from dagrun.executor.worker import sentinel_main

        sentinel_main(lifeline_r, pid)
    try:
        os.setpgid(sentinel, pid)
    except OSError:
        pass
    os.set_blocking(res_r, False)
    # Never block on a worker: a busy worker may itself be blocked writing a
    # result we would not read while stuck in write() (a deadlock).
    os.set_blocking(req_w, False)
    # EOF on the result pipe is not enough to see a worker die: a process its
    # task forked (multiprocessing's fork) inherits the pipe and keeps it open.
    # A pidfd becomes readable when the worker itself exits.
    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        pidfd = -1  # old kernel: pipe EOF only
    return Worker(pid=pid, req_fd=req_w, res_fd=res_r, sentinel=sentinel, pidfd=pidfd)


def reap(pid: int, sentinel: int) -> int:
    """Wait for a worker that exited, end its group and its sentinel; its wait status."""
    try:
        _, status = os.waitpid(pid, 0)
    except ChildProcessError:
        status = 0
    # Whatever the task started lives in the worker's group: it goes too.
    killpg(pid, signal.SIGKILL)
    try:
        os.waitpid(sentinel, 0)
    except ChildProcessError:
        pass
    return status


def death_error(worker: Worker, attempt: Attempt, status: int) -> TaskError:
    """Why the worker running `attempt` exited with wait `status` before answering."""
    sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
    code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else None
    if worker.kill_reason == "protocol":
        return TaskError("WorkerCrashed", "the task wrote to dagrun's result pipe "
                         f"(the worker's inherited fd; dagrun read {worker.protocol_detail}), "
                         "so its worker was killed", exit_code=code, signal=sig)
    if worker.kill_reason == "timeout":
        how = ("SIGKILL after the grace period" if worker.killed_hard and attempt.timeout_grace
               else "SIGKILL" if worker.killed_hard else "SIGTERM")
        return TaskError("TaskTimeout", f"timed out after {_secs(attempt.timeout)}; "
                         f"the task's process group was killed ({how})",
                         exit_code=code, signal=sig)
    if sig is not None:
        name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else sig
        hint = " — possibly out of memory" if sig == signal.SIGKILL else ""
        if sig == signal.SIGSEGV:
            hint = " (segmentation fault)"
        return TaskError("WorkerCrashed", f"the task's process was killed by {name}{hint}",
                         exit_code=code, signal=sig)
    if code == WORKER_LOST_PIPE:
        return TaskError("WorkerCrashed", "the task closed or broke its worker's pipes to "
                         "dagrun (e.g. os.closerange), so its result could not be sent",
                         exit_code=code, signal=None)
    return TaskError("WorkerCrashed", f"the task's process exited with code {code} "
                     "before returning a result", exit_code=code, signal=None)


def _secs(value: float | None) -> str:
    if value is None:
        return "?"
    return f"{value:g}s"


def refresh_due(w: Worker) -> None:
    """After a change of the head attempt, its start, kill_reason or kill_at."""
    deadline, kill_at = w.deadline, w.kill_at
    w.due = kill_at if deadline is None else (
        deadline if kill_at is None or deadline < kill_at else kill_at)


def nearest_deadline(workers: Iterable[Worker]) -> float | None:
    nearest = None
    for w in workers:
        t = w.due
        if t is not None and (nearest is None or t < nearest):
            nearest = t
    return nearest


def enforce_deadlines(workers: Iterable[Worker], now: float) -> None:
    """SIGTERM the timed-out, SIGKILL those whose grace is over."""
    for w in workers:
        due = w.due
        if due is None or now < due:
            continue
        deadline = w.deadline
        if deadline is not None and now >= deadline:
            begin_kill(w, "timeout", w.inflight[0][1].timeout_grace, now)
        if w.kill_at is not None and now >= w.kill_at:
            kill_hard(w)


def begin_kill(w: Worker, reason: str, grace: float, now: float) -> None:
    w.kill_reason = reason
    if grace <= 0:
        w.killed_hard = True
        killpg(w.pid, signal.SIGKILL)
    else:
        killpg(w.pid, signal.SIGTERM)
        w.kill_at = now + grace
    refresh_due(w)


def kill_hard(w: Worker) -> None:
    """SIGKILL the group, once; only signals, so a signal handler may call it."""
    if not w.killed_hard:
        w.killed_hard = True
        killpg(w.pid, signal.SIGKILL)


def killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def close(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


def drain(fd: int) -> bool:
    """Empty a wake-up fd; False if it is no longer open."""
    try:
        while os.read(fd, 4096):
            pass
    except (BlockingIOError, InterruptedError):
        pass
    except OSError:
        return False
    return True
