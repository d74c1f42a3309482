"""The runs and status commands: run history, read-only (they take no lock)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import click

from dagrun.cli.options import json_option, state_dir_option

STATUSES = ("running", "crashed", "succeeded", "failed", "cancelled")


def when(at: float | None) -> str:
    return "-" if at is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at))


def took(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header) - 1)]
    for row in [header, *rows]:
        cells = [f"{c:<{w}}" for c, w in zip(row, widths, strict=False)]
        click.echo("  ".join([*cells, row[-1]]).rstrip())


@click.command()
@state_dir_option
@json_option
@click.option("--limit", type=click.IntRange(min=1), help="Show at most N runs.")
@click.option("--pipeline", help="Only runs of this pipeline.")
@click.option("--status", "status_", type=click.Choice(STATUSES), help="Only runs in this "
              "status (running: live; crashed: its process died, resumable).")
def runs(state_dir: str, json_mode: bool, limit: int | None, pipeline: str | None,
         status_: str | None) -> int:
    """List runs, newest first: id, pipeline, status, start, duration, task counts."""
    from dagrun import api

    listing = api.runs(state_dir=state_dir, limit=limit, pipeline=pipeline, status=status_)
    for line in listing.unreadable:
        click.echo(f"dagrun: warning: {line}", err=True)
    if json_mode:
        import orjson

        click.echo(orjson.dumps([v.summary() for v in listing.runs]).decode())
        return 0
    if not listing.runs:
        click.echo(f"no runs in {state_dir}", err=True)
        return 0
    rows = []
    for v in listing.runs:
        duration = v.duration_s
        if v.status == "running":
            duration = time.time() - v.started_at
        counts = ", ".join(f"{n} {state}" for state, n in sorted(v.counts.items()))
        pipeline = v.pipeline + (" (partial)" if v.selection is not None else "")
        rows.append((v.run_id, pipeline, v.status, when(v.started_at), took(duration), counts))
    table(("RUN", "PIPELINE", "STATUS", "STARTED", "DURATION", "TASKS"), rows)
    return 0


@click.command()
@click.argument("run_id")
@state_dir_option
@json_option
def status(run_id: str, state_dir: str, json_mode: bool) -> int:
    """Show RUN_ID's status and its tasks (whatever the run's state; exit 0)."""
    from dagrun import api

    view = api.status(run_id, state_dir=state_dir)
    if json_mode:
        import orjson

        click.echo(orjson.dumps(view.to_dict(), option=orjson.OPT_NON_STR_KEYS).decode())
        return 0
    click.echo(f"run {view.run_id} (pipeline {view.pipeline}): {view.status}, started "
               f"{when(view.started_at)}, took {took(view.duration_s)}")
    if view.selection is not None:
        click.echo(f"partial run: {_asked(view.selection)}")
    rows = []
    for tid, t in sorted(view.tasks.items(),
                         key=lambda kv: (kv[1].started_at is None, kv[1].started_at or 0)):
        error = (t.error or "").splitlines()[0][:100] if t.error else ""
        rows.append((tid, t.state, str(t.attempts), when(t.started_at), took(t.duration_s),
                     error))
    table(("TASK", "STATE", "ATTEMPTS", "STARTED", "DURATION", "ERROR"), rows)
    if view.status == "crashed":
        click.echo(f"its process died: continue it with `dagrun resume {view.run_id}`",
                   err=True)
    return 0


def _asked(selection: dict[str, Any]) -> str:
    flags = " ".join(f"--{flag} {tid}" for flag in ("only", "from", "until")
                     for tid in selection.get(flag) or ())
    taken = selection.get("taken_from") or {}
    took = "; took " + ", ".join(f"{tid} from run {rid}" for tid, rid in
                                 sorted(taken.items())) if taken else ""
    return flags + took
