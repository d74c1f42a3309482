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
from dagrun.kinds.fanout import ElementChanged
from dagrun.kinds.triggers import describe as describe_skip
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
        elif event.index < ELEMENT_LINES:
            print(f"  {event.name} {event.new.value}", file=self.stream, flush=True)

    def finish(self, result: RunResult) -> None:
        print_summary(result, self.stream, time.monotonic() - self.t0, rich_table=False,
                      board=getattr(self, "board", None))


class Board:
    """Every task's current state, counted as it changes (O(1) per event), and
    when each started and ended in this process: what the display and the
    summary show. A retry waiting is `retrying`, not failed; only a dead letter
    is failed."""

    def __init__(self, states: Mapping[str, Any]) -> None:
        self.state: dict[str, TaskState] = {t: TaskState(_state(s)) for t, s in states.items()}
        self.counts: dict[TaskState, int] = {}
        for st in self.state.values():
            self.counts[st] = self.counts.get(st, 0) + 1
        self.started: dict[str, float] = {}  # wall clock of the first attempt seen
        self.ended: dict[str, float] = {}
        self.running: dict[str, tuple[int, float]] = {}  # attempt, monotonic start
        self.cause: dict[str, str] = {}  # skipped task -> the failure that caused it

    def change(self, e: TaskChanged) -> None:
        old = self.state.get(e.task_id, e.old)
        self.counts[old] = self.counts.get(old, 0) - 1
        self.counts[e.new] = self.counts.get(e.new, 0) + 1
        self.state[e.task_id] = e.new
        if e.new == TaskState.RUNNING:
            self.started.setdefault(e.task_id, e.at)
            self.running[e.task_id] = (e.attempt or e.attempts, time.monotonic())
        else:
            self.running.pop(e.task_id, None)
        if e.new in _DONE:
            self.ended[e.task_id] = e.at
        if e.new == TaskState.SKIPPED and e.reason:
            self.cause[e.task_id] = e.reason

    def count(self, *states: TaskState) -> int:
        return sum(self.counts.get(s, 0) for s in states)


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
            (f"{b.count(TaskState.COMPLETED)} completed", "green"), " · ",
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


SUMMARY_LINES = 20


def summary_rows(result: RunResult, board: Board | None) -> list[str]:
    """The tasks worth a line, sorted by start time, each skip right after the
    failure that caused it; all tasks when few, else those not completed."""
    started = board.started if board else {}
    cause = board.cause if board else {}
    tasks = result.tasks
    pick = list(tasks) if len(tasks) <= SUMMARY_LINES else [
        t for t, r in tasks.items() if r.state != "completed"]
    order = {t: i for i, t in enumerate(tasks)}
    skipped_by: dict[str, list[str]] = {}
    main: list[str] = []
    for t in pick:
        c = cause.get(t)
        if tasks[t].state == "skipped" and c in tasks and t not in started:
            skipped_by.setdefault(c, []).append(t)
        else:
            main.append(t)
    inf = float("inf")
    main.sort(key=lambda t: (started.get(t, inf), order[t]))
    rows: list[str] = []
    placed: set[str] = set()

    def put(t: str) -> None:
        if t in placed:
            return
        placed.add(t)
        rows.append(t)
        for s in skipped_by.get(t, ()):
            put(s)

    for t in main:
        put(t)
    for skips in skipped_by.values():  # a cause not itself listed
        for t in skips:
            put(t)
    return rows


def print_summary(result: RunResult, stream: IO[str], elapsed: float, *,
                  rich_table: bool, board: Board | None = None) -> None:
    counts: dict[str, int] = {}
    for t in result.tasks.values():
        counts[t.state] = counts.get(t.state, 0) + 1
    tally = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
    rows = summary_rows(result, board)
    more = len(result.tasks) - min(len(rows), SUMMARY_LINES)
    rows = rows[:SUMMARY_LINES]
    rid = result.run_id

    def when(t: str) -> tuple[str, str]:
        if board is None or t not in board.started:
            return "", ""
        start = time.strftime("%H:%M:%S", time.localtime(board.started[t]))
        end = board.ended.get(t)
        return start, "" if end is None else f"{end - board.started[t]:.1f}s"

    if rich_table:
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"run {rid}: {result.status} in {elapsed:.1f}s")
        for col in ("task", "state", "started", "took", "attempts", "error"):
            table.add_column(col, justify="right" if col in ("took", "attempts") else "left",
                             overflow="fold" if col == "error" else "ellipsis")
        colours = {"completed": "green", "dead_lettered": "red", "skipped": "yellow",
                   "cancelled": "yellow"}
        for tid in rows:
            t = result.tasks[tid]
            colour = colours.get(t.state, "white")
            table.add_row(tid, f"[{colour}]{t.state}[/{colour}]", *when(tid), str(t.attempts),
                          _one_line(t.error or "", 120), end_section=False)
        console = Console(file=stream)
        if rows:
            console.print(table)
        else:
            console.print(table.title)
        if more:
            console.print(f"and {more} more: dagrun status {rid}", highlight=False)
        console.print(tally, highlight=False)
    else:
        for tid in rows:
            t = result.tasks[tid]
            start, took = when(tid)
            head = f"  {start + ' ' if start else ''}{tid}: {t.state}"
            detail = ", ".join(x for x in (
                took, f"{t.attempts} attempts" if t.attempts > 1 else "") if x)
            line = head + (f" ({detail})" if detail else "")
            if t.error:  # "skipped: upstream task 'b' failed" says its state already
                text = _one_line(t.error, 160)
                line = (f"  {tid}: {text}" if t.error.startswith(f"{t.state}:")
                        else f"{line}: {text}")
            if t.state == "dead_lettered" and t.attempts:
                # A failed task's line ends with the command that shows its output.
                line += f" — dagrun logs {rid} {tid}"
            print(line, file=stream)
        if more:
            print(f"  and {more} more: dagrun status {rid}", file=stream)
        print(f"dagrun: run {rid} {result.status} in {elapsed:.1f}s ({tally})",
              file=stream, flush=True)
    hint = next_command(result, rows)
    if hint:
        print(hint, file=stream, flush=True)


def next_command(result: RunResult, rows: list[str]) -> str | None:
    """The command to type next, given how the run ended."""
    rid = result.run_id
    if result.status == "cancelled":
        return f"dagrun: run `dagrun resume {rid}` to continue"
    failed = [t for t in rows if result.tasks[t].state == "dead_lettered"] or [
        t for t, r in result.tasks.items() if r.state == "dead_lettered"]
    if failed:
        t = failed[0]
        return (f"dagrun: next: `dagrun logs {rid} {t}` (its output), "
                f"`dagrun dlq show {rid} {t}` (every attempt's error)")
    return None


def _one_line(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 1] + "…"
