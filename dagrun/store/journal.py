"""The per-run journal: an append-only file of checksummed records.

Records are appended in batches, one write() per batch (group commit), before
the scheduler acts on them. Durability modes:

- fast:    the batch is handed to the kernel with one write(); it survives
           SIGKILL of dagrun at any instant, not a power cut.
- atomic:  as fast, and the journal is also fdatasynced within a second of
           any write (the scheduler loop calls tick()) and when the run stops,
           which bounds what a power cut can lose to about a second. The default:
           it costs the same as fast (see bench/durability.py).
- durable: every batch is fdatasynced before the scheduler acts on it, except
           batches appended with sync=False (the `running` records of a
           dispatch): those reach the disk with the next synced batch. Losing
           one to a power cut changes nothing resume does, since a task shown
           `pending` and one shown `running` are both run again, and an
           attempt cut short by dagrun's death never counts against retries.
           This halves the fdatasyncs of short tasks.

A batch torn by a crash or a full disk leaves at most one partial line at the
end; its checksum rejects it on read and the next writer starts on a new line.
Records are sealed by the run's Chain (records.py) as they are framed, so the
chain a crash leaves is always whole up to the cut.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dagrun.errors import StateIOError
from dagrun.store.fs import describe_os_error, fsync_dir, open_state_file, read_state_file
from dagrun.store.records import Chain, frame, short_digest, unframe

_ATOMIC_SYNC_INTERVAL = 1.0


class Journal:
    def __init__(self, path: Path, durability: str = "fast", chain: Chain | None = None) -> None:
        self.path = path
        self.durability = durability
        self.chain = chain
        self._last_sync = time.monotonic()
        self._dirty = False
        try:
            created = not path.exists()
            self._fd = open_state_file(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
            if created and durability != "fast":
                fsync_dir(path.parent)  # the file's name must survive a power cut too
            # A line torn by an earlier crash (no newline: never a whole record)
            # is cut off, so it neither swallows the next record nor warns forever.
            size = os.fstat(self._fd).st_size
            if size and _last_byte(path) != b"\n":
                os.ftruncate(self._fd, _end_of_last_line(path, size))
        except OSError as exc:
            raise StateIOError(f"cannot open {path}: {describe_os_error(exc)}") from None

    def append(self, records: Iterable[dict[str, Any]], *, sync: bool = True) -> None:
        if self.chain is not None:
            data = self.chain.seal_all(records)
        else:
            data = b"".join([frame(r) for r in records])
        if not data:
            return
        try:
            view = memoryview(data)
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
            self._dirty = True
            if self.durability == "durable" and sync:
                os.fdatasync(self._fd)
                self._dirty = False
            elif self.durability == "atomic":
                now = time.monotonic()
                if now - self._last_sync >= _ATOMIC_SYNC_INTERVAL:
                    os.fdatasync(self._fd)
                    self._last_sync = now
                    self._dirty = False
        except OSError as exc:
            raise StateIOError(
                f"cannot write {self.path}: {describe_os_error(exc)}; the records written "
                "before this stay valid: once this is fixed, continue with `dagrun resume "
                f"{self.path.parent.name}`"
            ) from None

    def sync_due_in(self) -> float | None:
        """Seconds until an unsynced write must be synced (atomic mode), else None."""
        if self.durability != "atomic" or not self._dirty:
            return None
        return max(0.0, self._last_sync + _ATOMIC_SYNC_INTERVAL - time.monotonic())

    def tick(self) -> None:
        """Sync if a write has waited a second for it (atomic mode)."""
        # sync_due_in(), inlined: the scheduler calls this once per loop turn.
        if (self._dirty and self.durability == "atomic"
                and time.monotonic() - self._last_sync >= _ATOMIC_SYNC_INTERVAL):
            try:
                os.fdatasync(self._fd)
            except OSError as exc:
                raise StateIOError(f"cannot sync {self.path}: {describe_os_error(exc)}; "
                                   "continue with `dagrun resume "
                                   f"{self.path.parent.name}` once this is fixed") from None
            self._last_sync = time.monotonic()
            self._dirty = False

    def close(self) -> None:
        """The last sync: a failure is a failed write (StateIOError), never ignored."""
        if self._fd < 0:
            return
        fd, self._fd = self._fd, -1
        failure: OSError | None = None
        try:
            if self._dirty and self.durability != "fast":
                os.fsync(fd)
                self._dirty = False
        except OSError as exc:
            failure = exc
        try:
            os.close(fd)
        except OSError as exc:
            failure = failure or exc
        if failure is not None:
            raise StateIOError(
                f"cannot sync {self.path}: {describe_os_error(failure)}; the last records "
                "may not be on disk: once this is fixed, continue with `dagrun resume "
                f"{self.path.parent.name}`")


def _end_of_last_line(path: Path, size: int) -> int:
    """The offset just past the last newline of the file (0 if it has none)."""
    with open(path, "rb") as fh:
        end = size
        while end > 0:
            start = max(0, end - 65536)
            fh.seek(start)
            block = fh.read(end - start)
            cut = block.rfind(b"\n")
            if cut >= 0:
                return start + cut + 1
            end = start
    return 0


def _last_byte(path: Path) -> bytes:
    with open(path, "rb") as fh:
        fh.seek(-1, os.SEEK_END)
        return fh.read(1)


@dataclass
class JournalContents:
    records: list[dict[str, Any]] = field(default_factory=list)
    digests: list[str] = field(default_factory=list)  # each record's short digest
    lines: list[int] = field(default_factory=list)  # each record's 1-based line number
    bad_lines: list[int] = field(default_factory=list)  # 1-based line numbers rejected
    torn_tail: bool = False  # the last line has no newline: cut short by a crash


def read_journal(path: Path) -> JournalContents:
    """Every valid record in order; torn or corrupt lines are listed, never raised."""
    out = JournalContents()
    try:
        data = read_state_file(path)
    except FileNotFoundError:
        return out
    except OSError as exc:
        raise StateIOError(f"cannot read {path}: {describe_os_error(exc)}") from None
    lines = data.split(b"\n")
    for number, line in enumerate(lines, 1):
        if not line:
            continue
        if number == len(lines):  # no newline after it: torn by a crash mid-write
            out.torn_tail = True
            continue
        try:
            record = unframe(line)
        except ValueError:
            out.bad_lines.append(number)
            continue
        if isinstance(record, dict):
            out.records.append(record)
            out.digests.append(short_digest(line))
            out.lines.append(number)
        else:
            out.bad_lines.append(number)
    return out
