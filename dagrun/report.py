"""Reporters: what a person (or cron) sees while a run goes and when it ends.

- LiveReporter: a rich progress display on a TTY (refreshed by the scheduler
  loop; no background thread, so worker forks stay safe), then a summary table.
- PlainReporter: one line per task event, no colour or animation (not a TTY,
  NO_COLOR, cron).
- QuietReporter: warnings only (used with --json off a TTY).
All of them write to stderr: stdout carries only --json output. They are
listeners on the run's event stream (events.py): on_event() turns each event
into the method that shows it. `guarded()` wraps any of them so that a stream
that breaks (`2>&1 | head`, a closed terminal, `2>&-`) switches the display
off, silently (there is nowhere left to say so), instead of stopping the run.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Mapping
from typing import IO, Any

from dagrun.events import Event, Note, RunFinished, RunStarted, TaskChanged, TaskOutput
from dagrun.model import RunResult, TaskState, TaskStatus
from dagrun.spec import PipelineSpec

_DONE = {TaskState.COMPLETED, TaskState.DEAD_LETTERED, TaskState.SKIPPED, TaskState.CANCELLED}
_SHOWN = _DONE | {TaskState.RETRYING}


class QuietReporter:
    name = "progress display"
    wants_output = False  # lines tasks print, prefixed `[task] `; see `echo`

    def __init__(self, stream: IO[str] | None = None) -> None:
        self.stream = stream or sys.stderr  # None when started with stderr closed

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

    def task_output(self, task_id: str, line: str) -> None:
        print(f"[{task_id}] {line}", file=self.stream, flush=True)

    def start(self, run_id: str, spec: PipelineSpec, states: Mapping[str, Any]) -> None:
        self.total = len(states)
        self.done = sum(1 for s in states.values() if _state(s) in _DONE)
        self.t0 = time.monotonic()
        print(f"dagrun: run {run_id} of {spec.name}: {self.total} tasks", file=self.stream,
              flush=True)

    def task_finished(self, task_id: str, change: TaskChanged) -> None:
        if change.new in _DONE:
            self.done += 1
        line = f"[{self.done}/{self.total}] {task_id} {change.new.value}"
        if change.new in (TaskState.DEAD_LETTERED, TaskState.RETRYING) and change.error:
            # The attempt's ordinal, as DAGRUN_ATTEMPT showed it to the task.
            line += f" (attempt {change.attempt or change.attempts}): {change.error.summary()}"
        elif change.new == TaskState.SKIPPED:
            line += f" (upstream {change.reason} failed)"
        print(line, file=self.stream, flush=True)

    def finish(self, result: RunResult) -> None:
        print_summary(result, self.stream, time.monotonic() - self.t0, rich_table=False)


class LiveReporter(PlainReporter):
    def start(self, run_id: str, spec: PipelineSpec, states: Mapping[str, Any]) -> None:
        from rich.console import Console
        from rich.live import Live

        super().start(run_id, spec, states)
        self.run_id = run_id
        self.name = spec.name
        self.running: dict[str, int] = {}
        self.failures = 0
        self.console = Console(file=self.stream)
        self.live = Live(self._render(), console=self.console, auto_refresh=False,
                         transient=True, redirect_stdout=False, redirect_stderr=False)
        self.live.start()
        self._last = 0.0

    def _render(self) -> Any:
        from rich.console import Group
        from rich.progress_bar import ProgressBar
        from rich.text import Text

        elapsed = time.monotonic() - self.t0
        head = Text.assemble(
            (f"{self.name} ", "bold"), (f"{self.done}/{self.total} done", "green"),
            f"  {len(self.running)} running", (f"  {self.failures} failed", "red")
            if self.failures else "", f"  {elapsed:.1f}s")
        bar = ProgressBar(total=max(self.total, 1), completed=self.done, width=40)
        names = list(self.running)[:8]
        more = len(self.running) - len(names)
        lines = [Text(f"  ▶ {n} (attempt {self.running[n]})", style="cyan") for n in names]
        if more > 0:
            lines.append(Text(f"  … and {more} more"))
        return Group(head, bar, *lines)

    def task_started(self, task_id: str, attempt: int) -> None:
        self.running[task_id] = attempt

    def task_requeued(self, task_id: str) -> None:
        self.running.pop(task_id, None)

    def task_finished(self, task_id: str, change: TaskChanged) -> None:
        self.running.pop(task_id, None)
        if change.new in _DONE:
            self.done += 1
        if change.new in (TaskState.DEAD_LETTERED, TaskState.RETRYING):
            self.failures += 1
            self.live.console.print(
                f"[red]✗[/red] {task_id} {change.new.value}: "
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
        print_summary(result, self.stream, time.monotonic() - self.t0, rich_table=True)


class Guarded:
    """A reporter that switches itself off, silently, the first time writing
    to its stream fails: the display is a courtesy, the run goes on and ends
    with its real exit code. `finished` says that the result is known."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        # Started with stderr closed, Python has no sys.stderr at all.
        self.off = getattr(inner, "stream", sys.stderr) is None
        self.finished = False

    name = "progress display"

    @property
    def wants_output(self) -> bool:
        return not self.off and getattr(self.inner, "wants_output", False)

    def on_event(self, event: Event) -> None:
        if isinstance(event, RunFinished):
            self.finished = True  # first: the result is decided even if the display fails
        self._call("on_event", event)

    def _call(self, method: str, *args: Any) -> None:
        if self.off:
            return
        try:
            getattr(self.inner, method, lambda *_: None)(*args)
        except OSError:  # EPIPE, EBADF, EIO of a hung-up terminal, a full disk
            self.off = True

    def start(self, run_id: str, spec: PipelineSpec, states: Mapping[str, Any]) -> None:
        self._call("start", run_id, spec, states)

    def task_started(self, task_id: str, attempt: int) -> None:
        self._call("task_started", task_id, attempt)

    def task_finished(self, task_id: str, change: TaskChanged) -> None:
        self._call("task_finished", task_id, change)

    def message(self, text: str) -> None:
        self._call("message", text)

    def tick(self) -> None:
        self._call("tick")

    def abort(self) -> None:
        self._call("abort")

    def finish(self, result: RunResult) -> None:
        self.finished = True  # first: the result is decided even if the display fails
        self._call("finish", result)


def guarded(reporter: Any) -> Guarded:
    return reporter if isinstance(reporter, Guarded) else Guarded(reporter)


def _state(s: Any) -> Any:
    return s.state if isinstance(s, TaskStatus) else s


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


def print_summary(result: RunResult, stream: IO[str], elapsed: float, *,
                  rich_table: bool) -> None:
    counts: dict[str, int] = {}
    for t in result.tasks.values():
        counts[t.state] = counts.get(t.state, 0) + 1
    tally = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
    if rich_table:
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"run {result.run_id}: {result.status} in {elapsed:.1f}s")
        table.add_column("task")
        table.add_column("state")
        table.add_column("attempts", justify="right")
        table.add_column("error", overflow="fold")
        colours = {"completed": "green", "dead_lettered": "red", "skipped": "yellow",
                   "cancelled": "yellow"}
        rows = list(result.tasks.items())
        shown = rows if len(rows) <= 40 else [r for r in rows if r[1].state != "completed"][:40]
        for tid, t in shown:
            colour = colours.get(t.state, "white")
            table.add_row(tid, f"[{colour}]{t.state}[/{colour}]", str(t.attempts),
                          _one_line(t.error or ""))
        console = Console(file=stream)
        console.print(table)
        console.print(f"{tally}")
    else:
        for tid, t in result.tasks.items():
            if t.state != "completed":
                # A failed task's line ends with the command that shows its output.
                logs = f" — dagrun logs {result.run_id} {tid}" if (
                    t.state == "dead_lettered" and t.attempts) else ""
                print(f"  {tid}: {t.state}: {_one_line(t.error or '')}{logs}", file=stream)
        print(f"dagrun: run {result.run_id} {result.status} in {elapsed:.1f}s ({tally})",
              file=stream, flush=True)
    if result.status == "cancelled":
        print(f"dagrun: run `dagrun resume {result.run_id}` to continue", file=stream,
              flush=True)


def _one_line(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 1] + "…"
