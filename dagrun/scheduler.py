"""The parent loop that drives a run.

Outline of Scheduler.run():

    prepare: counts of upstreams not yet final, from the tasks' current
             states; tasks with none: their trigger rule -> ready heap or skipped
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
        for each result: decide (completed / retry later / dead-letter /
                  skipped by its condition); each final task releases its
                  dependents: one whose upstreams are now all final runs or
                  is skipped by its trigger rule (kinds/triggers.py), which
                  releases its own; write every record of the batch in one
                  journal append before any of them is dispatched
    append the run's final record; return the RunResult

Every state change goes through one method, _transition() (recording.py, a
base class of Scheduler): it checks the move against the table in
transitions.py, updates the task's status, builds its journal record and
queues one TaskChanged event. _commit() appends the queued records in one write
and only then emits the events (events.py), so the display, the dead-letter
office and every other listener see only what is on disk.

Costs are per event, not per task: the ready set is a heap, dependency counts
are decremented as upstreams become final, a trigger rule looks at a task's
upstreams once, when the last of them is final, and records are appended, never
re-read. That bookkeeping (prepare, decide, release) is in readiness.py, a
base class of Scheduler.
"""

from __future__ import annotations

import heapq
import itertools
import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from dagrun.errors import ExecutorLost
from dagrun.events import EventBus, Note, RunFinished, RunStarted, TaskChanged, TaskHeld
from dagrun.executor.base import Executor, clamp_wait
from dagrun.graph import dependents_map
from dagrun.kinds import events as events_kind
from dagrun.kinds import fanout
from dagrun.kinds import loop as loop_kind
from dagrun.kinds import sensor as sensor_kind
from dagrun.kinds import state as carried_state
from dagrun.kinds.events import EventWaits
from dagrun.kinds.state import StateStore
from dagrun.kinds.triggers import CONDITION_FALSE
from dagrun.model import FINAL_STATES, Attempt, AttemptResult, RunResult, TaskState, TaskStatus
from dagrun.readiness import Readiness
from dagrun.recording import Recording
from dagrun.results import run_result
from dagrun.retry import retry_delay, should_retry
from dagrun.scheduling import CancelToken, Gate, executor_lost, gate_due
from dagrun.spec import PipelineSpec
from dagrun.store.journal import Journal
from dagrun.store.records import RUN_FORMAT

if TYPE_CHECKING:
    from dagrun.cache.plug import CachePlug

# The longest the loop sleeps with nothing to do, so that listeners that show
# time passing (the live display's clock, a metrics file) refresh without a
# thread of their own; 4 wake-ups a second cost nothing measurable.
LISTENER_TICK = 0.25


class Scheduler(Recording, Readiness):
    def __init__(
        self,
        spec: PipelineSpec,
        run_id: str,
        journal: Journal,
        executor: Executor,
        bus: EventBus,
        *,
        statuses: dict[str, TaskStatus] | None = None,
        cancel: CancelToken | None = None,
        deadline: float | None = None,  # seconds of run time allowed, from now
        cancel_grace: float | None = None,  # None: the running tasks' timeout_grace
        clock: Callable[[], float] = time.monotonic,  # timers, deadline
        wall: Callable[[], float] = time.time,  # what records say; retry_at
        rng: random.Random | None = None,
        gate: Gate | None = None,
        notes: list[str] | None = None,  # shown once the run has started (repairs)
        waits: EventWaits | None = None,  # tasks that wait for events (kinds/events.py)
        states: StateStore | None = None,  # state across runs (kinds/state.py)
        cache: CachePlug | None = None,  # caching across runs (dagrun/cache/)
    ) -> None:
        self.spec = spec
        self.run_id = run_id
        self.journal = journal
        self.executor = executor
        self.bus = bus
        self.status = statuses or {tid: TaskStatus() for tid in spec.tasks}
        self.cancel = cancel or CancelToken()
        self.clock = clock
        self.wall = wall
        self.deadline_at = None if deadline is None else clock() + deadline
        self.cancel_grace = cancel_grace
        self.rng = rng or random.Random()
        self.gate = gate
        self.notes = notes or []
        self.dependents = dependents_map(spec.tasks)
        self.waiting: dict[str, int] = {}  # not-final tasks: upstreams not yet final
        self.tainted: set[str] = set()  # tasks with an upstream that did not complete
        self.ready: list[tuple[int, int, str]] = []
        self.timers: list[tuple[float, int, str]] = []
        self.running = 0
        self._seq = itertools.count()
        self._records: list[dict[str, Any]] = []
        self._sync_due = False  # queued records a durable journal must sync (results')
        self._events: list[TaskChanged] = []
        self.waits = waits
        self.states = states
        self.cache = cache
        self._carried: dict[str, dict[str, Any]] = {}  # task -> state its completion saves
        self.fanout = fanout.Fanout(self)  # the elements of map tasks
        # Attempts of this process without a history entry: dispatched (first
        # time only) and cut short by a cancel, for the results' timing fields.
        self._dispatched: dict[str, float] = {}
        self._cut: dict[str, float] = {}

    # ------------------------------------------------------------ the loop

    def run(self) -> RunResult:
        try:
            return self._run()
        except ExecutorLost as exc:  # what was in flight is cut short, not failed
            raise executor_lost(self, exc) from None

    def _run(self) -> RunResult:
        for line in self.notes:
            self.bus.emit(Note(line, "repair"))
        self.bus.emit(RunStarted(self.run_id, self.spec,
                                 {tid: st.state for tid, st in self.status.items()}))
        self._prepare()
        self._commit()
        fan, journal, bus, executor = self.fanout, self.journal, self.bus, self.executor
        # Locals, and calls only when there is work for them: with short tasks the
        # loop turns about once per result.
        while True:
            now = self.clock()
            if self.deadline_at is not None and now >= self.deadline_at:
                self.cancel.request("deadline")
            if self.cancel.reason:
                self._commit()  # the last results' records first: stopping waits a grace
                self._stop_everything()
                break
            while self.timers and self.timers[0][0] <= now:
                _, _, tid = heapq.heappop(self.timers)
                self._transition(tid, TaskState.PENDING, retry_at=None)
                self._push_ready(tid)
            if fan.timers:
                fan.due(now)
            if self.gate is not None:
                gate_due(self, self.gate)
            if self.waits is not None:
                events_kind.turn(self, self.waits)
            self._dispatch()
            # After _dispatch's commit: a listener's tick that raises (a full disk
            # under the cache) must not take unwritten records with it.
            journal.tick()
            bus.tick(now)
            if fan.ended():
                self._handle([])  # a map that ended without an attempt (e.g. an empty list)
            if not self.running and not self.ready and not self.timers and not (
                    self.gate is not None and self.gate.holding()) and not (
                    self.waits is not None and self.waits.holding()) and not fan.busy():
                break
            results = executor.poll(self._wait_time(now))
            if results:
                self._handle(results)
        self._commit()
        result = self.result()
        self.journal.append([{"v": RUN_FORMAT, "kind": "run", "status": result.status,
                              "reason": self.cancel.reason, "at": self.wall()}])
        self.bus.emit(RunFinished(result))
        return result

    def _wait_time(self, now: float) -> float | None:
        # The nearest of the due times (unrolled, no list built: once per loop turn).
        wait = LISTENER_TICK
        if self.timers:
            wait = min(wait, self.timers[0][0] - now)
        if self.fanout.timers:
            wait = min(wait, self.fanout.timers[0][0] - now)
        if self.deadline_at is not None:
            wait = min(wait, self.deadline_at - now)
        if self.gate is not None and (due := self.gate.wait_time()) is not None:
            wait = min(wait, due)
        if self.waits is not None and (due := self.waits.wait_time()) is not None:
            wait = min(wait, due)
        if (due := self.journal.sync_due_in()) is not None:
            wait = min(wait, due)
        return clamp_wait(max(0.0, wait))  # epoll overflows at ~24.8 d

    def _dispatch(self) -> None:
        if self.gate is not None and (self._records or self._events):
            # The gate speaks (held tasks, a circuit's probe) only after the
            # changes that led to it have been recorded and told.
            self._commit(sync=self._sync_due)
        batch: list[Attempt] = []
        free = self.executor.free_slots()
        tasks = self.spec.tasks
        ready, fan = self.ready, self.fanout
        while free > 0 and (ready or fan.ready):
            if fan.ready and fan.first(ready[0] if ready else None):
                batch.append(fan.next_attempt())
                free -= 1
                continue
            _, _, tid = heapq.heappop(ready)
            st = self.status[tid]
            if st.state != TaskState.PENDING:
                continue
            if self.gate is not None and not self.gate.admit(tid):
                # Held (e.g. its circuit is open): no attempt, no worker.
                self.bus.emit(TaskHeld(tid, tasks[tid].breaker or ""))
                continue
            t = tasks[tid]
            # The attempt's ordinal over the task's whole life: after a fresh
            # retry budget (dlq retry) or an attempt cut short by a crash (its
            # `running` record holds the number) it keeps counting, so run id +
            # attempt stays unique for idempotency keys.
            number = max(st.attempts + 1, len(st.history) + 1, st.ordinal + 1)
            loop = None
            if t.sensor is not None:
                sensor_kind.before_dispatch(st, self.wall())
            elif t.repeat is not None:
                loop = loop_kind.before_dispatch(st, t.repeat)
            self._transition(tid, TaskState.RUNNING, number=number, attempts=st.attempts + 1,
                             ordinal=number)
            self._dispatched.setdefault(tid, self._records[-1]["at"])
            kwargs = dict(t.kwargs)
            for param, upstream in t.inputs.items():
                # An upstream that did not complete (a trigger rule let this run) gives null.
                kwargs[param] = (self._output_of(upstream) if isinstance(upstream, str)
                                 else [self._output_of(u) for u in upstream])
            if t.map is not None:
                self.fanout.start(tid, kwargs)  # its elements join the queue
                continue
            state_in = None
            if self.states is not None and carried_state.supplied(t):
                state_in = self.states.load(self.spec.name, tid)
            # Positional, in Attempt's field order (keywords cost ~0.8 µs more per task):
            # run_id, task_id, number, call, kwargs, timeout, timeout_grace,
            # memory_limit, state, when, loop, map_index, priority.
            batch.append(Attempt(self.run_id, tid, number, t.call, kwargs, t.timeout,
                                 t.timeout_grace, t.memory_limit, state_in, t.when, loop,
                                 None, t.priority))
            free -= 1
        # Written before the tasks start (the timers' `pending` records and the
        # last results' records with them); in durable mode `running` records
        # are not synced on their own (see store/journal.py: a lost `running`
        # record changes nothing), the results' records are.
        self._commit(sync=self._sync_due)
        for attempt in batch:
            self.executor.submit(attempt)
            self.running += 1

    # ------------------------------------------------------------ results

    def _handle(self, results: list[AttemptResult]) -> None:
        final: list[str] = []
        requeue: list[str] = []
        now = self.clock()
        for r in results:
            self.running -= 1
            tid = r.task_id
            st = self.status[tid]
            t = self.spec.tasks[tid]
            if self.gate is not None:
                self.gate.settle(r)
            if r.map_index is not None:
                self.fanout.result(r, now)  # the element's row; the map may end
                continue
            if r.cancelled:
                self._cut[tid] = r.ended or self.wall()
                # Cut short by dagrun itself: does not count against the retries.
                if self.cancel.reason:
                    self._transition(tid, TaskState.CANCELLED, number=r.number,
                                     attempts=st.attempts - 1,
                                     reason=f"cancelled ({self.cancel.reason})")
                else:
                    self._transition(tid, TaskState.PENDING, number=r.number,
                                     attempts=st.attempts - 1)
                    requeue.append(tid)
                continue
            if r.condition_false:
                # Its predicate said no: skipped, and the attempt is not counted.
                self._transition(tid, TaskState.SKIPPED, number=r.number,
                                 attempts=st.attempts - 1, reason=CONDITION_FALSE, benign=True)
                final.append(tid)
                continue
            if t.sensor is not None or t.repeat is not None:
                kept = (sensor_kind.on_result(self, t, st, r) if t.sensor is not None
                        else loop_kind.on_result(self, t, st, r, requeue))
                if kept is None:
                    continue  # the kind took it: the next poll / iteration is on its way
                r = kept
            if r.error is None and t.files_out and self.cache is not None:
                r = self.cache.check_outputs(t, r)  # MissingOutput if one was not made
            entry = {"attempt": r.number, "started": r.started, "ended": r.ended,
                     "error": r.error.to_dict() if r.error else None}
            if r.log is not None:
                entry["log"] = r.log  # where `dagrun logs` finds its output
            st.history.append(entry)
            if r.error is None:
                if r.state is not None and self.states is not None:
                    self._carried[tid] = r.state
                self._transition(tid, TaskState.COMPLETED, attempt=entry, output=r.output,
                                 error=None)
                final.append(tid)
            elif should_retry(t.retry, r.error.all_types, st.attempts):
                delay = retry_delay(t.retry, st.attempts, self.rng)
                self._transition(tid, TaskState.RETRYING, attempt=entry, error=r.error,
                                 retry_at=self.wall() + delay)
                heapq.heappush(self.timers, (now + delay, next(self._seq), tid))
            else:
                self._transition(tid, TaskState.DEAD_LETTERED, attempt=entry, error=r.error)
                final.append(tid)
        self.fanout.flush()
        final.extend(self.fanout.take_settled())
        for tid in final:
            self._release(tid)
        saved = carried_state.take_carried(self)
        # Durable before anything acts on it: the ready heap is dispatched only
        # after these records are appended (with the dispatch's own, in one write:
        # _dispatch commits before it submits), and the skips it decided are in
        # the same append. A state across runs is saved only once its completed
        # record is on disk.
        self._sync_due = True
        if saved:
            self._commit()
            carried_state.save_states(self, saved)
        for tid in requeue:
            self._push_ready(tid)

    # ------------------------------------------------------------ kinds

    def _timer(self, tid: str, delay: float) -> None:
        """The task (now `retrying`) rejoins the ready heap in `delay` seconds."""
        heapq.heappush(self.timers, (self.clock() + delay, next(self._seq), tid))

    def _stop_everything(self) -> None:
        self.bus.note(f"stopping ({self.cancel.reason}): cancelling running tasks")
        grace = self.cancel_grace
        if grace is None:  # as long as the most patient running task asks for
            grace = max((self.spec.tasks[tid].timeout_grace for tid, st in self.status.items()
                         if st.state == TaskState.RUNNING), default=1.0)
        results = self.executor.cancel(0 if self.cancel.force else grace)
        self._handle(results)
        self._cancel_the_rest()

    def _cancel_the_rest(self) -> None:
        """Every task not final is recorded cancelled (a stop, a lost executor)."""
        for tid, st in self.status.items():
            if st.state not in FINAL_STATES:
                # A retrying task's record keeps its delay's end: resume waits it out.
                retry_at = st.retry_at if st.state == TaskState.RETRYING else None
                self._transition(tid, TaskState.CANCELLED, retry_at=retry_at,
                                 reason=f"cancelled ({self.cancel.reason})")
        self._commit()

    # ------------------------------------------------------------ records

    def result(self) -> RunResult:
        return run_result(self)
