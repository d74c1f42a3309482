"""`run --dry-run`: what api.dry_run found, as one aligned line per task and
a count line (or its JSON)."""

from __future__ import annotations

from typing import Any

import click


def show(plan: dict[str, Any], json_mode: bool) -> int:
    if json_mode:
        import orjson

        click.echo(orjson.dumps(plan).decode())
        return 0
    for line in plan["notes"]:
        click.echo(f"dagrun: {line}", err=True)
    tasks = plan["tasks"]
    width = max((len(tid) for tid in tasks), default=0)
    for tid, v in tasks.items():
        why = v["reason"]
        if v.get("detail"):
            why += f" ({v['detail']})"
        if v.get("cached_from"):
            why += f" (run {v['cached_from']})"
        click.echo(f"{tid:<{width}}  {'run ' if v['run'] else 'skip'}  {why}")
    for tid, t in plan["taken"].items():
        src = "the cache, run" if t["cached"] else "run"
        click.echo(f"{tid:<{width}}  take  output from {src} {t['run_id']}")
    would = sum(1 for v in tasks.values() if v["run"])
    click.echo(f"dry run: {would} of {len(tasks)} tasks would run, "
               f"{len(tasks) - would} cached (nothing was run)")
    return 0
