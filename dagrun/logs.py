"""Per-task logs: where each attempt's output is, and reading it back.

Each worker process writes the stdout and stderr of everything it runs (the
task and the processes it starts: fds 1 and 2) to one file, RUN/logs/worker-
PID.log, opened once. A worker runs one attempt at a time, so an attempt's
output is one byte range of that file; the range comes back with the attempt's
result and is kept in its journal record (`attempt.log`).

An attempt whose result never came back (dagrun was SIGKILLed, the worker
crashed or was killed at a timeout) has no range in the journal. For those the
worker's index, worker-PID.idx (one line per attempt, written before it runs:
task, attempt, start offset), gives the start; the end is where the worker's
next attempt starts, else the end of the file (still growing if it runs on).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from dagrun.store.journal import read_journal


@dataclass(frozen=True)
class AttemptLog:
    """Where one attempt's output is. `end` None: open-ended (no result yet and
    the worker has not started anything after it): up to the end of the file."""

    number: int
    path: Path | None  # None: the attempt started no output file (not run by a worker)
    start: int = 0
    end: int | None = None
    finished: bool = False  # its result is recorded, or its worker has moved on


def attempts(run_dir: Path, task: str) -> dict[int, dict[str, Any] | None]:
    """The task's attempts by number: the journal's attempt entry (None while no
    result is recorded: running, or cut short by a crash)."""
    out: dict[int, dict[str, Any] | None] = {}
    for rec in read_journal(Path(run_dir) / "journal").records:
        if rec.get("task") != task:
            continue
        number = rec.get("number")
        if rec.get("state") == "running" and isinstance(number, int):
            out.setdefault(number, None)
        entry = rec.get("attempt")
        if isinstance(entry, dict) and isinstance(entry.get("attempt"), int):
            out[entry["attempt"]] = entry
    return out


def locate(run_dir: Path, task: str, attempt: int | None = None) -> AttemptLog | None:
    """Where attempt `attempt` (None: the last) of `task` wrote; None if it has none."""
    run_dir = Path(run_dir)
    known = attempts(run_dir, task)
    if not known:
        return None
    number = max(known) if attempt is None else attempt
    if number not in known:
        return None
    entry = known[number]
    log = entry.get("log") if entry else None
    if isinstance(log, dict) and isinstance(log.get("file"), str) and "/" not in log["file"]:
        return AttemptLog(number, run_dir / "logs" / log["file"], int(log.get("start", 0)),
                          int(log.get("end", 0)), finished=True)
    found = _from_index(run_dir / "logs", task, number)
    if found is None:
        return AttemptLog(number, None, finished=entry is not None)
    path, start, end = found
    return AttemptLog(number, path, start, end, finished=entry is not None or end is not None)


def _from_index(log_dir: Path, task: str, number: int) -> tuple[Path, int, int | None] | None:
    try:
        names = [e.name for e in os.scandir(log_dir) if e.name.endswith(".idx")]
    except OSError:
        return None
    for name in names:
        try:
            lines = (log_dir / name).read_bytes().splitlines()
        except OSError:
            continue
        for i, line in enumerate(lines):
            try:
                entry = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue  # a line torn by a crash
            if entry.get("task") != task or entry.get("attempt") != number:
                continue
            end = None
            for later in lines[i + 1:]:
                try:
                    end = int(orjson.loads(later)["start"])
                    break
                except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                    continue
            return log_dir / (name[:-4] + ".log"), int(entry.get("start", 0)), end
    return None


def read_range(path: Path, start: int, end: int | None) -> bytes:
    """Bytes [start, end) of `path` (end None: to the end of the file)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(start)
            return fh.read() if end is None else fh.read(max(0, end - start))
    except FileNotFoundError:
        return b""


def read_log(run_dir: str | os.PathLike[str], task: str, attempt: int | None = None
             ) -> bytes | None:
    """The output (stdout and stderr, interleaved as written) of attempt
    `attempt` (1-based; None: the last) of `task` in the run folder `run_dir`;
    None if the task has no such attempt. An attempt still running: what it
    wrote so far."""
    where = locate(Path(run_dir), task, attempt)
    if where is None:
        return None
    if where.path is None:
        return b""
    return read_range(where.path, where.start, where.end)
