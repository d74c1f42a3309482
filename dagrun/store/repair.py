"""Repair: from a run's journal records to the task states a resume starts from.

The journal holds every record ever appended for the run; the last valid
record of a task is its state. Repair rules (the issue's, in one place):

- completed            stays; its stored output is republished to dependents
- running / retrying /
  failed               -> pending: the process that ran it is gone. Only
                          attempts that really ended in failure count against
                          the retries (an attempt cut short by dagrun's death
                          does not): a `running` record counts the attempt in
                          flight, so one is taken off.
- no valid record      -> pending (corrupt or missing: the task re-runs)
- cancelled            -> pending (its record already left the cut-short
                          attempt uncounted)
- dead_lettered        stays, unless retried (`retry`): then pending with a
                          fresh retry budget
- skipped              -> pending when the upstream that caused it will run
                          again; the scheduler re-skips it otherwise
- `changed` tasks (resume --spec) and their descendants -> pending, afresh

Costs are linear in the number of records: one pass to fold them, one pass
over the tasks.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from dagrun.graph import dependents_map, descendants
from dagrun.model import TaskError, TaskState, TaskStatus
from dagrun.spec import PipelineSpec
from dagrun.store.records import FORMAT_VERSION

_STATES = {s.value: s for s in TaskState}
# Per kind of repair, name at most this many tasks one line each, then a tally:
# a crashed 100k-task run must not print 100k lines.
MAX_LINES_PER_KIND = 20


@dataclass
class Folded:
    """The journal reduced to what repair needs: last record per task, history."""

    last: dict[str, dict[str, Any]] = field(default_factory=dict)
    history: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    run_record: dict[str, Any] | None = None
    # Tasks dead-lettered after the last run record: the process that recorded
    # them may have died before writing their letters.
    unsettled_letters: set[str] = field(default_factory=set)
    malformed: int = 0  # checksummed records whose shape is wrong (other versions)


def fold(records: Iterable[dict[str, Any]], task_ids: Mapping[str, Any]) -> Folded:
    out = Folded()
    last = out.last
    history = out.history
    for rec in records:
        tid = rec.get("task")
        if tid is None:
            if rec.get("kind") == "run":
                out.run_record = rec
                out.unsettled_letters.clear()
            continue
        if tid not in task_ids:
            continue  # a task removed by `resume --spec`
        state = rec.get("state")
        attempts = rec.get("attempts")
        if (rec.get("v") != FORMAT_VERSION or state not in _STATES or not isinstance(attempts, int)
                or attempts < 0 or (state == "completed" and "output" not in rec)):
            out.malformed += 1
            continue
        last[tid] = rec
        if state == "dead_lettered":
            out.unsettled_letters.add(tid)
        else:
            out.unsettled_letters.discard(tid)
        attempt = rec.get("attempt")
        if isinstance(attempt, dict):
            history.setdefault(tid, []).append(attempt)
    return out


@dataclass
class Repaired:
    statuses: dict[str, TaskStatus]
    lines: list[str]  # one per repair (tallied beyond MAX_LINES_PER_KIND), for the reporter
    changed: bool  # anything will run
    previously: str | None  # the status in the run's last run record, if any
    unsettled_letters: set[str] = field(default_factory=set)


class _Lines:
    def __init__(self) -> None:
        self.kinds: dict[str, list[str]] = {}

    def add(self, kind: str, task: str) -> None:
        self.kinds.setdefault(kind, []).append(task)

    def render(self) -> list[str]:
        out = []
        for kind, tasks in self.kinds.items():
            for tid in tasks[:MAX_LINES_PER_KIND]:
                out.append(f"repaired {tid}: {kind}")
            if len(tasks) > MAX_LINES_PER_KIND:
                out.append(f"repaired {len(tasks) - MAX_LINES_PER_KIND} more tasks: {kind}")
        return out


def repair(spec: PipelineSpec, folded: Folded, *, retry: Iterable[str] = (),
           changed: Iterable[str] = ()) -> Repaired:
    """Task states to resume from (see the module docstring for the rules)."""
    tasks = spec.tasks
    retry = set(retry)
    rerun = set(changed)
    rerun |= descendants(tasks, rerun) if rerun else set()
    lines = _Lines()
    statuses: dict[str, TaskStatus] = {}
    for tid in tasks:
        rec = folded.last.get(tid)
        st = TaskStatus(history=folded.history.get(tid, []))
        statuses[tid] = st
        if tid in rerun:
            if rec is not None:
                why = "definition changed" if tid in changed else "an upstream changed"
                lines.add(f"{rec['state']} -> pending ({why} in the new spec; runs afresh)",
                          tid)
            continue
        if rec is None:
            continue  # never started, or its records are corrupt: runs (again)
        state = _STATES[rec["state"]]
        attempts = rec["attempts"]
        if state == TaskState.COMPLETED:
            st.state = TaskState.COMPLETED
            st.attempts = attempts
            st.output = rec["output"]
        elif state == TaskState.DEAD_LETTERED:
            if tid in retry:
                lines.add("dead_lettered -> pending (retried with a fresh retry budget)", tid)
            else:
                st.state = TaskState.DEAD_LETTERED
                st.attempts = attempts
                st.error = TaskError.from_dict(rec.get("error"))
        elif state == TaskState.SKIPPED:
            st.state = TaskState.SKIPPED
            st.attempts = attempts
            st.reason = rec.get("reason")
        elif state == TaskState.RUNNING:
            st.attempts = max(0, attempts - 1)
            lines.add("running -> pending (its process is gone; the attempt cut short "
                      "does not count)", tid)
        elif state in (TaskState.RETRYING, TaskState.FAILED):
            st.attempts = attempts
            st.error = TaskError.from_dict(rec.get("error"))
            retry_at = rec.get("retry_at")
            if isinstance(retry_at, (int, float)):
                st.retry_at = float(retry_at)  # the rest of its delay is waited out
            lines.add(f"{state.value} -> pending (retry due)", tid)
        elif state == TaskState.CANCELLED:
            st.attempts = attempts
            lines.add("cancelled -> pending", tid)
        else:  # pending
            st.attempts = attempts
    _unskip(spec, statuses, lines)
    will_run = any(st.state not in (TaskState.COMPLETED, TaskState.DEAD_LETTERED,
                                    TaskState.SKIPPED) for st in statuses.values())
    previously = folded.run_record.get("status") if folded.run_record else None
    return Repaired(statuses, lines.render(), will_run, previously,
                    folded.unsettled_letters - rerun - retry)


def _unskip(spec: PipelineSpec, statuses: dict[str, TaskStatus], lines: _Lines) -> None:
    """Skipped tasks go back to pending unless an upstream stays dead-lettered
    or skipped: one pass in topological order, so a chain is decided upstream
    first."""
    skipped = [tid for tid, st in statuses.items() if st.state == TaskState.SKIPPED]
    if not skipped:
        return
    dependents = dependents_map(spec.tasks)
    # Only the skipped tasks and what lies under them can change: order them
    # upstream-first by a DFS post-order over that sub-graph.
    order = _topological(spec, skipped, dependents)
    blocked = {TaskState.DEAD_LETTERED, TaskState.SKIPPED}
    for tid in order:
        st = statuses[tid]
        if st.state != TaskState.SKIPPED:
            continue
        if any(statuses[d].state in blocked for d in spec.tasks[tid].deps):
            continue
        cause = st.reason
        st.state = TaskState.PENDING
        st.reason = None
        lines.add(f"skipped -> pending (upstream {cause} will run again)", tid)


def _topological(spec: PipelineSpec, roots: list[str],
                 dependents: Mapping[str, list[str]]) -> list[str]:
    seen: set[str] = set()
    post: list[str] = []
    for root in roots:
        if root in seen:
            continue
        seen.add(root)
        stack = [(root, iter(dependents[root]))]
        while stack:
            node, it = stack[-1]
            for child in it:
                if child not in seen:
                    seen.add(child)
                    stack.append((child, iter(dependents[child])))
                    break
            else:
                stack.pop()
                post.append(node)
    post.reverse()  # reverse post-order of a DFS over dependents: upstream first
    return post
