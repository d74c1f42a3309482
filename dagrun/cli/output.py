"""Writing results to stdout/stderr and surviving closed or broken std streams."""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from dagrun.cli.progress import progress


def emit_result(result: Any, json_mode: bool) -> int:
    progress.decided = True
    if json_mode:
        import orjson

        write_stdout(orjson.dumps(result.to_dict(), option=orjson.OPT_NON_STR_KEYS) + b"\n")
    return result.exit_code


def write_stdout(data: bytes) -> None:
    view = memoryview(data)
    try:
        # Under PYTHONUNBUFFERED stdout is a raw file: a signal can cut a write short.
        while view:
            view = view[sys.stdout.buffer.write(view) or 0:]
        sys.stdout.flush()
    except OSError:  # `--json | head -c 10`: the reader left; the exit code still tells
        silence(sys.stdout)


def say(line: str) -> None:
    """One line on stderr, if stderr still leads anywhere."""
    try:
        click.echo(line, err=True)
    except OSError:
        pass


def silence(stream: Any) -> None:
    """Point a broken stream's fd at /dev/null, so that the data still buffered
    in it cannot fail again at exit (Python would then exit 120)."""
    try:
        fd = stream.fileno()
    except (OSError, ValueError, AttributeError):
        return
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, fd)
    os.close(null)


def fill_closed_std_fds() -> None:
    """Started with stdin, stdout or stderr closed (`2>&-`): /dev/null takes its
    place, so that no journal, lock or worker pipe opened later gets fd 2 and
    receives what is written to "stderr" (by dagrun, a worker or a task)."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
    if sys.stdout is None:  # `>&-`: the --json output has nowhere to go; say so by exit code
        sys.stdout = open(1, "w", encoding="utf-8", closefd=False)  # noqa: SIM115


def flush_std_streams() -> None:
    for stream in (sys.stdout, sys.stderr):
        if stream is None:
            continue
        try:
            stream.flush()
        except (OSError, ValueError):
            silence(stream)
