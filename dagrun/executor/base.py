"""The backend interface the scheduler alone talks to."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any, Protocol

from dagrun.model import Attempt, AttemptResult


class Executor(Protocol):
    """Runs attempts somewhere and reports their results as plain data.

    The scheduler loop is single-threaded: it calls submit() while
    free_slots() > 0, then poll() to wait for results. A task's failure,
    timeout or crash is an AttemptResult with an error, never an exception;
    an executor that cannot go on raises ExecutorLost (exit 5).

    Duties of every backend, whatever runs the task:
    - Timeouts: an attempt running past `Attempt.timeout` is stopped (politely,
      then for good after `timeout_grace`) with everything it started, and
      comes back as a TaskTimeout error; poll() wakes up for that deadline.
    - Memory: an attempt exceeding `Attempt.memory_limit` fails with
      MemoryLimitExceeded, and only that attempt.
    - Crash isolation: a task that kills its process, corrupts the channel to
      dagrun or exits fails only its own attempt (WorkerCrashed); other
      attempts and dagrun go on, and lost capacity is replaced.
    - Nothing a task started outlives dagrun, even a SIGKILLed one, by more
      than a few seconds.

    Wake-ups: poll() waits on file descriptors. add_wakeup_fd() gives it more
    (dagrun's signal pipe); it must return, possibly with no result, as soon as
    one becomes readable. A backend whose results arrive on another thread
    (e.g. a Dask client's callbacks) keeps them in a queue and writes a byte to
    a pipe of its own (a self-pipe) that poll() waits on with the others.
    """

    def start(self) -> None:
        """Acquire what runs attempts (fork workers, connect); called once."""
        ...

    def free_slots(self) -> int:
        """How many more attempts submit() accepts right now."""
        ...

    def submit(self, attempt: Attempt) -> None:
        """Take an attempt to run (only while free_slots() > 0). A backend may
        hold it until the next poll(), which the scheduler calls after a
        dispatch's last submit(): one write for the batch."""
        ...

    def poll(self, timeout: float | None) -> list[AttemptResult]:
        """Wait up to `timeout` seconds (None: until something happens) for results.

        May return an empty list early (e.g. when a wake-up fd becomes readable).
        """
        ...

    def cancel(self, grace: float, force: bool = False) -> list[AttemptResult]:
        """Stop every running attempt (SIGTERM, then SIGKILL after `grace`) and
        return their results, with cancelled=True.

        force=True (a second Ctrl-C): end at once whatever is being stopped,
        without waiting; returns [] and may be called from a signal handler
        while another cancel() waits (which then collects the results).
        """
        ...

    def add_wakeup_fd(self, fd: int) -> None:
        """poll() returns early when `fd` becomes readable (used for signals)."""
        ...

    def shutdown(self) -> None:
        """Release everything; safe after a start() that failed half-way."""
        ...


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
    "dask": "dagrun.executor.dask_client:DaskExecutor",
}


def create(name: str, settings: Mapping[str, Any]) -> Executor:
    """The backend registered as `name`, built from `settings` (for "local":
    workers, base_dir, max_tasks_per_worker; notify: where warnings go)."""
    try:
        target = BACKENDS[name]
    except KeyError:
        from dagrun.errors import UsageError

        raise UsageError(f"unknown executor {name!r}; known: {', '.join(sorted(BACKENDS))}") \
            from None
    module, _, cls = target.partition(":")
    backend: Executor = getattr(importlib.import_module(module), cls).from_settings(settings)
    return backend
