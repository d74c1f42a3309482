"""Repair: from a run's journal records to the task states a resume starts from.

Which records are trusted (the fold):

- A record counts only if it names this run: its run id and the run's nonce
  (from run.json) are inside its checksummed body. A line copied from another
  run's journal, or from an earlier run that had the same id, is *foreign*:
  ignored, and counted in a warning.
- Records of one task form a chain: each carries `prev`, the short digest of
  the task's previous record as written (None for its first). A record is
  accepted only if its `prev` is the digest of the task's last accepted
  record. So a record whose predecessor is corrupt or missing is ignored, and
  so is everything chained after it: a task never finishes with a record
  that a lost record superseded. A replayed line never chains (its `prev`
  names an older record). The task resumes from its last accepted record,
  and the next records written chain to that one, so the task's chain is
  whole again from there on.
- The scheduler writes the chain itself and a crash only tears the journal's
  last line (cut off on the next open), so a SIGKILL never breaks a chain:
  a task whose `completed` record was written is never re-run by resume. A
  corrupt *earlier* line of a task breaks only the records that chain to it.
- A spec change (`resume --spec`) resets the tasks it re-runs by an *anchor*
  in run.json (written atomically with the new snapshot, so it cannot be
  lost or half-applied): a fresh digest that the task's chain restarts from.
  Every older record of the task is superseded: it cannot chain to the
  anchor.
- Records with the right checksum but a wrong shape (a field of the wrong
  type, a non-finite or absurd `retry_at`) are ignored and counted, and
  break their task's chain like a corrupt line.
- Attempt ordinals (DAGRUN_ATTEMPT) are the highest any record of this run
  shows for the task, chained or not, so an ordinal is never handed out
  twice, not even for an attempt cut short or a record later superseded.

Then the last accepted record of a task is its state. Repair rules:

- completed            stays; its stored output is republished to dependents
- running / retrying /
  failed               -> pending: the process that ran it is gone. Only
                          attempts that really ended in failure count against
                          the retries (an attempt cut short by dagrun's death
                          does not): a `running` record counts the attempt in
                          flight, so one is taken off.
- no trusted record    -> pending (corrupt or missing: the task re-runs)
- cancelled            -> pending (its record already left the cut-short
                          attempt uncounted); a retry delay it was waiting
                          out when cancelled is waited out still
- dead_lettered        stays, unless retried (`retry`): then pending with a
                          fresh retry budget
- skipped              -> pending when an upstream will run again, or when its
                          trigger rule, looked at again, would run it (the
                          scheduler decides it afresh); a skip by its own
                          condition stays unless an upstream runs again
- `changed` tasks (resume --spec) and their descendants -> pending, afresh

Costs are linear in the number of records: one pass to fold them, one pass
over the tasks.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from dagrun.graph import dependents_map, descendants
from dagrun.kinds import fanout
from dagrun.kinds import loop as loop_kind
from dagrun.kinds import sensor as sensor_kind
from dagrun.kinds.events import EVENT_NAME
from dagrun.kinds.triggers import CONDITION_FALSE, decide
from dagrun.model import TaskError, TaskState, TaskStatus
from dagrun.spec import PipelineSpec
from dagrun.store.records import RUN_FORMAT
from dagrun.transitions import apply, restore

_STATES = {s.value: s for s in TaskState}
# Per kind of repair, name at most this many tasks one line each, then a tally:
# a crashed 100k-task run must not print 100k lines.
MAX_LINES_PER_KIND = 20


# A retry_at further ahead than this is not one dagrun wrote (delays are
# bounded at validation): the record is malformed.
_MAX_AHEAD = 10 * 366 * 86400.0
_MAX_COUNT = 10**9


@dataclass
class Folded:
    """The journal reduced to what repair needs: last trusted record per task,
    history, and the chain heads the next writer continues from."""

    last: dict[str, dict[str, Any]] = field(default_factory=dict)
    history: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    heads: dict[str, str] = field(default_factory=dict)
    ordinals: dict[str, int] = field(default_factory=dict)  # highest attempt number seen
    run_record: dict[str, Any] | None = None
    # Tasks dead-lettered after the last run record: the process that recorded
    # them may have died before writing their letters.
    unsettled_letters: set[str] = field(default_factory=set)
    malformed: int = 0  # checksummed records whose shape is wrong (other versions)
    foreign: int = 0  # records of another run (or of an earlier run of the same id)
    broken: dict[str, int] = field(default_factory=dict)  # task -> line of its first break
    events: set[str] = field(default_factory=set)  # emitted in this run (kinds/events.py)
    elements: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # map tasks' rows


def fold(records: Sequence[dict[str, Any]], digests: Sequence[str], task_ids: Mapping[str, Any],
         *, run_id: str, nonce: str, anchors: Mapping[str, str] | None = None,
         lines: Sequence[int] | None = None) -> Folded:
    """Trusted records only (see the module docstring); `digests[i]` is the
    short digest of `records[i]`, `lines[i]` its line (for warnings)."""
    out = Folded()
    last, history, heads = out.last, out.history, out.heads
    waiting = set()  # anchored tasks nothing has chained to yet: old records are superseded
    for anchored, anchor in (anchors or {}).items():
        if anchored in task_ids:
            heads[anchored] = anchor
            waiting.add(anchored)
    limit = time.time() + _MAX_AHEAD
    for i, rec in enumerate(records):
        if rec.get("run") != run_id or rec.get("nonce") != nonce:
            out.foreign += 1
            continue
        tid = rec.get("task")
        if tid is None:
            if rec.get("kind") == "run" and isinstance(rec.get("status"), str):
                out.run_record = rec
                out.unsettled_letters.clear()
            elif rec.get("kind") == "event":
                name = rec.get("name")
                if isinstance(name, str) and EVENT_NAME.fullmatch(name):
                    out.events.add(name)
                else:
                    out.malformed += 1
            continue
        if not isinstance(tid, str) or tid not in task_ids:
            continue  # a task removed by `resume --spec`
        element_rows = "el" in rec  # a map task's element record (kinds/fanout.py)
        if not (fanout.valid_record(rec) if element_rows else _well_formed(rec, limit)):
            out.malformed += 1
            continue
        ordinal = max(_int(rec.get("number")), _int((rec.get("attempt") or {}).get("attempt")))
        if ordinal > out.ordinals.get(tid, 0):
            out.ordinals[tid] = ordinal
        if rec.get("prev") != heads.get(tid):
            if tid not in waiting and tid not in out.broken:
                out.broken[tid] = lines[i] if lines is not None else i + 1
            continue
        waiting.discard(tid)
        heads[tid] = digests[i]
        if element_rows:
            out.elements.setdefault(tid, []).append(rec)
            continue
        last[tid] = rec
        if rec["state"] == "dead_lettered":
            out.unsettled_letters.add(tid)
        else:
            out.unsettled_letters.discard(tid)
        attempt = rec.get("attempt")
        if attempt is not None:
            history.setdefault(tid, []).append(attempt)
    return out


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _count(value: Any, low: int = 0) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= _MAX_COUNT


def _number(value: Any) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


def _optional(value: Any, kind: type) -> bool:
    return value is None or isinstance(value, kind)


def _error(value: Any) -> bool:
    """None or an error as TaskError.to_dict writes it."""
    if value is None:
        return True
    if not isinstance(value, dict) or not isinstance(value.get("type"), str):
        return False
    types = value.get("types", [])
    return (isinstance(value.get("message", ""), str)
            and isinstance(value.get("traceback", ""), str)
            and (value.get("exit_code") is None or _count(value["exit_code"], -(2**31)))
            and (value.get("signal") is None or _count(value["signal"]))
            and isinstance(types, list) and all(isinstance(t, str) for t in types))


def _well_formed(rec: dict[str, Any], limit: float) -> bool:
    """The shape dagrun writes (scheduler._record): anything else, even with a
    valid checksum, is not trusted."""
    state = rec.get("state")
    if (rec.get("v") != RUN_FORMAT or not isinstance(state, str) or state not in _STATES
            or not _count(rec.get("attempts")) or not _optional(rec.get("prev"), str)
            or (state == "completed" and "output" not in rec)
            or not _error(rec.get("error")) or not _optional(rec.get("reason"), str)
            or not _optional(rec.get("benign"), bool)):
        return False
    if "number" in rec and not _count(rec["number"], 1):
        return False
    if "cached_from" in rec and not (state == "completed"
                                     and isinstance(rec["cached_from"], str)):
        return False
    if "saved_state" in rec and not (state == "completed" and isinstance(rec["saved_state"], dict)):
        return False
    if not (sensor_kind.well_formed(rec, _count, _number) and loop_kind.well_formed(rec, _count)):
        return False
    retry_at = rec.get("retry_at")
    if retry_at is not None and not (_number(retry_at) and 0 <= retry_at <= limit):
        return False
    attempt = rec.get("attempt")
    if attempt is not None:
        if not isinstance(attempt, dict) or not _count(attempt.get("attempt"), 1):
            return False
        if not (_number(attempt.get("started", 0)) and _number(attempt.get("ended", 0))
                and _error(attempt.get("error"))):
            return False
    return True


@dataclass
class Repaired:
    statuses: dict[str, TaskStatus]
    lines: list[str]  # one per repair (tallied beyond MAX_LINES_PER_KIND), for the reporter
    changed: bool  # anything will run
    previously: str | None  # the status in the run's last run record, if any
    unsettled_letters: set[str] = field(default_factory=set)
    heads: dict[str, str] = field(default_factory=dict)  # where each task's chain goes on
    events: set[str] = field(default_factory=set)  # emitted in the run so far


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
           changed: Iterable[str] = (),
           retry_elements: Mapping[str, set[int]] | None = None) -> Repaired:
    """Task states to resume from (see the module docstring for the rules)."""
    tasks = spec.tasks
    retry = set(retry)
    rerun = set(changed)
    rerun |= descendants(tasks, rerun) if rerun else set()
    lines = _Lines()
    statuses: dict[str, TaskStatus] = {}
    for tid in tasks:
        rec = folded.last.get(tid)
        st = TaskStatus(history=folded.history.get(tid, []),
                        ordinal=folded.ordinals.get(tid, 0))
        statuses[tid] = st
        if tid in rerun:
            if rec is not None:
                restore(tid, st, _STATES[rec["state"]], TaskState.PENDING)
                why = "definition changed" if tid in changed else "an upstream changed"
                lines.add(f"{rec['state']} -> pending ({why} in the new spec; runs afresh)",
                          tid)
            continue
        if rec is None:
            continue  # never started, or its records are corrupt: runs (again)
        state = _STATES[rec["state"]]
        attempts = rec["attempts"]
        sensor_kind.restore(st, rec)  # polls and the sensor's window; loop iterations
        loop_kind.restore(st, rec)
        if tid in folded.elements:  # finished elements of a map stay finished
            st.elements = fanout.restore(folded.elements[tid], retry=tid in retry,
                                         only=(retry_elements or {}).get(tid))
        # Every task starts pending; restore() checks the repair against the table.
        if state == TaskState.COMPLETED:
            restore(tid, st, state, TaskState.COMPLETED)
            st.attempts = attempts
            st.output = rec["output"]
            st.cached_from = rec.get("cached_from")
        elif state == TaskState.DEAD_LETTERED:
            if tid in retry:
                restore(tid, st, state, TaskState.PENDING)
                lines.add("dead_lettered -> pending (retried with a fresh retry budget)", tid)
            else:
                restore(tid, st, state, TaskState.DEAD_LETTERED)
                st.attempts = attempts
                st.error = TaskError.from_dict(rec.get("error"))
        elif state == TaskState.SKIPPED:
            restore(tid, st, state, TaskState.SKIPPED)
            st.attempts = attempts
            st.reason = rec.get("reason")
            st.benign = rec.get("benign") is True
        elif state == TaskState.RUNNING:
            restore(tid, st, state, TaskState.PENDING)
            st.attempts = max(0, attempts - 1)
            lines.add("running -> pending (its process is gone; the attempt cut short "
                      "does not count)", tid)
        elif state in (TaskState.RETRYING, TaskState.FAILED, TaskState.CANCELLED):
            restore(tid, st, state, TaskState.PENDING)
            st.attempts = attempts
            st.error = TaskError.from_dict(rec.get("error"))
            retry_at = rec.get("retry_at")
            if retry_at is not None:
                st.retry_at = float(retry_at)  # the rest of its delay is waited out
            lines.add("cancelled -> pending" if state == TaskState.CANCELLED
                      else f"{state.value} -> pending (retry due)", tid)
        else:  # pending
            st.attempts = attempts
    _unskip(spec, statuses, lines)
    will_run = any(st.state not in (TaskState.COMPLETED, TaskState.DEAD_LETTERED,
                                    TaskState.SKIPPED) for st in statuses.values())
    previously = folded.run_record.get("status") if folded.run_record else None
    return Repaired(statuses, lines.render(), will_run, previously,
                    folded.unsettled_letters - rerun - retry, folded.heads)


def broken_chain_lines(path: Any, broken: Mapping[str, int]) -> list[str]:
    """One warning per task whose chain broke (tallied past MAX_LINES_PER_KIND)."""
    out = [f"warning: {path} line {line}: task {tid}'s record does not follow its previous "
           "record (corrupt, missing or from elsewhere); ignored with the rest of its chain, "
           "the task resumes from its last record before it"
           for tid, line in list(broken.items())[:MAX_LINES_PER_KIND]]
    if len(broken) > MAX_LINES_PER_KIND:
        out.append(f"warning: {path}: {len(broken) - MAX_LINES_PER_KIND} more tasks' records "
                   "do not follow their previous records; ignored likewise")
    return out


def _unskip(spec: PipelineSpec, statuses: dict[str, TaskStatus], lines: _Lines) -> None:
    """Skipped tasks go back to pending when an upstream is no longer final
    (it will run again) or their trigger rule would now run them; one pass in
    topological order, so a chain is decided upstream first."""
    skipped = [tid for tid, st in statuses.items() if st.state == TaskState.SKIPPED]
    if not skipped:
        return
    dependents = dependents_map(spec.tasks)
    # Only the skipped tasks and what lies under them can change: order them
    # upstream-first by a DFS post-order over that sub-graph.
    order = _topological(spec, skipped, dependents)
    final = {TaskState.COMPLETED, TaskState.DEAD_LETTERED, TaskState.SKIPPED}
    for tid in order:
        st = statuses[tid]
        if st.state != TaskState.SKIPPED:
            continue
        t = spec.tasks[tid]
        again = [d for d in t.deps if statuses[d].state not in final]
        if not again:
            runs, _, _ = decide(t.trigger, t.deps, statuses)
            if not runs or (st.benign and st.reason == CONDITION_FALSE):
                continue  # the same verdict as before
        cause = st.reason if not st.benign and st.reason else (again or [tid])[0]
        apply(tid, st, TaskState.PENDING)
        st.reason = None
        st.benign = False
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
