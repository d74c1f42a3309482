"""Partial runs (`run --only/--from/--until`): which tasks a run runs, and
where the outputs of their upstreams outside it come from.

The selection is `--only`'s tasks plus a range: `--from F` gives F and
everything downstream of it, `--until U` gives U and everything it needs;
both together give what lies between (the intersection). Each selected task
whose upstream is outside the selection takes that upstream's output from
elsewhere (`taken_outputs`: the newest earlier run of the pipeline in which
it completed); an upstream with no such output joins the selection, with a
note, and so on up the graph.

The run is then an ordinary run of a smaller spec (`Selected.spec`): the
selected tasks only, each taken output written into its consumer's kwargs in
place of the input, and the edges to outside tasks dropped. The scheduler,
the display, the journal, `status` and `resume` need nothing else: a resume
runs the same selection from the run's own snapshot, without the other runs.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from dagrun.errors import DagrunError, UsageError
from dagrun.graph import dependents_map, descendants
from dagrun.spec import PipelineSpec
from dagrun.spec.model import TaskSpec


@dataclass(frozen=True)
class Taken:
    """An upstream's output taken from outside the run, and where it came from."""

    output: Any
    run_id: str
    cached: bool = False  # from the cache (an entry `run_id` stored)


@dataclass(frozen=True)
class Selection:
    """What the user asked for: task ids per flag (empty: the whole pipeline)."""

    only: tuple[str, ...] = ()
    from_: tuple[str, ...] = ()
    until: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.only or self.from_ or self.until)

    def describe(self) -> str:
        """As the command line said it: `--only b --from c`."""
        return " ".join(f"--{flag} {tid}" for flag, ids in
                        (("only", self.only), ("from", self.from_), ("until", self.until))
                        for tid in ids)


@dataclass
class Selected:
    spec: PipelineSpec  # the selected tasks only, taken outputs in their kwargs
    taken: dict[str, Taken]  # outside upstream -> its output and source run
    forced: frozenset[str]  # --from's tasks: re-run even when a cache could answer
    notes: list[str] = field(default_factory=list)
    # task -> {param: upstream(s)} of the kwargs that hold taken outputs: a cache
    # key counts them as inputs, as a full run does (cache/plug.py).
    given: dict[str, dict[str, Any]] = field(default_factory=dict)

    def record(self, selection: Selection) -> dict[str, Any]:
        """What run.json keeps (settings["selection"]): the request, the tasks it
        became and the outputs taken, so `status` shows it and `resume --spec`
        can select again without the other runs."""
        return {"only": list(selection.only), "from": list(selection.from_),
                "until": list(selection.until), "tasks": list(self.spec.tasks),
                "forced": sorted(self.forced), "given": self.given,
                "taken": {tid: {"run_id": t.run_id, "output": t.output,
                                **({"cached": True} if t.cached else {})}
                          for tid, t in self.taken.items()}}


    def check_refresh(self, selection: Selection, refresh: Iterable[str]) -> None:
        """UsageError for a --refresh of a task outside the run: it would not
        run, so the flag would be silently ignored."""
        for tid in refresh:
            if tid not in self.spec.tasks:
                raise UsageError(f"--refresh {tid}: {tid!r} is not part of this partial run "
                                 f"({selection.describe()}); add --only {tid}, or use "
                                 f"--from {tid} to re-run it and what follows")


Finder = Callable[[set[str]], Mapping[str, Taken]]


def select(spec: PipelineSpec, selection: Selection, find: Finder) -> Selected:
    """The run `selection` asks for, its outside upstreams' outputs found by
    `find` (ids -> those it found). UsageError for an unknown task id or a
    selection with no task in it."""
    check(spec, selection)
    tasks = spec.tasks
    dependents = dependents_map(tasks)
    ranged: set[str] | None = None
    if selection.from_:
        ranged = set(selection.from_) | descendants(tasks, selection.from_, dependents)
    if selection.until:
        needs = set(selection.until) | ancestors(tasks, selection.until)
        ranged = needs if ranged is None else ranged & needs
    chosen = set(selection.only) | (ranged or set())
    if not chosen:
        raise UsageError(f"{selection.describe()} selects no task: nothing lies downstream "
                         "of --from and upstream of --until at once")
    forced = frozenset(ranged or ()) if selection.from_ else frozenset()
    taken: dict[str, Taken] = {}
    notes: list[str] = []
    while True:
        outside, mixed = _outside_upstreams(tasks, chosen)
        found = find(outside - taken.keys()) if outside - taken.keys() else {}
        taken.update((tid, t) for tid, t in found.items() if tid in outside)
        missing = sorted((outside - taken.keys()) | mixed)
        if not missing:
            break
        for tid in missing:
            why = ("has no completed run" if tid not in mixed else
                   "feeds a list input together with a selected task")
            notes.append(f"upstream {tid} {why}: running it too")
        chosen.update(missing)
    taken = {tid: t for tid, t in taken.items() if tid not in chosen}
    reduced = {tid: _cut(t, chosen, taken) for tid, t in tasks.items() if tid in chosen}
    return Selected(dataclasses.replace(spec, tasks=reduced), taken, forced, notes,
                    given_inputs(tasks, chosen))


def reselect(spec: PipelineSpec, record: Mapping[str, Any]) -> PipelineSpec:
    """`resume --spec` of a partial run: the edited spec cut to the run's
    tasks, with the outputs the run took. UsageError if an edit gave a task
    of the run an outside upstream the run has no output of."""
    chosen = {tid for tid in record.get("tasks", ()) if tid in spec.tasks}
    taken = {tid: Taken(v.get("output"), str(v.get("run_id")))
             for tid, v in (record.get("taken") or {}).items() if isinstance(v, dict)}
    outside, mixed = _outside_upstreams(spec.tasks, chosen)
    lacking = sorted((outside - taken.keys()) | mixed)
    if lacking:
        raise UsageError(f"the edited spec gives this partial run's tasks an upstream it has "
                         f"no output of: {', '.join(lacking)}; start a new run instead")
    reduced = {tid: _cut(t, chosen, taken) for tid, t in spec.tasks.items() if tid in chosen}
    return dataclasses.replace(spec, tasks=reduced)


def given_inputs(tasks: Mapping[str, TaskSpec], chosen: set[str]) -> dict[str, dict[str, Any]]:
    """task -> {param: upstream(s)} of the inputs `_cut` turns into kwargs."""
    out: dict[str, dict[str, Any]] = {}
    for tid in chosen:
        for param, ups in tasks[tid].inputs.items():
            if not any(u in chosen for u in ([ups] if isinstance(ups, str) else ups)):
                out.setdefault(tid, {})[param] = ups
    return out


def ancestors(tasks: Mapping[str, TaskSpec], roots: Iterable[str]) -> set[str]:
    """Every transitive upstream of `roots` (not the roots themselves)."""
    seen: set[str] = set()
    stack = list(roots)
    while stack:
        for up in tasks[stack.pop()].deps:
            if up not in seen:
                seen.add(up)
                stack.append(up)
    return seen


def check(spec: PipelineSpec, selection: Selection) -> None:
    """UsageError naming the first task id of `selection` that `spec` lacks."""
    for flag, ids in (("only", selection.only), ("from", selection.from_),
                      ("until", selection.until)):
        for tid in ids:
            if tid not in spec.tasks:
                close = difflib.get_close_matches(tid, list(spec.tasks), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise UsageError(f"--{flag} {tid}: pipeline {spec.name!r} has no task "
                                 f"{tid!r}{hint}")


def _outside_upstreams(tasks: Mapping[str, TaskSpec],
                       chosen: set[str]) -> tuple[set[str], set[str]]:
    """The outside upstreams of the chosen tasks; and those feeding a list input
    together with a chosen task (such an input is not cut in two: they run)."""
    outside: set[str] = set()
    mixed: set[str] = set()
    for tid in chosen:
        t = tasks[tid]
        outside.update(d for d in t.deps if d not in chosen)
        for ups in t.inputs.values():
            if not isinstance(ups, str) and any(u in chosen for u in ups):
                mixed.update(u for u in ups if u not in chosen)
    return outside - mixed, mixed


def _cut(t: TaskSpec, chosen: set[str], taken: Mapping[str, Taken]) -> TaskSpec:
    """`t` with its outside upstreams' outputs as kwargs and no edge to them."""
    if all(d in chosen for d in t.deps):
        return t
    given: dict[str, Any] = {}
    inputs: dict[str, Any] = {}
    for param, ups in t.inputs.items():
        if isinstance(ups, str):
            if ups in chosen:
                inputs[param] = ups
            else:
                given[param] = taken[ups].output
        elif all(u in chosen for u in ups):
            inputs[param] = ups
        else:  # none of them chosen (_outside_upstreams runs the mixed ones)
            given[param] = [taken[u].output for u in ups]
    template = None
    if t.template is not None:  # a task reading a secret: re-bound on resume (params.py)
        template = {**t.template, **{k: _escaped(v) for k, v in given.items()}}
    return dataclasses.replace(t, deps=tuple(d for d in t.deps if d in chosen), inputs=inputs,
                               kwargs={**t.kwargs, **given}, template=template)


def _escaped(value: Any) -> Any:
    """An output as a template holds it: `${` kept literally, never substituted."""
    if isinstance(value, str):
        return value.replace("${", "$${")
    if isinstance(value, dict):
        return {k: _escaped(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_escaped(v) for v in value]
    return value


# ---------------------------------------------------------------- where outputs come from


def taken_outputs(state: Any, spec: PipelineSpec, wanted: set[str],
                  cache: Any = None) -> dict[str, Taken]:
    """The output of each of `wanted` (task ids of `spec`, params bound) from
    outside the run: the cache's entry for the task's current key, when
    `cache` (a CachePlug on `spec`) has one (cache/plan.py); else the newest
    earlier run of the pipeline (by name, as `dagrun runs` lists them) in
    which that task completed. Those found nowhere are left out.
    """
    journal = Journal(state, spec.name)
    found: dict[str, Taken] = {}
    if cache is not None:
        from dagrun.cache.plan import cached_outputs

        def source(tid: str) -> tuple[Any, str] | None:
            t = journal.get(tid)
            return None if t is None else (t.output, t.run_id)

        for tid, (output, rid) in cached_outputs(cache, wanted, source).items():
            found[tid] = Taken(output, rid, cached=True)
    for tid in sorted(wanted - found.keys()):
        taken = journal.get(tid)
        if taken is not None:
            found[tid] = taken
    return found


class Journal:
    """Task outputs from the pipeline's runs, newest run first; each run is
    read once, and only as far back as a task asked for needs."""

    def __init__(self, state: Any, pipeline: str) -> None:
        from dagrun.history import _metas

        self.state = state
        self.runs = [rid for _created, rid, name in _metas(state)[0] if name == pipeline]
        self.read: list[Any] = []  # views of runs[:len(read)]

    def get(self, tid: str) -> Taken | None:
        from dagrun.history import read_run

        i = 0
        while True:
            if i == len(self.read):
                if i == len(self.runs):
                    return None
                try:
                    view = read_run(self.state, self.runs[i])
                except DagrunError:
                    view = None  # an unreadable run is no source; `dagrun runs` names it
                self.read.append(view)
            view = self.read[i]
            task = view.tasks.get(tid) if view is not None else None
            if task is not None and task.state == "completed":
                return Taken(task.output, self.runs[i])
            i += 1
