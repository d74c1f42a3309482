"""Kill latency and per-task overhead of dagrun's process pool.

    python bench/kill_latency.py [--timeouts 20] [--tasks 5000] [--repeat 5]

1. Kill latency: a task that hangs is given a 0.2 s timeout; latency = from its
   deadline (submit time + timeout, as the parent computes it) to the moment
   the parent has reaped the process (the AttemptResult is returned after
   waitpid, and the pid is checked gone in /proc). Median and max over N
   timeouts, for a task sleeping in C (dies on SIGTERM), a pure-Python busy
   loop, a catastrophic regex (stuck in C), and a task ignoring SIGTERM with
   timeout_grace = 0 (SIGKILL at the deadline). Also: how long until the
   replacement worker has run a no-op task.
2. Per-task overhead on no-op tasks: dagrun's ProcessExecutor vs the stdlib
   concurrent.futures.ProcessPoolExecutor, both with 2 workers, submitting
   N tasks one by one and collecting every result; median of R repetitions.

The machine is shared and small: read medians, not single runs.
"""

from __future__ import annotations

import argparse
import os
import re
import select
import signal
import statistics
import struct
import sys
import time
from concurrent.futures import ProcessPoolExecutor, wait
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # the dagrun package of this checkout


# ---------------------------------------------------------------- task callables


def noop() -> None:
    return None


def pid() -> int:
    return os.getpid()


def hang_sleep() -> None:
    time.sleep(3600)


def hang_python() -> None:
    while True:
        pass


def hang_regex() -> bool:
    return bool(re.match(r"(a+)+$", "a" * 40 + "b"))


def hang_ignoring_sigterm() -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    while True:
        time.sleep(0.01)


# ---------------------------------------------------------------- measurements


def _attempt(n: int, call: str, timeout: float | None = None, grace: float = 1.0):
    from dagrun.model import Attempt

    return Attempt(run_id="bench", task_id=f"t{n}", number=1, call=f"kill_latency:{call}",
                   kwargs={}, timeout=timeout, timeout_grace=grace)


def _alive(p: int) -> bool:
    try:
        with open(f"/proc/{p}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[0] not in (b"Z", b"X")
    except OSError:
        return False


def _collect(ex, want: int) -> list:
    results: list = []
    while len(results) < want:
        results += ex.poll(None)
    return results


def _exit_watch(worker_pid: int) -> tuple[int, int]:
    """Fork a watcher process that writes the monotonic time (system-wide clock)
    at which `worker_pid` exits (its pidfd turns readable). A process, not a
    thread: a thread would wait for our GIL before it could read the clock."""
    fd = os.pidfd_open(worker_pid)
    r, w = os.pipe()
    child = os.fork()
    if child == 0:
        try:
            select.select([fd], [], [])
            os.write(w, struct.pack("d", time.monotonic()))
        finally:
            os._exit(0)
    os.close(fd)
    os.close(w)
    return child, r


def _exit_time(watch: tuple[int, int]) -> float:
    child, r = watch
    data = os.read(r, 8)
    os.close(r)
    os.waitpid(child, 0)
    return struct.unpack("d", data)[0]


def kill_latency(call: str, grace: float, count: int, timeout: float = 0.2):
    """Seconds from the deadline to: the process exited, the parent reported the
    result (after reaping, killing the group and forking a replacement); and from
    then until the fresh worker has run a no-op."""
    from dagrun.executor.process import ProcessExecutor

    ex = ProcessExecutor(1, base_dir=str(HERE))
    ex.start()
    gone, reported, fresh = [], [], []
    try:
        for n in range(count):
            ex.submit(_attempt(0, "pid"))
            (first,) = _collect(ex, 1)
            worker_pid = first.output
            watch = _exit_watch(worker_pid)
            submitted = time.monotonic()
            ex.submit(_attempt(n, call, timeout, grace))
            (res,) = _collect(ex, 1)
            reaped = time.monotonic()
            assert res.error is not None and res.error.type == "TaskTimeout", res
            assert not _alive(worker_pid), "the timed-out worker is still alive"
            deadline = submitted + timeout
            gone.append(_exit_time(watch) - deadline)
            reported.append(reaped - deadline)
            ex.submit(_attempt(0, "noop"))
            _collect(ex, 1)
            fresh.append(time.monotonic() - reaped)
    finally:
        ex.shutdown()
    return gone, reported, fresh


def ours_per_task(n: int, workers: int = 2) -> float:
    from dagrun.executor.process import ProcessExecutor

    ex = ProcessExecutor(workers, base_dir=str(HERE))
    ex.start()
    try:
        for w in range(workers * 2):  # warm up: import the module in every worker
            ex.submit(_attempt(w, "noop"))
            _collect(ex, 1)
        start = time.perf_counter()
        sent = done = 0
        while done < n:
            while sent < n and ex.free_slots() > 0:
                ex.submit(_attempt(sent, "noop"))
                sent += 1
            done += len(ex.poll(None))
        return (time.perf_counter() - start) / n
    finally:
        ex.shutdown()


def stdlib_per_task(n: int, workers: int = 2) -> float:
    with ProcessPoolExecutor(workers) as pool:
        wait([pool.submit(noop) for _ in range(workers * 2)])
        start = time.perf_counter()
        futures = [pool.submit(noop) for _ in range(n)]
        wait(futures)
        return (time.perf_counter() - start) / n


def ms(xs: list[float]) -> str:
    return f"median {statistics.median(xs) * 1e3:5.2f} ms, max {max(xs) * 1e3:6.2f} ms"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--timeouts", type=int, default=20)
    ap.add_argument("--tasks", type=int, default=5000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs; "
          f"{args.timeouts} timeouts of 0.2 s each")
    print("kill latency from the deadline: process exited | result reported (reaped,")
    print("group killed, replacement forked):")
    fresh_all: list[float] = []
    for label, call, grace in (("sleep in C, SIGTERM", "hang_sleep", 1.0),
                               ("Python busy loop, SIGTERM", "hang_python", 1.0),
                               ("regex stuck in C, SIGTERM", "hang_regex", 1.0),
                               ("ignores SIGTERM, grace 0", "hang_ignoring_sigterm", 0.0)):
        gone, reported, fresh = kill_latency(call, grace, args.timeouts)
        fresh_all += fresh
        print(f"  {label:<27} exited {ms(gone)} | reported {ms(reported)}")
    print(f"replacement worker ready (reap -> no-op done): {ms(fresh_all)}")
    ours = [ours_per_task(args.tasks) for _ in range(args.repeat)]
    std = [stdlib_per_task(args.tasks) for _ in range(args.repeat)]
    print(f"per-task overhead, {args.tasks} no-op tasks, 2 workers, median of {args.repeat}:")
    print(f"  dagrun ProcessExecutor       {statistics.median(ours) * 1e6:7.1f} us/task "
          f"(runs: {', '.join(f'{x * 1e6:.0f}' for x in ours)})")
    print(f"  stdlib ProcessPoolExecutor   {statistics.median(std) * 1e6:7.1f} us/task "
          f"(runs: {', '.join(f'{x * 1e6:.0f}' for x in std)})")


if __name__ == "__main__":
    main()
