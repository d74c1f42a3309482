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

from dagrun.errors import RunLocked, StateIOError, UnknownRun, UsageError
from dagrun.spec import PipelineSpec
from dagrun.store.journal import describe_os_error, fsync_dir
from dagrun.store.records import RUN_FORMAT, frame, new_nonce, unframe

RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def file_identity(path: Path) -> tuple[int, int, int] | None:
    """Changes when the file is replaced or rewritten (None: it does not exist)."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


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


def make_private_dir(path: Path) -> None:
    """Create `path` and any missing parents 0700 (mkdir(parents=True) would
    give the parents the umask's mode)."""
    try:
        if not path.parent.exists():
            make_private_dir(path.parent)
        path.mkdir(mode=0o700, exist_ok=True)
    except OSError as exc:
        raise StateIOError(f"cannot create {path}: {describe_os_error(exc)}") from None


def write_atomic(path: Path, data: bytes, *, durable: bool = True) -> None:
    """Temp file + fsync + rename (+ fsync of the folder): all or nothing."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        if durable:
            fsync_dir(path.parent)
    except OSError as exc:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise StateIOError(f"cannot write {path}: {describe_os_error(exc)}") from None


@dataclass(frozen=True)
class RunInfo:
    run_id: str
    path: Path
    meta: dict[str, Any]
    snapshot: PipelineSpec | None = None  # the spec, once built from meta["spec"]

    @property
    def spec(self) -> PipelineSpec:
        return self.snapshot or PipelineSpec.from_dict(self.meta["spec"])

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
        killed half-way never leaves a run that neither `run` nor `resume` accepts."""
        make_private_dir(self.runs)
        path = self.run_path(run_id)
        exists = UsageError(f"run {run_id!r} already exists in {self.root}; choose a new "
                            f"--run-id or `dagrun resume {run_id}`")
        if (path / "run.json").exists():
            raise exists
        meta = {"v": RUN_FORMAT, "run_id": run_id, "nonce": new_nonce(), "pipeline": spec.name,
                "created": time.time(), "settings": settings, "spec": spec.to_dict()}
        tmp = self.runs / f".new-{run_id}-{os.getpid()}-{secrets.token_hex(4)}"
        try:
            tmp.mkdir(mode=0o700)
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
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return RunInfo(run_id, path, meta, spec)

    def open_run(self, run_id: str) -> RunInfo:
        path = self.run_path(run_id)
        meta_path = path / "run.json"
        try:
            data = meta_path.read_bytes()
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
            snapshot = PipelineSpec.from_dict(meta["spec"])
        except (ValueError, KeyError, TypeError, AttributeError):
            raise UnknownRun(f"run {run_id!r}: its metadata {meta_path} is corrupt or "
                             "unreadable; the run cannot be resumed") from None
        return RunInfo(run_id, path, meta, snapshot)

    def list_run_ids(self) -> list[str]:
        try:
            return sorted(p.name for p in self.runs.iterdir()
                          if p.is_dir() and RUN_ID.match(p.name))
        except FileNotFoundError:
            return []


class Lock:
    """A non-blocking, kernel-released lock (flock) naming its owner pid.

    flock directly rather than through the filelock package, whose import
    alone (logging, inspect, asyncio helpers) cost ~50 ms of every run's and
    resume's start-up here; the lock taken is the same (filelock uses flock on
    Unix), so either side can hold it against the other.
    """

    def __init__(self, path: Path, what: str) -> None:
        self.path = path
        self.what = what
        self._fd = -1

    def acquire(self, timeout: float = 0) -> None:
        make_private_dir(self.path.parent)
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise StateIOError(f"cannot lock {self.path}: {describe_os_error(exc)}") from None
        end = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    os.close(fd)
                    raise StateIOError(f"cannot lock {self.path}: "
                                       f"{describe_os_error(exc)}") from None
            if time.monotonic() >= end:
                os.close(fd)
                owner = self.owner()
                who = f" by pid {owner}" if owner else ""
                raise RunLocked(f"{self.what} is locked{who}, another live dagrun process")
            time.sleep(0.05)
        self._fd = fd
        try:
            write_atomic(self.path.with_suffix(".owner"), str(os.getpid()).encode(),
                         durable=False)
        except StateIOError:
            pass  # the owner file is a courtesy for the error message

    def owner(self) -> int | None:
        try:
            return int(self.path.with_suffix(".owner").read_text().strip())
        except (OSError, ValueError):
            return None

    def release(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)  # closing the only descriptor releases the flock

    def __enter__(self) -> Lock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class PipelineLock:
    """STATE/locks/NAME.lock: who runs this pipeline right now (`--if-running`).

    Every live run (and resume) of the pipeline holds it *shared* for its whole
    life, so runs started without --if-running may overlap but are still seen
    as live. `run --if-running` first needs it *exclusive* for an instant (no
    live run at all), then downgrades to shared. flock locks are released by
    the kernel when their holder dies, so a killed run never blocks the next.
    """

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
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise StateIOError(f"cannot open {self.path}: {describe_os_error(exc)}") from None

    def _try(self, how: int) -> bool:
        try:
            fcntl.flock(self._fd, how | fcntl.LOCK_NB)
            return True
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                return False
            raise StateIOError(f"cannot lock {self.path}: {describe_os_error(exc)}") from None

    def hold_shared(self, run_id: str, wait: float = 10.0) -> None:
        """Mark one more live run. An exclusive holder only holds it for an
        instant (while checking), so this waits a little, then goes on without."""
        self._open()
        end = time.monotonic() + wait
        while not self._try(fcntl.LOCK_SH):
            if time.monotonic() >= end:
                return
            time.sleep(0.01)
        self._write_owner(run_id)

    def claim(self, run_id: str, wait: float | None) -> bool:
        """Become the only live run (then hold shared): False if another is live
        after `wait` seconds (0: don't wait; None: wait as long as it takes)."""
        self._open()
        end = None if wait is None else time.monotonic() + wait
        delay = 0.01
        while not self._try(fcntl.LOCK_EX):
            if end is not None and time.monotonic() >= end:
                return False
            time.sleep(delay if end is None else max(0.0, min(delay, end - time.monotonic())))
            delay = min(delay * 2, 0.25)
        fcntl.flock(self._fd, fcntl.LOCK_SH)  # downgrade: later plain runs may join
        self._write_owner(run_id)
        return True

    def owner(self) -> str:
        """" (pid N, run R)" of the last run that took the lock, if known."""
        try:
            pid, run_id = self.path.with_suffix(".owner").read_text().split()[:2]
            return f" (pid {int(pid)}, run {run_id})"
        except (OSError, ValueError):
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
