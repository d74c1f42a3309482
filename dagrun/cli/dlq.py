"""The dlq group: list, show, retry and purge dead letters."""

from __future__ import annotations

import click

from dagrun.cli.options import (
    deadline_seconds,
    duration,
    executor_options,
    executor_timeout_seconds,
    json_option,
    log_options,
    metrics_file_option,
    quiet_option,
    state_dir_option,
)
from dagrun.cli.output import emit_result
from dagrun.cli.progress import progress


@click.group()
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
@quiet_option
@click.option("--durability", type=click.Choice(["fast", "atomic", "durable"]),
              help="How hard each record is pushed to disk (default: the run's).")
@click.option("--deadline", help="Cancel the run when it has run this long (e.g. 2h).")
@metrics_file_option
@log_options
@executor_options
def dlq_retry(run_id: str, tasks: tuple[str, ...], state_dir: str, json_mode: bool,
              quiet: bool, durability: str | None, deadline: str | None,
              metrics_file: str | None, executor: str | None,
              executor_timeout: str | None) -> int:
    """Resume RUN_ID giving its dead-lettered TASKS (default: all) a fresh retry
    budget, with their skipped dependents. Same output and exit codes as resume."""
    from dagrun import api

    result = api.dlq_retry(run_id, tasks, state_dir=state_dir, durability=durability,
                           deadline=deadline_seconds(deadline), metrics_file=metrics_file,
                           executor=executor,
                           executor_timeout=executor_timeout_seconds(executor_timeout),
                           reporter=progress.reporter_for(run_id, state_dir, json_mode,
                                                          quiet))
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
