"""The run's spec snapshot (run.json "spec"): PipelineSpec <-> plain JSON-able
dict, compact (only what differs from the defaults) and rebuilt without
re-validating."""

from __future__ import annotations

from collections.abc import Mapping
from operator import attrgetter
from typing import Any

from dagrun.cache.spec import from_dict as cache_from_dict
from dagrun.kinds import loop as loop_kind
from dagrun.kinds import sensor as sensor_kind
from dagrun.spec.model import BreakerSpec, PipelineSpec, RetryPolicy, TaskSpec


def to_dict(spec: PipelineSpec) -> dict[str, Any]:
    """A plain JSON-able snapshot; from_dict() rebuilds it without re-validating."""
    return {
        "name": spec.name, "workers": spec.workers, "description": spec.description,
        "deadline": spec.deadline, "durability": spec.durability,
        "max_tasks_per_worker": spec.max_tasks_per_worker,
        "source": spec.source, "base_dir": spec.base_dir,
        "python_path": list(spec.python_path),
        "breakers": {n: _breaker_dict(b) for n, b in spec.breakers.items()},
        "tasks": [_task_dict(t) for t in spec.tasks.values()],
        **({"params": dict(spec.params)} if spec.params else {}),
        **({"secret_params": list(spec.secret_params)} if spec.secret_params else {}),
        **({"executor": spec.executor} if spec.executor else {}),
    }


def from_dict(data: Mapping[str, Any]) -> PipelineSpec:
    # Hot at 100k tasks (resume loads the snapshot): tasks mostly share one
    # retry policy, so build each distinct policy once.
    tasks = {}
    policies: dict[tuple[Any, ...], RetryPolicy] = {}
    # Keys left out by _task_dict() have their default values.
    get = dict.get
    for t in data["tasks"]:
        r = get(t, "retry")
        if r is None:
            retry = _DEFAULT_RETRY
        else:
            key = (r["retries"], r["delay"], r["backoff"], r["max_delay"], r["jitter"],
                   tuple(r["retry_on"]), tuple(r["no_retry_on"]))
            cached = policies.get(key)
            if cached is None:
                cached = policies[key] = RetryPolicy(*key)
            retry = cached
        tasks[t["id"]] = TaskSpec(
            t["id"], t["call"], tuple(get(t, "deps", ())), get(t, "inputs") or {},
            get(t, "kwargs") or {}, get(t, "priority", 0), get(t, "timeout"),
            get(t, "timeout_grace", 1.0), retry, get(t, "memory_limit"),
            get(t, "breaker"), wait_for=tuple(get(t, "wait_for", ())),
            event_timeout=get(t, "event_timeout"), trigger=get(t, "trigger", "all_success"),
            when=get(t, "when"), sensor=sensor_kind.from_dict(get(t, "sensor")),
            repeat=loop_kind.from_dict(get(t, "repeat")), map=get(t, "map"),
            map_allow_failures=get(t, "map_allow_failures", False),
            template=get(t, "kwargs") if get(t, "template") else None,
            cache=cache_from_dict(get(t, "cache")), files_in=tuple(get(t, "files_in", ())),
            files_out=tuple(get(t, "files_out", ())))
    breakers = {n: BreakerSpec(**b) for n, b in data.get("breakers", {}).items()}
    return PipelineSpec(
        name=data["name"], tasks=tasks, workers=data.get("workers"),
        description=data.get("description", ""), deadline=data.get("deadline"),
        durability=data.get("durability"),
        max_tasks_per_worker=data.get("max_tasks_per_worker"), breakers=breakers,
        source=data.get("source"), base_dir=data.get("base_dir"),
        python_path=tuple(data.get("python_path", ())),
        params=data.get("params", {}), secret_params=tuple(data.get("secret_params", ())),
        executor=data.get("executor"),
    )


_DEFAULT_RETRY = RetryPolicy()
# The fields most tasks leave at their defaults, read in one C call and compared
# as one tuple: _task_dict runs for every task when a run is created.
_RARE = attrgetter("priority", "timeout", "timeout_grace", "memory_limit", "breaker", "wait_for",
                   "event_timeout", "trigger", "when", "sensor", "repeat", "map", "template",
                   "cache", "files_in", "files_out")
_RARE_DEFAULTS = _RARE(TaskSpec("", ""))
# A policy object found equal to the default (tasks without policy keys share one):
# `is` is then enough, not RetryPolicy.__eq__ per task.
_default_policy = [_DEFAULT_RETRY]


def _task_dict(t: TaskSpec) -> dict[str, Any]:
    """Only what differs from TaskSpec's defaults: a 100k-task snapshot is ~5x
    smaller this way (faster to write at `run`, to read at `resume`)."""
    d: dict[str, Any] = {"id": t.id, "call": t.call}
    if t.deps:
        d["deps"] = list(t.deps)
    if t.inputs:
        d["inputs"] = dict(t.inputs)
    if _RARE(t) == _RARE_DEFAULTS and _plain_retry(t.retry):
        if t.kwargs:
            d["kwargs"] = dict(t.kwargs)
        return d
    if t.template is not None:
        # It reads a secret param: the resolved kwargs would hold its value.
        d["kwargs"] = dict(t.template)
        d["template"] = True
    elif t.kwargs:
        d["kwargs"] = dict(t.kwargs)
    if t.priority:
        d["priority"] = t.priority
    if t.timeout is not None:
        d["timeout"] = t.timeout
    if t.timeout_grace != 1.0:
        d["timeout_grace"] = t.timeout_grace
    if t.memory_limit is not None:
        d["memory_limit"] = t.memory_limit
    if t.breaker is not None:
        d["breaker"] = t.breaker
    if t.wait_for:
        d["wait_for"] = list(t.wait_for)
    if t.event_timeout is not None:
        d["event_timeout"] = t.event_timeout
    if t.trigger != "all_success":
        d["trigger"] = t.trigger
    if t.when is not None:
        d["when"] = t.when
    if t.sensor is not None:
        d["sensor"] = t.sensor.to_dict()
    if t.repeat is not None:
        d["repeat"] = t.repeat.to_dict()
    if t.map is not None:
        d["map"] = t.map
        d["map_allow_failures"] = t.map_allow_failures
    if t.cache is not None:
        d["cache"] = t.cache.to_dict()
    if t.files_in:
        d["files_in"] = list(t.files_in)
    if t.files_out:
        d["files_out"] = list(t.files_out)
    r = t.retry
    if not _plain_retry(r):
        d["retry"] = {"retries": r.retries, "delay": r.delay, "backoff": r.backoff,
                      "max_delay": r.max_delay, "jitter": r.jitter,
                      "retry_on": list(r.retry_on), "no_retry_on": list(r.no_retry_on)}
    return d


def _plain_retry(r: RetryPolicy) -> bool:
    if r is _default_policy[0]:
        return True
    if r == _DEFAULT_RETRY:
        _default_policy[0] = r
        return True
    return False


def _breaker_dict(b: BreakerSpec) -> dict[str, Any]:
    return {"name": b.name, "failure_threshold": b.failure_threshold, "cooldown": b.cooldown,
            "success_threshold": b.success_threshold, "max_wait": b.max_wait}

