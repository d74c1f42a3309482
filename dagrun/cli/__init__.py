"""The `dagrun` command line: the click group, its commands, and main().

Commands only map options -> library call -> reporter -> exit code. Every user
error is a DagrunError carrying its exit code; main() turns it into one line on
stderr. Heavy modules are imported inside the commands so that `dagrun --help`
stays fast.

Layout (one small module per command or group of commands):
  options.py   option decorators shared by commands, duration parsing
  output.py    emit_result, stdout writes, closed or broken std streams
  progress.py  the run a command works on and whether its result is decided
  signals.py   stop signals before a run's own handlers are in place
  run.py       run, resume, validate, graph
  dlq.py       the dlq group
  report.py    report (the HTML report)

Adding a command: write `dagrun/cli/NAME.py` with a `@click.command()` (or a
`@click.group()` for subcommands) that imports only click and the helpers above
at module level, then register it here with one line:
`cli.add_command(NAME.NAME)`. A command that runs a pipeline gets its reporter
from `progress.reporter_for(...)` and ends with `return emit_result(...)`, so
that a signal during start-up and after the result behaves like in `run`.
"""

from __future__ import annotations

import sys

import click
import orjson  # noqa: F401 - before the stop-signal handlers: see main()

from dagrun.cli import breaker, cache, dlq, gc, history, logs, patterns, report, run
from dagrun.cli.output import fill_closed_std_fds, flush_std_streams, say
from dagrun.cli.signals import Terminated, install_handlers, interrupted
from dagrun.errors import EXIT_USAGE, DagrunError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="dagrun")
def cli() -> None:
    """dagrun: run pipelines of dependent Python tasks, fast and crash-proof."""


cli.add_command(run.run)
cli.add_command(run.resume)
cli.add_command(run.validate)
cli.add_command(run.graph)
cli.add_command(dlq.dlq)
cli.add_command(patterns.emit)
cli.add_command(patterns.state)
cli.add_command(history.runs)
cli.add_command(history.status)
cli.add_command(gc.gc)
cli.add_command(breaker.breaker)
cli.add_command(cache.cache)
cli.add_command(report.report)
cli.add_command(logs.logs)


def _stopped_by_signal(exc: BaseException) -> bool:
    """A stop signal raised inside code that wraps exceptions (Python 3.11 wraps
    any exception from a class body's __set_name__ in a RuntimeError, e.g. while
    a lazily imported module defines a dataclass) is still a stop, not a bug."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, (KeyboardInterrupt, Terminated)):
            return True
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return False


def internal_error(exc: Exception) -> int:
    """One line naming where the traceback went: RUN/dagrun.log when the command
    has a run, else stderr itself. Exit 1, as Python's own uncaught exception."""
    import traceback

    from dagrun.cli.progress import progress
    from dagrun.listeners.logfile import write_traceback
    from dagrun.store.runs import StateDir

    run_id = progress.existing_run()
    if run_id is not None and progress.state_dir is not None:
        try:
            path = write_traceback(StateDir(progress.state_dir).run_path(run_id), run_id, exc)
        except (OSError, DagrunError):
            pass
        else:
            say(f"dagrun: internal error: {type(exc).__name__}: {exc} (traceback in {path}; "
                "please report it)")
            return 1
    say("".join(traceback.format_exception(exc)).rstrip())
    say(f"dagrun: internal error: {type(exc).__name__}: {exc} (please report it)")
    return 1


def main(argv: list[str] | None = None) -> None:
    """Entry point: one error line and a documented exit code, never a traceback."""
    args = sys.argv[1:] if argv is None else argv
    fill_closed_std_fds()
    # A stop signal before the run's own handlers are in place (while validating,
    # waiting for a lock or creating the run) ends with 130 and one line naming
    # the run if it exists; once the result is decided it changes nothing.
    # orjson is imported (at the top) before they are installed: its extension
    # module does not check the imports its init makes, so the handler raising
    # in one of them crashed dagrun with SIGSEGV.
    install_handlers()
    try:
        code = cli.main(args=args, prog_name="dagrun", standalone_mode=False)
    except (click.exceptions.Abort, KeyboardInterrupt, Terminated):
        code = interrupted(args)
    except click.UsageError as exc:
        hint = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx else ""
        say(f"dagrun: error: {exc.format_message()}{hint}")
        code = exc.exit_code
    except click.ClickException as exc:
        say(f"dagrun: error: {exc.format_message()}")
        code = exc.exit_code
    except DagrunError as exc:
        say(f"dagrun: error: {exc}")
        code = exc.exit_code
    except Exception as exc:  # a bug in dagrun: one line here, the traceback in the run log
        if _stopped_by_signal(exc):
            code = interrupted(args)
        else:
            code = internal_error(exc)
    if code is None:
        code = 0
    if not isinstance(code, int):
        code = EXIT_USAGE
    flush_std_streams()
    sys.exit(code)
