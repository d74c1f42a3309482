"""The event stream: what happened in a run, as plain frozen data, for listeners.

(Events are NamedTuples: a frozen dataclass costs ~0.45 ms to define at import,
every run, and twice as long to build; these are built for every transition.)

The scheduler emits an event only *after* the journal append that records it,
so a listener never acts on (or shows) a state that a crash could take back.
Listeners are everything that reacts to a run without steering it: the live
display and the plain-line reporter, the dead-letter office, and (to come) the
metrics exporter, the per-task log index and the report writer. Policies that
steer the run (retry, breakers) are not listeners: they are asked, not told.

    scheduler._transition ─► journal batch ─► append ─► EventBus.emit ─► listeners

A listener that raises is switched off with one warning on stderr and the run
goes on. Two exceptions to that: a StateIOError (the state directory cannot be
written, exit 4) always propagates, and so does anything raised by a listener
marked `critical = True` — one that writes state the run relies on later (the
dead-letter office: a letter it failed to write would never be written, since
the run's final record settles the letters), whose failure must stop the run.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, TypeAlias

from dagrun.errors import StateIOError
from dagrun.model import RunResult, TaskError, TaskState

if TYPE_CHECKING:
    from dagrun.kinds.fanout import ElementChanged
    from dagrun.spec import PipelineSpec


class RunStarted(NamedTuple):
    run_id: str
    spec: PipelineSpec
    states: Mapping[str, TaskState]  # every task's state as the loop starts


class TaskChanged(NamedTuple):
    """One state transition of one task (the only way a task's state changes)."""

    task_id: str
    old: TaskState
    new: TaskState
    attempts: int  # attempts counted against the retry budget, after the change
    attempt: int | None  # the ordinal of the attempt this change starts or ends
    error: TaskError | None = None
    reason: str | None = None  # why skipped or cancelled
    at: float = 0.0  # wall clock


class TaskHeld(NamedTuple):
    """A ready task held back without an attempt (its circuit breaker is open)."""

    task_id: str
    breaker: str


class Note(NamedTuple):
    """A line for the people watching: repairs on resume, breaker changes, stops."""

    text: str
    kind: str = "info"  # info | warning | repair


class TaskOutput(NamedTuple):
    """A line a running task printed (it is in the run's logs already; no record)."""

    task_id: str
    line: str


class RunFinished(NamedTuple):
    result: RunResult


# A string: ElementChanged (a map element's change, kinds/fanout.py) is imported
# for type checking only, so this module's run-time imports stay as they were.
Event: TypeAlias = ("RunStarted | TaskChanged | TaskHeld | Note | TaskOutput | RunFinished"
                    " | ElementChanged")


class Listener(Protocol):
    """Optionally also `task_states`: the states whose TaskChanged events the
    listener acts on (the bus does not call it for the others; absent or None:
    all of them). Every task changes state at least twice, so a listener that
    ignores most changes (the dead-letter office, the run log at its default
    level, the quiet display) should say so."""

    def on_event(self, event: Event) -> None: ...


class EventBus:
    """Hands every event to every listener still switched on."""

    def __init__(self, listeners: Iterable[Any] = ()) -> None:
        self.listeners: list[Any] = [lst for lst in listeners if lst is not None]
        self.disabled: list[tuple[Any, BaseException]] = []
        self._by_state: dict[TaskState, list[Any]] = {}  # TaskChanged.new -> its listeners
        # listens()'s answers, for the scheduler to read inline (every transition)
        self.heard: dict[TaskState, bool] = {}
        self._ticks: list[tuple[Any, Any]] | None = None  # (listener, its tick method)

    def add(self, listener: Any) -> None:
        self.listeners.append(listener)
        self._by_state, self._ticks, self.heard = {}, None, {}

    def _changed_listeners(self, new: TaskState) -> list[Any]:
        out = [lst for lst in self.listeners
               if (states := getattr(lst, "task_states", None)) is None or new in states]
        self._by_state[new] = out
        return out

    def listens(self, new: TaskState) -> bool:
        """Whether any listener takes TaskChanged events into `new` (if none,
        the scheduler does not even build them)."""
        by_state = self._by_state.get(new)
        heard = self.heard[new] = bool(self._changed_listeners(new) if by_state is None
                                       else by_state)
        return heard

    def emit(self, event: Event) -> None:
        listeners = self.listeners
        if type(event) is TaskChanged:
            by_state = self._by_state.get(event.new)
            listeners = self._changed_listeners(event.new) if by_state is None else by_state
        for listener in listeners:
            try:
                listener.on_event(event)
            except StateIOError:
                raise
            except Exception as exc:
                if getattr(listener, "critical", False):
                    raise
                self._disable(listener, exc)

    def note(self, text: str, kind: str = "info") -> None:
        self.emit(Note(text, kind))

    def tick(self, now: float) -> None:
        """Time passing, for listeners that show or write it (the live clock)."""
        ticks = self._ticks
        if ticks is None:  # looked up once, not on every turn of the loop
            ticks = self._ticks = [(lst, t) for lst in self.listeners
                                   if (t := getattr(lst, "tick", None)) is not None]
        for listener, tick in ticks:
            try:
                tick()
            except StateIOError:
                raise
            except Exception as exc:
                self._disable(listener, exc)

    def abort(self) -> None:
        """The run stopped on an error: listeners that hold the terminal let go."""
        for listener in self.listeners:
            try:
                getattr(listener, "abort", lambda: None)()
            except Exception:  # noqa: S110 - already stopping on another error
                pass

    def _disable(self, listener: Any, exc: BaseException) -> None:
        if listener not in self.listeners:
            return
        # Rebuilt, not removed in place: emit() may be iterating the old list.
        self.listeners = [lst for lst in self.listeners if lst is not listener]
        self._by_state, self._ticks, self.heard = {}, None, {}
        self.disabled.append((listener, exc))
        name = getattr(listener, "name", type(listener).__name__)
        if sys.stderr is None:  # started with stderr closed: print() would pick stdout
            return
        try:
            print(f"dagrun: warning: {name} switched off after an error "
                  f"({type(exc).__name__}: {exc}); the run goes on",
                  file=sys.stderr, flush=True)
        except Exception:  # noqa: S110 - stderr itself is what broke
            pass
