"""The backend interface the scheduler alone talks to."""

from __future__ import annotations

import importlib
from typing import Protocol

from dagrun.model import Attempt, AttemptResult


class Executor(Protocol):
    """Runs attempts somewhere and reports their results as plain data.

    The scheduler loop is single-threaded: it calls submit() while
    free_slots() > 0, then poll() to wait for results. A task's failure,
    timeout or crash is an AttemptResult with an error, never an exception.
    """

    def start(self) -> None: ...

    def free_slots(self) -> int:
        """How many more attempts submit() accepts right now."""
        ...

    def submit(self, attempt: Attempt) -> None: ...

    def poll(self, timeout: float | None) -> list[AttemptResult]:
        """Wait up to `timeout` seconds (None: until something happens) for results.

        May return an empty list early (e.g. when a wake-up fd becomes readable).
        """
        ...

    def cancel(self, grace: float) -> list[AttemptResult]:
        """Stop every running attempt (SIGTERM, then SIGKILL after `grace`);
        their results come back with cancelled=True."""
        ...

    def add_wakeup_fd(self, fd: int) -> None:
        """poll() returns early when `fd` becomes readable (used for signals)."""
        ...

    def shutdown(self) -> None: ...


# The longest single wait anywhere in dagrun, in seconds. Every wait is a timer
# the loop re-checks when it wakes, so waking early costs nothing; waiting longer
# than ~24.8 days at once overflows epoll's 32-bit millisecond timeout.
MAX_WAIT = 3600.0


def clamp_wait(seconds: float | None) -> float | None:
    """`seconds` (None: no limit) bounded to [0, MAX_WAIT]."""
    return None if seconds is None else max(0.0, min(seconds, MAX_WAIT))


# name -> "module:class"; imported lazily so `dagrun --help` stays fast.
BACKENDS: dict[str, str] = {
    "local": "dagrun.executor.process:ProcessExecutor",
}


def backend_class(name: str) -> type:
    module, _, cls = BACKENDS[name].partition(":")
    return getattr(importlib.import_module(module), cls)
