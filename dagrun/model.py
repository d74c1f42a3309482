"""Value objects passed between the scheduler, the store and the executors.

The ones built for every attempt (Attempt, AttemptResult, TaskResult) are
NamedTuples: a frozen dataclass's __init__ sets each field through
object.__setattr__ (~5x the cost for 13 fields), and defining one costs ~0.45 ms
of every start. `_replace()` is their dataclasses.replace().
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, NamedTuple


class TaskState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    RETRYING = "retrying"
    COMPLETED = "completed"
    FAILED = "failed"
    DEAD_LETTERED = "dead_lettered"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"


FINAL_STATES = frozenset({TaskState.COMPLETED, TaskState.DEAD_LETTERED, TaskState.SKIPPED,
                          TaskState.CANCELLED})


class RunStatus(StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True)
class TaskError:
    """A failure as plain data: it crosses process boundaries and is persisted."""

    type: str
    message: str
    traceback: str = ""
    exit_code: int | None = None
    signal: int | None = None
    types: tuple[str, ...] = ()  # the class name and its bases', for retry_on matching

    @property
    def all_types(self) -> tuple[str, ...]:
        return self.types or (self.type,)

    def summary(self) -> str:
        return f"{self.type}: {self.message}" if self.message else self.type

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "message": self.message, "traceback": self.traceback,
                "exit_code": self.exit_code, "signal": self.signal,
                "types": list(self.types)}

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> TaskError | None:
        if not d:
            return None
        return cls(type=d.get("type", "Error"), message=d.get("message", ""),
                   traceback=d.get("traceback", ""), exit_code=d.get("exit_code"),
                   signal=d.get("signal"), types=tuple(d.get("types", ())))


class Attempt(NamedTuple):
    """One execution of a task, handed to an executor."""

    run_id: str
    task_id: str
    number: int  # 1-based attempt number, as DAGRUN_ATTEMPT shows it
    call: str
    kwargs: dict[str, Any]  # the spec's kwargs merged with upstream outputs
    timeout: float | None = None
    timeout_grace: float = 1.0
    memory_limit: int | None = None
    state: dict[str, Any] | None = None  # state across runs, when the callable takes it
    when: str | None = None  # a condition's predicate, run in the worker first
    loop: dict[str, Any] | None = None  # a loop iteration: kinds/loop.py
    map_index: int | None = None  # an element of a map task (kinds/fanout.py)
    priority: int = 0  # the task's; a backend with its own queue orders by it (Dask)


class AttemptResult(NamedTuple):
    """What an executor reports for an attempt: an output or an error, never raised."""

    task_id: str
    number: int
    output: Any = None
    error: TaskError | None = None
    started: float = 0.0
    ended: float = 0.0
    cancelled: bool = False  # cut short by dagrun's own cancellation, not a task failure
    state: dict[str, Any] | None = None  # the task's state across runs, as it left it
    condition_false: bool = False  # the task's `when` said no: skipped, no attempt used
    stop: bool = False  # a loop's predicate said stop (kinds/loop.py)
    map_index: int | None = None  # the Attempt's
    log: dict[str, Any] | None = None  # {"file", "start", "end"}: its output in RUN/logs/

    @property
    def ok(self) -> bool:
        return self.error is None and not self.cancelled


@dataclass(slots=True)
class TaskStatus:
    """The scheduler's mutable view of one task; records are snapshots of it."""

    state: TaskState = TaskState.PENDING
    attempts: int = 0  # attempts counted against the retry budget
    output: Any = None
    error: TaskError | None = None
    reason: str | None = None  # why skipped / cancelled
    retry_at: float | None = None  # wall clock: when a retrying task's delay ends
    history: list[dict[str, Any]] = field(default_factory=list)
    ordinal: int = 0  # the highest attempt number handed out (DAGRUN_ATTEMPT never repeats)
    benign: bool = False  # skipped, but not because of a failure (kinds/triggers.py)
    polls: int = 0  # sensor (kinds/sensor.py)
    last_poll_at: float | None = None
    sensor_started: float | None = None  # wall time the sensor's window opened
    iterations: int = 0  # loop (kinds/loop.py): finished iterations
    stopped_by: str | None = None
    elements: Any = None  # a map task's kinds.fanout.Elements
    cached_from: str | None = None  # completed by a cache hit: the run the output came from


def to_ms(seconds: float) -> float:
    """round(seconds, 3), as the results show times, without its decimal
    conversion (~1.7k instructions, twice per task at the end of a run) where
    the answer is plain: a positive float whose millisecond fraction is not
    near a half (then x * 1000's own rounding cannot change the result)."""
    if type(seconds) is float and seconds > 0.0:
        scaled = seconds * 1000.0
        off = scaled % 1.0 - 0.5
        if off > 0.01 or off < -0.01:
            return (scaled + 0.5) // 1.0 / 1000.0
    return round(seconds, 3)


def task_span(state: TaskState, history: list[dict[str, Any]], starts: list[float],
              ends: list[float]) -> tuple[float | None, float | None]:
    """(started_at, ended_at) of a task: its first attempt's start, and once it
    is final its last attempt's end. `starts` (dispatch times) count only for a
    task with no finished attempt (one in flight, one cut short by a cancel),
    so a run's result, a stored result and `status` agree; `ends` adds the
    end of an attempt cut short."""
    if len(history) == 1 and not ends:  # one attempt, the common case: no lists
        h = history[0]
        first, last = h.get("started"), h.get("ended")
        if first:
            started = to_ms(first)
            if state not in FINAL_STATES or not last:
                return started, None
            return started, to_ms(max(last, started))
    starts = [h["started"] for h in history if h.get("started")] or starts
    ends = [h["ended"] for h in history if h.get("ended")] + ends
    if not starts:
        return None, None
    started = to_ms(min(starts))
    if state not in FINAL_STATES or not ends:
        return started, None
    return started, to_ms(max(max(ends), started))


class TaskResult(NamedTuple):
    state: str
    attempts: int
    output: Any
    error: str | None
    reason: str | None = None  # why skipped
    extra: dict[str, Any] | None = None  # a kind's fields (polls, iterations, ...)
    elements: dict[str, Any] | None = None  # a map task's {count, completed, failed}
    started_at: float | None = None  # wall clock: the task's first attempt started
    ended_at: float | None = None  # its last attempt ended, once the task is final

    @property
    def duration_s(self) -> float | None:
        if self.started_at is None or self.ended_at is None:
            return None
        return to_ms(max(0.0, self.ended_at - self.started_at))

    def to_dict(self) -> dict[str, Any]:
        d = {"state": self.state, "attempts": self.attempts, "output": self.output,
             "error": self.error, "started_at": self.started_at,
             "ended_at": self.ended_at, "duration_s": self.duration_s}
        if self.reason is not None:
            d["reason"] = self.reason
        if self.extra:
            d.update(self.extra)
        if self.elements is not None:
            d["elements"] = self.elements
        return d


@dataclass(frozen=True, slots=True)
class RunResult:
    """The outcome of run()/resume(): the same object `--json` prints."""

    run_id: str
    status: str
    tasks: Mapping[str, TaskResult]  # a dict, or results.TaskResults (built when read)

    @property
    def exit_code(self) -> int:
        return {RunStatus.SUCCEEDED: 0, RunStatus.FAILED: 1, RunStatus.CANCELLED: 130}.get(
            RunStatus(self.status), 1)

    def state_counts(self) -> dict[str, int]:
        """How many tasks ended in each state (from the statuses, when the
        results are a TaskResults: without building one TaskResult per task)."""
        counts = getattr(self.tasks, "state_counts", None)
        if counts is not None:
            return counts()  # type: ignore[no-any-return]
        return dict(Counter(t.state for t in self.tasks.values()))

    def to_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "status": self.status,
                "tasks": {tid: t.to_dict() for tid, t in self.tasks.items()}}
