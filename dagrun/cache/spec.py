"""The spec keys `cache`, `files_in` and `files_out`, parsed once (load.py)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dagrun.durations import parse_duration
from dagrun.errors import SpecError

CACHE_KEYS = ("ttl", "version")


@dataclass(frozen=True, slots=True)
class CachePolicy:
    ttl: float | None = None  # seconds an entry stays usable; None: no expiry
    version: str = ""  # bumped by hand to invalidate every entry of the task
    # Why the task is never cached though `cache` is set (params.bind: its
    # kwargs use ${run.id}, so its key would be new every run); "" if it is.
    # Kept in the run's snapshot: a resume re-binds only secret templates.
    never: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"ttl": self.ttl, "version": self.version,
                **({"never": self.never} if self.never else {})}


def parse_cache(merged: Mapping[str, Any], ctx: str) -> CachePolicy | None:
    """`cache = true | false | { ttl = "7d", version = "2" }`."""
    value = merged.get("cache", False)
    if value is False or value is None:
        return None
    if value is True:
        return _DEFAULT
    if not isinstance(value, Mapping):
        raise SpecError(f"{ctx}: 'cache' must be true, false or a table like "
                        f'{{ ttl = "7d", version = "2" }}, got {value!r}')
    unknown = [k for k in value if k not in CACHE_KEYS]
    if unknown:
        raise SpecError(f"{ctx}: 'cache' has unknown key {unknown[0]!r} "
                        f"(known: {', '.join(CACHE_KEYS)})")
    ttl = None
    if value.get("ttl") is not None:
        try:
            ttl = parse_duration(value["ttl"])
        except ValueError as exc:
            raise SpecError(f"{ctx}: 'cache.ttl': {exc}") from None
        if ttl <= 0:
            raise SpecError(f"{ctx}: 'cache.ttl' must be positive, got {value['ttl']!r}")
    version = value.get("version", "")
    if isinstance(version, bool) or not isinstance(version, (str, int)):
        raise SpecError(f"{ctx}: 'cache.version' must be a string or an integer, "
                        f"got {version!r}")
    return CachePolicy(ttl, str(version))


def parse_files(tdoc: Mapping[str, Any], key: str, ctx: str) -> tuple[str, ...]:
    """A list of paths or globs, relative to the spec's folder."""
    value = tdoc.get(key, ())
    if isinstance(value, str):
        value = [value]
    if value == ():
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) and v and "\0" not in v
                                              for v in value):
        raise SpecError(f"{ctx}: '{key}' must be a list of paths or globs (relative to the "
                        f"spec's folder), got {value!r}")
    return tuple(dict.fromkeys(value))


def task_keys(tdoc: Mapping[str, Any], ctx: str) -> dict[str, Any]:
    """files_in / files_out of a task, and a check that its cache makes sense."""
    out = {"files_in": parse_files(tdoc, "files_in", ctx),
           "files_out": parse_files(tdoc, "files_out", ctx)}
    if tdoc.get("cache") not in (None, False):
        for kind in ("sensor", "repeat", "map"):
            if kind in tdoc:
                raise SpecError(f"{ctx}: 'cache' cannot be set on a task with '{kind}' "
                                "(its result depends on more than its inputs)")
        if "when" in tdoc:
            raise SpecError(f"{ctx}: 'cache' cannot be set on a task with 'when' (a hit "
                            "would skip the predicate that decides whether it runs)")
        if "wait_for" in tdoc:
            raise SpecError(f"{ctx}: 'cache' cannot be set on a task with 'wait_for' (a "
                            "hit would skip the events it waits for)")
    return out


def from_dict(d: Mapping[str, Any] | None) -> CachePolicy | None:
    if d is None:
        return None
    return CachePolicy(d.get("ttl"), d.get("version", ""), d.get("never", ""))


_DEFAULT = CachePolicy()
