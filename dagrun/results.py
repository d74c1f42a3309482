"""What a run's tasks look like to the caller: TaskResult / RunResult built
from task statuses (the scheduler's at the end of a run, a journal's on the
resume of a succeeded run, `dagrun status`'s error column)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping
from operator import attrgetter
from typing import TYPE_CHECKING, Any

from dagrun.kinds import fanout
from dagrun.kinds import loop as loop_kind
from dagrun.kinds import sensor as sensor_kind
from dagrun.kinds.triggers import skip_text
from dagrun.model import (
    RunResult,
    RunStatus,
    TaskError,
    TaskResult,
    TaskState,
    TaskStatus,
    task_span,
    to_ms,
)

if TYPE_CHECKING:
    from dagrun.scheduler import Scheduler


def run_result(sched: Scheduler) -> RunResult:
    """The run's status now; each task's TaskResult when first asked for."""
    failed = False
    dead, skipped = TaskState.DEAD_LETTERED, TaskState.SKIPPED
    for st in sched.status.values():
        if st.state is dead or (st.state is skipped and not st.benign):
            failed = True
            break
    if sched.cancel.reason:
        status = RunStatus.CANCELLED
    elif failed:
        status = RunStatus.FAILED
    else:
        status = RunStatus.SUCCEEDED
    return RunResult(sched.run_id, status.value,
                     TaskResults(sched.status, sched._dispatched, sched._cut))


class TaskResults(Mapping[str, TaskResult]):
    """A run's task results, each built from its status when first read: a
    caller that only wants the run's status (a script, a cron wrapper) does not
    pay for one TaskResult per task (~1 µs each). The statuses are the
    finished scheduler's: nothing changes them any more."""

    __slots__ = ("_statuses", "_dispatched", "_cut", "_built")

    def __init__(self, statuses: Mapping[str, TaskStatus], dispatched: Mapping[str, float],
                 cut: Mapping[str, float]) -> None:
        self._statuses = statuses
        self._dispatched = dispatched  # attempts without a history entry: dispatch times
        self._cut = cut  # ... and when they were cut short
        self._built: dict[str, TaskResult] = {}

    def __getitem__(self, tid: str) -> TaskResult:
        built = self._built.get(tid)
        if built is None:
            built = self._built[tid] = self._build(tid, self._statuses[tid])
        return built

    def __iter__(self) -> Iterator[str]:
        return iter(self._statuses)

    def __len__(self) -> int:
        return len(self._statuses)

    def __repr__(self) -> str:
        return repr(dict(self))

    def state_counts(self) -> dict[str, int]:
        counts = Counter(map(attrgetter("state"), self._statuses.values()))
        return {state.value: n for state, n in counts.items()}

    def _build(self, tid: str, st: TaskStatus) -> TaskResult:
        history, cut = st.history, self._cut
        if (st.state is TaskState.COMPLETED and len(history) == 1 and st.elements is None
                and tid not in cut and not kind_fields(st)):
            h = history[0]  # the common case, spelled out (task_span and task_result agree)
            first, last = h.get("started"), h.get("ended")
            if first and last:
                begun = to_ms(first)
                return TaskResult("completed", st.attempts, st.output, None, None, None,
                                  None, begun, to_ms(max(last, begun)))
        dispatched = self._dispatched
        started, ended = task_span(
            st.state, history, [dispatched[tid]] if tid in dispatched else [],
            [cut[tid]] if tid in cut else [])
        return task_result(st, started, ended)


def stored_result(run_id: str, statuses: Mapping[str, TaskStatus]) -> RunResult:
    """The result of a finished run as its records left it (resume of a
    succeeded run)."""
    return RunResult(run_id, RunStatus.SUCCEEDED.value, TaskResults(statuses, {}, {}))


def task_result(st: TaskStatus, started: float | None = None,
                ended: float | None = None) -> TaskResult:
    state = st.state
    return TaskResult(state=state.value, attempts=st.attempts,
                      output=st.output if state == TaskState.COMPLETED else None,
                      error=error_text(st),
                      reason=st.reason if state == TaskState.SKIPPED else None,
                      extra=kind_extras(st),
                      elements=None if st.elements is None else fanout.summary(st),
                      started_at=started, ended_at=ended)


def kind_fields(st: TaskStatus) -> bool:
    """Whether a sensor, a loop or a cache hit left its fields on the status."""
    return bool(st.polls or st.iterations or st.sensor_started is not None
                or st.stopped_by is not None or st.cached_from is not None)


def kind_extras(st: TaskStatus) -> dict[str, Any] | None:
    if not kind_fields(st):
        return None
    from dagrun.cache import plug as cache_plug  # a run without caching never imports it

    return {**sensor_kind.extras(st), **loop_kind.extras(st), **cache_plug.extras(st)} or None


def error_text(st: TaskStatus) -> str | None:
    if st.state == TaskState.COMPLETED:
        return None
    if st.state == TaskState.SKIPPED:
        return skip_text(st.reason, st.benign)
    if st.state == TaskState.CANCELLED:
        return st.reason or "cancelled"
    if st.error is not None:
        return TaskError.summary(st.error)
    return None
