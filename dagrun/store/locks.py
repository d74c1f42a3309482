"""The locks of the state directory, all flock(2): kernel-released when their
holder dies, so a killed dagrun never blocks the next one.

    runs/RUN_ID/ (its folder fd) + runs/RUN_ID/lock   Lock: one process drives a run
    locks/NAME.lock, gated by locks/                   PipelineLock: live runs of a
                                                       pipeline, for --if-running
    runs/.new-*/                                       lock_dir: a run being created
"""

from __future__ import annotations

import errno
import fcntl
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from dagrun.errors import DagrunError, RunLocked, StateIOError
from dagrun.store.fs import (
    describe_os_error,
    make_private_dir,
    open_state_file,
    read_state_file,
    write_atomic,
)

if TYPE_CHECKING:
    from dagrun.store.runs import StateDir


def lock_dir(path: Path) -> int:
    """An fd of the folder `path`, flocked (non-blocking; OSError if held).
    A folder cannot be unlinked from under its holder while it has entries,
    unlike a lock file that people delete as "stale"."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise
    return fd


def _busy(exc: OSError) -> bool:
    return exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN)


class Lock:
    """The run's lock: non-blocking, kernel-released (flock), naming its owner pid.

    What is locked is the run's *folder* (its own fd), which nobody can delete
    from under the holder; the lock file `path` is flocked too, so a process
    that locks only the file (an older dagrun) still excludes us, but deleting
    it lets no second process in.

    flock directly rather than through the filelock package, whose import
    alone (logging, inspect, asyncio helpers) cost ~50 ms of every run's and
    resume's start-up here.
    """

    def __init__(self, path: Path, what: str) -> None:
        self.path = path
        self.what = what
        self._fds: list[int] = []

    def acquire(self) -> None:
        make_private_dir(self.path.parent)
        try:
            held = self._try()
        except OSError as exc:
            raise StateIOError(f"cannot lock {self.path}: {describe_os_error(exc)}") from None
        if not held:
            owner = self.owner()
            who = f" by pid {owner}" if owner else ""
            raise RunLocked(f"{self.what} is locked{who}, another live dagrun process")
        try:
            write_atomic(self.path.with_suffix(".owner"), str(os.getpid()).encode(),
                         durable=False)
        except StateIOError:
            pass  # the owner file is a courtesy for the error message

    def _try(self) -> bool:
        """Both locks, folder first; False (holding neither) if either is held."""
        fds: list[int] = []
        try:
            fds.append(lock_dir(self.path.parent))
            fds.append(open_state_file(self.path, os.O_RDWR | os.O_CREAT))
            fcntl.flock(fds[-1], fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            for fd in fds:
                os.close(fd)
            if _busy(exc):
                return False
            raise
        except BaseException:
            for fd in fds:
                os.close(fd)
            raise
        self._fds = fds
        return True

    def owner(self) -> int | None:
        try:
            return int(read_state_file(self.path.with_suffix(".owner")).strip())
        except (OSError, ValueError, DagrunError):  # a courtesy file, never an error
            return None

    def release(self) -> None:
        fds, self._fds = self._fds, []
        for fd in fds:
            os.close(fd)  # closing the only descriptor releases the flock


class PipelineLock:
    """STATE/locks/NAME.lock: who runs this pipeline right now (`--if-running`).

    Every live run (and resume) of the pipeline holds NAME.lock *shared* for
    its whole life, so runs started without --if-running may overlap but are
    still seen as live. `run --if-running` needs it *exclusive* for an instant
    (no live run at all), then holds it shared.

    flock(2) cannot turn exclusive into shared atomically (it drops, then
    re-takes), so every change of NAME.lock happens under a gate: an exclusive
    flock on the locks/ folder itself, held for a few system calls only. While
    a claimer holds the gate between its exclusive test and its shared hold,
    nobody else can take NAME.lock in either mode; releases need no gate (they
    only make the pipeline less busy). flock locks are released by the kernel
    when their holder dies, so a killed run never blocks the next.
    """

    # Both locks are held exclusively for microseconds: this long means a stopped holder.
    GATE_WAIT = 30.0
    LIVE_WAIT = 30.0

    def __init__(self, state: StateDir, pipeline: str) -> None:
        self.dir = state.root / "locks"
        # Pipeline names match the task-id pattern: a safe file name.
        self.path = self.dir / f"{pipeline}.lock"
        self.pipeline = pipeline
        self._fd = -1

    def _open(self) -> None:
        if self._fd >= 0:
            return
        make_private_dir(self.dir)
        try:
            self._fd = open_state_file(self.path, os.O_RDWR | os.O_CREAT)
        except OSError as exc:
            raise StateIOError(f"cannot open {self.path}: {describe_os_error(exc)}") from None

    def _gate(self) -> int:
        """The gate's fd (close it to open the gate); waits GATE_WAIT at most."""
        end = time.monotonic() + self.GATE_WAIT
        while True:
            try:
                return lock_dir(self.dir)
            except OSError as exc:
                if not _busy(exc):
                    raise StateIOError(f"cannot lock {self.dir}: "
                                       f"{describe_os_error(exc)}") from None
            if time.monotonic() >= end:
                raise RunLocked(f"the pipeline locks in {self.dir} stayed locked for "
                                f"{self.GATE_WAIT:g}s (is a dagrun process stopped?)")
            time.sleep(0.005)

    def _try(self, how: int) -> bool:
        try:
            fcntl.flock(self._fd, how | fcntl.LOCK_NB)
            return True
        except OSError as exc:
            if _busy(exc):
                return False
            raise StateIOError(f"cannot lock {self.path}: {describe_os_error(exc)}") from None

    def hold_shared(self, run_id: str) -> None:
        """Mark one more live run. Never goes on without the lock: an exclusive
        holder is a claimer about to downgrade (or an older dagrun's), so this
        waits for it, up to LIVE_WAIT, then fails naming it. The gate is not
        held while waiting: other pipelines' runs share the locks folder."""
        self._open()
        end = time.monotonic() + self.LIVE_WAIT
        while True:
            gate = self._gate()
            try:
                if self._try(fcntl.LOCK_SH):
                    break
            finally:
                os.close(gate)
            if time.monotonic() >= end:
                raise RunLocked(f"pipeline {self.pipeline!r}: its lock {self.path} stayed "
                                f"locked exclusively for {self.LIVE_WAIT:g}s{self.owner()}; "
                                "is a dagrun process stopped?")
            time.sleep(0.01)
        self._write_owner(run_id)

    def claim(self, run_id: str, wait: float | None) -> bool:
        """Become the only live run (then hold shared): False if another is live
        after `wait` seconds (0: don't wait; None: wait as long as it takes)."""
        self._open()
        end = None if wait is None else time.monotonic() + wait
        delay = 0.01
        while True:
            gate = self._gate()
            try:
                if self._try(fcntl.LOCK_EX):
                    # Not atomic, but nobody can take NAME.lock while we hold the gate.
                    fcntl.flock(self._fd, fcntl.LOCK_SH)
                    break
            finally:
                os.close(gate)
            if end is not None and time.monotonic() >= end:
                return False
            time.sleep(delay if end is None else max(0.0, min(delay, end - time.monotonic())))
            delay = min(delay * 2, 0.25)
        self._write_owner(run_id)
        return True

    def owner(self) -> str:
        """" (pid N, run R)" of the last run that took the lock, if known."""
        try:
            pid, run_id = read_state_file(self.path.with_suffix(".owner")).split()[:2]
            return f" (pid {int(pid)}, run {run_id.decode()})"
        except (OSError, ValueError, DagrunError):  # a courtesy file, never an error
            return ""

    def _write_owner(self, run_id: str) -> None:
        try:
            write_atomic(self.path.with_suffix(".owner"), f"{os.getpid()} {run_id}\n".encode(),
                         durable=False)
        except StateIOError:
            pass  # a courtesy for the error message only

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # closing the last fd drops the flock
            self._fd = -1
