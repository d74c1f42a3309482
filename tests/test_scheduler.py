"""The scheduler loop on its own: an in-memory executor and injected clocks.

No worker processes and no sleeping: the fake executor "runs" each attempt
by asking the test's outcome function, and a poll with nothing running moves
the fake clock forward by the time the loop asked to wait. The journal is a
real one in tmp_path (it costs microseconds). The whole file runs in well
under a second, so it can grow with every task kind.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dagrun.events import EventBus, RunFinished, TaskChanged, TaskHeld
from dagrun.model import Attempt, AttemptResult, TaskError, TaskState
from dagrun.pipeline import Pipeline
from dagrun.scheduler import CancelToken, Scheduler
from dagrun.store.journal import Journal, read_journal
from dagrun.transitions import IllegalTransition

Outcome = Callable[[Attempt, float], Any]  # returns an output, or raises to fail


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def mono(self) -> float:
        return self.now

    def wall(self) -> float:
        return 1_800_000_000.0 + self.now


class FakeExecutor:
    """Runs attempts in fake time: each takes `duration` and its result comes
    back from the poll during which that time passes. A poll with nothing due
    within its timeout moves the clock by the timeout and returns nothing, as
    the real one does; `interrupt()` makes the next poll return at once (a
    signal's wake-up)."""

    def __init__(self, clock: Clock, outcome: Outcome, slots: int = 1,
                 duration: float = 1.0) -> None:
        self.clock = clock
        self.outcome = outcome
        self.slots = slots
        self.duration = duration
        self.running: list[tuple[float, Attempt]] = []  # (ends at, attempt)
        self.started: list[tuple[str, int, float]] = []  # task, attempt, fake time
        self.cancelled = 0
        self._woken = False

    def start(self) -> None: ...
    def shutdown(self) -> None: ...
    def add_wakeup_fd(self, fd: int) -> None: ...

    def interrupt(self) -> None:
        self._woken = True

    def free_slots(self) -> int:
        return self.slots - len(self.running)

    def submit(self, attempt: Attempt) -> None:
        self.started.append((attempt.task_id, attempt.number, self.clock.now))
        self.running.append((self.clock.now + self.duration, attempt))

    def poll(self, timeout: float | None) -> list[AttemptResult]:
        if self._woken:
            self._woken = False
            return []
        ends = min((end for end, _ in self.running), default=None)
        if ends is None:
            assert timeout is not None, "the loop would wait forever with nothing running"
            self.clock.now += timeout
            return []
        if timeout is not None and self.clock.now + timeout < ends:
            self.clock.now += timeout
            return []
        self.clock.now = max(self.clock.now, ends)
        done = [a for end, a in self.running if end <= self.clock.now]
        self.running = [(end, a) for end, a in self.running if end > self.clock.now]
        results = []
        for a in done:
            try:
                out = self.outcome(a, self.clock.now)
            except Exception as exc:  # noqa: BLE001 - the task's failure, as data
                results.append(AttemptResult(a.task_id, a.number, error=TaskError(
                    type(exc).__name__, str(exc))))
            else:
                results.append(AttemptResult(a.task_id, a.number, output=out))
        return results

    def cancel(self, grace: float, force: bool = False) -> list[AttemptResult]:
        self.cancelled += 1
        done, self.running = self.running, []
        return [AttemptResult(a.task_id, a.number, cancelled=True) for _, a in done]


class Recorder:
    def __init__(self, journal_path: Path | None = None) -> None:
        self.events: list[Any] = []
        self.journal_path = journal_path

    def on_event(self, event: Any) -> None:
        self.events.append(event)
        if self.journal_path is not None and isinstance(event, TaskChanged):
            # Every event arrives after its record is in the journal.
            written = [r["state"] for r in read_journal(self.journal_path).records
                       if r.get("task") == event.task_id]
            told = [e.new.value for e in self.events
                    if isinstance(e, TaskChanged) and e.task_id == event.task_id]
            assert written[:len(told)] == told

    def changes(self, state: TaskState | None = None) -> list[tuple[str, str]]:
        return [(e.task_id, e.new.value) for e in self.events if isinstance(e, TaskChanged)
                and (state is None or e.new == state)]


def make(tmp_path: Path, pipeline: Pipeline, outcome: Outcome, *, slots: int = 1,
         listeners: list[Any] | None = None, **kwargs: Any) -> tuple[Scheduler, FakeExecutor,
                                                                     Recorder, Clock]:
    clock = Clock()
    journal = Journal(tmp_path / "journal", "fast")
    recorder = Recorder(tmp_path / "journal")
    executor = FakeExecutor(clock, outcome, slots)
    bus = EventBus([recorder, *(listeners or [])])
    sched = Scheduler(pipeline.to_spec(), "r1", journal, executor, bus,
                      clock=clock.mono, wall=clock.wall, rng=random.Random(7), **kwargs)
    return sched, executor, recorder, clock


def ok(attempt: Attempt, _now: float) -> Any:
    return attempt.task_id


def test_priority_then_fifo(tmp_path: Path) -> None:
    p = Pipeline("prio")
    for tid, prio in [("a", 0), ("b", 10), ("c", 10), ("d", 0), ("e", 5)]:
        p.task(tid, "m:f", priority=prio)
    sched, ex, _, _ = make(tmp_path, p, ok)
    result = sched.run()
    assert result.status == "succeeded"
    assert [t for t, _, _ in ex.started] == ["b", "c", "e", "a", "d"]


def test_outputs_flow_to_inputs_and_dependents_wait(tmp_path: Path) -> None:
    p = Pipeline("flow")
    p.task("up", "m:f")
    p.task("down", "m:g", inputs={"x": "up"})
    seen: dict[str, Any] = {}

    def outcome(a: Attempt, _now: float) -> Any:
        seen[a.task_id] = dict(a.kwargs)
        return 41 if a.task_id == "up" else a.kwargs["x"] + 1

    sched, _, _, _ = make(tmp_path, p, outcome, slots=4)
    result = sched.run()
    assert seen["down"] == {"x": 41}
    assert result.tasks["down"].output == 42


def test_retry_timers_wait_out_the_delay(tmp_path: Path) -> None:
    p = Pipeline("retry")
    p.task("t", "m:f", retries=2, retry_delay=5, retry_backoff="fixed", retry_jitter=False)
    fails = iter([True, True, False])

    def outcome(a: Attempt, _now: float) -> Any:
        if next(fails):
            raise ConnectionError("try later")
        return "done"

    sched, ex, rec, _ = make(tmp_path, p, outcome)
    result = sched.run()
    assert result.tasks["t"].state == "completed" and result.tasks["t"].attempts == 3
    starts = [at for _, _, at in ex.started]
    # Each attempt takes 1 s of fake time, then 5 s of delay before the next.
    assert starts == [100.0, 106.0, 112.0]
    assert [n for _, n, _ in ex.started] == [1, 2, 3]
    assert rec.changes(TaskState.RETRYING) == [("t", "retrying")] * 2


def test_cancel_during_a_retry_delay(tmp_path: Path) -> None:
    p = Pipeline("cancel")
    p.task("t", "m:f", retries=3, retry_delay=60, retry_backoff="fixed", retry_jitter=False)
    p.task("after", "m:f", deps=["t"])
    token = CancelToken()

    class StopOnRetry:
        def on_event(self, event: Any) -> None:
            if isinstance(event, TaskChanged) and event.new == TaskState.RETRYING:
                token.request("SIGTERM")

    def outcome(a: Attempt, _now: float) -> Any:
        raise OSError("down")

    sched, ex, _, clock = make(tmp_path, p, outcome, cancel=token, listeners=[StopOnRetry()])
    result = sched.run()
    assert result.status == "cancelled"
    assert result.tasks["t"].state == "cancelled"
    assert result.tasks["after"].state == "cancelled"
    assert len(ex.started) == 1
    assert clock.now < 150  # stopped at once, not after the 60 s delay


def test_cancel_while_running_does_not_count_the_attempt(tmp_path: Path) -> None:
    p = Pipeline("cancel2")
    p.task("t", "m:f")
    token = CancelToken()

    class StopOnStart:
        def on_event(self, event: Any) -> None:
            if isinstance(event, TaskChanged) and event.new == TaskState.RUNNING:
                token.request("SIGINT")
                ex.interrupt()

    sched, ex, _, _ = make(tmp_path, p, ok, cancel=token, listeners=[StopOnStart()])
    result = sched.run()
    assert ex.cancelled == 1
    assert result.tasks["t"].state == "cancelled" and result.tasks["t"].attempts == 0


def test_deadline_from_the_injected_clock(tmp_path: Path) -> None:
    p = Pipeline("deadline")
    for i in range(10):
        p.task(f"t{i}", "m:f")
    sched, ex, _, _ = make(tmp_path, p, ok, deadline=3.5)
    result = sched.run()
    assert result.status == "cancelled"
    assert sum(t.state == "completed" for t in result.tasks.values()) == 3


class HoldUntil:
    """A gate (the breakers' interface) that holds `tid` until fake time `until`."""

    def __init__(self, clock: Clock, tid: str, until: float) -> None:
        self.clock, self.tid, self.until = clock, tid, until
        self.held = False

    def admit(self, tid: str) -> bool:
        if tid == self.tid and self.clock.now < self.until:
            self.held = True
            return False
        return True

    def settle(self, result: AttemptResult) -> None: ...

    def due(self) -> tuple[list[str], list[tuple[str, TaskError]]]:
        if self.held and self.clock.now >= self.until:
            self.held = False
            return [self.tid], []
        return [], []

    def wait_time(self) -> float | None:
        return max(0.0, self.until - self.clock.now) if self.held else None

    def holding(self) -> bool:
        return self.held


def test_gate_holds_without_an_attempt_then_releases(tmp_path: Path) -> None:
    p = Pipeline("gate")
    p.task("guarded", "m:f", priority=10)
    p.task("free", "m:f")
    clock_holder: dict[str, Any] = {}
    sched, ex, rec, clock = make(tmp_path, p, ok)
    gate = HoldUntil(clock, "guarded", 50.0 + clock.now)
    sched.gate = gate
    clock_holder["c"] = clock
    result = sched.run()
    assert result.status == "succeeded"
    assert [t for t, _, _ in ex.started] == ["free", "guarded"]
    guarded_start = [at for t, _, at in ex.started if t == "guarded"][0]
    assert guarded_start >= 150.0
    assert result.tasks["guarded"].attempts == 1
    assert any(isinstance(e, TaskHeld) and e.task_id == "guarded" for e in rec.events)


def test_gate_expiry_dead_letters_and_skips(tmp_path: Path) -> None:
    p = Pipeline("expire")
    p.task("guarded", "m:f")
    p.task("child", "m:f", deps=["guarded"])
    sched, ex, rec, clock = make(tmp_path, p, ok)

    class Expire(HoldUntil):
        def due(self) -> tuple[list[str], list[tuple[str, TaskError]]]:
            if self.held and self.clock.now >= self.until:
                self.held = False
                return [], [(self.tid, TaskError("CircuitOpen", "held too long"))]
            return [], []

    sched.gate = Expire(clock, "guarded", clock.now + 30)
    result = sched.run()
    assert result.status == "failed"
    assert result.tasks["guarded"].state == "dead_lettered"
    assert result.tasks["guarded"].attempts == 0
    assert result.tasks["child"].state == "skipped"
    assert ex.started == []


def test_skip_cascade_after_a_dead_letter(tmp_path: Path) -> None:
    p = Pipeline("skip")
    p.task("a", "m:f")
    p.task("b", "m:f", deps=["a"])
    p.task("c", "m:f", deps=["b"])
    p.task("d", "m:f")

    def outcome(a: Attempt, _now: float) -> Any:
        if a.task_id == "a":
            raise ValueError("bad row")
        return 1

    sched, _, rec, _ = make(tmp_path, p, outcome, slots=2)
    result = sched.run()
    assert {t: r.state for t, r in result.tasks.items()} == {
        "a": "dead_lettered", "b": "skipped", "c": "skipped", "d": "completed"}
    finals = [c for c in rec.changes() if c[1] in ("dead_lettered", "skipped")]
    assert finals == [("a", "dead_lettered"), ("b", "skipped"), ("c", "skipped")]
    assert result.tasks["c"].error == "skipped: upstream task 'a' failed"


def test_the_transition_table_rejects_an_illegal_move(tmp_path: Path) -> None:
    p = Pipeline("illegal")
    p.task("t", "m:f")
    sched, _, _, _ = make(tmp_path, p, ok)
    # (pending -> completed is legal since caching: a cache hit needs no attempt.)
    with pytest.raises(IllegalTransition, match="pending -> failed"):
        sched._transition("t", TaskState.FAILED)


def test_a_failing_listener_is_switched_off_and_the_run_goes_on(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = Pipeline("listener")
    for i in range(5):
        p.task(f"t{i}", "m:f")

    class Broken:
        calls = 0

        def on_event(self, event: Any) -> None:
            Broken.calls += 1
            raise BrokenPipeError(32, "Broken pipe")

    sched, _, rec, _ = make(tmp_path, p, ok, listeners=[Broken()])
    result = sched.run()
    assert result.status == "succeeded"
    assert Broken.calls == 1
    assert isinstance(rec.events[-1], RunFinished)
    assert capsys.readouterr().err.count("switched off") == 1


def test_every_state_change_is_journalled(tmp_path: Path) -> None:
    p = Pipeline("journal")
    p.task("a", "m:f", retries=1, retry_delay=1, retry_jitter=False)
    p.task("b", "m:f", deps=["a"])
    fails = iter([True, False])

    def outcome(a: Attempt, _now: float) -> Any:
        if a.task_id == "a" and next(fails):
            raise OSError("x")
        return 1

    sched, _, rec, _ = make(tmp_path, p, outcome)
    sched.run()
    sched.journal.close()
    records = [(r["task"], r["state"]) for r in read_journal(tmp_path / "journal").records
               if "task" in r]
    assert records == rec.changes()
    assert records == [("a", "running"), ("a", "retrying"), ("a", "pending"), ("a", "running"),
                       ("a", "completed"), ("b", "running"), ("b", "completed")]


def test_a_critical_listener_that_fails_stops_the_run(tmp_path: Path) -> None:
    """The dead-letter office is critical: a letter it failed to write would
    never be written, so its failure must not be switched off quietly."""
    p = Pipeline("critical")
    p.task("t", "m:f")

    class Office:
        critical = True

        def on_event(self, event: Any) -> None:
            if isinstance(event, TaskChanged) and event.new == TaskState.COMPLETED:
                raise PermissionError(13, "Permission denied")

    sched, _, _, _ = make(tmp_path, p, ok, listeners=[Office()])
    with pytest.raises(PermissionError):
        sched.run()


def test_results_are_journalled_before_a_stop_waits_out_its_grace(tmp_path: Path) -> None:
    """A stop that arrives with results just handled: their records are on disk
    before the executor's cancel() (which waits up to the grace) is asked."""
    p = Pipeline("stop")
    p.task("quick", "m:f")
    p.task("slow", "m:f")
    token = CancelToken()

    class StopAfterQuick(FakeExecutor):
        def poll(self, timeout: float | None) -> list[AttemptResult]:
            results = super().poll(timeout)
            if any(r.task_id == "quick" for r in results):
                token.request("SIGTERM")  # arrives in the same poll as the result
            return results

        def cancel(self, grace: float, force: bool = False) -> list[AttemptResult]:
            written = {r.get("task"): r.get("state")
                       for r in read_journal(tmp_path / "journal").records}
            assert written.get("quick") == "completed", written
            return super().cancel(grace, force)

    sched, _, _, clock = make(tmp_path, p, ok, slots=2, cancel=token)
    ex = StopAfterQuick(clock, ok, slots=2)
    ex.duration = 1.0
    sched.executor = ex
    ex_durations = {"quick": 1.0, "slow": 50.0}
    original_submit = ex.submit

    def submit(attempt: Attempt) -> None:
        ex.duration = ex_durations[attempt.task_id]
        original_submit(attempt)

    ex.submit = submit  # type: ignore[method-assign]
    result = sched.run()
    assert result.status == "cancelled"
    assert result.tasks["quick"].state == "completed"
    assert result.tasks["slow"].state == "cancelled"


def test_a_failing_listener_tick_loses_no_record(tmp_path: Path) -> None:
    """A listener whose tick raises (e.g. StateIOError from the cache's store
    on a full disk) stops the run, but every result the executor had handed
    back is on disk: a resume does not run those tasks again."""
    from dagrun.errors import StateIOError

    p = Pipeline("tick")
    p.task("a", "m:f")
    p.task("b", "m:f", deps=["a"])
    p.task("c", "m:f", deps=["b"])

    returned: list[str] = []

    class FailsOnceAResultIsBack:
        task_states: frozenset[TaskState] = frozenset()

        def on_event(self, event: Any) -> None: ...

        def tick(self) -> None:
            if returned:
                raise StateIOError("disk full")

    sched, ex, _, _ = make(tmp_path, p, ok, listeners=[FailsOnceAResultIsBack()])
    poll = ex.poll

    def recording_poll(timeout: float | None) -> list[AttemptResult]:
        results = poll(timeout)
        returned.extend(r.task_id for r in results)
        return results

    ex.poll = recording_poll  # type: ignore[method-assign]
    with pytest.raises(StateIOError):
        sched.run()
    completed = {r.get("task") for r in read_journal(tmp_path / "journal").records
                 if r.get("state") == "completed"}
    assert returned and set(returned) <= completed, (returned, completed)


def test_a_held_task_is_told_after_the_change_that_released_it(tmp_path: Path) -> None:
    """With a gate, the completion of an upstream is recorded and told before
    the gate holds the dependent it made ready."""
    p = Pipeline("held")
    p.task("up", "m:f")
    p.task("guarded", "m:f", deps=["up"])
    sched, _, rec, clock = make(tmp_path, p, ok)
    sched.gate = HoldUntil(clock, "guarded", clock.now + 30)
    sched.run()
    kinds = [("held", e.task_id) if isinstance(e, TaskHeld) else (e.new.value, e.task_id)
             for e in rec.events if isinstance(e, (TaskHeld, TaskChanged))]
    assert kinds.index(("completed", "up")) < kinds.index(("held", "guarded"))
