"""Listeners say which task changes they act on (`task_states`), and the event
bus hands them only those (issue 9: per-task work nobody asked for). Scheduler
with the in-memory executor of test_scheduler.py; the dead-letter office and
the run log with real files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from test_scheduler import make, ok

from dagrun.dlq import DeadLetterOffice, DeadLetterQueue
from dagrun.events import EventBus, RunFinished, TaskChanged
from dagrun.listeners.logfile import RunLog
from dagrun.model import AttemptResult, TaskResult, TaskState, TaskStatus
from dagrun.pipeline import Pipeline
from dagrun.report import PlainReporter, QuietReporter, guarded


class Picky:
    """Acts on completions only; sees every other kind of event."""

    task_states = frozenset({TaskState.COMPLETED})

    def __init__(self) -> None:
        self.events: list[Any] = []

    def on_event(self, event: Any) -> None:
        self.events.append(event)


def test_a_listener_gets_only_the_task_changes_it_asks_for(tmp_path: Path) -> None:
    p = Pipeline("p")
    p.task("a", "m:f")
    p.task("b", "m:f", deps=["a"])
    picky = Picky()
    sched, _, recorder, _ = make(tmp_path, p, ok, listeners=[picky])
    assert sched.run().status == "succeeded"
    changes = [(e.task_id, e.new) for e in picky.events if isinstance(e, TaskChanged)]
    assert changes == [("a", TaskState.COMPLETED), ("b", TaskState.COMPLETED)]
    assert isinstance(picky.events[-1], RunFinished)  # other events all arrive
    # A listener that says nothing still gets every change.
    assert ("a", "running") in recorder.changes()


def test_nobody_listening_means_no_event_and_the_record_is_still_written(
        tmp_path: Path) -> None:
    p = Pipeline("p")
    p.task("a", "m:f")
    picky = Picky()
    sched, _, _, _ = make(tmp_path, p, ok, listeners=[picky])
    sched.bus = EventBus([picky])  # the recorder (which takes everything) left out
    assert sched.run().status == "succeeded"
    assert [e.new for e in picky.events if isinstance(e, TaskChanged)] == [
        TaskState.COMPLETED]
    from dagrun.store.journal import read_journal

    states = [r["state"] for r in read_journal(tmp_path / "journal").records if "task" in r]
    assert states == ["running", "completed"]


def test_what_the_shipped_listeners_ask_for(tmp_path: Path) -> None:
    assert guarded(QuietReporter()).task_states == frozenset()
    assert guarded(PlainReporter()).task_states is None  # it shows every change
    info = RunLog(lambda _line: None, level="info")
    assert TaskState.COMPLETED not in info.task_states
    assert TaskState.DEAD_LETTERED in info.task_states
    assert TaskState.RUNNING in RunLog(lambda _line: None, level="debug").task_states
    p = Pipeline("p")
    p.task("a", "m:f")
    spec = p.to_spec()
    statuses = {"a": TaskStatus()}
    queue = DeadLetterQueue(tmp_path)
    office = DeadLetterOffice(queue, "r1", spec, statuses)
    assert office.task_states == {TaskState.DEAD_LETTERED}  # no letters: completions don't matter
    office.lettered.add("a")
    assert TaskState.COMPLETED in office.task_states


@pytest.mark.parametrize("cls,args", [
    (AttemptResult, ("t", 1)),
    (TaskResult, ("completed", 1, None, None)),
    (TaskChanged, ("t", TaskState.PENDING, TaskState.RUNNING, 1, 1)),
])
def test_value_objects_are_frozen_with_their_defaults(cls: Any, args: tuple) -> None:
    obj = cls(*args)
    assert obj == cls(*args) and hash(obj) == hash(cls(*args))
    first = cls._fields[0]
    with pytest.raises(AttributeError):
        setattr(obj, first, "y")
    assert getattr(obj._replace(**{first: "x"}), first) == "x"
    assert obj[len(args):] == tuple(cls._field_defaults[f] for f in cls._fields[len(args):])
    with pytest.raises(TypeError):
        cls()  # required fields stay required

