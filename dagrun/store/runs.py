"""State-directory layout, run ids and run metadata (the locks: locks.py).

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
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dagrun.errors import StateIOError, UnknownRun, UsageError
from dagrun.spec import PipelineSpec, snapshot
from dagrun.store.fs import (
    describe_os_error,
    file_identity,
    fsync_dir,
    make_private_dir,
    pid_alive,
    read_state_file,
    write_atomic,
)
from dagrun.store.locks import Lock, PipelineLock, lock_dir
from dagrun.store.records import RUN_FORMAT, frame, new_nonce, unframe

# Re-exported: api.py imports these from here (they moved to store/fs.py and
# store/locks.py).
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
    return f"{stamp}{int(now * 1000) % 1000:03d}-{os.urandom(3).hex()}"


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
        tmp = self.runs / f"{_NEW}{run_id}-{os.getpid()}-{os.urandom(4).hex()}"
        held = -1
        try:
            tmp.mkdir(mode=0o700)
            held = lock_dir(tmp)
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
                import shutil  # only to clean up (shutil costs ~2 ms of every run's start)

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
                fd = lock_dir(folder)
            except OSError:
                continue  # held (a live builder), or gone already
            try:
                import shutil

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
        """Every run folder's id, sorted (ids are time-sortable: oldest first)."""
        try:
            return sorted(p.name for p in self.runs.iterdir()
                          if p.is_dir() and RUN_ID.fullmatch(p.name))
        except FileNotFoundError:
            return []


_NEW = ".new-"
