"""The spec snapshot in run.json: compact (only what differs from the
defaults), rebuilt exactly, and snapshots written in the full form still load."""

from __future__ import annotations

import orjson

from dagrun.spec import PipelineSpec, load_spec, snapshot

FULL = """
[pipeline]
name = "snap"
workers = 3
deadline = "1h"
durability = "durable"
max_tasks_per_worker = 50

[breakers.api]
failure_threshold = 2
cooldown = 10

[defaults]
retries = 1

[tasks.a]
call = "basic:numbers"
kwargs = { n = 4, day = 2026-11-27 }
priority = 5
timeout = "30s"
timeout_grace = 2
memory_limit = "100MB"
breaker = "api"
retry_on = ["ValueError"]
no_retry_on = ["KeyError"]
retry_delay = 0.5
retry_backoff = "linear"
retry_max_delay = 5
retry_jitter = false

[tasks.b]
call = "basic:total"
deps = ["a"]
inputs = { xs = "a" }

[tasks.c]
call = "basic:const"
retries = 0
"""


def roundtrip(spec: PipelineSpec) -> PipelineSpec:
    return snapshot.from_dict(orjson.loads(orjson.dumps(snapshot.to_dict(spec))))


def test_snapshot_rebuilds_every_field(write) -> None:
    spec = load_spec(write("snap.toml", FULL))
    assert roundtrip(spec) == spec


def test_snapshot_leaves_out_defaults(write) -> None:
    spec = load_spec(write("plain.toml", '[tasks.x]\ncall = "basic:const"\n'))
    assert snapshot.to_dict(spec)["tasks"] == [{"id": "x", "call": "basic:const"}]
    assert roundtrip(spec) == spec


def test_full_form_snapshot_still_loads(write) -> None:
    spec = load_spec(write("snap.toml", FULL))
    data = snapshot.to_dict(spec)
    for t, full in zip(data["tasks"], spec.tasks.values(), strict=True):
        r = full.retry
        t.update(deps=list(full.deps), inputs=dict(full.inputs), kwargs=dict(full.kwargs),
                 priority=full.priority, timeout=full.timeout,
                 timeout_grace=full.timeout_grace, memory_limit=full.memory_limit,
                 breaker=full.breaker,
                 retry={"retries": r.retries, "delay": r.delay, "backoff": r.backoff,
                        "max_delay": r.max_delay, "jitter": r.jitter,
                        "retry_on": list(r.retry_on), "no_retry_on": list(r.no_retry_on)})
    assert snapshot.from_dict(orjson.loads(orjson.dumps(data))) == spec
