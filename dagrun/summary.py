"""The end of a run: the summary a reporter prints (a table on a TTY, lines
otherwise), the command to type next, and the Board, every task's state
counted as it changes, which the live display and the summary read.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import IO, Any

from dagrun.events import TaskChanged
from dagrun.model import RunResult, TaskState, TaskStatus

_DONE = {TaskState.COMPLETED, TaskState.DEAD_LETTERED, TaskState.SKIPPED, TaskState.CANCELLED}


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
        self.cached = 0  # cache hits: the one pending -> completed move (dagrun/cache/)

    def change(self, e: TaskChanged) -> None:
        old = self.state.get(e.task_id, e.old)
        self.counts[old] = self.counts.get(old, 0) - 1
        self.counts[e.new] = self.counts.get(e.new, 0) + 1
        self.state[e.task_id] = e.new
        if e.new == TaskState.COMPLETED and e.old == TaskState.PENDING:
            self.cached += 1
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


def _state(s: Any) -> Any:
    return s.state if isinstance(s, TaskStatus) else s


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
        if tasks[t].state == "skipped" and c is not None and c in tasks and t not in started:
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
    cached = sum(1 for t in result.tasks.values() if (t.extra or {}).get("cached"))
    if cached:
        tally += f", {cached} cached"
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
            state = t.state + (" (cached)" if (t.extra or {}).get("cached") else "")
            table.add_row(tid, f"[{colour}]{state}[/{colour}]", *when(tid), str(t.attempts),
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
                took, f"{t.attempts} attempts" if t.attempts > 1 else "",
                "cached" if (t.extra or {}).get("cached") else "") if x)
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
