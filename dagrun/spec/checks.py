"""Small value checkers shared by the spec parsers: each raises a one-line
SpecError naming the context (file, task) and the key at fault."""

from __future__ import annotations

import datetime as _dt
import difflib
from collections.abc import Mapping
from typing import Any

from dagrun.durations import parse_duration
from dagrun.errors import SpecError

INT_MIN, INT_MAX = -(2**63), 2**63 - 1
# The run's snapshot (orjson, at most 254 levels) wraps kwargs in ~5 levels and
# the worker's messages in a few more: this leaves ample room, and no real
# task takes arguments nested this deep. (Also stops a self-referencing dict.)
MAX_KWARGS_DEPTH = 100


def plain(value: Any, ctx: str, depth: int) -> Any:
    """Dates and times become ISO-8601 strings; anything not JSON-like is an error."""
    if isinstance(value, (_dt.datetime, _dt.date, _dt.time)):
        return value.isoformat()
    if isinstance(value, (Mapping, list, tuple)):
        if depth > MAX_KWARGS_DEPTH:
            raise SpecError(f"{ctx}: nested more than {MAX_KWARGS_DEPTH} levels deep")
        if isinstance(value, Mapping):
            return {str(k): plain(v, ctx, depth + 1) for k, v in value.items()}
        return [plain(v, ctx, depth + 1) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        if not INT_MIN <= value <= INT_MAX:
            raise SpecError(f"{ctx}: integer {value} is out of range (JSON numbers here are "
                            "64-bit); pass it as a string")
        return value
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise SpecError(f"{ctx}: {value!r} is not a JSON number; pass it as a string")
        return value
    raise SpecError(f"{ctx}: unsupported value {value!r}")


def did_you_mean(word: object, choices: Any) -> str:
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_keys(doc: Mapping[str, Any], allowed: tuple[str, ...], ctx: str, what: str) -> None:
    for key in doc:
        if key not in allowed:
            raise SpecError(f"{ctx}: unknown {what} {key!r}{did_you_mean(key, allowed)}")


def expect_mapping(value: Any, ctx: str) -> None:
    if not isinstance(value, Mapping):
        raise SpecError(f"{ctx} must be a table/mapping, got {type(value).__name__}")


def opt_int(doc: Mapping[str, Any], key: str, ctx: str, *, minimum: int) -> int | None:
    value = doc.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= INT_MAX:
        kind = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise SpecError(f"{ctx}: {key!r} must be {kind}, got {value!r}")
    return value


def required_duration(doc: Mapping[str, Any], key: str, ctx: str, default: float) -> float:
    """A duration that has a default but no "none" (null would mean "never")."""
    if key not in doc:
        return default
    value = opt_duration(doc, key, ctx)
    if value is None:
        raise SpecError(f"{ctx}: {key!r} must be a duration like \"30s\" or \"5m\", got null")
    return value


def opt_duration(doc: Mapping[str, Any], key: str, ctx: str, *,
                  positive: bool = False) -> float | None:
    value = doc.get(key)
    if value is None:
        return None
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        if "10 years" in str(exc) or "order" in str(exc):
            raise SpecError(f"{ctx}: {key!r}: {exc}") from None
        seconds = -1.0
    if seconds < 0 or (positive and seconds == 0):
        kind = "a positive" if positive else "a non-negative"
        raise SpecError(f"{ctx}: {key!r} must be {kind} number of seconds "
                        f"(or a duration like \"30s\", \"1h30m\"), got {value!r}")
    return seconds


def name_list(doc: Mapping[str, Any], key: str, ctx: str) -> tuple[str, ...]:
    value = doc.get(key, [])
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise SpecError(f"{ctx}: {key!r} must be a list of exception class names, got {value!r}")
    return tuple(value)
