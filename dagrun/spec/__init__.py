"""The pipeline spec: model.py (frozen dataclasses and their defaults), load.py
(TOML/YAML/dict -> validated PipelineSpec; task_fields.py a task's table ->
its fields; checks.py the small value checkers;
yaml_doc.py parses YAML safely),
snapshot.py (the run's JSON snapshot of a spec)."""

from dagrun.spec.checks import MAX_KWARGS_DEPTH
from dagrun.spec.load import BREAKER_KEYS, PIPELINE_KEYS, TOP_KEYS, load_spec, parse_document
from dagrun.spec.model import (
    BACKOFFS,
    CALL,
    DEFAULT_DURABILITY,
    DURABILITY_MODES,
    TASK_ID,
    BreakerSpec,
    PipelineSpec,
    RetryPolicy,
    TaskSpec,
)
from dagrun.spec.task_fields import POLICY_KEYS, TASK_KEYS

__all__ = [
    "BACKOFFS", "BREAKER_KEYS", "CALL", "DEFAULT_DURABILITY", "DURABILITY_MODES",
    "MAX_KWARGS_DEPTH", "PIPELINE_KEYS", "POLICY_KEYS", "TASK_ID", "TASK_KEYS", "TOP_KEYS",
    "BreakerSpec", "PipelineSpec", "RetryPolicy", "TaskSpec", "load_spec", "parse_document",
]
