"""Reporters: what a person (or cron) sees while a run goes and when it ends.

- LiveReporter: a rich progress display on a TTY (refreshed by the scheduler
  loop; no background thread, so worker forks stay safe), then a summary table.
- PlainReporter: one line per task event, no colour or animation (not a TTY,
  NO_COLOR, cron).
- QuietReporter: warnings only (used with --json off a TTY).
All of them write to stderr: stdout carries only --json output. They are
listeners on the run's event stream (events.py): on_event() turns each event
into the method that shows it. choose_reporter() picks one, wrapped by
guard.py so that a broken stream switches the display off instead of
stopping the run; the final summary is in summary.py.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Mapping
from typing import IO, Any

from dagrun.events import Event, Note, RunFinished, RunStarted, TaskChanged, TaskOutput
from dagrun.guard import Guarded as Guarded
from dagrun.guard import guarded as guarded  # re-exported: driver.py, resuming.py
from dagrun.kinds.fanout import ElementChanged
from dagrun.kinds.triggers import describe as describe_skip
from dagrun.model import RunResult, TaskState
from dagrun.spec import PipelineSpec
from dagrun.summary import _DONE, Board, _state, print_summary

_SHOWN = _DONE | {TaskState.RETRYING}


class QuietReporter:
    name = "progress display"
    wants_output = False  # lines tasks print, prefixed `[task] `; see `echo`

    def __init__(self, stream: IO[str] | None = None) -> None:
        self.stream = stream or sys.stderr  # None when started with stderr closed

    @property
    def task_states(self) -> frozenset[TaskState] | None:
        """No task's changes for this display itself (events.py then skips it);
        every change for a display that shows them (a subclass)."""
        cls = type(self)
        if cls.on_event is QuietReporter.on_event and all(
                getattr(cls, name) is getattr(QuietReporter, name)
                for name in ("task_started", "task_finished", "task_requeued")):
            return frozenset()
        return None

    def on_event(self, event: Event) -> None:
        if isinstance(event, TaskChanged):
            if event.new == TaskState.RUNNING:
                self.task_started(event.task_id, event.attempt or event.attempts)
            elif event.new == TaskState.PENDING and event.old == TaskState.RUNNING:
                self.task_requeued(event.task_id)  # cut short by dagrun; runs again
            elif event.new in _SHOWN and not (
                    event.new == TaskState.CANCELLED and event.old != TaskState.RUNNING):
                # A stop's cancelled *pending* tasks are told once, in the summary.
                self.task_finished(event.task_id, event)
        elif isinstance(event, ElementChanged):  # TASK[i] of a map task
            if event.new == TaskState.RUNNING:
                self.element_started(event)
            else:
                self.element_finished(event)
        elif isinstance(event, TaskOutput):
            self.task_output(event.task_id, event.line)
        elif isinstance(event, Note):
            self.message(event.text)
        elif isinstance(event, RunStarted):
            self.start(event.run_id, event.spec, event.states)
        elif isinstance(event, RunFinished):
            self.finish(event.result)

    def start(self, run_id: str, spec: PipelineSpec, states: Mapping[str, Any]) -> None:
        pass

    def task_started(self, task_id: str, attempt: int) -> None:
        pass

    def task_finished(self, task_id: str, change: TaskChanged) -> None:
        pass

    def task_requeued(self, task_id: str) -> None:
        pass

    def task_output(self, task_id: str, line: str) -> None:
        pass

    def element_started(self, event: ElementChanged) -> None:
        pass

    def element_finished(self, event: ElementChanged) -> None:
        pass

    def message(self, text: str) -> None:
        print(f"dagrun: {text}", file=self.stream, flush=True)

    def tick(self) -> None:
        pass

    def abort(self) -> None:
        """The run stopped on an error (its one line is printed by the caller)."""

    def finish(self, result: RunResult) -> None:
        if result.status == "cancelled":
            print(f"dagrun: run {result.run_id} cancelled; run `dagrun resume "
                  f"{result.run_id}` to continue", file=self.stream, flush=True)


class PlainReporter(QuietReporter):
    def __init__(self, stream: IO[str] | None = None, *, echo: bool = True) -> None:
        super().__init__(stream)
        self.wants_output = echo  # False with --quiet

    def on_event(self, event: Event) -> None:
        if isinstance(event, TaskChanged) and getattr(self, "board", None) is not None:
            self.board.change(event)
        super().on_event(event)

    def task_output(self, task_id: str, line: str) -> None:
        print(f"[{task_id}] {line}", file=self.stream, flush=True)

    def start(self, run_id: str, spec: PipelineSpec, states: Mapping[str, Any]) -> None:
        self.board = Board(states)
        self.total = len(states)
        self.done = sum(1 for s in states.values() if _state(s) in _DONE)
        self.t0 = time.monotonic()
        print(f"dagrun: run {run_id} of {spec.name}: {self.total} tasks", file=self.stream,
              flush=True)

    def task_finished(self, task_id: str, change: TaskChanged) -> None:
        if change.new == TaskState.RETRYING and change.error is None:
            return  # a sensor between polls, a loop's delay: nothing went wrong
        if change.new in _DONE:
            self.done += 1
        line = f"[{self.done}/{self.total}] {task_id} {change.new.value}"
        if change.old == TaskState.PENDING and change.new == TaskState.COMPLETED:
            line += " (cached)"  # a cache hit: the one pending -> completed move
        if change.new in (TaskState.DEAD_LETTERED, TaskState.RETRYING) and change.error:
            # The attempt's ordinal, as DAGRUN_ATTEMPT showed it to the task.
            line += f" (attempt {change.attempt or change.attempts}): {change.error.summary()}"
        elif change.new == TaskState.SKIPPED:
            line += f" ({describe_skip(change.reason)})"
        print(line, file=self.stream, flush=True)

    def element_finished(self, event: ElementChanged) -> None:
        # Failures always; completions of small maps only (a 100k map is one line).
        if event.error is not None:
            print(f"  {event.name} {event.new.value} (attempt {event.attempt}): "
                  f"{event.error.summary()}", file=self.stream, flush=True)
        elif event.element < ELEMENT_LINES:
            print(f"  {event.name} {event.new.value}", file=self.stream, flush=True)

    def finish(self, result: RunResult) -> None:
        print_summary(result, self.stream, time.monotonic() - self.t0, rich_table=False,
                      board=getattr(self, "board", None))


# Elements of a map shown one line each by the plain display (the rest: failures only).
ELEMENT_LINES = 100


class LiveReporter(PlainReporter):
    def start(self, run_id: str, spec: PipelineSpec, states: Mapping[str, Any]) -> None:
        from rich.console import Console
        from rich.live import Live

        super().start(run_id, spec, states)
        self.run_id = run_id
        self.name = spec.name
        self.console = Console(file=self.stream)
        self.live = Live(self._render(), console=self.console, auto_refresh=False,
                         transient=True, redirect_stdout=False, redirect_stderr=False)
        self.live.start()
        self._last = 0.0

    def _render(self) -> Any:
        from rich.console import Group
        from rich.progress_bar import ProgressBar
        from rich.text import Text

        b = self.board
        now = time.monotonic()
        failed = b.count(TaskState.DEAD_LETTERED)
        done = b.count(*_DONE)
        head = Text.assemble(
            (f"{self.name} ", "bold"), f"{done}/{self.total} done: ",
            (f"{b.count(TaskState.COMPLETED)} completed", "green"),
            f" ({b.cached} cached) · " if b.cached else " · ",
            (f"{b.count(TaskState.RUNNING)} running", "cyan"), " · ",
            (f"{b.count(TaskState.RETRYING, TaskState.FAILED)} retrying",
             "yellow" if b.count(TaskState.RETRYING, TaskState.FAILED) else ""), " · ",
            (f"{failed} failed", "red" if failed else ""), " · ",
            (f"{b.count(TaskState.SKIPPED)} skipped", "yellow" if b.count(TaskState.SKIPPED)
             else ""), f"  {now - self.t0:.1f}s")
        colour = "red" if failed else "green"
        bar = ProgressBar(total=max(self.total, 1), completed=done, width=40,
                          complete_style=colour, finished_style=colour)
        oldest = sorted(b.running.items(), key=lambda kv: kv[1][1])
        lines = [Text(f"  ▶ {n} {now - t0:.1f}s" + (f" (attempt {a})" if a > 1 else ""),
                      style="cyan") for n, (a, t0) in oldest[:8]]
        if len(oldest) > 8:
            lines.append(Text(f"  … and {len(oldest) - 8} more"))
        return Group(head, bar, *lines)

    def element_started(self, event: ElementChanged) -> None:
        self.board.running[event.name] = (event.attempt, time.monotonic())

    def element_finished(self, event: ElementChanged) -> None:
        self.board.running.pop(event.name, None)
        if event.error is not None:
            self.live.console.print(f"[red]✗[/red] {event.name} {event.new.value}: "
                                    f"{event.error.summary()}", markup=True, highlight=False)

    def task_finished(self, task_id: str, change: TaskChanged) -> None:
        # A sensor's wait between polls and a loop's delay are `retrying` without an error.
        if change.new == TaskState.DEAD_LETTERED or (
                change.new == TaskState.RETRYING and change.error is not None):
            word = "retrying" if change.new == TaskState.RETRYING else "failed"
            colour = "yellow" if change.new == TaskState.RETRYING else "red"
            self.live.console.print(
                f"[{colour}]✗[/{colour}] {task_id} {word}: "
                f"{change.error.summary() if change.error else ''}", markup=True,
                highlight=False)

    def task_output(self, task_id: str, line: str) -> None:
        if getattr(self, "live", None) is None:
            super().task_output(task_id, line)
            return
        self.live.console.print(f"[{task_id}] {line}", markup=False, highlight=False)

    def message(self, text: str) -> None:
        if getattr(self, "live", None) is None:  # before start(): resume's repair lines
            super().message(text)
            return
        self.live.console.print(f"dagrun: {text}", markup=False, highlight=False)

    def tick(self) -> None:
        now = time.monotonic()
        if now - self._last >= 0.1:
            self._last = now
            self.live.update(self._render(), refresh=True)

    def abort(self) -> None:
        if getattr(self, "live", None) is not None:
            self.live.stop()  # the run stopped on an error: give the terminal back

    def finish(self, result: RunResult) -> None:
        self.live.stop()
        print_summary(result, self.stream, time.monotonic() - self.t0, rich_table=True,
                      board=self.board)


def choose_reporter(json_mode: bool, stream: IO[str] | None = None, *,
                    quiet: bool = False) -> Guarded:
    """`quiet`: the lines tasks print are not echoed (they are in `dagrun logs`)."""
    stream = stream or sys.stderr
    if stream is None:  # stderr closed at start (`2>&-`): nothing to show anything on
        return Guarded(QuietReporter(None))
    tty = stream.isatty() and os.environ.get("TERM") != "dumb"
    if json_mode and not tty:
        return Guarded(QuietReporter(stream))
    if tty and not os.environ.get("NO_COLOR"):
        return Guarded(LiveReporter(stream, echo=not quiet))
    return Guarded(PlainReporter(stream, echo=not quiet))
