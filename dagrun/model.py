"""Value objects passed between the scheduler, the store and the executors."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


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


@dataclass(frozen=True, slots=True)
class Attempt:
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


@dataclass(frozen=True, slots=True)
class AttemptResult:
    """What an executor reports for an attempt: an output or an error, never raised."""

    task_id: str
    number: int
    output: Any = None
    error: TaskError | None = None
    started: float = 0.0
    ended: float = 0.0
    cancelled: bool = False  # cut short by dagrun's own cancellation, not a task failure
    state: dict[str, Any] | None = None  # the task's state across runs, as it left it
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


@dataclass(frozen=True, slots=True)
class TaskResult:
    state: str
    attempts: int
    output: Any
    error: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"state": self.state, "attempts": self.attempts, "output": self.output,
                "error": self.error}


@dataclass(frozen=True, slots=True)
class RunResult:
    """The outcome of run()/resume(): the same object `--json` prints."""

    run_id: str
    status: str
    tasks: dict[str, TaskResult]

    @property
    def exit_code(self) -> int:
        return {RunStatus.SUCCEEDED: 0, RunStatus.FAILED: 1, RunStatus.CANCELLED: 130}.get(
            RunStatus(self.status), 1)

    def to_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "status": self.status,
                "tasks": {tid: t.to_dict() for tid, t in self.tasks.items()}}
