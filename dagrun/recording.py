"""The scheduler's one transition point: every task state change, checked,
recorded and told (a base class of scheduler.Scheduler, moved here whole).

_transition() checks the move against the table in transitions.py, applies it
and its fields to the task's status, queues the task's journal record (a
snapshot of its status) and, if any listener takes it, one TaskChanged event.
_commit() appends the queued records in one journal write and only then emits
the events, so that no listener acts on a state a crash could take back.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from dagrun.events import EventBus, TaskChanged
from dagrun.kinds import loop as loop_kind
from dagrun.kinds import sensor as sensor_kind
from dagrun.model import TaskState, TaskStatus
from dagrun.store.journal import Journal
from dagrun.store.records import RUN_FORMAT
from dagrun.transitions import apply as apply_transition

# A state's value by a dict lookup: Enum's `.value` is a descriptor call, per record.
_VALUE = {s: s.value for s in TaskState}
_KEEP: Any = object()  # _transition: a field the change leaves as it is


class Recording:
    if TYPE_CHECKING:  # the scheduler's, used here
        status: dict[str, TaskStatus]
        journal: Journal
        bus: EventBus
        wall: Callable[[], float]
        _records: list[dict[str, Any]]
        _events: list[TaskChanged]
        _sync_due: bool
        _carried: dict[str, dict[str, Any]]

    def _transition(self, tid: str, new: TaskState, *, attempt: dict[str, Any] | None = None,
                    number: int | None = None, attempts: int | None = None,
                    ordinal: int | None = None, output: Any = _KEEP, error: Any = _KEEP,
                    **fields: Any) -> None:
        """The one place a task's state changes: check the move, apply it and its
        fields to the task's status, queue its journal record and its event
        (both reach the journal and the listeners at the next _commit).
        (The fields every task's transitions set are named parameters, the
        rest `fields`: a loop of setattr costs more, twice per task.)"""
        st = self.status[tid]
        old = apply_transition(tid, st, new)
        if attempts is not None:
            st.attempts = attempts
        if ordinal is not None:
            st.ordinal = ordinal
        if output is not _KEEP:
            st.output = output
        if error is not _KEEP:
            st.error = error
        if fields:
            for name, value in fields.items():
                setattr(st, name, value)
        # The task's journal record: a snapshot of its status (every transition).
        rec: dict[str, Any] = {"v": RUN_FORMAT, "task": tid, "state": _VALUE[new],
                               "attempts": st.attempts, "at": self.wall()}
        if output is not _KEEP:
            rec["output"] = output
        if st.error is not None and new is not TaskState.COMPLETED:
            rec["error"] = st.error.to_dict()
        if st.reason and (new is TaskState.SKIPPED or new is TaskState.CANCELLED):
            rec["reason"] = st.reason
            if st.benign and new is TaskState.SKIPPED:
                rec["benign"] = True  # not caused by a failure: the run can succeed
        if attempt is not None:
            rec["attempt"] = attempt
        if number is not None and new is TaskState.RUNNING:
            rec["number"] = number
        if st.retry_at is not None and (new is TaskState.RETRYING
                                        or new is TaskState.CANCELLED):
            rec["retry_at"] = st.retry_at
        if output is not _KEEP and tid in self._carried:
            rec["saved_state"] = self._carried[tid]  # state across runs (kinds/state.py)
        # The kinds' own fields (their tests, inlined: this runs for every record).
        if st.polls or st.sensor_started is not None:
            sensor_kind.record_fields(st, rec)
        if st.iterations or st.stopped_by is not None:
            loop_kind.record_fields(st, rec)
        if st.cached_from is not None:
            from dagrun.cache import plug as cache_plug  # not imported by a run without caching

            cache_plug.record_fields(st, rec)
        self._records.append(rec)
        heard = self.bus.heard.get(new)
        if heard is None:
            heard = self.bus.listens(new)
        if not heard:
            return  # e.g. `running` with the quiet display: no event to build
        if number is None and attempt is not None:
            number = attempt.get("attempt")
        self._events.append(TaskChanged(
            tid, old, new, st.attempts, number,
            st.error if new is not TaskState.COMPLETED and new is not TaskState.PENDING
            else None,
            st.reason if new is TaskState.SKIPPED or new is TaskState.CANCELLED else None,
            rec["at"]))

    def _commit(self, *, sync: bool = True) -> None:
        """Append the queued records in one write, *then* tell the listeners."""
        if sync:
            self._sync_due = False
        if self._records:
            records, self._records = self._records, []
            self.journal.append(records, sync=sync)
        if self._events:
            events, self._events = self._events, []
            for event in events:
                self.bus.emit(event)
