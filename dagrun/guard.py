"""The display guard: `guarded()` wraps any reporter so that a stream that
breaks (`2>&1 | head`, a closed terminal, `2>&-`) switches the display off,
silently (there is nowhere left to say so), instead of stopping the run.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

from dagrun.events import Event, RunFinished, TaskChanged
from dagrun.model import RunResult
from dagrun.spec import PipelineSpec


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

    @property
    def task_states(self) -> Any:
        return getattr(self.inner, "task_states", None)

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

