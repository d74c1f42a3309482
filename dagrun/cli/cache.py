"""The cache group: list and clear cached task results (dagrun/cache/)."""

from __future__ import annotations

import click

from dagrun.cli.options import json_option, state_dir_option


@click.group()
def cache() -> None:
    """Cached task results (STATE_DIR/cache/): list them, clear them."""


@cache.command("list")
@click.argument("pipeline", required=False)
@state_dir_option
@json_option
def cache_list(pipeline: str | None, state_dir: str, json_mode: bool) -> int:
    """Every cached result (of PIPELINE): task, the run it came from, when it expires."""
    from dagrun import api
    from dagrun.cli.history import table, when

    found = api.cache_list(pipeline, state_dir=state_dir)
    if json_mode:
        import orjson

        click.echo(orjson.dumps(found).decode())
        return 0
    if not found:
        click.echo(f"no cached results in {state_dir}", err=True)
        return 0
    table(("PIPELINE", "TASK", "FROM RUN", "CREATED", "EXPIRES"),
          [(e["pipeline"], e["task"], e["run_id"], when(e["created_at"]),
            ("expired" if e["expired"] else when(e["expires_at"]))
            if e["expires_at"] is not None else "never") for e in found])
    return 0


@cache.command("clear")
@click.argument("pipeline", required=False)
@click.argument("task", required=False)
@state_dir_option
def cache_clear(pipeline: str | None, task: str | None, state_dir: str) -> int:
    """Forget the cached results of TASK, of PIPELINE, or (no argument) all of them."""
    from dagrun import api

    n = api.cache_clear(pipeline, task, state_dir=state_dir)
    scope = f"task {task} of {pipeline}" if task else f"pipeline {pipeline}" if pipeline \
        else "every pipeline"
    click.echo(f"dagrun: cleared {n} cache entr{'y' if n == 1 else 'ies'} of {scope}", err=True)
    return 0
