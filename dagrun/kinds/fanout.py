"""Dynamic fan-out: `map = "param"` runs a task once per element of a list.

Each element is an attempt stream of its own (own retries and timeout,
DAGRUN_MAP_INDEX in its environment) and the task's output is the list of the
element results in order. Elements are cheap on purpose, so that a map over
100k elements costs no more than 100k plain tasks:

- no TaskStatus, event chain or full record per element: the map task has one
  status (running while its elements run); its elements live in flat arrays
  (`Elements`);
- element results are journalled as rows of one compact record per result
  batch, chained to the map task's records:
      {"task": T, "n": COUNT, "el": [[index, code, number, attempts, payload], ...]}
  code 0: completed (payload: the output), 1: an attempt failed and the
  element will retry, 2: failed for good (payload: the attempt entry with its
  error). No `running` row is written: a crash re-runs the elements whose
  result was not recorded (their attempt cut short is not counted);
- element attempts go to the executor as ordinary Attempts with a `map_index`.

Names: an element is `TASK[i]` in progress lines, dead letters and `dlq retry`.
"""

from __future__ import annotations

import heapq
import re
from array import array
from collections import deque
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

from dagrun.kinds.fanout_spec import kind as _kind
from dagrun.model import Attempt, AttemptResult, TaskError, TaskState
from dagrun.retry import retry_delay, should_retry
from dagrun.store.records import RUN_FORMAT

if TYPE_CHECKING:
    from dagrun.model import TaskStatus
    from dagrun.scheduler import Scheduler

# Element states (one byte each).
PENDING, RUNNING, RETRYING, COMPLETED, FAILED = range(5)
_FINAL = (COMPLETED, FAILED)
ELEMENT_ID = re.compile(r"^(?P<task>.+)\[(?P<index>0|[1-9][0-9]{0,9})\]$")
_MAX_COUNT = 10**9


def split_ids(names: Iterable[str]) -> tuple[set[str], dict[str, set[int]]]:
    """`dlq retry` names -> (task ids, {map task: element indexes}); a plain
    task id retries the whole task (every failed element of a map)."""
    tasks: set[str] = set()
    elements: dict[str, set[int]] = {}
    whole: set[str] = set()
    for name in names:
        m = ELEMENT_ID.fullmatch(name)
        if m is None:
            tasks.add(name)
            whole.add(name)
        else:
            tasks.add(m["task"])
            elements.setdefault(m["task"], set()).add(int(m["index"]))
    return tasks, {t: idx for t, idx in elements.items() if t not in whole}


def base_task(name: str) -> str:
    m = ELEMENT_ID.fullmatch(name)
    return m["task"] if m else name


# ------------------------------------------------------------------ state

class Elements:
    """The elements of one map task: flat arrays, so 100k cost a few MB."""

    __slots__ = ("count", "state", "attempts", "numbers", "outputs", "errors", "history",
                 "done", "failed")

    def __init__(self, count: int) -> None:
        self.count = count
        self.state = bytearray(count)
        self.attempts = array("I", bytes(4 * count))  # counted against the retries
        self.numbers = array("I", bytes(4 * count))  # the highest attempt number handed out
        self.outputs: list[Any] = [None] * count
        self.errors: dict[int, TaskError] = {}  # failed for good
        self.history: dict[int, list[dict[str, Any]]] = {}  # failed attempts, for letters
        self.done = 0
        self.failed = 0

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"count": self.count, "completed": self.done,
                               "failed": self.failed}
        if self.errors:
            out["errors"] = [{"index": i, "error": e.summary()}
                             for i, e in sorted(self.errors.items())]
        return out


class ElementChanged(NamedTuple):
    """An event: element number `element` of map task `task_id` changed state."""

    task_id: str
    element: int  # its index in the list
    new: TaskState
    attempt: int
    error: TaskError | None = None

    @property
    def name(self) -> str:
        return f"{self.task_id}[{self.element}]"


def summary(st: TaskStatus) -> dict[str, Any] | None:
    el = getattr(st, "elements", None)
    return el.summary() if el is not None else None


# ------------------------------------------------------------------ records

def valid_row(row: Any) -> bool:
    """A row of an element record as _Fanout writes it (repair's fold checks)."""
    if not (isinstance(row, list) and len(row) == 5):
        return False
    i, code, number, attempts, payload = row
    if not all(type(v) is int and 0 <= v <= _MAX_COUNT for v in (i, code, number, attempts)):
        return False
    if code == 0:
        return True
    if code not in (1, 2) or not isinstance(payload, dict):
        return False
    err = payload.get("error")
    return isinstance(err, dict) and isinstance(err.get("type"), str)


def valid_record(rec: Mapping[str, Any]) -> bool:
    rows, count = rec.get("el"), rec.get("n")
    return (rec.get("v") == RUN_FORMAT and type(count) is int and 0 <= count <= _MAX_COUNT
            and isinstance(rows, list) and all(valid_row(r) and r[0] < count for r in rows))


def restore(records: list[dict[str, Any]] | None, *, retry: bool,
            only: set[int] | None) -> Elements | None:
    """The elements as a resumed run starts them, from the task's trusted element
    records: completed ones stay; failed-for-good ones stay failed unless retried
    (`retry`: all of them, or the indexes in `only`) with a fresh retry budget;
    the rest run (again)."""
    if not records:
        return None
    el = Elements(records[-1]["n"])
    if any(r["n"] != el.count for r in records):
        return None  # the list changed (an upstream ran again): start afresh
    for rec in records:
        for i, code, number, attempts, payload in rec["el"]:
            el.numbers[i] = max(el.numbers[i], number)
            el.attempts[i] = attempts
            if code == 0:
                el.state[i] = COMPLETED
                el.outputs[i] = payload
            else:
                el.history.setdefault(i, []).append(payload)
                el.state[i] = FAILED if code == 2 else PENDING
    for i in range(el.count):
        s = el.state[i]
        if s == COMPLETED:
            el.done += 1
        elif s == FAILED:
            if retry and (only is None or i in only):
                el.state[i] = PENDING
                el.attempts[i] = 0
            else:
                el.failed += 1
                last = el.history[i][-1]
                el.errors[i] = TaskError.from_dict(last["error"]) or TaskError("Error", "")
    return el


# ------------------------------------------------------------------ the scheduler's side

class Fanout:
    """Runs the elements of the map tasks of one Scheduler."""

    def __init__(self, sched: Scheduler) -> None:
        self._should_retry, self._retry_delay = should_retry, retry_delay
        self.s = sched
        self.ready: deque[tuple[str, int]] = deque()
        self.timers: list[tuple[float, int, str, int]] = []
        self.settled: list[str] = []  # map tasks that have just finished
        # Maps that end without an attempt (an empty list, not a list): decided
        # in the next _handle, whose records are written (and synced) as a batch.
        self._later: list[tuple[str, TaskError | None]] = []
        self._calls: dict[str, tuple[dict[str, Any], list[Any]]] = {}  # tid -> (kwargs, items)
        self._rows: dict[str, list[list[Any]]] = {}
        self._seq = 0

    def busy(self) -> bool:
        return bool(self.ready or self.timers or self.settled or self._later)

    def ended(self) -> bool:
        """Maps to settle although no attempt result came in."""
        return bool(self.settled or self._later)

    def first(self, top: tuple[int, int, str] | None) -> bool:
        """Whether the next slot goes to an element rather than to the ready task `top`."""
        if not self.ready:
            return False
        if top is None:
            return True
        return -self.s.spec.tasks[self.ready[0][0]].priority <= top[0]

    def start(self, tid: str, kwargs: dict[str, Any]) -> None:
        """The map task has just been recorded running: queue its elements."""
        t = self.s.spec.tasks[tid]
        st = self.s.status[tid]
        assert t.map is not None  # only map tasks start here
        items = kwargs[t.map]
        if not isinstance(items, list):
            st.elements = None
            self._later.append((tid, TaskError(
                "MapInputError", f"'map' parameter {t.map!r} is a {_kind(items)}, not a "
                "list: a map runs the task once per element of a list", types=(
                    "MapInputError", "TypeError"))))
            return
        el = st.elements
        if el is None or el.count != len(items):
            el = st.elements = Elements(len(items))
        else:
            # A resumed map: elements not finished start over (an attempt cut
            # short is not counted).
            for i in range(el.count):
                if el.state[i] in (RUNNING, RETRYING):
                    el.state[i] = PENDING
        self._calls[tid] = (kwargs, items)
        todo = [(tid, i) for i in range(el.count) if el.state[i] == PENDING]
        self.ready.extend(todo)
        if not todo:
            self._later.append((tid, None))

    def next_attempt(self) -> Attempt:
        tid, i = self.ready.popleft()
        s = self.s
        t = s.spec.tasks[tid]
        el = s.status[tid].elements
        kwargs, items = self._calls[tid]
        assert t.map is not None  # self._calls holds map tasks only
        el.state[i] = RUNNING
        el.attempts[i] += 1
        number = el.numbers[i] = el.numbers[i] + 1
        s.bus.emit(ElementChanged(tid, i, TaskState.RUNNING, number))
        call_kwargs = dict(kwargs)
        call_kwargs[t.map] = items[i]
        return Attempt(run_id=s.run_id, task_id=tid, number=number, call=t.call,
                       kwargs=call_kwargs, timeout=t.timeout, timeout_grace=t.timeout_grace,
                       memory_limit=t.memory_limit, map_index=i)

    def due(self, now: float) -> None:
        while self.timers and self.timers[0][0] <= now:
            _, _, tid, i = heapq.heappop(self.timers)
            el = self.s.status[tid].elements
            if el is not None and el.state[i] == RETRYING:
                el.state[i] = PENDING
                self.ready.append((tid, i))

    def next_timer(self) -> float | None:
        return self.timers[0][0] if self.timers else None

    def result(self, r: AttemptResult, now: float) -> None:
        """An element's attempt ended; its row is written with the batch."""
        s = self.s
        tid, i = r.task_id, r.map_index
        assert i is not None  # the scheduler sends only element results here
        st = s.status[tid]
        el = st.elements
        if st.state != TaskState.RUNNING or el is None:
            return  # the map was stopped meanwhile
        if r.cancelled:
            el.attempts[i] -= 1
            el.state[i] = PENDING
            if not s.cancel.reason:
                self.ready.append((tid, i))
            return
        rows = self._rows.setdefault(tid, [])
        if r.error is None:
            el.state[i] = COMPLETED
            el.outputs[i] = r.output
            el.done += 1
            rows.append([i, 0, r.number, el.attempts[i], r.output])
            s.bus.emit(ElementChanged(tid, i, TaskState.COMPLETED, r.number))
        else:
            entry = {"attempt": r.number, "started": r.started, "ended": r.ended,
                     "error": r.error.to_dict()}
            el.history.setdefault(i, []).append(entry)
            t = s.spec.tasks[tid]
            if self._should_retry(t.retry, r.error.all_types, el.attempts[i]):
                delay = self._retry_delay(t.retry, el.attempts[i], s.rng)
                el.state[i] = RETRYING
                self._seq += 1
                heapq.heappush(self.timers, (now + delay, self._seq, tid, i))
                rows.append([i, 1, r.number, el.attempts[i], entry])
                s.bus.emit(ElementChanged(tid, i, TaskState.RETRYING, r.number, r.error))
            else:
                el.state[i] = FAILED
                el.errors[i] = r.error
                el.failed += 1
                rows.append([i, 2, r.number, el.attempts[i], entry])
                s.bus.emit(ElementChanged(tid, i, TaskState.DEAD_LETTERED, r.number, r.error))
        if el.done + el.failed == el.count:
            self._finish(tid)

    def flush(self) -> None:
        """Queue the element rows of this batch as one record per map task."""
        for tid, rows in self._rows.items():
            if rows:
                self.s._records.append({"v": RUN_FORMAT, "task": tid,
                                        "n": self.s.status[tid].elements.count, "el": rows})
        self._rows.clear()

    def _finish(self, tid: str) -> None:
        s = self.s
        st = s.status[tid]
        el = st.elements
        t = s.spec.tasks[tid]
        self.flush()  # the rows before the task's own record
        self._calls.pop(tid, None)
        if el.failed and not t.map_allow_failures:
            first = min(el.errors)
            s._transition(tid, TaskState.DEAD_LETTERED, error=TaskError(
                "MapElementsFailed", f"{el.failed} of {el.count} elements failed; first: "
                f"{tid}[{first}]: {el.errors[first].summary()}",
                types=("MapElementsFailed",)))
        else:
            s._transition(tid, TaskState.COMPLETED, output=list(el.outputs), error=None)
        self.settled.append(tid)

    def take_settled(self) -> list[str]:
        later, self._later = self._later, []
        for tid, error in later:
            if error is None:
                self._finish(tid)
            else:
                self.s._transition(tid, TaskState.DEAD_LETTERED, error=error)
                self.settled.append(tid)
        done, self.settled = self.settled, []
        return done
