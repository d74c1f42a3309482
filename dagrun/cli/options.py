"""Option decorators shared by several commands, and duration parsing."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import click

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


def quiet_option(f: F) -> F:
    return click.option("--quiet", "-q", is_flag=True, help="Do not echo the lines tasks "
                        "print (they stay in `dagrun logs RUN TASK`).")(f)


def durability_option(f: F) -> F:
    return click.option("--durability", type=click.Choice(["fast", "atomic", "durable"]),
                        help="How hard each record is pushed to disk (default: the spec's, "
                        "else atomic; see README, Crash safety).")(f)


def deadline_option(f: F) -> F:
    return click.option("--deadline", help="Cancel the run when it has run this long "
                        "(e.g. 2h); it stays resumable. `none` drops the spec's or the "
                        "run's deadline.")(f)


def metrics_file_option(f: F) -> F:
    return click.option("--metrics-file", type=click.Path(dir_okay=False),
                        help="Keep the run's metrics in this file, Prometheus text format "
                        "(for node_exporter's textfile collector: name it *.prom); "
                        "rewritten every few seconds and at the end.")(f)


def executor_options(f: F) -> F:
    f = click.option("--executor-timeout", metavar="SECONDS", help="How long to wait for the "
                     "cluster (its scheduler, then a worker) before giving up with exit 5 "
                     "(default 60).")(f)
    return click.option("--executor", metavar="local|dask|dask://HOST:PORT", help="Where tasks "
                        "run: local (a process pool, the default), dask (a Dask LocalCluster "
                        "of --workers processes) or a Dask scheduler's address (dask://, "
                        "tcp:// or tls://). Env: DAGRUN_EXECUTOR; else the spec's "
                        "[pipeline] executor (resume: the run's).")(f)


def executor_timeout_seconds(value: str | None) -> float | None:
    return duration(value, "--executor-timeout")


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


def param_option(f: F) -> F:
    return click.option("--param", "params", multiple=True, metavar="KEY=VALUE",
                        help="A value for the spec's [params] (repeatable; JSON when it "
                        "parses as JSON, else a string). Env: DAGRUN_PARAM_<KEY>.")(f)


def parsed_params(items: tuple[str, ...]) -> dict[str, Any] | None:
    from dagrun.params import parse_cli

    return parse_cli(items) if items else None
def _set_log(_ctx: click.Context, param: click.Parameter, value: str) -> str:
    from dagrun.listeners import logfile

    if param.name == "log_level":
        logfile.config.level = value.lower()
    else:
        logfile.config.format = value
    return value


def log_options(f: F) -> F:
    f = click.option("--log-format", type=click.Choice(["text", "json"]), default="text",
                     envvar="DAGRUN_LOG_FORMAT", show_default=True, callback=_set_log,
                     expose_value=False, help="dagrun's own log lines on stderr and in "
                     "RUN/dagrun.log: text, or JSON lines (ts, level, run_id, event, task, "
                     "message) for log shippers (env DAGRUN_LOG_FORMAT).")(f)
    return click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"],
                        case_sensitive=False), default="info", envvar="DAGRUN_LOG_LEVEL",
                        show_default=True, callback=_set_log, expose_value=False,
                        help="Least severe line logged (env DAGRUN_LOG_LEVEL); debug adds "
                        "every task start and completion.")(f)
