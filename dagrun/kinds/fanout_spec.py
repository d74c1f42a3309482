"""The spec keys of dynamic fan-out (kinds/fanout.py): `map`, `map_allow_failures`.

Apart from the run-time module because spec loading imports it, and the
run-time side imports the retry policy, which imports the spec package.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dagrun.errors import SpecError


def parse_keys(tdoc: Mapping[str, Any], defaults: Mapping[str, Any], ctx: str,
               inputs: Mapping[str, str], kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """TaskSpec fields of `map` / `map_allow_failures` (empty when the task does not map)."""
    allow = tdoc.get("map_allow_failures", defaults.get("map_allow_failures", False))
    if not isinstance(allow, bool):
        raise SpecError(f"{ctx}: 'map_allow_failures' must be true or false, got {allow!r}")
    param = tdoc.get("map")
    if param is None:
        if "map_allow_failures" in tdoc:
            raise SpecError(f"{ctx}: 'map_allow_failures' is set but the task has no 'map'")
        return {}
    if not isinstance(param, str) or not param.isidentifier():
        raise SpecError(f"{ctx}: 'map' must name a parameter of the task, got {param!r}")
    if param in kwargs:
        if not isinstance(kwargs[param], list):
            raise SpecError(f"{ctx}: 'map' names 'kwargs.{param}', which is a "
                            f"{kind(kwargs[param])}, not a list")
    elif param not in inputs:
        given = ", ".join(sorted([*inputs, *kwargs])) or "none"
        raise SpecError(f"{ctx}: 'map' names parameter {param!r}, which is neither in "
                        f"'inputs' nor in 'kwargs' (parameters given: {given})")
    return {"map": param, "map_allow_failures": allow}


def kind(value: Any) -> str:
    return "null" if value is None else {dict: "table/mapping", str: "string", bool: "boolean",
                                         int: "number", float: "number"}.get(type(value),
                                                                             type(value).__name__)
