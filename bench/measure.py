"""Running one measurement in a subprocess while watching its process tree.

Peak memory of the tree is the largest sum of PSS (proportional set size:
shared pages split between the processes sharing them, so forked workers are
not counted twice) seen by a sampler thread; peak RSS of the root process is
its VmHWM (the kernel's own high-water mark).
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass

SAMPLE_EVERY = 0.05  # seconds


@dataclass
class Measured:
    wall: float        # seconds, process start to exit
    code: int
    stdout: bytes
    stderr: bytes
    tree_mb: float     # peak PSS of the process tree
    root_mb: float     # peak RSS (VmHWM) of the root process


def _children_map() -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                ppid = int(fh.read().rsplit(b")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        out.setdefault(ppid, []).append(int(entry))
    return out


def tree(pid: int) -> list[int]:
    children = _children_map()
    out, stack = [], [pid]
    while stack:
        p = stack.pop()
        out.append(p)
        stack += children.get(p, [])
    return out


def _kb(path: str, field: str) -> int:
    try:
        with open(path, "rb") as fh:
            for line in fh:
                if line.startswith(field):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class Sampler(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.stop = threading.Event()
        self.tree_kb = 0
        self.root_kb = 0

    def run(self) -> None:
        while not self.stop.is_set():
            total = sum(_kb(f"/proc/{p}/smaps_rollup", b"Pss:") for p in tree(self.pid))
            self.tree_kb = max(self.tree_kb, total)
            self.root_kb = max(self.root_kb, _kb(f"/proc/{self.pid}/status", b"VmHWM:"))
            self.stop.wait(SAMPLE_EVERY)


def run(cmd: list[str], *, env: dict[str, str] | None = None, cwd: str | None = None,
        on_start: object = None) -> Measured:
    """Run `cmd`, sampling its tree; `on_start(proc)` (optional) runs while it goes."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                env=env, cwd=cwd)
        sampler = Sampler(proc.pid)
        sampler.start()
        if on_start is not None:
            on_start(proc)  # type: ignore[operator]
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        sampler.stop.set()
        sampler.join()
        out.seek(0)
        err.seek(0)
        root_kb = max(sampler.root_kb, usage.ru_maxrss)
        return Measured(wall, proc.returncode, out.read(), err.read(), sampler.tree_kb / 1024,
                        root_kb / 1024)
