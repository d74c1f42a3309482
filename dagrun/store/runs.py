"""State-directory layout, run ids, run metadata and locks.

    STATE_DIR/
      runs/RUN_ID/run.json   metadata + resolved spec snapshot (one checksummed frame)
      runs/RUN_ID/journal    task records (journal.py)
      runs/RUN_ID/lock       held by the process driving the run (kernel-released)
      locks/                 per-pipeline locks for --if-running
      dlq/ breakers/         dead letters and circuit-breaker state

Run ids are validated before any path is built from them.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import secrets
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dagrun.errors import DagrunError, RunLocked, StateIOError, UnknownRun, UsageError
from dagrun.spec import PipelineSpec, snapshot
from dagrun.store.fs import (
    describe_os_error,
    file_identity,
    fsync_dir,
    make_private_dir,
    open_state_file,
    pid_alive,
    read_state_file,
    write_atomic,
)
from dagrun.store.records import RUN_FORMAT, frame, new_nonce, unframe

# Re-exported: other modules imported these from here before store/fs.py existed.
__all__ = ["RUN_ID", "Lock", "PipelineLock", "RunInfo", "StateDir", "check_run_id",
           "describe_os_error", "file_identity", "fsync_dir", "make_private_dir",
           "new_run_id", "write_atomic"]

RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def check_run_id(run_id: str) -> str:
    if not isinstance(run_id, str) or not RUN_ID.fullmatch(run_id) or ".." in run_id:
        raise UsageError(f"invalid run id {run_id!r}: use 1-128 letters, digits, '.', '_' "
                         "or '-', starting with a letter or digit, without '..'")
    return run_id


def new_run_id() -> str:
    """Time-sortable: UTC timestamp to the millisecond, then random hex."""
    now = time.time()
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now))
    return f"{stamp}{int(now * 1000) % 1000:03d}-{secrets.token_hex(3)}"


@dataclass(frozen=True)
class RunInfo:
    run_id: str
    path: Path
    meta: dict[str, Any]
    snapshot: PipelineSpec | None = None  # the spec, once built from meta["spec"]

    @property
    def spec(self) -> PipelineSpec:
        return self.snapshot or snapshot.from_dict(self.meta["spec"])

    @property
    def journal_path(self) -> Path:
        return self.path / "journal"


class StateDir:
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    def run_path(self, run_id: str) -> Path:
        return self.runs / check_run_id(run_id)

    def create_run(self, run_id: str, spec: PipelineSpec, settings: dict[str, Any]) -> RunInfo:
        """The run's folder appears complete or not at all: it is built under a
        temporary name (run.json inside) and renamed into place, so a dagrun
        killed half-way never leaves a run that neither `run` nor `resume` accepts.
        The builder holds a flock on the temporary folder until the rename, which
        lets a later run remove the leftovers of a killed one (sweep_leftovers)."""
        make_private_dir(self.runs)
        self.sweep_leftovers()
        path = self.run_path(run_id)
        exists = UsageError(f"run {run_id!r} already exists in {self.root}; choose a new "
                            f"--run-id or `dagrun resume {run_id}`")
        if (path / "run.json").exists():
            raise exists
        meta = {"v": RUN_FORMAT, "run_id": run_id, "nonce": new_nonce(), "pipeline": spec.name,
                "created": time.time(), "settings": settings, "spec": snapshot.to_dict(spec)}
        tmp = self.runs / f"{_NEW}{run_id}-{os.getpid()}-{secrets.token_hex(4)}"
        held = -1
        try:
            tmp.mkdir(mode=0o700)
            held = _lock_dir(tmp)
            write_atomic(tmp / "run.json", frame(meta))
            try:
                os.rename(tmp, path)  # replaces only an empty leftover folder
            except OSError as exc:
                if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
                    raise exists from None
                raise
            fsync_dir(self.runs)
        except OSError as exc:
            raise StateIOError(f"cannot create {path}: {describe_os_error(exc)}") from None
        finally:
            if held >= 0:
                os.close(held)  # before anyone (our own drive()) locks the run folder
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return RunInfo(run_id, path, meta, spec)

    def sweep_leftovers(self) -> None:
        """Remove the temporary folders of run creations killed half-way. One is
        provably dead when its builder's pid (in its name) is gone *and* nobody
        holds its flock (the pid check covers the instant between mkdir and
        flock; the flock covers a reused pid... and pids of other namespaces)."""
        try:
            names = [e.name for e in os.scandir(self.runs) if e.name.startswith(_NEW)]
        except OSError:
            return
        for name in names:
            try:
                pid = int(name.rsplit("-", 2)[-2])
            except (ValueError, IndexError):
                continue
            if pid_alive(pid):
                continue
            folder = self.runs / name
            try:
                fd = _lock_dir(folder)
            except OSError:
                continue  # held (a live builder), or gone already
            try:
                shutil.rmtree(folder, ignore_errors=True)
            finally:
                os.close(fd)

    def open_run(self, run_id: str) -> RunInfo:
        path = self.run_path(run_id)
        meta_path = path / "run.json"
        try:
            data = read_state_file(meta_path)
        except FileNotFoundError:
            if path.is_dir():
                raise UnknownRun(f"run {run_id!r}: its metadata {meta_path} is missing; the "
                                 "run cannot be resumed") from None
            raise UnknownRun(f"no run {run_id!r} in {self.root} (check the run id and "
                             "--state-dir)") from None
        except OSError as exc:
            raise UnknownRun(f"cannot read {meta_path}: {describe_os_error(exc)}") from None
        try:
            meta = unframe(data.split(b"\n", 1)[0])
            version = meta.get("v")
            if isinstance(version, int) and 0 < version < RUN_FORMAT:
                # Its records carry no run binding: refused rather than half-trusted.
                raise UnknownRun(f"run {run_id!r} was written by an older dagrun (state "
                                 f"format {version}; this one reads {RUN_FORMAT}): finish it "
                                 "with that version or start a new run")
            if (version != RUN_FORMAT or meta.get("run_id") != run_id
                    or not isinstance(meta.get("nonce"), str)):
                raise ValueError("wrong version or run id")
            spec = snapshot.from_dict(meta["spec"])
        except (ValueError, KeyError, TypeError, AttributeError):
            raise UnknownRun(f"run {run_id!r}: its metadata {meta_path} is corrupt or "
                             "unreadable; the run cannot be resumed") from None
        return RunInfo(run_id, path, meta, spec)

    def list_run_ids(self) -> list[str]:
        try:
            return sorted(p.name for p in self.runs.iterdir()
                          if p.is_dir() and RUN_ID.match(p.name))
        except FileNotFoundError:
            return []


_NEW = ".new-"


def _lock_dir(path: Path, how: int = fcntl.LOCK_EX) -> int:
    """An fd of the folder `path`, flocked (non-blocking; OSError if held).
    A folder cannot be unlinked from under its holder while it has entries,
    unlike a lock file that people delete as "stale"."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, how | fcntl.LOCK_NB)
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

    def acquire(self, timeout: float = 0) -> None:
        make_private_dir(self.path.parent)
        end = time.monotonic() + timeout
        while True:
            try:
                if self._try():
                    break
            except OSError as exc:
                raise StateIOError(f"cannot lock {self.path}: "
                                   f"{describe_os_error(exc)}") from None
            if time.monotonic() >= end:
                owner = self.owner()
                who = f" by pid {owner}" if owner else ""
                raise RunLocked(f"{self.what} is locked{who}, another live dagrun process")
            time.sleep(0.05)
        try:
            write_atomic(self.path.with_suffix(".owner"), str(os.getpid()).encode(),
                         durable=False)
        except StateIOError:
            pass  # the owner file is a courtesy for the error message

    def _try(self) -> bool:
        """Both locks, folder first; False (holding neither) if either is held."""
        fds: list[int] = []
        try:
            fds.append(_lock_dir(self.path.parent))
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

    def __enter__(self) -> Lock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


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
                return _lock_dir(self.dir)
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
