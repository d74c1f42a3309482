"""The live marker of a run, `runs/RUN_ID/live` (see history.py for how it is
read): the driver's pid, the process's start time (field 22 of /proc/PID/stat)
and the boot id, written right after the run's lock is taken and removed
before it is released. Moved out of history.py whole, so that every run does
not import the run history to write it."""

from __future__ import annotations

import os
from pathlib import Path

from dagrun.errors import DagrunError

LIVE = "live"


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as fh:
            return fh.read().strip()
    except OSError:
        return ""


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot; None if no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    # After the command name: state is field 3, starttime field 22.
    if len(fields) < 20 or fields[0] in (b"Z", b"X"):
        return None  # a zombie has finished driving anything
    return fields[19].decode()


def _my_marker() -> bytes:
    return f"{os.getpid()} {_start_time(os.getpid())} {_boot_id()}\n".encode()


def mark_live(run_path: Path) -> None:
    """Called by the lock holder, right after taking the run's lock."""
    from dagrun.store.fs import write_atomic

    try:
        write_atomic(run_path / LIVE, _my_marker(), durable=False)
    except DagrunError:
        pass  # without it the run reads as crashed while it runs; it still runs


def clear_live(run_path: Path) -> None:
    """Called before the run's lock is released; removes only our own marker
    (a process that failed to take the lock must not remove the holder's)."""
    path = run_path / LIVE
    try:
        if path.read_bytes() == _my_marker():
            path.unlink()
    except OSError:
        pass


def is_live(run_path: Path) -> bool:
    try:
        pid, start, boot = (run_path / LIVE).read_text().split()
        return boot == _boot_id() and _start_time(int(pid)) == start
    except (OSError, ValueError):
        return False
