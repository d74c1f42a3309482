"""dagrun's own log: one line per thing worth knowing about a run, as text or
JSON lines (ts, level, run_id, event, task, message) for log shippers.

`RunLog` is a listener; drive() adds one writing RUN/dagrun.log, and with
`--log-format json` the CLI's reporter is another writing the same lines to
stderr. Cheap on purpose (it sees every transition of every task): the level is
checked before anything is formatted, and at the default level a task that
starts or completes writes nothing — only retries, dead letters, skips,
cancellations, notes and the run's start and end do (the rest is `debug`).
The file is opened once, append-only, and each line is one write().
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import IO, Any

from dagrun.events import Event, Note, RunFinished, RunStarted, TaskChanged, TaskHeld
from dagrun.model import TaskState

LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}
FORMATS = ("text", "json")
LOG_NAME = "dagrun.log"

_TASK_LEVEL = {
    TaskState.RUNNING: 10, TaskState.COMPLETED: 10, TaskState.PENDING: 10,
    TaskState.RETRYING: 30, TaskState.FAILED: 30, TaskState.DEAD_LETTERED: 40,
    TaskState.SKIPPED: 20, TaskState.CANCELLED: 20,
}
_NAMES = {v: k for k, v in LEVELS.items()}


class LogConfig:
    """The process's choice (set by the CLI; the library default reads the env)."""

    def __init__(self) -> None:
        self.level = os.environ.get("DAGRUN_LOG_LEVEL", "info").lower()
        self.format = os.environ.get("DAGRUN_LOG_FORMAT", "text").lower()
        if self.level not in LEVELS:
            self.level = "info"
        if self.format not in FORMATS:
            self.format = "text"


config = LogConfig()


class RunLog:
    name = "run log"

    def __init__(self, write: Any, *, level: str | None = None, fmt: str | None = None,
                 run_id: str = "") -> None:
        self.write = write
        self.level = LEVELS[level or config.level]
        self.json = (fmt or config.format) == "json"
        self.run_id = run_id
        # The task changes at or above its level (events.py skips the rest).
        self.task_states = frozenset(s for s, lvl in _TASK_LEVEL.items() if lvl >= self.level)

    # ---------------------------------------------------------------- events

    def on_event(self, event: Event) -> None:
        if isinstance(event, TaskChanged):
            level = _TASK_LEVEL.get(event.new, 20)
            if level == 30 and event.error is None:
                level = 10  # a sensor's "not yet", a loop's next turn: routine, not a warning
            if level < self.level:
                return  # the common case: a completion at the default level
            self.task_line(level, event)
        elif isinstance(event, Note):
            self.line(30 if event.kind == "warning" else 20, f"note_{event.kind}", None,
                      event.text)
        elif isinstance(event, TaskHeld):
            self.line(10, "task_held", event.task_id, f"held: breaker {event.breaker} is open")
        elif isinstance(event, RunStarted):
            self.run_id = event.run_id
            self.line(20, "run_started", None,
                      f"run {event.run_id} of {event.spec.name}: {len(event.states)} tasks")
        elif isinstance(event, RunFinished):
            r = event.result
            tally = ", ".join(f"{n} {s}" for s, n in sorted(r.state_counts().items()))
            self.line(20 if r.status == "succeeded" else 30, "run_finished", None,
                      f"run {r.run_id} {r.status} ({tally})")

    def task_line(self, level: int, e: TaskChanged) -> None:
        text = f"{e.task_id} {e.old.value} -> {e.new.value}"
        if e.attempt or e.attempts:
            text += f" (attempt {e.attempt or e.attempts})"
        if e.error is not None:
            text += f": {e.error.summary()}"
        elif e.reason:
            text += f" ({e.reason})"
        self.line(level, f"task_{e.new.value}", e.task_id, text)

    # Reporter interface, when a RunLog stands in for the display (json on stderr).
    def message(self, text: str) -> None:
        self.line(20, "note_info", None, text)

    def line(self, level: int, event: str, task: str | None, message: str) -> None:
        if level < self.level:
            return
        self.write(format_line(level, self.run_id, event, task, message, self.json))


def format_line(level: int, run_id: str, event: str, task: str | None, message: str,
                as_json: bool) -> str:
    now = time.time()
    ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"
    name = _NAMES.get(level, "info")
    if as_json:
        import orjson

        return orjson.dumps({"ts": ts, "level": name, "run_id": run_id, "event": event,
                             "task": task, "message": message}).decode() + "\n"
    where = f" task={task}" if task else ""
    return f"{ts} {name.upper():7} run={run_id} event={event}{where}: {message}\n"


class LogFile:
    """RUN/dagrun.log: opened once, append-only; each line is one write()."""

    def __init__(self, run_path: Path) -> None:
        from dagrun.store.fs import open_state_file

        self.path = run_path / LOG_NAME
        self.fd = open_state_file(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def __call__(self, line: str) -> None:
        data = line.encode("utf-8", "replace")
        while data:
            data = data[os.write(self.fd, data):]

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def for_run(run_path: Path, run_id: str) -> RunLog:
    return RunLog(LogFile(run_path), run_id=run_id)


def stderr_log(run_id: str, stream: IO[str] | None = None) -> RunLog:
    out = stream or sys.stderr

    def write(line: str) -> None:
        out.write(line)
        out.flush()

    log = RunLog(write, run_id=run_id)
    log.stream = out  # type: ignore[attr-defined]  # Guarded() reads it
    return log


def write_traceback(run_path: Path, run_id: str, exc: BaseException) -> Path:
    """An internal error's traceback, appended to RUN/dagrun.log (OSError if it cannot)."""
    log = LogFile(run_path)
    try:
        import traceback  # only for dagrun's own bugs: not imported by every run

        text = "".join(traceback.format_exception(exc)).rstrip()
        log(format_line(40, run_id, "internal_error", None,
                        f"{type(exc).__name__}: {exc}\n{text}", config.format == "json"))
    finally:
        log.close()
    return log.path
