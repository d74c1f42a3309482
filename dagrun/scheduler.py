"""The parent loop that drives a run.

Outline of Scheduler.run():

    prepare: dependency counts from the tasks' current states; ready heap
    loop:
        cancel requested (signal, deadline)?  -> stop running tasks, record, stop
        retry timers that are due            -> ready heap
        gate (circuit breakers), if any      -> tasks it releases -> ready heap;
                  tasks held past max_wait -> dead-lettered (no attempt used)
        dispatch: while the executor has a free slot, pop the highest-priority
                  ready task (FIFO among equals); the gate may hold it instead;
                  record it `running`, submit
        nothing running, ready or waiting    -> done
        poll the executor for results
        for each result: decide (completed / retry later / dead-letter + skip
                  its descendants), write every record of the batch in one
                  journal append, *then* release dependents
    append the run's final record; return the RunResult

Costs are per event, not per task: the ready set is a heap, dependency counts
are decremented as upstreams complete, and records are appended, never
re-read.
"""

from __future__ import annotations

import heapq
import itertools
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from dagrun.executor.base import Executor, clamp_wait
from dagrun.graph import dependents_map
from dagrun.model import (
    FINAL_STATES,
    Attempt,
    AttemptResult,
    RunResult,
    RunStatus,
    TaskError,
    TaskResult,
    TaskState,
    TaskStatus,
)
from dagrun.retry import retry_delay, should_retry
from dagrun.spec import PipelineSpec
from dagrun.store.journal import Journal
from dagrun.store.records import RUN_FORMAT


class Reporter(Protocol):
    tick_interval: float | None

    def start(self, run_id: str, spec: PipelineSpec,
              statuses: Mapping[str, TaskStatus]) -> None: ...
    def task_started(self, task_id: str, attempt: int) -> None: ...
    def task_finished(self, task_id: str, status: TaskStatus) -> None: ...
    def message(self, text: str) -> None: ...
    def tick(self) -> None: ...
    def finish(self, result: RunResult) -> None: ...


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


@dataclass
class SchedulerHooks:
    """Extension points for policies living outside the loop (DLQ, breakers)."""

    on_dead_letter: Callable[[str, TaskStatus], None] | None = None
    on_completed: Callable[[str, TaskStatus], None] | None = None
    gate: Gate | None = None


class Scheduler:
    def __init__(
        self,
        spec: PipelineSpec,
        run_id: str,
        journal: Journal,
        executor: Executor,
        reporter: Reporter,
        *,
        statuses: dict[str, TaskStatus] | None = None,
        cancel: CancelToken | None = None,
        deadline: float | None = None,  # seconds of run time allowed, from now
        cancel_grace: float | None = None,  # None: the running tasks' timeout_grace
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        hooks: SchedulerHooks | None = None,
    ) -> None:
        self.spec = spec
        self.run_id = run_id
        self.journal = journal
        self.executor = executor
        self.reporter = reporter
        self.status = statuses or {tid: TaskStatus() for tid in spec.tasks}
        self.cancel = cancel or CancelToken()
        self.clock = clock
        self.deadline_at = None if deadline is None else clock() + deadline
        self.cancel_grace = cancel_grace
        self.rng = rng or random.Random()
        self.hooks = hooks or SchedulerHooks()
        self.dependents = dependents_map(spec.tasks)
        self.waiting: dict[str, int] = {}
        self.ready: list[tuple[int, int, str]] = []
        self.timers: list[tuple[float, int, str]] = []
        self.running = 0
        self._seq = itertools.count()

    # ------------------------------------------------------------ set-up

    def _prepare(self) -> list[dict[str, Any]]:
        """Dependency counts and the ready heap from the current states; skips
        the descendants of tasks already dead-lettered or skipped."""
        records: list[dict[str, Any]] = []
        tasks = self.spec.tasks
        blocked: list[str] = []
        for tid, t in tasks.items():
            st = self.status[tid]
            if st.state in FINAL_STATES:
                if st.state in (TaskState.DEAD_LETTERED, TaskState.SKIPPED):
                    blocked.append(tid)
                continue
            st.state = TaskState.PENDING
            self.waiting[tid] = sum(
                1 for d in t.deps if self.status[d].state != TaskState.COMPLETED)
        for tid in blocked:
            records += self._skip_descendants(tid)
        now, wall = self.clock(), time.time()
        for tid, n in self.waiting.items():
            st = self.status[tid]
            if n == 0 and st.state == TaskState.PENDING:
                if st.retry_at is not None and st.retry_at > wall:
                    # A retry delay a crash cut short is waited out, not skipped.
                    st.state = TaskState.RETRYING
                    heapq.heappush(self.timers, (now + st.retry_at - wall, next(self._seq), tid))
                else:
                    self._push_ready(tid)
        return records

    def _push_ready(self, tid: str) -> None:
        heapq.heappush(self.ready, (-self.spec.tasks[tid].priority, next(self._seq), tid))

    # ------------------------------------------------------------ the loop

    def run(self) -> RunResult:
        self.reporter.start(self.run_id, self.spec, self.status)
        self.journal.append(self._prepare())
        while True:
            now = self.clock()
            if self.deadline_at is not None and now >= self.deadline_at:
                self.cancel.request("deadline")
            if self.cancel.reason:
                self._stop_everything()
                break
            while self.timers and self.timers[0][0] <= now:
                _, _, tid = heapq.heappop(self.timers)
                self.status[tid].state = TaskState.PENDING
                self.status[tid].retry_at = None
                self._push_ready(tid)
            if self.hooks.gate is not None:
                self._gate_due(self.hooks.gate)
            self._dispatch()
            if not self.running and not self.ready and not self.timers and not (
                    self.hooks.gate is not None and self.hooks.gate.holding()):
                break
            results = self.executor.poll(self._wait_time(now))
            if results:
                self._handle(results)
            self.journal.tick()
            self.reporter.tick()
        result = self.result()
        self.journal.append([{"v": RUN_FORMAT, "kind": "run", "status": result.status,
                              "reason": self.cancel.reason, "at": time.time()}])
        self.reporter.finish(result)
        return result

    def _wait_time(self, now: float) -> float | None:
        waits = [self.reporter.tick_interval]
        if self.timers:
            waits.append(self.timers[0][0] - now)
        if self.deadline_at is not None:
            waits.append(self.deadline_at - now)
        if self.hooks.gate is not None:
            waits.append(self.hooks.gate.wait_time())
        waits.append(self.journal.sync_due_in())
        finite = [max(0.0, w) for w in waits if w is not None]
        return clamp_wait(min(finite)) if finite else None  # epoll overflows at ~24.8 d

    def _dispatch(self) -> None:
        batch: list[Attempt] = []
        records: list[dict[str, Any]] = []
        free = self.executor.free_slots()
        tasks = self.spec.tasks
        while free > 0 and self.ready:
            _, _, tid = heapq.heappop(self.ready)
            st = self.status[tid]
            if st.state != TaskState.PENDING:
                continue
            if self.hooks.gate is not None and not self.hooks.gate.admit(tid):
                continue  # held (e.g. its circuit is open): no attempt, no worker
            t = tasks[tid]
            st.state = TaskState.RUNNING
            st.attempts += 1
            # The attempt's ordinal over the task's whole life: after a fresh
            # retry budget (dlq retry) or an attempt cut short by a crash (its
            # `running` record holds the number) it keeps counting, so run id +
            # attempt stays unique for idempotency keys.
            st.ordinal = max(st.attempts, len(st.history) + 1, st.ordinal + 1)
            kwargs = dict(t.kwargs)
            for param, upstream in t.inputs.items():
                kwargs[param] = self.status[upstream].output
            batch.append(Attempt(
                run_id=self.run_id, task_id=tid, number=st.ordinal, call=t.call,
                kwargs=kwargs, timeout=t.timeout, timeout_grace=t.timeout_grace,
                memory_limit=t.memory_limit))
            records.append(self._record(tid, number=st.ordinal))
            free -= 1
        if not batch:
            return
        # Written before the tasks start; in durable mode not synced on its own
        # (see store/journal.py: a lost `running` record changes nothing).
        self.journal.append(records, sync=False)
        for attempt in batch:
            self.executor.submit(attempt)
            self.running += 1
            self.reporter.task_started(attempt.task_id, attempt.number)

    # ------------------------------------------------------------ results

    def _handle(self, results: list[AttemptResult]) -> None:
        records: list[dict[str, Any]] = []
        released: list[str] = []
        requeue: list[str] = []
        finished: list[str] = []
        dead: list[str] = []
        now = self.clock()
        for r in results:
            self.running -= 1
            tid = r.task_id
            st = self.status[tid]
            t = self.spec.tasks[tid]
            if self.hooks.gate is not None:
                self.hooks.gate.settle(r)
            if r.cancelled:
                # Cut short by dagrun itself: does not count against the retries.
                st.attempts -= 1
                if self.cancel.reason:
                    st.state = TaskState.CANCELLED
                    st.reason = f"cancelled ({self.cancel.reason})"
                    finished.append(tid)
                else:
                    st.state = TaskState.PENDING
                    requeue.append(tid)
                records.append(self._record(tid))
                continue
            st.history.append({"attempt": r.number, "started": r.started, "ended": r.ended,
                               "error": r.error.to_dict() if r.error else None})
            if r.error is None:
                st.state = TaskState.COMPLETED
                st.output = r.output
                st.error = None
                released.append(tid)
            elif should_retry(t.retry, r.error.all_types, st.attempts):
                st.state = TaskState.RETRYING
                st.error = r.error
                delay = retry_delay(t.retry, st.attempts, self.rng)
                st.retry_at = time.time() + delay
                heapq.heappush(self.timers, (now + delay, next(self._seq), tid))
            else:
                st.state = TaskState.DEAD_LETTERED
                st.error = r.error
                dead.append(tid)
            records.append(self._record(tid, attempt=st.history[-1], output=r.error is None))
            finished.append(tid)
        for tid in dead:
            records += self._skip_descendants(tid)
        self.journal.append(records)  # durable before anything acts on it
        for tid in finished:
            self.reporter.task_finished(tid, self.status[tid])
        for tid in dead:
            if self.hooks.on_dead_letter:
                self.hooks.on_dead_letter(tid, self.status[tid])
        for tid in requeue:
            self._push_ready(tid)
        for tid in released:
            if self.hooks.on_completed:
                self.hooks.on_completed(tid, self.status[tid])
            for child in self.dependents[tid]:
                if child not in self.waiting:
                    # Already final: a completed task re-run on resume (its own
                    # record was lost) leaves its completed dependents alone.
                    continue
                n = self.waiting[child] - 1
                self.waiting[child] = n
                if n == 0 and self.status[child].state == TaskState.PENDING:
                    self._push_ready(child)

    def _gate_due(self, gate: Gate) -> None:
        """Tasks the gate lets go rejoin the ready heap; those it held too long
        are dead-lettered without an attempt (e.g. "circuit NAME open")."""
        release, expired = gate.due()
        for tid in release:
            if self.status[tid].state == TaskState.PENDING:
                self._push_ready(tid)
        if not expired:
            return
        records: list[dict[str, Any]] = []
        for tid, error in expired:
            st = self.status[tid]
            st.state = TaskState.DEAD_LETTERED
            st.error = error
            records.append(self._record(tid))
        for tid, _ in expired:
            records += self._skip_descendants(tid)
        self.journal.append(records)
        for tid, _ in expired:
            self.reporter.task_finished(tid, self.status[tid])
            if self.hooks.on_dead_letter:
                self.hooks.on_dead_letter(tid, self.status[tid])

    def _skip_descendants(self, failed: str) -> list[dict[str, Any]]:
        records = []
        stack = [failed]
        cause = failed if self.status[failed].state == TaskState.DEAD_LETTERED else (
            self.status[failed].reason or failed)
        while stack:
            for child in self.dependents[stack.pop()]:
                st = self.status[child]
                if st.state in FINAL_STATES:
                    continue
                st.state = TaskState.SKIPPED
                st.reason = cause
                records.append(self._record(child))
                self.reporter.task_finished(child, st)
                stack.append(child)
        return records

    def _stop_everything(self) -> None:
        self.reporter.message(f"stopping ({self.cancel.reason}): cancelling running tasks")
        grace = self.cancel_grace
        if grace is None:  # as long as the most patient running task asks for
            grace = max((self.spec.tasks[tid].timeout_grace for tid, st in self.status.items()
                         if st.state == TaskState.RUNNING), default=1.0)
        results = self.executor.cancel(0 if self.cancel.force else grace)
        self._handle(results)
        records = []
        for tid, st in self.status.items():
            if st.state not in FINAL_STATES:
                if st.state != TaskState.RETRYING:
                    st.retry_at = None  # a retrying task's record keeps its delay's end
                st.state = TaskState.CANCELLED
                st.reason = f"cancelled ({self.cancel.reason})"
                records.append(self._record(tid))
        self.journal.append(records)

    # ------------------------------------------------------------ records

    def _record(self, tid: str, *, attempt: dict[str, Any] | None = None,
                output: bool = False, number: int | None = None) -> dict[str, Any]:
        st = self.status[tid]
        rec: dict[str, Any] = {"v": RUN_FORMAT, "task": tid, "state": st.state.value,
                               "attempts": st.attempts, "at": time.time()}
        if output:
            rec["output"] = st.output
        if st.error is not None and st.state != TaskState.COMPLETED:
            rec["error"] = st.error.to_dict()
        if st.reason and st.state in (TaskState.SKIPPED, TaskState.CANCELLED):
            rec["reason"] = st.reason
        if attempt is not None:
            rec["attempt"] = attempt
        if number is not None:
            rec["number"] = number
        if st.state in (TaskState.RETRYING, TaskState.CANCELLED) and st.retry_at is not None:
            rec["retry_at"] = st.retry_at
        return rec

    def result(self) -> RunResult:
        tasks = {}
        any_failed = False
        for tid, st in self.status.items():
            state = st.state
            if state in (TaskState.DEAD_LETTERED, TaskState.SKIPPED):
                any_failed = True
            tasks[tid] = TaskResult(state=state.value, attempts=st.attempts,
                                    output=st.output if state == TaskState.COMPLETED else None,
                                    error=error_text(st))
        if self.cancel.reason:
            status = RunStatus.CANCELLED
        elif any_failed:
            status = RunStatus.FAILED
        else:
            status = RunStatus.SUCCEEDED
        return RunResult(self.run_id, status.value, tasks)


def stored_result(run_id: str, statuses: Mapping[str, TaskStatus]) -> RunResult:
    """The result of a finished run as its records left it (resume of a
    succeeded run)."""
    tasks = {tid: TaskResult(state=st.state.value, attempts=st.attempts,
                             output=st.output if st.state == TaskState.COMPLETED else None,
                             error=error_text(st)) for tid, st in statuses.items()}
    return RunResult(run_id, RunStatus.SUCCEEDED.value, tasks)


def error_text(st: TaskStatus) -> str | None:
    if st.state == TaskState.COMPLETED:
        return None
    if st.state == TaskState.SKIPPED:
        return f"skipped: upstream task {st.reason!r} failed"
    if st.state == TaskState.CANCELLED:
        return st.reason or "cancelled"
    if st.error is not None:
        return TaskError.summary(st.error)
    return None
