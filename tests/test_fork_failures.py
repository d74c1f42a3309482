"""Forks that fail (EAGAIN at a process limit, ENOMEM) and forks that are unsafe.

A real fork failure needs a process limit, which root ignores: os.fork is made
to fail here by fault injection, as test_full_disk does with RLIMIT_FSIZE. The
executor around it is real: its workers, pipes and the fds it holds."""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path

import pytest

from dagrun.errors import ExecutorLost
from dagrun.executor.process import ProcessExecutor
from dagrun.model import Attempt

TASKS_DIR = Path(__file__).parent / "tasks"


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def attempt(n: int, call: str) -> Attempt:
    return Attempt(run_id="r", task_id=f"t{n}", number=1, call=call, kwargs={},
                   timeout=None, timeout_grace=1.0, memory_limit=None)


class FailingFork:
    """os.fork that fails with EAGAIN on the calls numbered in `fail` (1-based)."""

    def __init__(self, fail: set[int] | None = None) -> None:
        self.real, self.calls, self.fail = os.fork, 0, fail

    def __call__(self) -> int:
        self.calls += 1
        if self.fail is None or self.calls in self.fail:
            raise OSError(errno.EAGAIN, os.strerror(errno.EAGAIN))
        return self.real()


@pytest.mark.parametrize("fail", [None, {2}], ids=["worker", "sentinel"])
def test_a_failed_fork_at_start_leaks_nothing_and_is_one_clear_error(monkeypatch, fail):
    before = open_fds()
    monkeypatch.setattr(os, "fork", FailingFork(fail))
    ex = ProcessExecutor(1, base_dir=str(TASKS_DIR))
    with pytest.raises(ExecutorLost, match="could not start any worker process: fork failed"):
        ex.start()
    ex.shutdown()
    assert open_fds() == before  # the pipes of the worker that was never born


def test_a_failed_fork_when_replacing_a_dead_worker_is_retried(monkeypatch):
    notes: list[str] = []
    ex = ProcessExecutor(1, base_dir=str(TASKS_DIR), notify=notes.append)
    ex.start()
    try:
        fork = FailingFork()  # every fork fails, until `fail` is emptied below
        monkeypatch.setattr(os, "fork", fork)
        ex.submit(attempt(1, "misbehave:kill_self"))
        results: list = []
        end = time.monotonic() + 30  # generous: a shared CI machine
        while not results:
            assert time.monotonic() < end
            results = ex.poll(0.5)
        assert results[0].error.type == "WorkerCrashed"
        assert ex.free_slots() == 0
        assert notes == ["warning: cannot start a worker (fork failed: Resource temporarily "
                         "unavailable); running with 0 of 1, retrying every 1s"]
        fork.fail = set()  # the process table has room again
        while not ex.free_slots():
            assert time.monotonic() < end, "the worker was never replaced"
            ex.poll(0.5)
        ex.submit(attempt(2, "basic:const"))
        while not (done := ex.poll(0.5)):
            assert time.monotonic() < end
        assert done[0].ok
        assert len(notes) == 1  # one line, not one per retry
    finally:
        ex.shutdown()


def test_threads_in_dagrun_at_fork_time_are_reported_once(cli, write):
    spec = write("p.toml", """
        [pipeline]
        workers = 2
        [tasks.a]
        call = "starts_thread:noop"
        [tasks.b]
        call = "starts_thread:noop"
    """)
    r = cli("run", str(spec), "--json")
    assert r.code == 0, r.stderr
    lines = [x for x in r.stderr.splitlines() if "thread(s)" in x]
    assert lines == ["dagrun: warning: 1 thread(s) run in dagrun when it forks workers "
                     "(exporter), probably started by a task module at import; a worker may "
                     "deadlock on a lock such a thread held"], r.stderr
