"""Click commands only: options -> library call -> reporter -> exit code.

Every user error is a DagrunError carrying its exit code; main() turns it into
one line on stderr. Heavy modules are imported inside the commands so that
`dagrun --help` stays fast.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from typing import Any

import click

from dagrun.errors import EXIT_CANCELLED, EXIT_USAGE, DagrunError

F = Callable[..., Any]


def _check_state_dir(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    if not value or not value.strip():
        raise click.BadParameter("must not be empty", param_hint="--state-dir")
    if os.path.exists(value) and not os.path.isdir(value):
        raise click.BadParameter(f"{value} exists and is not a directory",
                                 param_hint="--state-dir")
    return value


def state_dir_option(f: F) -> F:
    return click.option(
        "--state-dir", envvar="DAGRUN_STATE_DIR", default=".dagrun", show_default=True,
        callback=_check_state_dir, help="Where runs, dead letters and locks live "
        "(env DAGRUN_STATE_DIR).")(f)


def json_option(f: F) -> F:
    return click.option("--json", "json_mode", is_flag=True,
                        help="Print one JSON object on stdout and nothing else.")(f)


def duration(value: str | None, name: str, *, allow_none: bool = False) -> float | None:
    """A positive duration option; `allow_none` (only --deadline, as README says)
    lets `none`/`off` mean 0.0: explicitly no deadline, overriding the spec's."""
    from dagrun.durations import parse_duration

    if value is None:
        return None
    if allow_none and value.strip().lower() in ("none", "off"):
        return 0.0
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=name) from None
    if seconds <= 0:
        raise click.BadParameter("must be positive", param_hint=name)
    return seconds


def deadline_seconds(value: str | None) -> float | None:
    return duration(value, "--deadline", allow_none=True)


def emit_result(result: Any, json_mode: bool) -> int:
    _progress.decided = True
    if json_mode:
        import orjson

        _write_stdout(orjson.dumps(result.to_dict(), option=orjson.OPT_NON_STR_KEYS) + b"\n")
    return result.exit_code


def _write_stdout(data: bytes) -> None:
    view = memoryview(data)
    try:
        # Under PYTHONUNBUFFERED stdout is a raw file: a signal can cut a write short.
        while view:
            view = view[sys.stdout.buffer.write(view) or 0:]
        sys.stdout.flush()
    except OSError:  # `--json | head -c 10`: the reader left; the exit code still tells
        _silence(sys.stdout)


class _Progress:
    """What main() must know when a signal arrives: which run a command works
    on, and whether its result is decided (then a signal changes nothing)."""

    def __init__(self) -> None:
        self.run_id: str | None = None
        self.state_dir: str | None = None
        self.json_mode: bool | None = None
        self.reporter: Any = None
        self._decided = False

    @property
    def decided(self) -> bool:
        return self._decided or bool(getattr(self.reporter, "finished", False))

    @decided.setter
    def decided(self, value: bool) -> None:
        self._decided = value

    def reporter_for(self, run_id: str, state_dir: str, json_mode: bool) -> Any:
        from dagrun.report import choose_reporter

        self.run_id, self.state_dir, self.json_mode = run_id, state_dir, json_mode
        self.reporter = choose_reporter(json_mode)
        return self.reporter

    def existing_run(self) -> str | None:
        """The command's run id if its folder exists (it can be resumed)."""
        from dagrun.store.runs import StateDir

        if self.run_id is None or self.state_dir is None:
            return None
        try:
            path = StateDir(self.state_dir).run_path(self.run_id)  # checks the id
        except DagrunError:
            return None
        return self.run_id if (path / "run.json").exists() else None


_progress = _Progress()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="dagrun")
def cli() -> None:
    """dagrun: run pipelines of dependent Python tasks, fast and crash-proof."""


def durability_option(f: F) -> F:
    return click.option("--durability", type=click.Choice(["fast", "atomic", "durable"]),
                        help="How hard each record is pushed to disk (default: the spec's, "
                        "else atomic; see README, Crash safety).")(f)


def param_option(f: F) -> F:
    return click.option("--param", "params", multiple=True, metavar="KEY=VALUE",
                        help="A value for the spec's [params] (repeatable; JSON when it "
                        "parses as JSON, else a string). Env: DAGRUN_PARAM_<KEY>.")(f)


def parsed_params(items: tuple[str, ...]) -> dict[str, Any] | None:
    from dagrun.params import parse_cli

    return parse_cli(items) if items else None


def deadline_option(f: F) -> F:
    return click.option("--deadline", help="Cancel the run when it has run this long "
                        "(e.g. 2h); it stays resumable. `none` drops the spec's or the "
                        "run's deadline.")(f)


@cli.command()
@click.argument("spec", type=click.Path(dir_okay=False))
@state_dir_option
@json_option
@click.option("--run-id", help="Id of the new run (default: a fresh, time-sortable id).")
@click.option("--workers", type=click.IntRange(min=1), help="Worker processes "
              "(default: the spec's, else the CPU count).")
@durability_option
@deadline_option
@click.option("--if-running", type=click.Choice(["skip", "wait", "fail"]),
              help="When another run of this pipeline is live: skip (exit 0, start "
              "nothing), wait (see --wait-timeout) or fail (exit 3). Default: run anyway.")
@click.option("--wait-timeout", help="With --if-running wait: give up (exit 3) after this "
              "long (e.g. 30m). Default: wait as long as it takes.")
@param_option
def run(spec: str, state_dir: str, json_mode: bool, run_id: str | None, workers: int | None,
        durability: str | None, deadline: str | None, if_running: str | None,
        wait_timeout: str | None, params: tuple[str, ...]) -> int:
    """Validate SPEC, then execute a new run of it."""
    from dagrun import api
    from dagrun.errors import PipelineBusy
    from dagrun.store.runs import new_run_id

    if wait_timeout is not None and if_running != "wait":
        raise click.UsageError("--wait-timeout needs --if-running wait")
    run_id = run_id or new_run_id()  # known here: a signal during its creation names it
    try:
        result = api.run(spec, state_dir=state_dir, run_id=run_id, workers=workers,
                         durability=durability, deadline=deadline_seconds(deadline),
                         if_running=if_running, params=parsed_params(params),
                         wait_timeout=duration(wait_timeout, "--wait-timeout"),
                         reporter=_progress.reporter_for(run_id, state_dir, json_mode))
    except PipelineBusy as exc:
        _progress.decided = True
        click.echo(f"dagrun: {exc}", err=True)
        if json_mode:
            import orjson

            click.echo(orjson.dumps({"run_id": None, "status": "skipped", "reason": str(exc),
                                     "tasks": {}}).decode())
        return 0
    return emit_result(result, json_mode)


@cli.command()
@click.argument("run_id")
@state_dir_option
@json_option
@durability_option
@deadline_option
@click.option("--retry-failed", is_flag=True, help="Give every dead-lettered task a fresh "
              "retry budget (and run the tasks skipped because of it).")
@click.option("--spec", "spec_path", type=click.Path(dir_okay=False), help="Resume with this "
              "edited spec: tasks whose call, kwargs, inputs or deps changed re-run, with "
              "their descendants.")
@click.option("--allow-removed", is_flag=True, help="With --spec: let the edited spec drop "
              "tasks of the run (without it, resume names them and exits 2).")
@param_option
def resume(run_id: str, state_dir: str, json_mode: bool, durability: str | None,
           deadline: str | None, retry_failed: bool, spec_path: str | None,
           allow_removed: bool, params: tuple[str, ...]) -> int:
    """Repair RUN_ID's persisted state and continue it; on a finished run,
    print its result and run nothing."""
    from dagrun import api

    result = api.resume(run_id, state_dir=state_dir, spec_path=spec_path,
                        retry_failed=retry_failed, durability=durability,
                        deadline=deadline_seconds(deadline), allow_removed=allow_removed,
                        params=parsed_params(params),
                        reporter=_progress.reporter_for(run_id, state_dir, json_mode))
    return emit_result(result, json_mode)


@cli.command()
@click.argument("spec", type=click.Path(dir_okay=False))
@state_dir_option
@json_option
@param_option
def validate(spec: str, state_dir: str, json_mode: bool, params: tuple[str, ...]) -> int:
    """Check SPEC, its graph and that every callable imports; run nothing."""
    from dagrun import api

    pipeline = api.validate(spec, parsed_params(params))
    if json_mode:
        import orjson

        click.echo(orjson.dumps({"valid": True, "pipeline": pipeline.name,
                                 "tasks": len(pipeline.tasks)}).decode())
    else:
        click.echo(f"{spec}: ok — pipeline {pipeline.name!r}, {len(pipeline.tasks)} tasks")
    return 0


@cli.command()
@click.argument("spec", type=click.Path(dir_okay=False))
@click.option("--format", "fmt", type=click.Choice(["tree", "dot", "mermaid"]),
              default="tree", show_default=True)
@state_dir_option
def graph(spec: str, fmt: str, state_dir: str) -> int:
    """Draw the DAG of SPEC (an indented tree, Graphviz dot or Mermaid)."""
    from dagrun import graph as graph_mod
    from dagrun.spec import load_spec

    pipeline = load_spec(spec)
    graph_mod.check_graph(pipeline)
    click.echo(graph_mod.render(pipeline, fmt))
    return 0


@cli.group()
def dlq() -> None:
    """Dead letters: tasks that failed for good, with every attempt's error."""


@dlq.command("list")
@state_dir_option
@json_option
@click.option("--run-id", help="Only the letters of this run.")
def dlq_list(state_dir: str, json_mode: bool, run_id: str | None) -> int:
    """List dead letters (all runs, or one with --run-id)."""
    from dagrun import api

    letters, corrupt = api.dlq_list(state_dir=state_dir, run_id=run_id)
    for path in corrupt:
        click.echo(f"dagrun: warning: dead letter {path} is corrupt (checksum); ignored",
                   err=True)
    if json_mode:
        import orjson

        click.echo(orjson.dumps([letter.summary() for letter in letters]).decode())
        return 0
    if not letters:
        scope = f" of run {run_id}" if run_id else ""
        click.echo(f"no dead letters{scope} in {state_dir}", err=True)
        return 0
    rows = [(lt.run_id, lt.task, str(len(lt.attempts)), lt.error_text) for lt in letters]
    widths = [max(len(r[i]) for r in [("RUN", "TASK", "ATTEMPTS", ""), *rows]) for i in range(3)]
    click.echo(f"{'RUN':<{widths[0]}}  {'TASK':<{widths[1]}}  {'ATTEMPTS':<{widths[2]}}  ERROR")
    for rid, task, n, err in rows:
        line = err.splitlines()[0] if err else ""
        click.echo(f"{rid:<{widths[0]}}  {task:<{widths[1]}}  {n:<{widths[2]}}  {line[:100]}")
    return 0


@dlq.command("show")
@click.argument("run_id")
@click.argument("task")
@state_dir_option
@json_option
def dlq_show(run_id: str, task: str, state_dir: str, json_mode: bool) -> int:
    """Show one letter in full: every attempt with its error and traceback."""
    from dagrun import api
    from dagrun.dlq import describe

    letter = api.dlq_show(run_id, task, state_dir=state_dir)
    if json_mode:
        import orjson

        click.echo(orjson.dumps(letter.to_dict()).decode())
    else:
        click.echo(describe(letter))
    return 0


@dlq.command("retry")
@click.argument("run_id")
@click.argument("tasks", nargs=-1)
@state_dir_option
@json_option
@click.option("--durability", type=click.Choice(["fast", "atomic", "durable"]),
              help="How hard each record is pushed to disk (default: the run's).")
@click.option("--deadline", help="Cancel the run when it has run this long (e.g. 2h).")
def dlq_retry(run_id: str, tasks: tuple[str, ...], state_dir: str, json_mode: bool,
              durability: str | None, deadline: str | None) -> int:
    """Resume RUN_ID giving its dead-lettered TASKS (default: all) a fresh retry
    budget, with their skipped dependents. Same output and exit codes as resume."""
    from dagrun import api

    result = api.dlq_retry(run_id, tasks, state_dir=state_dir, durability=durability,
                           deadline=deadline_seconds(deadline),
                           reporter=_progress.reporter_for(run_id, state_dir, json_mode))
    return emit_result(result, json_mode)


@dlq.command("purge")
@state_dir_option
@click.option("--run-id", help="Delete the letters of this run.")
@click.option("--older-than", help="Delete letters older than this (e.g. 7d).")
@click.option("--all", "everything", is_flag=True, help="Delete every letter.")
@click.option("--dry-run", is_flag=True, help="List what would be deleted; delete nothing.")
def dlq_purge(state_dir: str, run_id: str | None, older_than: str | None, everything: bool,
              dry_run: bool) -> int:
    """Delete dead letters: of one run (--run-id), older than a duration
    (--older-than 7d), both, or every letter (--all)."""
    from dagrun import api

    if not (run_id or older_than or everything):
        raise click.UsageError("say which letters: --run-id RUN_ID, --older-than 7d "
                               "or --all")
    if everything and (run_id or older_than):
        raise click.UsageError("--all deletes every letter: drop --run-id and --older-than")
    chosen = api.dlq_purge(state_dir=state_dir, run_id=run_id,
                           older_than=duration(older_than, "--older-than"), dry_run=dry_run)
    n = len(chosen)
    if dry_run:
        for rid, task in chosen:
            click.echo(f"{rid} {task}")
        click.echo(f"would delete {n} dead letter{'s' if n != 1 else ''} in {state_dir}",
                   err=True)
    else:
        click.echo(f"deleted {n} dead letter{'s' if n != 1 else ''} in {state_dir}", err=True)
    return 0


class Terminated(BaseException):  # noqa: N818 - like KeyboardInterrupt
    """SIGINT, SIGTERM or SIGHUP arrived while no run was under way (the run's
    own handlers turn them into a cancellation of the run)."""


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _on_signal(_signum: int, _frame: Any) -> None:
    if _progress.decided:
        return  # the result is known: dagrun exits with it, whatever arrives now
    raise Terminated()


def _interrupted(args: list[str]) -> int:
    rid = _progress.existing_run()
    if rid is None:
        _say("dagrun: interrupted before the run started; nothing was run")
    else:
        _say(f"dagrun: interrupted; run `dagrun resume {rid}` to continue")
    json_mode = _progress.json_mode if _progress.json_mode is not None else "--json" in args
    if json_mode:
        import orjson

        _write_stdout(orjson.dumps({"run_id": rid, "status": "cancelled", "tasks": {}}) + b"\n")
    return EXIT_CANCELLED


def _say(line: str) -> None:
    """One line on stderr, if stderr still leads anywhere."""
    try:
        click.echo(line, err=True)
    except OSError:
        pass


def _silence(stream: Any) -> None:
    """Point a broken stream's fd at /dev/null, so that the data still buffered
    in it cannot fail again at exit (Python would then exit 120)."""
    try:
        fd = stream.fileno()
    except (OSError, ValueError, AttributeError):
        return
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, fd)
    os.close(null)


def _fill_closed_std_fds() -> None:
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


def _flush_std_streams() -> None:
    for stream in (sys.stdout, sys.stderr):
        if stream is None:
            continue
        try:
            stream.flush()
        except (OSError, ValueError):
            _silence(stream)


def main(argv: list[str] | None = None) -> None:
    """Entry point: one error line and a documented exit code, never a traceback."""
    args = sys.argv[1:] if argv is None else argv
    _fill_closed_std_fds()
    # A stop signal before the run's own handlers are in place (while validating,
    # waiting for a lock or creating the run) ends with 130 and one line naming
    # the run if it exists; once the result is decided it changes nothing.
    for signum in STOP_SIGNALS:
        signal.signal(signum, _on_signal)
    try:
        code = cli.main(args=args, prog_name="dagrun", standalone_mode=False)
    except (click.exceptions.Abort, KeyboardInterrupt, Terminated):
        code = _interrupted(args)
    except click.UsageError as exc:
        hint = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx else ""
        _say(f"dagrun: error: {exc.format_message()}{hint}")
        code = exc.exit_code
    except click.ClickException as exc:
        _say(f"dagrun: error: {exc.format_message()}")
        code = exc.exit_code
    except DagrunError as exc:
        _say(f"dagrun: error: {exc}")
        code = exc.exit_code
    if code is None:
        code = 0
    if not isinstance(code, int):
        code = EXIT_USAGE
    _flush_std_streams()
    sys.exit(code)
