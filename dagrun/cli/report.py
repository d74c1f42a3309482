"""The report command: a run's timeline, graph and tasks as one HTML file."""

from __future__ import annotations

import click

from dagrun.cli.options import state_dir_option


@click.command()
@click.argument("run_id")
@click.option("--html", "html_path", required=True, type=click.Path(dir_okay=False),
              help="Write the report to this file (self-contained: open it anywhere).")
@state_dir_option
def report(run_id: str, html_path: str, state_dir: str) -> int:
    """Write RUN_ID's report: a timeline of every attempt, the DAG and the task
    table with errors and log excerpts. Read-only: works on a live run."""
    from pathlib import Path

    from dagrun.errors import UsageError
    from dagrun.html_report import build

    page = build(state_dir, run_id)
    target = Path(html_path)
    tmp = target.with_name(f".{target.name}.tmp")
    try:
        tmp.write_text(page, encoding="utf-8")
        tmp.replace(target)  # a browser reloading it never sees half a page
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise UsageError(f"cannot write {html_path}: {exc.strerror or exc}") from None
    click.echo(f"dagrun: wrote the report of run {run_id} to {html_path}", err=True)
    return 0
