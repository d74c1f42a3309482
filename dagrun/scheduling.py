"""What the scheduler's loop is told from outside: a cancel request (signal
handler, deadline) and a gate that holds tasks back (circuit breakers)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from dagrun.errors import ExecutorLost
from dagrun.model import FINAL_STATES, AttemptResult, TaskError, TaskState

if TYPE_CHECKING:
    from dagrun.scheduler import Scheduler


class CancelToken:
    """Set from a signal handler or the deadline; read by the loop."""

    def __init__(self) -> None:
        self.reason: str | None = None
        self.force = False  # a second signal: skip the grace period

    def request(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason
        else:
            self.force = True


class Gate(Protocol):
    """Holds tasks back without using an attempt (circuit breakers: breaker.py)."""

    def admit(self, tid: str) -> bool: ...  # False: the gate now holds the task
    def settle(self, result: AttemptResult) -> None: ...
    def due(self) -> tuple[list[str], list[tuple[str, TaskError]]]: ...  # release, expire
    def wait_time(self) -> float | None: ...
    def holding(self) -> bool: ...


def gate_due(sched: Scheduler, gate: Gate) -> None:
    """Tasks the gate lets go rejoin the ready heap; those it held too long
    are dead-lettered without an attempt (e.g. "circuit NAME open")."""
    release, expired = gate.due()
    for tid in release:
        if sched.status[tid].state == TaskState.PENDING:
            sched._push_ready(tid)
    if not expired:
        return
    for tid, error in expired:
        sched._transition(tid, TaskState.DEAD_LETTERED, error=error)
    for tid, _ in expired:
        sched._release(tid)
    sched._commit()


def executor_lost(sched: Scheduler, exc: ExecutorLost) -> ExecutorLost:
    """The executor went away mid-run (e.g. the Dask scheduler): nothing more
    starts, the attempts in flight are recorded cancelled (they do not count,
    as when dagrun itself is stopped), the run's record says cancelled, and the
    error to exit with (5) says how to go on."""
    from dagrun.store.records import RUN_FORMAT

    if all(st.state in FINAL_STATES for st in sched.status.values()):
        return _lost_line(sched, exc)  # already stopped and recorded (e.g. by a cancel)
    if sched.cancel.reason is None:
        sched.cancel.request("executor lost")
    now = sched.wall()
    sched._handle([AttemptResult(tid, st.ordinal, cancelled=True, ended=now)
                   for tid, st in sched.status.items()
                   if st.state == TaskState.RUNNING and sched.spec.tasks[tid].map is None])
    sched._cancel_the_rest()
    sched.journal.append([{"v": RUN_FORMAT, "kind": "run", "status": sched.result().status,
                           "reason": sched.cancel.reason, "at": now}])
    return _lost_line(sched, exc)


def _lost_line(sched: Scheduler, exc: ExecutorLost) -> ExecutorLost:
    return ExecutorLost(f"{exc}; tasks in flight were cancelled (their attempts do not "
                        f"count): `dagrun resume {sched.run_id}` continues the run "
                        "(add --executor local to run the rest here)")
