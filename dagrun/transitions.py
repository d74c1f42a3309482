"""The task state machine: which state changes are legal, in one table.

The scheduler's one transition point (Scheduler._transition) and resume's
repair (store/repair.py) both check every change against this table, so a
state change nobody planned for is a loud bug, not a silently odd record.

    pending ──► running ──► completed  (pending ──► completed: a cache hit)
       │  ▲        │ ├────► retrying ──► pending (its delay is over)
       │  │        │ ├────► skipped (its condition was false: no attempt used)
       │  │        │ ├────► dead_lettered (failed for good)
       │  └────────┘ └────► cancelled (dagrun stopped; the attempt is not counted)
       ├──► skipped (its trigger rule did not fire: kinds/triggers.py)
       ├──► dead_lettered (held by an open circuit past its max_wait)
       └──► retrying / cancelled (resume: the rest of a retry delay; a stop)

Every final state goes back to pending only through repair (resume): a lost
or superseded record, a changed spec, `dlq retry`, an upstream that runs again.
`failed` is a state the contract names for an attempt that failed with a retry
still to come; dagrun records such a task as `retrying`, and an old record
saying `failed` is repaired to pending.
"""

from __future__ import annotations

from dagrun.model import TaskState, TaskStatus

P, R, RT, C, F, D, S, X = (TaskState.PENDING, TaskState.RUNNING, TaskState.RETRYING,
                           TaskState.COMPLETED, TaskState.FAILED, TaskState.DEAD_LETTERED,
                           TaskState.SKIPPED, TaskState.CANCELLED)

ALLOWED: dict[TaskState, frozenset[TaskState]] = {
    P: frozenset({R, S, D, X, RT, C}),  # C: a cache hit (dagrun/cache/), no attempt
    R: frozenset({C, RT, D, X, P, S}),  # P: cut short by dagrun itself, to run again
    RT: frozenset({P, X, S}),
    F: frozenset({P}),
    C: frozenset({P}),
    D: frozenset({P}),
    S: frozenset({P}),
    X: frozenset({P, RT}),  # RT: resume of a retry whose delay a stop cut short
}


class IllegalTransition(AssertionError):
    """A bug in dagrun: a state change the table does not allow."""


def check(task_id: str, old: TaskState, new: TaskState) -> None:
    if new not in ALLOWED[old]:
        raise IllegalTransition(f"task {task_id}: {old.value} -> {new.value} is not a legal "
                                "state change (dagrun/transitions.py)")


def legal(old: TaskState, new: TaskState) -> bool:
    return old == new or new in ALLOWED[old]


def apply(task_id: str, st: TaskStatus, new: TaskState) -> TaskState:
    """Move a task to `new` (the one assignment of a task's state); the old state."""
    old = st.state
    if new not in ALLOWED[old]:  # check(), inlined: this runs for every transition
        check(task_id, old, new)
    st.state = new
    return old


def restore(task_id: str, st: TaskStatus, recorded: TaskState, resumed: TaskState) -> None:
    """Repair's move: from the state the task's last trusted record shows to the
    state a resume starts it in (the same state: kept as it is)."""
    if not legal(recorded, resumed):
        raise IllegalTransition(f"task {task_id}: resuming {recorded.value} as "
                                f"{resumed.value} is not a legal state change")
    st.state = resumed
