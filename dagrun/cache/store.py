"""Cache entries: STATE_DIR/cache/PIPELINE, one append-only file of
checksummed frames (store/records.py) per pipeline.

Why one file and not one per entry: a run reads it once, at its start, into a
dict (a pipeline without entries costs one failed open), and writes the
entries of a batch of completions in one O_APPEND write, so concurrent runs
of the pipeline may append without a lock (a write either lands whole or is
torn at the end, where the checksum rejects it). The newest entry of a key
wins. A line that is torn, corrupt, of another pipeline or of another shape
is skipped: a miss, never a wrong output. `cache clear` and `gc` rewrite the
file atomically (an append racing a rewrite may be lost: a miss later).

An entry: v, pipeline, task, key, parts (key.py), output (the value itself,
so a hit outlives `gc` of the run that made it), output_digest, files_out
(path -> digest), run (the run it came from), created (wall clock), ttl,
and events (those its task emitted, if any: a hit emits them again).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dagrun.errors import StateIOError, UsageError
from dagrun.store.fs import (
    describe_os_error,
    make_private_dir,
    open_state_file,
    read_state_file,
    write_atomic,
)
from dagrun.store.records import frame, unframe

FORMAT = 1


class CacheStore:
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root) / "cache"

    def path(self, pipeline: str) -> Path:
        from dagrun.spec.model import TASK_ID

        if not TASK_ID.fullmatch(pipeline):
            raise UsageError(f"invalid pipeline name {pipeline!r}")
        return self.root / pipeline

    def entries(self, pipeline: str) -> list[dict[str, Any]]:
        """Every well-formed entry of the pipeline, oldest first."""
        path = self.path(pipeline)
        try:
            data = read_state_file(path)
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise StateIOError(f"cannot read {path}: {describe_os_error(exc)}") from None
        out = []
        for line in data.split(b"\n"):
            if not line:
                continue
            try:
                entry = unframe(line)
            except ValueError:
                continue  # torn or corrupt: as if absent
            if well_formed(entry, pipeline):
                out.append(entry)
        return out

    def append(self, pipeline: str, entries: list[dict[str, Any]], *, durable: bool,
               fd: int | None = None) -> None:
        """One O_APPEND write of the entries (to `fd` if given: an open_append())."""
        if not entries:
            return
        path = self.path(pipeline)
        data = b"".join(frame(e) for e in entries)
        own = fd is None
        try:
            if fd is None:
                fd = self.open_append(pipeline)
            try:
                size = os.fstat(fd).st_size
                if size and os.pread(fd, 1, size - 1) != b"\n":
                    # A line torn by a crash or a full disk is ended, or it would
                    # swallow this batch's first entry.
                    data = b"\n" + data
                # One write: concurrent appenders never interleave inside a batch.
                written = os.write(fd, data)
                if written != len(data):  # a full disk: the tail is torn, then rejected
                    raise OSError(28, "short write")
                if durable:
                    os.fsync(fd)
            finally:
                if own:
                    os.close(fd)
        except OSError as exc:
            raise StateIOError(f"cannot write {path}: {describe_os_error(exc)}") from None

    def open_append(self, pipeline: str) -> int:
        path = self.path(pipeline)
        make_private_dir(self.root)
        try:
            return open_state_file(path, os.O_RDWR | os.O_APPEND | os.O_CREAT)
        except OSError as exc:
            raise StateIOError(f"cannot write {path}: {describe_os_error(exc)}") from None

    def replaced(self, pipeline: str, fd: int) -> bool:
        """True if the file was rewritten (`cache clear`, `gc`) or removed since
        `fd` was opened: appends to it would be lost."""
        try:
            st = os.stat(self.path(pipeline), follow_symlinks=False)
            own = os.fstat(fd)
        except OSError:
            return True
        return (st.st_dev, st.st_ino) != (own.st_dev, own.st_ino)

    def pipelines(self) -> list[str]:
        try:
            return sorted(p.name for p in self.root.iterdir()
                          if p.is_file() and not p.name.startswith("."))
        except FileNotFoundError:
            return []
        except OSError as exc:  # e.g. `cache` is a file: one line and exit 4, not a traceback
            raise StateIOError(f"cannot read {self.root}: {describe_os_error(exc)}") from None

    def rewrite(self, pipeline: str, keep: Callable[[dict[str, Any]], bool]) -> int:
        """Keep only the entries `keep` accepts (and the newest of each key);
        the number of entries `keep` refused (superseded, corrupt and foreign
        lines go silently). The file goes when nothing is left."""
        path = self.path(pipeline)
        try:
            raw_lines = sum(1 for line in read_state_file(path).split(b"\n") if line)
        except FileNotFoundError:
            return 0
        except OSError as exc:
            raise StateIOError(f"cannot read {path}: {describe_os_error(exc)}") from None
        newest = _newest(self.entries(pipeline))
        kept = [e for e in newest.values() if keep(e)]
        if len(kept) == raw_lines:
            return 0
        if kept:
            write_atomic(path, b"".join(frame(e) for e in kept))
        else:
            try:
                path.unlink()
            except FileNotFoundError:
                pass
        return len(newest) - len(kept)


def well_formed(e: Any, pipeline: str) -> bool:
    return (isinstance(e, dict) and e.get("v") == FORMAT and e.get("pipeline") == pipeline
            and isinstance(e.get("task"), str) and isinstance(e.get("key"), str)
            and isinstance(e.get("parts"), dict) and isinstance(e.get("run"), str)
            and isinstance(e.get("created"), (int, float)) and "output" in e
            and isinstance(e.get("output_digest"), str)
            and isinstance(e.get("files_out"), dict)
            and (e.get("ttl") is None or isinstance(e.get("ttl"), (int, float)))
            and (isinstance(e.get("events", []), list)
                 and all(isinstance(n, str) for n in e.get("events", []))))


def expired(entry: dict[str, Any], ttl: float | None, now: float | None = None) -> bool:
    now = time.time() if now is None else now
    return ttl is not None and now - entry["created"] > ttl


def stale(entry: dict[str, Any], ttl: float | None, now: float | None = None) -> bool:
    """Not usable: past the ttl it was stored with (what `gc` drops it by, as
    gc reads no spec) or past the task's current `ttl` (a shorter one applies
    at once). A longer ttl in the spec does not revive an entry gc may drop."""
    return expired(entry, entry.get("ttl"), now) or expired(entry, ttl, now)


def clear(store: CacheStore, pipeline: str | None, task: str | None) -> int:
    """Drop the entries of a pipeline (of one task), or of every pipeline."""
    if task is not None and pipeline is None:
        raise UsageError("a TASK needs its PIPELINE")
    dropped = 0
    for name in [pipeline] if pipeline else store.pipelines():
        dropped += store.rewrite(name, lambda e: task is not None and e["task"] != task)
    return dropped


def drop_expired(store: CacheStore, *, dry_run: bool = False,
                 now: float | None = None) -> int:
    """`gc`: entries past the ttl they were stored with go (superseded ones too,
    silently); how many expired."""
    now = time.time() if now is None else now
    if dry_run:
        return sum(1 for e in listing(store, now=now) if e["expired"])
    return sum(store.rewrite(name, lambda e: not expired(e, e.get("ttl"), now))
               for name in store.pipelines())


def listing(store: CacheStore, pipeline: str | None = None,
            now: float | None = None) -> list[dict[str, Any]]:
    """The usable-looking entries (newest of each key), for `cache list`."""
    now = time.time() if now is None else now
    out = []
    for name in [pipeline] if pipeline else store.pipelines():
        for e in _newest(store.entries(name)).values():
            ttl = e.get("ttl")
            out.append({"pipeline": name, "task": e["task"], "key": e["key"],
                        "run_id": e["run"], "created_at": e["created"],
                        "expires_at": None if ttl is None else e["created"] + ttl,
                        "expired": expired(e, ttl, now), "files_out": sorted(e["files_out"])})
    return out


def _newest(entries: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """The newest entry of each (task, key), in the order they were written."""
    newest: dict[tuple[str, str], dict[str, Any]] = {}
    for e in entries:
        newest.pop((e["task"], e["key"]), None)  # re-inserted last: the file keeps its order
        newest[e["task"], e["key"]] = e
    return newest
