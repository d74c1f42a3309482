"""ProcessExecutor driven directly: the cases the CLI cannot pin down exactly
(what a queued attempt gets when its worker dies, cancel, shutdown)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from dagrun.executor.process import ProcessExecutor
from dagrun.model import Attempt

TASKS_DIR = Path(__file__).parent / "tasks"


def attempt(n: int, call: str, timeout: float | None = None, grace: float = 1.0,
            memory_limit: int | None = None, **kwargs) -> Attempt:
    return Attempt(run_id="r", task_id=f"t{n}", number=1, call=call, kwargs=kwargs,
                   timeout=timeout, timeout_grace=grace, memory_limit=memory_limit)


def collect(ex: ProcessExecutor, want: int, limit: float = 30.0) -> list:
    # Generous limit: these take milliseconds, but CI boxes are shared.
    results: list = []
    end = time.monotonic() + limit
    while len(results) < want:
        assert time.monotonic() < end, f"only {len(results)} of {want} results"
        results += ex.poll(0.5)
    return results


@pytest.fixture
def pool():
    ex = ProcessExecutor(1, base_dir=str(TASKS_DIR))
    ex.start()
    yield ex
    ex.shutdown()


def test_queued_attempt_behind_a_timeout_comes_back_cancelled(pool):
    # Make the worker look like it runs short tasks (the first call imports the
    # module: not short), so that it accepts a queued one.
    from dagrun.executor.process import SHORT_TASK

    for _ in range(50):  # a loaded machine can make one call slow: try again
        pool.submit(attempt(0, "basic:const"))
        collect(pool, 1)
        if all(w.last_duration < SHORT_TASK for w in pool._workers.values()):
            break
    pool.submit(attempt(1, "misbehave:hang_sleep", timeout=0.2, grace=0))
    assert pool.free_slots() == 1  # prefetch: one more may queue behind it
    pool.submit(attempt(2, "basic:const", value=2))
    results = {r.task_id: r for r in collect(pool, 2)}
    assert results["t1"].error.type == "TaskTimeout"
    assert results["t2"].cancelled and results["t2"].error is None  # never started
    pool.submit(attempt(3, "basic:const", value=3))
    (again,) = collect(pool, 1)
    assert again.output == 3


def test_a_timeout_counts_from_when_a_queued_attempt_starts(pool):
    """An attempt queued behind a short one gets its deadline when it becomes
    the worker's head, and is killed at it."""
    from dagrun.executor.process import SHORT_TASK

    for _ in range(50):  # a loaded machine can make one call slow: try again
        pool.submit(attempt(0, "basic:const"))
        collect(pool, 1)
        if all(w.last_duration < SHORT_TASK for w in pool._workers.values()):
            break
    pool.submit(attempt(1, "basic:const", value=1))
    assert pool.free_slots() == 1  # prefetch: one more may queue behind it
    pool.submit(attempt(2, "misbehave:hang_sleep", timeout=0.3, grace=0))
    started = time.monotonic()
    results = {r.task_id: r for r in collect(pool, 2)}
    assert results["t1"].output == 1
    assert results["t2"].error.type == "TaskTimeout"
    assert time.monotonic() - started < 10  # generous: 0.3 s + a fork on a loaded box


def test_cancel_stops_running_attempts_as_cancelled(pool, tmp_path):
    ready = tmp_path / "ready"
    pool.submit(attempt(1, "misbehave:ignore_sigterm", marker=str(ready)))
    assert pool.poll(0) == []  # a request is written at the next poll
    # The task writes the marker after ignoring SIGTERM: from then on only the
    # SIGKILL after the grace can stop it. Generous: a loaded box forks slowly.
    end = time.monotonic() + 30
    while not ready.exists():
        assert time.monotonic() < end, "the task never got to ignore SIGTERM"
        time.sleep(0.01)
    started = time.monotonic()
    results = pool.cancel(grace=0.2)
    elapsed = time.monotonic() - started
    assert [r.cancelled for r in results] == [True]
    assert elapsed >= 0.2  # SIGTERM was ignored: it took the SIGKILL after the grace
    assert elapsed < 10  # generous: grace 0.2 s + reaping


def test_memory_breach_retires_the_worker(pool):
    pool.submit(attempt(1, "misbehave:pid"))
    (first,) = collect(pool, 1)
    pool.submit(attempt(2, "misbehave:leak", memory_limit=64 * 1024 * 1024))
    (res,) = collect(pool, 1)
    assert res.error.type == "MemoryLimitExceeded"
    assert "MemoryError" in res.error.types
    assert res.error.message == "exceeded memory_limit 64MiB"
    end = time.monotonic() + 30  # generous: reaping and forking take milliseconds
    while pool.free_slots() == 0:
        assert time.monotonic() < end
        assert pool.poll(0.1) == []
    pool.submit(attempt(3, "misbehave:pid"))
    (after,) = collect(pool, 1)
    assert after.ok and after.output != first.output  # a fresh worker


def test_shutdown_leaves_no_worker(isolated):
    ex = ProcessExecutor(3, base_dir=str(TASKS_DIR))
    ex.start()
    pids = [w.pid for w in ex._workers.values()] + [w.sentinel for w in ex._workers.values()]
    ex.submit(attempt(1, "misbehave:hang_sleep"))
    ex.shutdown()
    for pid in pids:
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # reaped already: not even a zombie
