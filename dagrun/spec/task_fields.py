"""One task's table of the spec -> its TaskSpec fields: call, deps, inputs,
kwargs, the policy keys (timeouts, retries, breaker, trigger, cache) and the
keys of the task kinds (sensor, repeat, map, wait_for, files). Separate from
load.py (the document and its pipeline-wide sections) because each new task
kind adds its keys here; it runs once per task, so its common case is kept
cheap (specs of 100k tasks)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dagrun.cache.spec import parse_cache, task_keys
from dagrun.durations import parse_size
from dagrun.errors import SpecError
from dagrun.kinds import loop as loop_kind
from dagrun.kinds import sensor as sensor_kind
from dagrun.kinds.conditions import parse_when
from dagrun.kinds.fanout_spec import parse_keys as parse_map
from dagrun.kinds.triggers import parse_trigger
from dagrun.params import check_reference, references
from dagrun.spec.checks import (
    INT_MAX,
    INT_MIN,
    check_keys,
    did_you_mean,
    expect_mapping,
    name_list,
    opt_duration,
    opt_int,
    plain,
)
from dagrun.spec.model import BACKOFFS, CALL, BreakerSpec, RetryPolicy, TaskSpec

POLICY_KEYS = (
    "timeout", "timeout_grace", "retries", "retry_delay", "retry_backoff", "retry_max_delay",
    "retry_jitter", "retry_on", "no_retry_on", "priority", "memory_limit", "breaker",
    "event_timeout", "trigger", "map_allow_failures", "cache",
)
TASK_KEYS = ("call", "deps", "inputs", "kwargs", "when", *POLICY_KEYS, "wait_for", "sensor",
             "repeat", "map", "files_in", "files_out")


def parse_task(tid: str, tdoc: Any, defaults: Mapping[str, Any],
               breakers: Mapping[str, BreakerSpec], where: str,
               shared: dict[str, Any]) -> TaskSpec:
    # Runs once per task (100k times for a large spec): the common case takes
    # the cheap checks (exact types, set operations); anything unusual falls
    # through to the general checks, which raise the precise errors.
    ctx = f"{where}: task {tid!r}"
    if type(tdoc) is not dict:
        expect_mapping(tdoc, ctx)
    if not _TASK_KEY_SET.issuperset(tdoc):
        check_keys(tdoc, TASK_KEYS, ctx, "key")

    call = tdoc.get("call")
    if call is None:
        raise SpecError(f"{ctx}: missing 'call' (e.g. call = \"module:function\")")
    if not isinstance(call, str) or not CALL.fullmatch(call):
        raise SpecError(f"{ctx}: 'call' must look like \"package.module:function\", got {call!r}")

    deps = tdoc.get("deps", ())
    if isinstance(deps, str):
        deps = [deps]
    if deps != ():
        if not isinstance(deps, list) or not all(isinstance(d, str) for d in deps):
            raise SpecError(f"{ctx}: 'deps' must be a list of task ids, got {deps!r}")
        if len(set(deps)) != len(deps):
            seen: set[str] = set()
            for d in deps:
                if d in seen:
                    raise SpecError(f"{ctx}: 'deps' lists {d!r} twice")
                seen.add(d)

    inputs = tdoc.get("inputs", _ABSENT)
    if inputs is _ABSENT:
        inputs = {}
    else:
        expect_mapping(inputs, f"{ctx}: 'inputs'")
        for param, up in inputs.items():
            if not isinstance(param, str) or not param.isidentifier():
                raise SpecError(f"{ctx}: 'inputs' key {param!r} is not a parameter name")
            if not isinstance(up, str) and not (
                    isinstance(up, list) and all(isinstance(u, str) for u in up)):
                raise SpecError(f"{ctx}: 'inputs.{param}' must name an upstream task (or "
                                f"list upstream tasks), got {up!r}")

    kwargs = tdoc.get("kwargs", _ABSENT)
    if kwargs is _ABSENT:
        kwargs = {}
    else:
        expect_mapping(kwargs, f"{ctx}: 'kwargs'")
        for k in kwargs:
            if not isinstance(k, str) or not k.isidentifier():
                raise SpecError(f"{ctx}: 'kwargs' key {k!r} is not a parameter name")
            if k in inputs:
                raise SpecError(f"{ctx}: parameter {k!r} is given both in 'kwargs' and "
                                "'inputs'")
        kwargs = {k: plain(v, f"{ctx}: 'kwargs.{k}'", 1) for k, v in kwargs.items()}
        _check_references(kwargs, shared["params"], ctx)

    # A task without policy keys of its own has the defaults' policy: parsed once
    # and shared, which saves time and memory on specs of 100k tasks. The values
    # are frozen.
    if not _POLICY_SET.isdisjoint(tdoc):
        policy = parse_policy({**defaults, **tdoc}, breakers, ctx)
    else:
        policy = shared["policy"]
    if "wait_for" in tdoc or "event_timeout" in tdoc:
        from dagrun.kinds import events

        policy = {**policy, **events.parse_keys(tdoc, defaults, ctx)}
    if not _PC_KEYS.isdisjoint(tdoc):
        policy = {**policy, **_sensor_repeat(tdoc, ctx)}
    fanout = parse_map(tdoc, defaults, ctx, inputs, kwargs) if "map" in tdoc or (
        "map_allow_failures" in tdoc) else {}
    if not _FILES_KEYS.isdisjoint(tdoc):
        fanout = {**fanout, **task_keys(tdoc, ctx)}
    return TaskSpec(id=tid, call=call, deps=tuple(deps), inputs=dict(inputs), kwargs=kwargs,
                    when=parse_when(tdoc, ctx), **policy, **fanout)


def _check_references(kwargs: dict[str, Any], declared: tuple[str, ...], ctx: str) -> None:
    for k, v in kwargs.items():
        for ref in references(v):
            check_reference(ref, declared, f"{ctx}: 'kwargs.{k}'")


_TASK_KEY_SET = frozenset(TASK_KEYS)
_ABSENT: Any = object()
_POLICY_SET = frozenset(POLICY_KEYS)
_PC_KEYS = frozenset(("sensor", "repeat"))
_FILES_KEYS = frozenset(("files_in", "files_out", "cache"))


def _sensor_repeat(tdoc: Mapping[str, Any], ctx: str) -> dict[str, Any]:
    sensor = sensor_kind.parse(tdoc.get("sensor"), ctx)
    repeat = loop_kind.parse(tdoc.get("repeat"), ctx)
    if sensor is not None and repeat is not None:
        raise SpecError(f"{ctx}: 'sensor' and 'repeat' cannot be combined on one task")
    return {"sensor": sensor, "repeat": repeat}


def parse_policy(merged: Mapping[str, Any], breakers: Mapping[str, BreakerSpec],
                 ctx: str) -> dict[str, Any]:
    priority = merged.get("priority", 0)
    if (isinstance(priority, bool) or not isinstance(priority, int)
            or not INT_MIN <= priority <= INT_MAX):
        raise SpecError(f"{ctx}: 'priority' must be an integer, got {priority!r}")

    timeout = opt_duration(merged, "timeout", ctx, positive=True)
    grace = opt_duration(merged, "timeout_grace", ctx)
    retries = opt_int(merged, "retries", ctx, minimum=0) or 0
    delay = opt_duration(merged, "retry_delay", ctx)
    max_delay = opt_duration(merged, "retry_max_delay", ctx)
    backoff = merged.get("retry_backoff", "exponential")
    if backoff not in BACKOFFS:
        raise SpecError(f"{ctx}: 'retry_backoff' must be one of {', '.join(BACKOFFS)}, "
                        f"got {backoff!r}")
    jitter = merged.get("retry_jitter", True)
    if not isinstance(jitter, bool):
        raise SpecError(f"{ctx}: 'retry_jitter' must be true or false, got {jitter!r}")
    retry_on = name_list(merged, "retry_on", ctx)
    no_retry_on = name_list(merged, "no_retry_on", ctx)

    memory_limit = None
    if merged.get("memory_limit") is not None:
        try:
            memory_limit = parse_size(merged["memory_limit"])
        except ValueError as exc:
            raise SpecError(f"{ctx}: 'memory_limit': {exc}") from None

    breaker = merged.get("breaker")
    if breaker is not None:
        if not isinstance(breaker, str):
            raise SpecError(f"{ctx}: 'breaker' must name a breaker of [breakers], "
                            f"got {breaker!r}")
        if breaker not in breakers:
            hint = did_you_mean(breaker, breakers)
            raise SpecError(f"{ctx}: 'breaker' names {breaker!r}, which is not defined in "
                            f"[breakers]{hint}")

    return dict(
        priority=priority, timeout=timeout, timeout_grace=1.0 if grace is None else grace,
        retry=RetryPolicy(
            retries=retries, delay=1.0 if delay is None else delay, backoff=backoff,
            max_delay=60.0 if max_delay is None else max_delay, jitter=jitter,
            retry_on=retry_on, no_retry_on=no_retry_on,
        ),
        memory_limit=memory_limit, breaker=breaker, trigger=parse_trigger(merged, ctx),
        cache=parse_cache(merged, ctx),
    )
