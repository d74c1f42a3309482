"""What the cache would answer, without running anything: `run --dry-run`
(`plan`) and the outputs a partial run takes from the cache (`cached_outputs`).

Both walk the graph in order, each task's key computed from its upstreams'
outputs as a run would: an upstream that would run has no output yet, so a
task taking its output can only run too ("upstream X runs"). Reading only:
the cache file and the runs' journals; nothing is written, no lock taken.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dagrun.cache.key import key_of
from dagrun.cache.plug import CachePlug, cacheable, never
from dagrun.model import TaskState, TaskStatus

if TYPE_CHECKING:
    from dagrun.spec.model import TaskSpec

# CachePlug.reason() -> (a dry run's reason, its detail).
_REASONS = {"not in the cache": ("new", ""), "kwargs changed": ("input changed", "kwargs"),
            "input changed": ("input changed", "upstream output"),
            "output file changed": ("file changed", "files_out")}


@dataclass
class Verdict:
    run: bool
    reason: str
    detail: str = ""
    cached_from: str | None = None
    output: Any = None  # a hit's output (what its dependents would get)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"run": self.run, "reason": self.reason}
        if self.detail:
            out["detail"] = self.detail
        if self.cached_from is not None:
            out["cached_from"] = self.cached_from
        return out


def order(tasks: Mapping[str, TaskSpec]) -> list[str]:
    """Task ids, each after its deps (the spec's order where it is free)."""
    seen: set[str] = set()
    out: list[str] = []
    for root in tasks:
        stack = [(root, False)]
        while stack:
            tid, done = stack.pop()
            if done:
                out.append(tid)
                continue
            if tid in seen:
                continue
            seen.add(tid)
            stack.append((tid, True))
            stack.extend((d, False) for d in reversed(tasks[tid].deps)
                         if d in tasks and d not in seen)
    return out


def _upstreams(t: TaskSpec) -> list[str]:
    """The tasks whose outputs the key needs (its inputs; deps alone do not count)."""
    return [u for ups in t.inputs.values() for u in ([ups] if isinstance(ups, str) else ups)]


def _statuses(outputs: Mapping[str, Any], ids: list[str]) -> dict[str, TaskStatus]:
    return {u: TaskStatus(state=TaskState.COMPLETED, output=outputs[u]) for u in ids}


def plan(plug: CachePlug, forced: Mapping[str, str]) -> dict[str, Verdict]:
    """Task -> whether it would run and why. `forced`: task -> the flag forcing
    it (--no-cache, --refresh, --from); `plug` with use=True and no refresh."""
    spec = plug.spec
    verdicts: dict[str, Verdict] = {}
    outputs: dict[str, Any] = {}
    for tid in order(spec.tasks):
        t = spec.tasks[tid]
        verdicts[tid] = v = _verdict(plug, t, forced, verdicts, outputs)
        if not v.run:
            outputs[tid] = v.output
    return verdicts


def _verdict(plug: CachePlug, t: TaskSpec, forced: Mapping[str, str],
             verdicts: Mapping[str, Verdict], outputs: Mapping[str, Any]) -> Verdict:
    if not cacheable(t):
        return Verdict(True, never(t) or "no cache")
    if t.id in forced:
        return Verdict(True, "forced", forced[t.id])
    ups = _upstreams(t)
    running = [u for u in ups if verdicts[u].run]
    if running:
        return Verdict(True, f"upstream {running[0]} runs")
    parts = plug.parts(t, _statuses(outputs, ups))
    e = plug.hit_entry(t, key_of(parts))
    if e is not None:
        return Verdict(False, "cached", cached_from=e["run"], output=e["output"])
    why = plug.reason(t, parts)
    reason, detail = _REASONS.get(why, (why, ""))
    return Verdict(True, reason, detail)


def cached_outputs(plug: CachePlug, wanted: set[str],
                   journal: Callable[[str], tuple[Any, str] | None]) -> dict[str, tuple[Any, str]]:
    """The output (and its run) of each of `wanted` (outside upstreams of a
    partial run) that the cache holds for the task's current key; the key's
    inputs are resolved the same way, up the graph: the cache first, else
    `journal` (the newest run where that upstream completed). Those the cache
    does not answer are left out."""
    spec = plug.spec
    if not plug.use:
        return {}
    need = set(wanted)
    stack = list(wanted)
    while stack:  # wanted and every upstream a cached one's key needs
        t = spec.tasks[stack.pop()]
        for u in _upstreams(t) if cacheable(t) else ():
            if u not in need:
                need.add(u)
                stack.append(u)
    resolved: dict[str, tuple[Any, str] | None] = {}
    hits: dict[str, tuple[Any, str]] = {}
    for tid in order({t: spec.tasks[t] for t in spec.tasks if t in need}):
        t = spec.tasks[tid]
        got = None
        if cacheable(t) and plug.use and tid not in plug.refresh:
            ups = _upstreams(t)
            if all(resolved.get(u) is not None for u in ups):
                outs = {u: resolved[u][0] for u in ups}  # type: ignore[index]
                e = plug.hit_entry(t, key_of(plug.parts(t, _statuses(outs, ups))))
                if e is not None:
                    got = hits[tid] = (e["output"], e["run"])
        resolved[tid] = got if got is not None else journal(tid)
    return {tid: hits[tid] for tid in wanted if tid in hits}
