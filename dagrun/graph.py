"""The task graph: structural checks (with networkx) and the drawings.

Checks: dependencies on tasks that do not exist, self-dependencies, inputs
that are not declared dependencies, and cycles, named in order.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping

from dagrun.errors import SpecError
from dagrun.spec import PipelineSpec, TaskSpec


def check_graph(spec: PipelineSpec) -> None:
    """Raise SpecError naming the first structural problem of the graph."""
    where = spec.source or "<pipeline>"
    tasks = spec.tasks
    for t in tasks.values():
        for d in t.deps:
            if d == t.id:
                raise SpecError(f"{where}: task {t.id!r} depends on itself")
            if d not in tasks:
                close = difflib.get_close_matches(d, list(tasks), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise SpecError(f"{where}: task {t.id!r}: dependency {d!r} is not a task{hint}")
        for param, ups in t.inputs.items():
            for up in [ups] if isinstance(ups, str) else ups:
                if up in t.deps:
                    continue
                raise SpecError(f"{where}: task {t.id!r}: input {param!r} takes the output of "
                                f"{up!r}, which is not in its 'deps'; add it to deps")
    cycle = find_cycle(tasks)
    if cycle:
        raise SpecError(f"{where}: cycle: {' -> '.join(cycle + [cycle[0]])}")


def find_cycle(tasks: Mapping[str, TaskSpec]) -> list[str]:
    """The tasks of one cycle in dependency order (a -> b means b depends on a), or []."""
    # Kahn's algorithm first: linear, and for the usual acyclic graph the only
    # work done (networkx's find_cycle took ~2 s on a 2,000-task layered DAG, 6 s
    # on 10,000; importing networkx costs ~0.3 s). What it cannot peel off holds
    # every cycle; networkx names one there.
    waiting = {tid: len(t.deps) for tid, t in tasks.items()}
    dependents = dependents_map(tasks)
    stack = [tid for tid, n in waiting.items() if n == 0]
    while stack:
        for child in dependents[stack.pop()]:
            waiting[child] -= 1
            if waiting[child] == 0:
                stack.append(child)
    stuck = [tid for tid, n in waiting.items() if n > 0]
    if not stuck:
        return []
    import networkx as nx

    g = nx.DiGraph()
    g.add_nodes_from(stuck)
    g.add_edges_from((d, tid) for tid in stuck for d in tasks[tid].deps if d in waiting
                     and waiting[d] > 0)
    try:
        edges = nx.find_cycle(g)
    except nx.NetworkXNoCycle:
        return []
    return [u for u, _ in edges]


def dependents_map(tasks: Mapping[str, TaskSpec]) -> dict[str, list[str]]:
    """task id -> the ids of the tasks that depend on it directly."""
    out: dict[str, list[str]] = {tid: [] for tid in tasks}
    for t in tasks.values():
        for d in t.deps:
            out[d].append(t.id)
    return out


def descendants(tasks: Mapping[str, TaskSpec], roots: Iterable[str],
                dependents: Mapping[str, list[str]] | None = None) -> set[str]:
    """Every transitive dependent of `roots` (not the roots themselves)."""
    dependents = dependents if dependents is not None else dependents_map(tasks)
    seen: set[str] = set()
    stack = list(roots)
    while stack:
        for child in dependents[stack.pop()]:
            if child not in seen:
                seen.add(child)
                stack.append(child)
    return seen


# ---------------------------------------------------------------- drawings


def render(spec: PipelineSpec, fmt: str) -> str:
    if fmt == "dot":
        return _dot(spec)
    if fmt == "mermaid":
        return _mermaid(spec)
    return _tree(spec)


# Deeper than this, a branch is cut and continued as its own section below:
# the indent of a 3,000-task chain would otherwise make the drawing quadratic
# in size (18 MB), and the tree stays readable at the width of a terminal.
TREE_MAX_DEPTH = 40


def _tree(spec: PipelineSpec) -> str:
    """Roots first; each task under its first dependency; repeats marked (see above).

    Iterative (an explicit stack), so no graph is too deep to draw; a branch
    deeper than TREE_MAX_DEPTH goes on in a section headed "X  (continued)".
    """
    tasks = spec.tasks
    dependents = dependents_map(tasks)
    lines = [spec.name]
    shown: set[str] = set()
    sections: list[tuple[str | None, list[str]]] = [
        (None, [tid for tid, t in tasks.items() if not t.deps])]
    for header, top in sections:  # grows while drawn: the continued branches
        if header is not None:
            lines += ["", f"{header}  (continued)"]
        # (task, prefix, last among its siblings, depth); children are pushed in
        # reverse so they pop in order: the same pre-order a recursive walk gives.
        stack = [(tid, "", i == len(top) - 1, 1) for i, tid in enumerate(top)][::-1]
        while stack:
            tid, prefix, last, depth = stack.pop()
            branch = "└── " if last else "├── "
            if tid in shown:
                lines.append(f"{prefix}{branch}{tid}  (see above)")
                continue
            shown.add(tid)
            t = tasks[tid]
            extra = []
            if len(t.deps) > 1:
                extra.append("after " + ", ".join(t.deps))
            if t.priority:
                extra.append(f"priority {t.priority}")
            extra += _kind_notes(t)
            children = [c for c in dependents[tid] if tasks[c].deps[0] == tid]
            if children and depth >= TREE_MAX_DEPTH:
                extra.append("continued below")
                sections.append((tid, children))
                children = []
            note = f"  ({'; '.join(extra)})" if extra else ""
            lines.append(f"{prefix}{branch}{tid}{note}")
            inner = prefix + ("    " if last else "│   ")
            stack += [(c, inner, i == len(children) - 1, depth + 1)
                      for i, c in enumerate(children)][::-1]
    return "\n".join(lines)


def _dot(spec: PipelineSpec) -> str:
    lines = [f'digraph "{spec.name}" {{', "  rankdir=LR;"]
    lines += [f'  "{tid}"{_dot_label(t)};' for tid, t in spec.tasks.items()]
    lines += [f'  "{d}" -> "{t.id}";' for t in spec.tasks.values() for d in t.deps]
    lines.append("}")
    return "\n".join(lines)


def _mermaid(spec: PipelineSpec) -> str:
    ids = {tid: f"t{i}" for i, tid in enumerate(spec.tasks)}
    lines = ["graph LR"]
    lines += [f'  {ids[tid]}["{_label(t)}"]' for tid, t in spec.tasks.items()]
    lines += [f"  {ids[d]} --> {ids[t.id]}" for t in spec.tasks.values() for d in t.deps]
    return "\n".join(lines)


def _kind_notes(t: TaskSpec) -> list[str]:
    """What a task kind adds to its drawing: non-default trigger rules, conditions."""
    notes = []
    if t.trigger != "all_success":
        notes.append(f"trigger {t.trigger}")
    if t.when is not None:
        notes.append(f"when {t.when}")
    return notes


def _label(t: TaskSpec) -> str:
    notes = _kind_notes(t)
    return f"{t.id} ({'; '.join(notes)})" if notes else t.id


def _dot_label(t: TaskSpec) -> str:
    return f' [label="{_label(t)}"]' if t.trigger != "all_success" or t.when else ""
