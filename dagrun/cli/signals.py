"""Stop signals that arrive before a run's own handlers: exit 130, naming the run."""

from __future__ import annotations

import signal
from typing import Any

from dagrun.cli.output import say, write_stdout
from dagrun.cli.progress import progress
from dagrun.errors import EXIT_CANCELLED


class Terminated(BaseException):  # noqa: N818 - like KeyboardInterrupt
    """SIGINT, SIGTERM or SIGHUP arrived while no run was under way (the run's
    own handlers turn them into a cancellation of the run)."""


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _on_signal(_signum: int, _frame: Any) -> None:
    if progress.decided:
        return  # the result is known: dagrun exits with it, whatever arrives now
    raise Terminated()


def install_handlers() -> None:
    for signum in STOP_SIGNALS:
        signal.signal(signum, _on_signal)


def interrupted(args: list[str]) -> int:
    rid = progress.existing_run()
    if rid is None:
        say("dagrun: interrupted before the run started; nothing was run")
    else:
        say(f"dagrun: interrupted; run `dagrun resume {rid}` to continue")
    json_mode = progress.json_mode if progress.json_mode is not None else "--json" in args
    if json_mode:
        import orjson

        write_stdout(orjson.dumps({"run_id": rid, "status": "cancelled", "tasks": {}}) + b"\n")
    return EXIT_CANCELLED
