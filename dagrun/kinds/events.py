"""Event-driven tasks: `wait_for = ["name", ...]` (and `event_timeout`).

A task that waits for events becomes ready only once its deps are done *and*
every event it names has been emitted in this run. Waiting holds no worker:
the task stays pending in the parent, outside the ready heap.

Events reach the driving process two ways, both journalled (a `kind: event`
record) before anything acts on them, so a resumed run remembers them:
- from a task, `dagrun.emit("name")`: a frame on its worker's result pipe
  (the executor collects them while the task keeps running);
- from outside, `dagrun emit RUN_ID NAME`: a file dropped atomically into the
  run's `inbox/` folder, which needs no lock. The driving process scans the
  inbox every loop turn (throttled), journals each event, then deletes its
  file; a crash in between journals it twice, which changes nothing. On a run
  that is not live the file waits there for the resume.

An event timeout is measured from when the task started waiting (its deps
done; after a retry, when the retry is due; a resume starts it again) and is a
failure of type EventTimeout, retried per `retries` like any failure.
"""

from __future__ import annotations

import _thread
import os
import re
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dagrun.errors import SpecError, UsageError
from dagrun.model import TaskError, TaskState
from dagrun.retry import retry_delay, should_retry
from dagrun.store.records import RUN_FORMAT

if TYPE_CHECKING:
    from dagrun.scheduler import Scheduler

EVENT_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:-]{0,127}$")
INBOX = "inbox"
SCAN_EVERY = 0.2  # seconds between inbox scans: a listdir, cheap, but not per task


def check_name(name: Any) -> str:
    if not isinstance(name, str) or not EVENT_NAME.fullmatch(name):
        raise UsageError(f"invalid event name {name!r}: use 1-128 letters, digits, '_', "
                         "'.', ':' or '-', starting with a letter, digit or '_'")
    return name


# ------------------------------------------------------------------ spec keys


def parse_keys(tdoc: Mapping[str, Any], defaults: Mapping[str, Any],
               ctx: str) -> dict[str, Any]:
    """`wait_for` and `event_timeout` (also under [defaults]) of one task:
    TaskSpec fields; {} for a task that waits for nothing."""
    from dagrun.durations import parse_duration

    out: dict[str, Any] = {}
    wait_for = tdoc.get("wait_for")
    if wait_for is None:
        if "event_timeout" in tdoc:
            raise SpecError(f"{ctx}: 'event_timeout' needs 'wait_for'")
        return out
    if wait_for is not None:
        if isinstance(wait_for, str):
            wait_for = [wait_for]
        if not isinstance(wait_for, list) or not wait_for:
            raise SpecError(f"{ctx}: 'wait_for' must be a list of event names, got {wait_for!r}")
        for name in wait_for:
            if not isinstance(name, str) or not EVENT_NAME.fullmatch(name):
                raise SpecError(f"{ctx}: 'wait_for': {name!r} is not an event name (letters, "
                                "digits, '_', '.', ':', '-')")
        out["wait_for"] = tuple(dict.fromkeys(wait_for))
    timeout = tdoc.get("event_timeout", defaults.get("event_timeout"))
    if timeout is not None:
        try:
            seconds = parse_duration(timeout)
        except ValueError:
            seconds = -1.0
        if seconds <= 0:
            raise SpecError(f"{ctx}: 'event_timeout' must be a positive number of seconds "
                            f"(or a duration like \"30s\"), got {timeout!r}")
        out["event_timeout"] = seconds
    return out


# ------------------------------------------------------------------ parent side


class EventWaits:
    """The scheduler's view of events: emitted names, tasks waiting, timeouts."""

    def __init__(self, spec: Any, run_path: Path | None, emitted: Iterable[str] = (),
                 *, clock: Any = time.monotonic, wall: Any = time.time) -> None:
        self.spec = spec
        self.inbox = run_path / INBOX if run_path is not None else None
        self.emitted: set[str] = set(emitted)
        self.waiting: dict[str, tuple[float, float]] = {}  # task -> (since clock, since wall)
        self.clock = clock
        self.wall = wall
        self._next_scan = 0.0

    def hold(self, tid: str) -> bool:
        """True if the task, its deps done, must wait for events (kept here)."""
        t = self.spec.tasks[tid]
        if not t.wait_for or self.emitted.issuperset(t.wait_for):
            return False
        if tid not in self.waiting:
            self.waiting[tid] = (self.clock(), self.wall())
        return True

    def holding(self) -> bool:
        return bool(self.waiting)

    def missing(self, tid: str) -> list[str]:
        return [n for n in self.spec.tasks[tid].wait_for if n not in self.emitted]

    def collect(self, from_tasks: list[tuple[str, str]]) -> tuple[list[dict[str, Any]],
                                                                  list[Path]]:
        """New events (from tasks and, when due, the inbox) as journal records,
        and the inbox files to delete once those records are on disk."""
        records: list[dict[str, Any]] = []
        for task, name in from_tasks:
            records.append({"kind": "event", "name": name, "source": f"task {task}"})
        files: list[Path] = []
        now = self.clock()
        if self.inbox is not None and now >= self._next_scan:
            self._next_scan = now + SCAN_EVERY
            for path, rec in scan_inbox(self.inbox):
                files.append(path)
                if rec is not None:
                    records.append(rec)
        for rec in records:
            self.emitted.add(rec["name"])
        return records, files

    def released(self) -> list[str]:
        """Waiting tasks whose events have all been emitted (no longer held)."""
        out = [tid for tid in self.waiting
               if self.emitted.issuperset(self.spec.tasks[tid].wait_for)]
        for tid in out:
            del self.waiting[tid]
        return out

    def expired(self) -> list[tuple[str, TaskError, float]]:
        """Waiting tasks past their event_timeout: (task, error, wall time waiting began)."""
        now = self.clock()
        out = []
        for tid, (since, since_wall) in list(self.waiting.items()):
            limit = self.spec.tasks[tid].event_timeout
            if limit is not None and now - since >= limit:
                del self.waiting[tid]
                names = ", ".join(self.missing(tid))
                out.append((tid, TaskError(
                    "EventTimeout", f"waited {limit:g}s for event(s) never emitted: {names}",
                    types=("EventTimeout",)), since_wall))
        return out

    def forget(self, tid: str) -> None:
        self.waiting.pop(tid, None)

    def wait_time(self) -> float | None:
        now = self.clock()
        waits = [since + self.spec.tasks[tid].event_timeout - now
                 for tid, (since, _) in self.waiting.items()
                 if self.spec.tasks[tid].event_timeout is not None]
        if self.inbox is not None:
            waits.append(max(self._next_scan - now, 0.0))
        return min(waits) if waits else None


def turn(sched: Scheduler, waits: EventWaits) -> None:
    """Events emitted since the last turn (by tasks, into the inbox) are
    journalled, then release the tasks waiting for them; waits past their
    event_timeout fail (EventTimeout), retried per `retries`."""
    take = getattr(sched.executor, "take_emitted", None)
    from_tasks = take() if take is not None else []
    if from_tasks and sched.cache is not None:
        sched.cache.emitted(from_tasks)  # a cache entry keeps its task's events
    records, files = waits.collect(from_tasks)
    for rec in records:
        sched._records.append({"v": RUN_FORMAT, **rec, "at": sched.wall()})
    expired = waits.expired()
    dead = []
    for tid, error, since in expired:
        st, t = sched.status[tid], sched.spec.tasks[tid]
        number = max(st.attempts + 1, len(st.history) + 1, st.ordinal + 1)
        entry = {"attempt": number, "started": since, "ended": sched.wall(),
                 "error": error.to_dict()}
        st.history.append(entry)
        if should_retry(t.retry, error.all_types, st.attempts + 1):
            delay = retry_delay(t.retry, st.attempts + 1, sched.rng)
            sched._transition(tid, TaskState.RETRYING, attempt=entry, error=error,
                              attempts=st.attempts + 1, ordinal=number,
                              retry_at=sched.wall() + delay)
            sched._timer(tid, delay)
        else:
            sched._transition(tid, TaskState.DEAD_LETTERED, attempt=entry, error=error,
                              attempts=st.attempts + 1, ordinal=number)
            dead.append(tid)
    for tid in dead:
        sched._release(tid)
    if records or expired:
        sched._commit()
        for rec in records:
            sched.bus.note(f"event {rec['name']} emitted ({rec['source']})")
    remove(files)  # only once their records are on disk
    for tid in waits.released():
        sched._push_ready(tid)


def scan_inbox(inbox: Path) -> Iterator[tuple[Path, dict[str, Any] | None]]:
    """(file, event record or None if unreadable) for each event dropped in the inbox."""
    from dagrun.store.records import unframe

    try:
        names = sorted(os.listdir(inbox))
    except FileNotFoundError:
        return
    for name in names:
        if not name.endswith(".event"):
            continue  # e.g. a temporary file being written
        path = inbox / name
        try:
            with open(path, "rb") as fh:
                data = unframe(fh.read())
            rec = {"kind": "event", "name": check_name(data["name"]),
                   "source": str(data.get("source", "dagrun emit"))}
        except FileNotFoundError:
            continue
        except (OSError, ValueError, KeyError, TypeError, UsageError):
            rec = None  # a damaged file: dropped, it cannot become a valid event
        yield path, rec


def remove(files: list[Path]) -> None:
    for path in files:
        try:
            path.unlink()
        except FileNotFoundError:
            pass


def drop(run_path: Path, name: str, source: str) -> Path:
    """`dagrun emit`: write the event into the run's inbox, atomically (rename)."""
    from dagrun.store.fs import make_private_dir, write_atomic
    from dagrun.store.records import frame

    inbox = run_path / INBOX
    make_private_dir(inbox)
    path = inbox / f"{time.time_ns():020d}-{os.getpid()}-{os.urandom(4).hex()}.event"
    write_atomic(path, frame({"name": name, "source": source, "at": time.time()}))
    return path


# ------------------------------------------------------------------ worker side

_channel: dict[str, Any] = {}
_lock = _thread.allocate_lock()  # threading.Lock, without importing threading


def bind_pipe(res_fd: int) -> None:
    """Called once in each worker: where dagrun.emit() writes."""
    _channel["fd"] = res_fd
    _channel["pid"] = os.getpid()


class in_task:  # noqa: N801 - used as a function: `with in_task(msg_id):`
    """While the task runs, dagrun.emit() sends frames with its message id.
    (A class, not a @contextmanager generator: it wraps every task.)"""

    __slots__ = ("msg_id",)

    def __init__(self, msg_id: int) -> None:
        self.msg_id = msg_id

    def __enter__(self) -> None:
        with _lock:
            _channel["id"] = self.msg_id

    def __exit__(self, *_exc: object) -> None:
        with _lock:
            _channel.pop("id", None)


def emit(name: str) -> bool:
    """Emit event `name` in the current run, from inside a task. Returns True
    if sent; outside a dagrun task (or from a process the task started) it does
    nothing and returns False."""
    check_name(name)
    from dagrun.executor import wire

    with _lock:
        msg_id = _channel.get("id")
        if msg_id is None or _channel.get("pid") != os.getpid():
            return False
        wire.write_all(_channel["fd"], wire.encode({"emit": name}, msg_id))
    return True
