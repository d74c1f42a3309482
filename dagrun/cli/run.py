"""The run/resume/validate/graph commands: a spec or a run in, a result out."""

from __future__ import annotations

import click

from dagrun.cli.options import (
    deadline_option,
    deadline_seconds,
    durability_option,
    duration,
    executor_options,
    executor_timeout_seconds,
    json_option,
    log_options,
    metrics_file_option,
    param_option,
    parsed_params,
    quiet_option,
    state_dir_option,
)
from dagrun.cli.output import emit_result
from dagrun.cli.progress import progress


@click.command()
@click.argument("spec", type=click.Path(dir_okay=False))
@state_dir_option
@json_option
@quiet_option
@click.option("--run-id", help="Id of the new run (default: a fresh, time-sortable id).")
@click.option("--workers", type=click.IntRange(min=1), help="Worker processes "
              "(default: the spec's, else the CPU count).")
@durability_option
@deadline_option
@log_options
@click.option("--if-running", type=click.Choice(["skip", "wait", "fail"]),
              help="When another run of this pipeline is live: skip (exit 0, start "
              "nothing), wait (see --wait-timeout) or fail (exit 3). Default: run anyway.")
@click.option("--wait-timeout", help="With --if-running wait: give up (exit 3) after this "
              "long (e.g. 30m). Default: wait as long as it takes.")
@param_option
@metrics_file_option
@executor_options
def run(spec: str, state_dir: str, json_mode: bool, quiet: bool, run_id: str | None,
        workers: int | None, durability: str | None, deadline: str | None,
        if_running: str | None, wait_timeout: str | None, params: tuple[str, ...],
        metrics_file: str | None, executor: str | None, executor_timeout: str | None) -> int:
    """Validate SPEC, then execute a new run of it."""
    from dagrun import api
    from dagrun.errors import PipelineBusy
    from dagrun.store.runs import new_run_id

    if wait_timeout is not None and if_running != "wait":
        raise click.UsageError("--wait-timeout needs --if-running wait")
    executor_timeout_s = executor_timeout_seconds(executor_timeout)
    run_id = run_id or new_run_id()  # known here: a signal during its creation names it
    try:
        result = api.run(spec, state_dir=state_dir, run_id=run_id, workers=workers,
                         durability=durability, deadline=deadline_seconds(deadline),
                         if_running=if_running, params=parsed_params(params),
                         wait_timeout=duration(wait_timeout, "--wait-timeout"),
                         metrics_file=metrics_file, executor=executor,
                         executor_timeout=executor_timeout_s,
                         reporter=progress.reporter_for(run_id, state_dir, json_mode, quiet))
    except PipelineBusy as exc:
        progress.decided = True
        click.echo(f"dagrun: {exc}", err=True)
        if json_mode:
            import orjson

            click.echo(orjson.dumps({"run_id": None, "status": "skipped", "reason": str(exc),
                                     "tasks": {}}).decode())
        return 0
    return emit_result(result, json_mode)


@click.command()
@click.argument("run_id", required=False)
@state_dir_option
@json_option
@click.option("--last", is_flag=True, help="Resume the newest unfinished (crashed or "
              "cancelled) run instead of naming one.")
@click.option("--pipeline", help="With --last: the newest unfinished run of this pipeline.")
@quiet_option
@durability_option
@deadline_option
@log_options
@click.option("--retry-failed", is_flag=True, help="Give every dead-lettered task a fresh "
              "retry budget (and run the tasks skipped because of it).")
@click.option("--spec", "spec_path", type=click.Path(dir_okay=False), help="Resume with this "
              "edited spec: tasks whose call, kwargs, inputs or deps changed re-run, with "
              "their descendants.")
@click.option("--allow-removed", is_flag=True, help="With --spec: let the edited spec drop "
              "tasks of the run (without it, resume names them and exits 2).")
@param_option
@metrics_file_option
@executor_options
def resume(run_id: str | None, state_dir: str, json_mode: bool, quiet: bool, last: bool,
           pipeline: str | None, durability: str | None, deadline: str | None,
           retry_failed: bool, spec_path: str | None, allow_removed: bool,
           params: tuple[str, ...], metrics_file: str | None, executor: str | None,
           executor_timeout: str | None) -> int:
    """Repair RUN_ID's persisted state and continue it; on a finished run,
    print its result and run nothing."""
    from dagrun import api

    if last == (run_id is not None):
        raise click.UsageError("give a RUN_ID or --last (not both)")
    if pipeline is not None and not last:
        raise click.UsageError("--pipeline needs --last")
    if last:
        run_id = api.last_unfinished(state_dir=state_dir, pipeline=pipeline)
        click.echo(f"dagrun: resuming run {run_id}", err=True)
    assert run_id is not None  # given, or found by --last (checked above)

    result = api.resume(run_id, state_dir=state_dir, spec_path=spec_path,
                        retry_failed=retry_failed, durability=durability,
                        deadline=deadline_seconds(deadline), allow_removed=allow_removed,
                        params=parsed_params(params),
                        metrics_file=metrics_file, executor=executor,
                        executor_timeout=executor_timeout_seconds(executor_timeout),
                        reporter=progress.reporter_for(run_id, state_dir, json_mode, quiet))
    return emit_result(result, json_mode)


@click.command()
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


@click.command()
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
