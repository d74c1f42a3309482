"""Which tasks are ready: the scheduler's upstream counts, trigger rules and
the release of dependents (a part of Scheduler, moved here whole).

`Readiness` is a base class of scheduler.Scheduler and holds no state of its
own: `waiting` (per not-final task, its upstreams not yet final), `tainted`
(tasks with an upstream that did not complete) and the ready heap are the
scheduler's. A task becomes ready once, when the last of its upstreams is
final; a skip (its trigger rule did not fire) releases its own dependents.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from dagrun.kinds.triggers import ONE_FAILED, decide
from dagrun.model import FINAL_STATES, TaskState, TaskStatus

if TYPE_CHECKING:
    from dagrun.cache.plug import CachePlug
    from dagrun.kinds.events import EventWaits
    from dagrun.spec import PipelineSpec

# States after which a task's dependents may be decided (cancelled is final
# too, but only when the run stops).
SETTLED = frozenset({TaskState.COMPLETED, TaskState.DEAD_LETTERED, TaskState.SKIPPED})


class Readiness:
    if TYPE_CHECKING:  # the scheduler's, used here
        spec: PipelineSpec
        status: dict[str, TaskStatus]
        dependents: dict[str, list[str]]
        waiting: dict[str, int]
        tainted: set[str]
        ready: list[tuple[int, int, str]]
        timers: list[tuple[float, int, str]]
        waits: EventWaits | None
        cache: CachePlug | None
        clock: Callable[[], float]
        wall: Callable[[], float]
        _seq: Iterator[int]

        def _transition(self, tid: str, new: TaskState, *,
                        attempt: dict[str, Any] | None = None, number: int | None = None,
                        **fields: Any) -> None: ...

    def _prepare(self) -> None:
        """Counts of upstreams not yet final, from the current states (a resume
        starts from any mix); tasks with none are decided at once."""
        tasks = self.spec.tasks
        status = self.status
        for tid, t in tasks.items():
            st = status[tid]
            if st.state in FINAL_STATES:
                continue
            if st.state != TaskState.PENDING:
                self._transition(tid, TaskState.PENDING)
            n = 0
            for d in t.deps:
                state = status[d].state
                if state not in SETTLED:
                    n += 1
                elif state != TaskState.COMPLETED:
                    self.tainted.add(tid)
            self.waiting[tid] = n
        now, wall = self.clock(), self.wall()
        for tid in [tid for tid, n in self.waiting.items() if n == 0]:
            st = status[tid]
            if st.state != TaskState.PENDING:
                continue
            if st.retry_at is not None and st.retry_at > wall:
                # A retry delay a crash cut short is waited out, not skipped.
                self._transition(tid, TaskState.RETRYING)
                heapq.heappush(self.timers, (now + st.retry_at - wall, next(self._seq), tid))
            elif self._decide(tid):
                self._release(tid)

    def _output_of(self, upstream: str) -> Any:
        up = self.status[upstream]
        return up.output if up.state == TaskState.COMPLETED else None

    def _push_ready(self, tid: str) -> None:
        if self.waits is not None and self.waits.hold(tid):
            return  # its events are not all emitted: it waits here, holding no worker
        heapq.heappush(self.ready, (-self.spec.tasks[tid].priority, next(self._seq), tid))

    def _decide(self, tid: str) -> bool:
        """All of `tid`'s upstreams are final: its trigger rule puts it on the
        ready heap or skips it (True: skipped, and so final itself)."""
        t = self.spec.tasks[tid]
        if tid not in self.tainted and t.trigger != ONE_FAILED:
            if self.cache is not None and self.cache.lookup(self, tid):  # type: ignore[arg-type]  # it is a Scheduler
                return True  # a cache hit: completed, no attempt
            self._push_ready(tid)  # every upstream completed: any other rule fires
            return False
        runs, reason, benign = decide(t.trigger, t.deps, self.status)
        if runs:
            self._push_ready(tid)
            return False
        self._transition(tid, TaskState.SKIPPED, reason=reason, benign=benign)
        return True

    def _release(self, final: str) -> None:
        """`final` has become final: count it off its dependents' waits and decide
        those left with nothing to wait for; their skips release in turn (a
        stack, not recursion: a 100k-task chain of skips is fine)."""
        stack = [final]
        waiting = self.waiting
        status = self.status
        while stack:
            tid = stack.pop()
            bad = status[tid].state != TaskState.COMPLETED
            for child in self.dependents[tid]:
                n = waiting.get(child)
                if n is None:
                    # Already final: a completed task re-run on resume (its own
                    # record was lost) leaves its completed dependents alone.
                    continue
                if bad:
                    self.tainted.add(child)
                waiting[child] = n - 1
                if n == 1 and status[child].state == TaskState.PENDING and self._decide(child):
                    stack.append(child)
