"""One error base class carrying its exit code; the CLI turns any of them into
one line on stderr and that exit code (see the contract's exit-code table)."""

from __future__ import annotations

EXIT_OK = 0
EXIT_TASKS_FAILED = 1
EXIT_USAGE = 2
EXIT_LOCKED = 3
EXIT_STATE_IO = 4
EXIT_EXECUTOR_LOST = 5
EXIT_CANCELLED = 130


class DagrunError(Exception):
    """A user-facing error: its message is one line, its exit code documented."""

    exit_code = EXIT_USAGE


class SpecError(DagrunError):
    """The pipeline spec is malformed, or its graph or callables are invalid."""


class UsageError(DagrunError):
    """A bad option value or argument."""


class UnknownRun(DagrunError):
    """The run id names no run, or the run's metadata cannot be read."""


class RunLocked(DagrunError):
    """Another live dagrun process drives this run (or this pipeline)."""

    exit_code = EXIT_LOCKED


class PipelineBusy(DagrunError):
    """`run --if-running skip`: another run of the pipeline is live; nothing started."""

    exit_code = EXIT_OK


class StateIOError(DagrunError):
    """The state directory could not be written or read."""

    exit_code = EXIT_STATE_IO


class UnsafeStateFile(DagrunError):
    """A state file is a symlink or not a regular file: refused, never followed."""

    exit_code = EXIT_USAGE


class ExecutorLost(DagrunError):
    """The executor could not be started or reached (e.g. no worker could be forked)."""

    exit_code = EXIT_EXECUTOR_LOST
