"""Circuit breakers: a pure state machine, its persistence, and the scheduler gate.

    closed --failure_threshold consecutive failures--> open
    open --cooldown elapsed--> half_open      (checked lazily, on the clock)
    half_open: one probe at a time; success_threshold successes in a row -> closed,
               a failed probe -> open (the cooldown starts again)

Only attempts of guarded tasks count. While a breaker is open its tasks are
*held* by the gate: not started, no attempt used, no worker taken. Results
that arrive while open (tasks started before it opened), and results of
non-probe tasks while half-open, do not move the breaker: only probes decide.

Times are wall-clock seconds (the state outlives the process: a cron job that
starts two minutes after the service went down still finds the breaker open).
The clock is injected everywhere.

    STATE_DIR/breakers/NAME    one checksummed frame, written atomically on each change
"""

from __future__ import annotations

import heapq
import itertools
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dagrun.executor.base import clamp_wait
from dagrun.model import AttemptResult, TaskError
from dagrun.spec import BreakerSpec, PipelineSpec
from dagrun.store.fs import file_identity, make_private_dir, read_state_file, write_atomic
from dagrun.store.records import FORMAT_VERSION, frame, unframe

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


@dataclass
class Breaker:
    spec: BreakerSpec
    state: str = CLOSED
    failures: int = 0  # consecutive failures while closed
    successes: int = 0  # consecutive probe successes while half-open
    opened_at: float = 0.0
    probing: int = 0  # probes in flight; not persisted (a dead process has none)

    def current(self, now: float) -> str:
        """The state at `now`: an open breaker whose cooldown is over is half-open."""
        if self.state == OPEN and now >= self.opened_at + self.spec.cooldown:
            self.state = HALF_OPEN
            self.successes = 0
            self.probing = 0
        return self.state

    def can_start(self, now: float) -> bool:
        state = self.current(now)
        return state == CLOSED or (state == HALF_OPEN and self.probing == 0)

    def start(self, now: float) -> bool:
        """A guarded attempt starts (the caller checked can_start); True if it is a probe."""
        if self.current(now) == HALF_OPEN:
            self.probing += 1
            return True
        return False

    def record(self, ok: bool, probe: bool, now: float) -> bool:
        """The result of a guarded attempt; True if the persisted state changed."""
        state = self.current(now)
        if probe:
            self.probing = max(0, self.probing - 1)
        if state == CLOSED:
            if ok:
                changed, self.failures = self.failures != 0, 0
                return changed
            self.failures += 1
            if self.failures >= self.spec.failure_threshold:
                self._open(now)
            return True
        if state == HALF_OPEN and probe:
            if not ok:
                self._open(now)
            else:
                self.successes += 1
                if self.successes >= self.spec.success_threshold:
                    self.state, self.failures, self.successes = CLOSED, 0, 0
            return True
        return False  # open, or a non-probe result while half-open: only probes decide

    def release(self, probe: bool) -> None:
        """A probe was cut short by dagrun itself (cancel): it decided nothing."""
        if probe:
            self.probing = max(0, self.probing - 1)

    def _open(self, now: float) -> None:
        self.state, self.opened_at, self.successes, self.failures = OPEN, now, 0, 0

    def reopens_at(self) -> float | None:
        """When an open breaker turns half-open."""
        return self.opened_at + self.spec.cooldown if self.state == OPEN else None

    def to_dict(self) -> dict[str, Any]:
        return {"v": FORMAT_VERSION, "name": self.spec.name, "state": self.state,
                "failures": self.failures, "successes": self.successes,
                "opened_at": self.opened_at, "updated": time.time(),
                "cooldown": self.spec.cooldown}  # for `breaker list` (reopens at)

    @classmethod
    def from_dict(cls, spec: BreakerSpec, d: Mapping[str, Any]) -> Breaker:
        if d.get("v") != FORMAT_VERSION or d.get("state") not in (CLOSED, OPEN, HALF_OPEN):
            raise ValueError("not a breaker record")
        return cls(spec, state=d["state"], failures=int(d.get("failures", 0)),
                   successes=int(d.get("successes", 0)),
                   opened_at=float(d.get("opened_at", 0.0)))


class BreakerStore:
    """STATE_DIR/breakers/NAME; an unreadable or corrupt file counts as closed
    (and is named in `corrupt`, for a warning).

    Several dagrun processes may share a breaker (overlapping cron runs, two
    pipelines calling one service): refresh() re-reads the file when another
    process has replaced it since we last read or wrote it, so a breaker opened
    elsewhere holds our tasks too.
    """

    def __init__(self, state_dir: str | os.PathLike[str]) -> None:
        self.root = Path(state_dir) / "breakers"
        self.corrupt: list[Path] = []
        self._seen: dict[str, tuple[int, int, int] | None] = {}

    def _identity(self, name: str) -> tuple[int, int, int] | None:
        return file_identity(self.root / name)

    def load(self, spec: BreakerSpec) -> Breaker:
        path = self.root / spec.name
        self._seen[spec.name] = self._identity(spec.name)
        try:
            data = read_state_file(path)  # a symlink or FIFO: refused, exit 2
        except OSError:
            return Breaker(spec)
        try:
            return Breaker.from_dict(spec, unframe(data))
        except (ValueError, KeyError, TypeError):
            self.corrupt.append(path)
            return Breaker(spec)

    def refresh(self, breaker: Breaker) -> Breaker:
        """The breaker as stored now, if another process changed it; else itself."""
        if self._identity(breaker.spec.name) == self._seen.get(breaker.spec.name):
            return breaker
        fresh = self.load(breaker.spec)
        fresh.probing = breaker.probing  # our probes in flight are ours alone
        return fresh

    def save(self, breaker: Breaker) -> None:
        make_private_dir(self.root)
        write_atomic(self.root / breaker.spec.name, frame(breaker.to_dict()))
        self._seen[breaker.spec.name] = self._identity(breaker.spec.name)


    def names(self) -> list[str]:
        from dagrun.spec import TASK_ID

        try:
            return sorted(p.name for p in self.root.iterdir() if TASK_ID.fullmatch(p.name))
        except FileNotFoundError:
            return []

    def describe(self, name: str, now: float) -> dict[str, Any]:
        """name, state (as of `now`), failures, reopens_at (None unless open);
        state `corrupt` for a file that does not read (it counts as closed)."""
        try:
            d = unframe(read_state_file(self.root / name))
            cooldown = d.get("cooldown")
            breaker = Breaker.from_dict(BreakerSpec(name, cooldown=float(cooldown or 0)), d)
        except (OSError, ValueError, KeyError, TypeError):
            return {"name": name, "state": "corrupt", "failures": 0, "reopens_at": None}
        if cooldown is None:  # written before the cooldown was stored
            return {"name": name, "state": breaker.state, "failures": breaker.failures,
                    "reopens_at": None}
        state = breaker.current(now)
        return {"name": name, "state": state, "failures": breaker.failures,
                "reopens_at": breaker.reopens_at()}

    def reset(self, name: str) -> None:
        """Closed, failures forgotten; a live run sees it at its next refresh()."""
        from dagrun.errors import UsageError

        if name not in self.names():
            known = ", ".join(self.names()) or "none"
            raise UsageError(f"no breaker {name!r} in {self.root} (known: {known})")
        try:
            cooldown = float(unframe(read_state_file(self.root / name)).get("cooldown") or 60.0)
        except (OSError, ValueError, TypeError, AttributeError):
            cooldown = 60.0
        self.save(Breaker(BreakerSpec(name, cooldown=cooldown)))


class BreakerGate:
    """The scheduler's view of the breakers (the Scheduler's gate).

    The scheduler asks admit() before starting a guarded task; a refused task is
    held here, in a per-breaker heap by the time it was first held. due() is
    called every loop turn but returns at once unless a breaker may have changed
    (a guarded result came in) or a timer passed (a cooldown ended, a max_wait
    expired); wait_time() gives the scheduler that timer.
    """

    def __init__(self, spec: PipelineSpec, store: BreakerStore, *,
                 clock: Callable[[], float] = time.time,
                 notify: Callable[[str], None] | None = None) -> None:
        self.clock = clock
        self.store = store
        self.notify = notify or (lambda _text: None)
        self.guard = {tid: t.breaker for tid, t in spec.tasks.items() if t.breaker}
        self.breakers = {name: store.load(spec.breakers[name])
                         for name in sorted(set(self.guard.values()))}
        self.held: dict[str, list[tuple[float, int, str]]] = {n: [] for n in self.breakers}
        self.since: dict[str, float] = {}  # task -> when first held (kept across re-holds)
        self.probes: set[str] = set()
        self._queued: set[str] = set()  # in a held heap right now
        self._seq = itertools.count()
        self._dirty = False
        self._wake: float | None = None
        now = clock()
        # Told on the first due(), once the run (and its reporter) has started.
        self._notes = [f"circuit {b.spec.name} is {b.state.replace('_', '-')} (from an "
                       "earlier run)" for b in self.breakers.values() if b.current(now) != CLOSED]
        self._notes += [f"warning: {path} is corrupt; that circuit counts as closed"
                        for path in store.corrupt]

    def holding(self) -> bool:
        """Whether tasks wait in here (released ones are in the scheduler's heap)."""
        return bool(self._queued)

    def admit(self, tid: str) -> bool:
        name = self.guard.get(tid)
        if name is None:
            return True
        b = self.breakers[name] = self.store.refresh(self.breakers[name])
        now = self.clock()
        if not b.can_start(now):
            if tid not in self.since:
                self.since[tid] = now
            if tid not in self._queued:
                self._queued.add(tid)
                heapq.heappush(self.held[name], (self.since[tid], next(self._seq), tid))
            self._set_wake(b.reopens_at())
            if b.spec.max_wait is not None:
                self._set_wake(self.since[tid] + b.spec.max_wait)
            return False
        self.since.pop(tid, None)
        if b.start(now):
            self.probes.add(tid)
            self.notify(f"circuit {name} half-open: probing with task {tid}")
        return True

    def settle(self, result: AttemptResult) -> None:
        """An attempt of any task ended; guarded ones move their breaker."""
        name = self.guard.get(result.task_id)
        if name is None:
            return
        b = self.breakers[name] = self.store.refresh(self.breakers[name])
        probe = result.task_id in self.probes
        self.probes.discard(result.task_id)
        self._dirty = True
        if result.cancelled:
            b.release(probe)
            return
        before = b.state
        if b.record(result.ok, probe, self.clock()):
            self.store.save(b)
        if b.state != before:
            self.notify(f"circuit {name} {b.state.replace('_', '-')}"
                        + (f" for {b.spec.cooldown:g}s" if b.state == OPEN else ""))

    def wait_time(self) -> float | None:
        if self._wake is None:
            return None
        return clamp_wait(self._wake - self.clock())  # a "30d" cooldown waits in steps

    def due(self) -> tuple[list[str], list[tuple[str, TaskError]]]:
        """Tasks to hand back to the ready heap, and tasks held past max_wait."""
        if self._notes:
            for note in self._notes:
                self.notify(note)
            self._notes.clear()
        now = self.clock()
        if not self._dirty and (self._wake is None or now < self._wake):
            return [], []
        self._dirty = False
        self._wake = None
        release: list[str] = []
        expired: list[tuple[str, TaskError]] = []
        for name, heap in self.held.items():
            if not heap:
                continue
            b = self.breakers[name]
            max_wait = b.spec.max_wait
            if max_wait is not None:
                while heap and heap[0][0] + max_wait <= now:
                    since, _, tid = heapq.heappop(heap)
                    self._queued.discard(tid)
                    self.since.pop(tid, None)
                    expired.append((tid, TaskError(
                        "CircuitOpen", f"circuit {name} open: task held for "
                        f"{now - since:.1f}s, longer than its max_wait {max_wait:g}s")))
            if b.can_start(now):
                # Closed: everything held may go. Half-open: the oldest, as the probe
                # (admit() re-holds the rest if more than one reaches it).
                while heap:
                    tid = heapq.heappop(heap)[2]
                    self._queued.discard(tid)
                    release.append(tid)
                    if b.state != CLOSED:
                        break
            if heap:
                self._set_wake(b.reopens_at())
                if max_wait is not None:
                    self._set_wake(heap[0][0] + max_wait)
        return release, expired

    def _set_wake(self, at: float | None) -> None:
        if at is not None and (self._wake is None or at < self._wake):
            self._wake = at
