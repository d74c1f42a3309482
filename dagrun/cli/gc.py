"""The gc command: delete finished runs."""

from __future__ import annotations

import click

from dagrun.cli.options import duration, state_dir_option


@click.command()
@state_dir_option
@click.option("--keep", type=click.IntRange(min=0), help="Keep the N newest finished runs "
              "of each pipeline (0: delete every finished run).")
@click.option("--older-than", help="Delete finished runs that ended longer ago than this "
              "(e.g. 14d).")
@click.option("--dry-run", is_flag=True, help="List what would be deleted; delete nothing.")
def gc(state_dir: str, keep: int | None, older_than: str | None, dry_run: bool) -> int:
    """Delete finished runs (succeeded or failed) with their logs and dead letters;
    never a live, crashed or cancelled one. With both scopes, a run goes when
    both select it."""
    from dagrun import api

    if keep is None and older_than is None:
        raise click.UsageError("gc needs a scope: --keep N and/or --older-than DURATION")
    deleted, notes = api.gc(state_dir=state_dir, keep=keep,
                            older_than=duration(older_than, "--older-than"), dry_run=dry_run)
    for line in notes:
        click.echo(f"dagrun: {line}", err=True)
    verb = "would delete" if dry_run else "deleted"
    for d in deleted:
        click.echo(f"{verb} {d.run_id}  {d.pipeline}  {d.status}")
    click.echo(f"dagrun: {verb} {len(deleted)} run(s) in {state_dir}", err=True)
    return 0
