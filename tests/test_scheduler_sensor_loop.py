"""Sensors and loops in the scheduler loop on its own (in-memory executor,
injected clocks; see tests/test_scheduler.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from test_scheduler import FakeExecutor, make

from dagrun.model import Attempt, AttemptResult, TaskState
from dagrun.pipeline import Pipeline
from dagrun.store.journal import read_journal


class LoopExecutor(FakeExecutor):
    """Runs a loop's predicate on each iteration's output, as the worker does."""

    def poll(self, timeout: float | None) -> list[AttemptResult]:
        by_number = {(a.task_id, a.number): a for _, a in self.running}
        out = []
        for r in super().poll(timeout):
            a = by_number[(r.task_id, r.number)]
            if a.loop is not None and r.error is None and a.loop["until"]:
                from dagrun.callables import resolve

                r = AttemptResult(r.task_id, r.number, output=r.output,
                                  stop=bool(resolve(a.loop["until"])(r.output)))
            out.append(r)
        return out


def test_sensor_polls_at_the_interval_holding_no_worker(tmp_path: Path) -> None:
    p = Pipeline("sense")
    p.task("s", "m:sense", sensor={"interval": "10s", "timeout": "1h"})
    p.task("busy", "m:f", priority=-1)
    ready_at = 125.0

    def outcome(a: Attempt, now: float) -> Any:
        if a.task_id == "s":
            return "ready" if now >= ready_at else None
        return "busy"

    sched, ex, rec, _ = make(tmp_path, p, outcome, slots=1)
    result = sched.run()
    s = result.tasks["s"]
    assert s.state == "completed" and s.output == "ready"
    # One worker: the other task ran in the first wait, not after the sensor.
    order = [(t, at) for t, _, at in ex.started]
    assert order[:2] == [("s", 100.0), ("busy", 101.0)]
    # Polls take 1 s, then 10 s of waiting on a timer: every 11 s.
    assert [at for t, at in order if t == "s"] == [100.0, 111.0, 122.0, 133.0]
    assert s.attempts == 1  # polls are not attempts against the retries
    assert s.extra == {"polls": 4, "last_poll_at": 1_800_000_000.0 + 134.0}
    assert rec.changes(TaskState.RETRYING) == [("s", "retrying")] * 3
    # Every record of the sensor keeps the window's start (a resume keeps the deadline).
    recs = [r for r in read_journal(tmp_path / "journal").records if r.get("task") == "s"]
    assert all(r["sensor_started"] == 1_800_000_100.0 for r in recs if r["state"] != "completed")


def test_sensor_timeout_is_a_failure_retried_per_retries(tmp_path: Path) -> None:
    p = Pipeline("sense")
    p.task("s", "m:sense", sensor={"interval": "10s", "timeout": "25s"}, retries=1,
           retry_delay=0, retry_jitter=False)
    p.task("after", "m:f", deps=["s"])

    sched, ex, _, _ = make(tmp_path, p, lambda a, now: None)
    result = sched.run()
    s = result.tasks["s"]
    assert s.state == "dead_lettered" and s.attempts == 2
    assert s.error is not None and s.error.startswith("SensorTimeout:")
    assert result.tasks["after"].state == "skipped"
    # Window of 25 s from the first poll: polls at 0, 11, 22 and, cut short to
    # the deadline, 25 (s) -> timeout; the retry opens a new window.
    starts = [at - 100.0 for _, _, at in ex.started]
    assert starts == [0.0, 11.0, 22.0, 25.0, 26.0, 37.0, 48.0, 51.0]


def test_sensor_poll_that_raises_is_a_failure(tmp_path: Path) -> None:
    p = Pipeline("sense")
    p.task("s", "m:sense", sensor={"interval": "10s"})

    def outcome(a: Attempt, now: float) -> Any:
        raise OSError("mount gone")

    sched, _, _, _ = make(tmp_path, p, outcome)
    result = sched.run()
    assert result.tasks["s"].state == "dead_lettered"
    assert result.tasks["s"].error == "OSError: mount gone"


def test_loop_iterations_until_the_predicate(tmp_path: Path) -> None:
    p = Pipeline("loop")
    p.task("l", "m:f", repeat={"until": "pc_kinds:at_least", "max_iterations": 10})
    seen = []

    def outcome(a: Attempt, now: float) -> Any:
        assert a.loop is not None
        seen.append((a.loop["iteration"], a.loop["previous"]))
        return (a.loop["previous"] or 0) + 1

    sched = make(tmp_path, p, outcome)[0]
    sched.executor = LoopExecutor(sched.executor.clock, outcome)  # type: ignore[attr-defined]
    result = sched.run()
    t = result.tasks["l"]
    assert seen == [(0, None), (1, 1), (2, 2)]
    assert t.state == "completed" and t.output == 3
    assert t.extra == {"iterations": 3, "stopped_by": "predicate"}


def test_loop_cap_and_fail_on_max(tmp_path: Path) -> None:
    for fail_on_max, state in ((False, "completed"), (True, "dead_lettered")):
        p = Pipeline("loop")
        p.task("l", "m:f", repeat={"until": "pc_kinds:never", "max_iterations": 4,
                                   "delay": "5s", "fail_on_max": fail_on_max})
        (tmp_path / state).mkdir()
        sched = make(tmp_path / state, p, lambda a, now: a.loop["iteration"])[0]
        sched.executor = LoopExecutor(sched.executor.clock,  # type: ignore[attr-defined]
                                      lambda a, now: a.loop["iteration"])
        ex = sched.executor
        result = sched.run()
        t = result.tasks["l"]
        assert t.state == state
        assert t.extra == {"iterations": 4, "stopped_by": "max_iterations"}
        # Iterations take 1 s, with the 5 s delay between them on a timer.
        assert [at - 100.0 for _, _, at in ex.started] == [0.0, 6.0, 12.0, 18.0]
        if fail_on_max:
            assert t.error is not None and t.error.startswith("LoopMaxIterations")
        else:
            assert t.output == 3


def test_a_failed_iteration_is_retried_not_the_loop(tmp_path: Path) -> None:
    p = Pipeline("loop")
    p.task("l", "m:f", repeat={"max_iterations": 3}, retries=1, retry_delay=0)
    fails = iter([False, True, False, False])
    seen = []

    def outcome(a: Attempt, now: float) -> Any:
        seen.append(a.loop["iteration"])
        if next(fails):
            raise RuntimeError("flaky")
        return a.loop["iteration"] * 10

    sched, _, _, _ = make(tmp_path, p, outcome)
    result = sched.run()
    assert seen == [0, 1, 1, 2]
    assert result.tasks["l"].state == "completed" and result.tasks["l"].output == 20
