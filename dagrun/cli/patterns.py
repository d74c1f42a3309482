"""`dagrun emit` (events, kinds/events.py) and `dagrun state` (state across
runs, kinds/state.py)."""

from __future__ import annotations

import click

from dagrun.cli.options import state_dir_option


@click.command()
@click.argument("run_id")
@click.argument("name")
@click.option("--source", default="dagrun emit", show_default=True,
              help="Who emitted it, as the run's journal and display show.")
def emit(run_id: str, name: str, state_dir: str, source: str) -> int:
    """Emit event NAME into run RUN_ID (live or not: a stopped run gets it on resume).

    Needs no lock: the event is dropped into the run's inbox, which the
    process driving the run journals within a fraction of a second.
    """
    from dagrun.errors import UnknownRun
    from dagrun.kinds.events import check_name, drop
    from dagrun.store.fs import pid_alive
    from dagrun.store.runs import Lock, StateDir

    check_name(name)
    state = StateDir(state_dir)
    path = state.run_path(run_id)
    if not (path / "run.json").is_file():
        raise UnknownRun(f"no run {run_id!r} in {state.root} (check the run id and "
                         "--state-dir)")
    drop(path, name, source)
    owner = Lock(path / "lock", "").owner()
    if owner is None or not pid_alive(owner):
        click.echo(f"run {run_id} is not live: event {name} is recorded for its resume",
                   err=True)
    return 0


@click.group()
def state() -> None:
    """State across runs: what tasks declaring a `state` parameter keep."""


@state.command("show")
@click.argument("pipeline")
@click.argument("task", required=False)
def state_show(pipeline: str, task: str | None, state_dir: str) -> int:
    """Print the state of TASK (or of every task of PIPELINE) as JSON."""
    import orjson

    from dagrun.kinds.state import StateStore

    store = StateStore(state_dir)
    if task is not None:
        out = store.load(pipeline, task)
    else:
        out = {tid: store.load(pipeline, tid) for tid in store.tasks(pipeline)}
    click.echo(orjson.dumps(out, option=orjson.OPT_SORT_KEYS).decode())
    return 0


@state.command("set")
@click.argument("pipeline")
@click.argument("task")
@click.argument("value", metavar="JSON")
def state_set(pipeline: str, task: str, value: str, state_dir: str) -> int:
    """Replace the state of TASK with JSON (an object); the next run receives it."""
    import orjson

    from dagrun.errors import UsageError
    from dagrun.kinds.state import StateStore

    try:
        data = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise UsageError(f"state must be a JSON object: {exc}") from None
    if not isinstance(data, dict):
        raise UsageError(f"state must be a JSON object, got a JSON {type(data).__name__}")
    StateStore(state_dir).save(pipeline, task, data, run=None)
    return 0


@state.command("reset")
@click.argument("pipeline")
@click.argument("task", required=False)
def state_reset(pipeline: str, task: str | None, state_dir: str) -> int:
    """Forget the state of TASK (or of every task of PIPELINE)."""
    from dagrun.kinds.state import StateStore

    gone = StateStore(state_dir).reset(pipeline, task)
    click.echo(f"reset {len(gone)} task state(s) of pipeline {pipeline}", err=True)
    return 0


for _command in (emit, state_show, state_set, state_reset):
    state_dir_option(_command)  # click appends the option to a built command
