"""A spec from wherever it comes (a file, a PipelineSpec, a Pipeline builder),
checked: keys, graph, callables; and the settings read from it."""

from __future__ import annotations

import os
from typing import Any

from dagrun.callables import check_callables
from dagrun.errors import UsageError
from dagrun.graph import check_graph
from dagrun.spec import DEFAULT_DURABILITY, DURABILITY_MODES, PipelineSpec, load_spec


def load(spec: Any) -> PipelineSpec:
    """A PipelineSpec from a path, a PipelineSpec or a Pipeline builder (not checked)."""
    if isinstance(spec, PipelineSpec):
        return spec
    if callable(getattr(spec, "to_spec", None)):  # a Pipeline (which imports this module)
        result = spec.to_spec()
        if isinstance(result, PipelineSpec):
            return result
    if isinstance(spec, (str, os.PathLike)):
        return load_spec(spec)
    raise UsageError(f"expected a spec path, PipelineSpec or Pipeline, got {type(spec).__name__}")


def validate(spec: Any, params: Any = None) -> PipelineSpec:
    """Load and check a spec: keys, graph, and that every callable imports and
    accepts its arguments; with `params` (--param values), that each is declared.
    Runs nothing, writes nothing."""
    pipeline = load(spec)
    check_graph(pipeline)
    check_callables(pipeline)
    if params is not None:
        from dagrun.params import resolve

        resolve(pipeline, params, os.environ, require_secrets=False)
    return pipeline


def resolve_durability(value: str | None, spec: PipelineSpec) -> str:
    mode = value or spec.durability or DEFAULT_DURABILITY
    if mode not in DURABILITY_MODES:
        raise UsageError(f"--durability must be one of {', '.join(DURABILITY_MODES)}, "
                         f"got {mode!r}")
    return mode
