"""What the scheduler and the event stream see of the cache.

- `lookup()` (Scheduler._decide, when every upstream of a task completed):
  computes the task's key; on a hit (same key, within the ttl, every
  files_out unchanged) the task moves pending -> completed at once with the
  entry's output and `cached_from` (its journal record says so: resume keeps
  it). On a miss the key waits for the task's completion.
- `check_outputs()` (Scheduler._handle, a successful attempt of a task with
  files_out): a declared output that is missing fails the attempt with
  MissingOutput (retried like any failure); else their digests are kept.
- `on_event()`: a listener; a task completed by an attempt stores an entry
  (after its record is on disk), written in batches (FLUSH_ENTRIES,
  FLUSH_SECONDS) and at the run's end.
- `emitted()` (kinds/events.py, each loop turn): the events tasks emitted. An
  entry keeps those of its task and a hit emits them again, or a task waiting
  for one would wait for ever. They reach the scheduler at the loop turn after
  the task's result, so an entry is written one tick after its completion.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from dagrun.cache.key import Hasher, changed_part, key_of, value_digest
from dagrun.cache.store import FORMAT, CacheStore, stale
from dagrun.events import RunFinished, TaskChanged
from dagrun.model import AttemptResult, TaskError, TaskState, TaskStatus

if TYPE_CHECKING:
    from dagrun.scheduler import Scheduler
    from dagrun.spec import PipelineSpec, TaskSpec

MISSING_OUTPUT = "MissingOutput"
# Entries are written in one append per this many completions or seconds: a
# write per loop turn cost 30% of a 10k no-op run. An entry lost in a crash
# only costs a re-run of its task next time (its run's journal has the result).
FLUSH_ENTRIES = 1000
FLUSH_SECONDS = 1.0


def wanted(spec: PipelineSpec) -> bool:
    return any(t.cache is not None or t.files_out for t in spec.tasks.values())


def cacheable(t: TaskSpec) -> bool:
    """Caching on, and a result that depends only on the key's parts: not a
    sensor, a loop or a map, nor a task carrying state across runs (whose hit
    would skip its state's update), nor one with a `when` or a `wait_for` (a
    hit would skip the predicate or the event that decide whether and when
    it runs: an approval gate), nor one whose
    kwargs name a secret param (a bound task keeps its template: the key, on
    disk, is an unsalted digest of the secret), nor one whose kwargs use
    ${run.id} (`never`: a key new every run would only grow the cache);
    `cache` under [defaults] skips those."""
    from dagrun.kinds.state import supplied

    return (t.cache is not None and not t.cache.never and t.sensor is None
            and t.repeat is None and t.map is None and t.when is None and not t.wait_for
            and t.template is None and not supplied(t))


def never(t: TaskSpec) -> str:
    """Why a task with `cache` set is never cached ("" if it may be)."""
    return t.cache.never if t.cache is not None else ""


class CachePlug:
    name = "cache"
    task_states = frozenset({TaskState.COMPLETED})  # it stores completions only

    def __init__(self, spec: PipelineSpec, run_id: str, store: CacheStore,
                 statuses: dict[str, TaskStatus], *, use: bool = True,
                 refresh: Iterable[str] = (), durable: bool = False,
                 given: dict[str, dict[str, Any]] | None = None) -> None:
        self.spec = spec
        self.run_id = run_id
        self.store = store
        self.statuses = statuses
        self.use = use
        self.refresh = set(refresh)
        self.durable = durable
        # A partial run's kwargs holding taken outputs (selection.py): hashed as
        # the inputs they are, so a task has one key whatever the selection.
        self.given = given or {}
        self.hasher = Hasher(spec.base_dir)
        # (task, key) -> newest entry: tasks with the same definition (a
        # thousand copies of one call) have the same key but entries of their own.
        self.by_key: dict[tuple[str, str], dict[str, Any]] = {}
        self.newest: dict[str, dict[str, Any]] = {}  # task -> its newest entry
        if any(t.cache is not None for t in spec.tasks.values()):
            for e in store.entries(spec.name):
                self.by_key[e["task"], e["key"]] = e
                self.newest[e["task"]] = e
        self.keys: dict[str, tuple[str, dict[str, str]]] = {}  # misses: task -> key, parts
        self.made: dict[str, dict[str, str]] = {}  # task -> its files_out digests
        self._buffer: list[dict[str, Any]] = []
        self.emits: dict[str, list[str]] = {}  # task -> the events it emitted in this run
        self._young: list[tuple[int, dict[str, Any]]] = []  # (tick stored, entry)
        self._ticks = 0
        self._fd: int | None = None  # the entry file, opened at the first write
        self._flushed = time.monotonic()

    @classmethod
    def for_run(cls, spec: PipelineSpec, run_id: str, store: CacheStore,
                statuses: dict[str, TaskStatus], settings: Mapping[str, Any]) -> CachePlug:
        """The plug a run's settings (run.json) ask for: --no-cache, --refresh,
        and of a partial run, --from's tasks forced and the taken kwargs."""
        selection = settings.get("selection") or {}
        return cls(spec, run_id, store, statuses, use=not settings.get("no_cache"),
                   refresh=[*(settings.get("refresh") or ()), *(selection.get("forced") or ())],
                   durable=settings.get("durability") == "durable",
                   given=selection.get("given"))

    # ------------------------------------------------------------ scheduler side

    def parts(self, t: TaskSpec, statuses: dict[str, TaskStatus]) -> dict[str, str]:
        inputs = {p: (statuses[u].output if isinstance(u, str)
                      else [statuses[x].output for x in u]) for p, u in t.inputs.items()}
        given = self.given.get(t.id)
        if given:
            kwargs = dict(t.kwargs)
            inputs.update((p, kwargs.pop(p)) for p in given if p in kwargs)
            t = dataclasses.replace(t, kwargs=kwargs)
        return self.hasher.parts(t, inputs)

    def hit_entry(self, t: TaskSpec, key: str) -> dict[str, Any] | None:
        """The usable entry of `key`, or None (a miss)."""
        e = self.by_key.get((t.id, key))
        if e is None or stale(e, t.cache.ttl if t.cache else None):
            return None
        if value_digest(e["output"]) != e["output_digest"]:
            return None
        for rel, d in e["files_out"].items():
            if self.hasher.file(os.path.join(self.hasher.base, rel)) != d:
                return None
        return e

    def reason(self, t: TaskSpec, parts: dict[str, str]) -> str:
        """Why the task would run (or "cached"): for a dry run and for misses."""
        if not cacheable(t):
            return never(t) or "no cache"
        if not self.use:
            return "forced (--no-cache)"
        if t.id in self.refresh:
            return "forced (--refresh)"
        if self.hit_entry(t, key_of(parts)) is not None:
            return "cached"
        old = self.newest.get(t.id)
        if old is None:
            return "not in the cache"
        if key_of(parts) == old["key"]:
            if stale(old, t.cache.ttl if t.cache else None):
                return "expired"
            return "output file changed"
        return changed_part(parts, old["parts"]) or "not in the cache"

    def lookup(self, sched: Scheduler, tid: str) -> bool:
        """True: a hit, and the task is completed (its dependents may go)."""
        t = sched.spec.tasks[tid]
        if not cacheable(t):
            return False
        parts = self.parts(t, sched.status)
        key = key_of(parts)
        if self.use and tid not in self.refresh:
            e = self.hit_entry(t, key)
            if e is not None:
                sched._transition(tid, TaskState.COMPLETED, output=e["output"], error=None,
                                  cached_from=e["run"])
                self._replay(sched, tid, e.get("events") or ())
                return True
        self.keys[tid] = (key, parts)
        return False

    def _replay(self, sched: Scheduler, tid: str, names: Iterable[str]) -> None:
        """A hit emits the events its task emitted when it ran (journalled with
        the hit's record, so a resume knows them)."""
        if sched.waits is None:
            return
        from dagrun.store.records import RUN_FORMAT

        for name in names:
            sched.waits.emitted.add(name)
            sched._records.append({"v": RUN_FORMAT, "kind": "event", "name": name,
                                   "source": f"task {tid} (cached)", "at": sched.wall()})
        self.emitted([(tid, n) for n in names])  # a hit's entry is not rewritten: no-op

    def emitted(self, pairs: Iterable[tuple[str, str]]) -> None:
        for tid, name in pairs:
            names = self.emits.setdefault(tid, [])
            if name not in names:
                names.append(name)

    def check_outputs(self, t: TaskSpec, r: AttemptResult) -> AttemptResult:
        made = self.hasher.files(t.files_out)
        missing = [p for p in t.files_out if not any(
            d is not None for rel, d in self.hasher.files([p]).items())]
        if missing:
            error = TaskError(MISSING_OUTPUT, f"the task completed without creating its "
                              f"declared output {', '.join(missing)} (files_out, relative "
                              f"to {self.hasher.base})", types=(MISSING_OUTPUT, "Exception"))
            return r._replace(error=error, output=None)
        self.made[t.id] = {rel: d for rel, d in made.items() if d is not None}
        return r

    # ------------------------------------------------------------ listener side

    def on_event(self, event: Any) -> None:
        if isinstance(event, TaskChanged):
            if event.new == TaskState.COMPLETED and event.old == TaskState.RUNNING:
                self._store(event.task_id, event.at)
        elif isinstance(event, RunFinished):
            # The loop's last turn took every event; a cancelled run's may not have.
            self._promote(everything=event.result.status != "cancelled")
            self.close()

    def _store(self, tid: str, at: float) -> None:
        known = self.keys.pop(tid, None)
        made = self.made.pop(tid, {})
        t = self.spec.tasks[tid]
        if known is None or t.cache is None:
            return
        key, parts = known
        output = self.statuses[tid].output
        entry = {"v": FORMAT, "pipeline": self.spec.name, "task": tid, "key": key,
                 "parts": parts, "output": output, "output_digest": value_digest(output),
                 "files_out": made, "run": self.run_id, "created": at or time.time(),
                 "ttl": t.cache.ttl}
        self.by_key[tid, key] = self.newest[tid] = entry
        self._young.append((self._ticks, entry))

    def _promote(self, everything: bool = False) -> None:
        """Entries stored before the last loop turn go to the buffer, with the
        events their task emitted; the others wait (`everything`: all go)."""
        keep = []
        for stored, entry in self._young:
            if everything or stored < self._ticks - 1:
                if self.emits.get(entry["task"]):
                    entry["events"] = list(self.emits[entry["task"]])
                self._buffer.append(entry)
            else:
                keep.append((stored, entry))
        self._young = keep

    def tick(self) -> None:
        self._ticks += 1
        if self._young:
            self._promote()
        if len(self._buffer) >= FLUSH_ENTRIES or (
                self._buffer and time.monotonic() - self._flushed >= FLUSH_SECONDS):
            self.flush()

    def flush(self) -> None:
        if self._buffer:
            entries, self._buffer = self._buffer, []
            if self._fd is not None and self.store.replaced(self.spec.name, self._fd):
                os.close(self._fd)  # `cache clear` mid-run: append to the new file
                self._fd = None
            if self._fd is None:
                self._fd = self.store.open_append(self.spec.name)
            self.store.append(self.spec.name, entries, durable=self.durable, fd=self._fd)
        self._flushed = time.monotonic()

    def close(self) -> None:
        """The run's end (or its abort): what is buffered is written."""
        try:
            self.flush()
        finally:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def abort(self) -> None:
        self._young = []  # their events may not have been taken: a miss later, not a wrong hit
        self.close()


def record_fields(st: TaskStatus, rec: dict[str, Any]) -> None:
    if st.cached_from is not None:
        rec["cached_from"] = st.cached_from


def extras(st: TaskStatus) -> dict[str, Any]:
    if st.cached_from is None or st.state != TaskState.COMPLETED:
        return {}
    return {"cached": True, "cached_from": st.cached_from}
