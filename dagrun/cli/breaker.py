"""The breaker group: list circuit breakers and reset one."""

from __future__ import annotations

import click

from dagrun.cli.options import json_option, state_dir_option


@click.group()
def breaker() -> None:
    """Circuit breakers (STATE_DIR/breakers/): their state, and resetting one."""


@breaker.command("list")
@state_dir_option
@json_option
def breaker_list(state_dir: str, json_mode: bool) -> int:
    """Every breaker: name, state, consecutive failures, when an open one reopens."""
    from dagrun import api
    from dagrun.cli.history import table, when

    found = api.breaker_list(state_dir=state_dir)
    if json_mode:
        import orjson

        click.echo(orjson.dumps(found).decode())
        return 0
    if not found:
        click.echo(f"no breakers in {state_dir}", err=True)
        return 0
    table(("NAME", "STATE", "FAILURES", "REOPENS AT"),
          [(b["name"], b["state"], str(b["failures"]),
            when(b["reopens_at"]) if b["reopens_at"] is not None else "-") for b in found])
    return 0


@breaker.command("reset")
@click.argument("name")
@state_dir_option
def breaker_reset(name: str, state_dir: str) -> int:
    """Close breaker NAME and forget its failures (live runs see it at once)."""
    from dagrun import api

    api.breaker_reset(name, state_dir=state_dir)
    click.echo(f"dagrun: breaker {name} reset (closed)", err=True)
    return 0
