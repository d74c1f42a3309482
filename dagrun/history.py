"""Run history: what runs exist, what state each is in, and deleting finished ones.

Everything here reads without locking (gc excepted, when it deletes): `status`
polled in a loop must never make a concurrent `resume` fail its lock.

Whether a run is live is told by its *live marker*, `runs/RUN_ID/live`,
which the process driving the run writes right after taking the run's lock
and removes before releasing it: the driver's pid, the process's start time
(field 22 of /proc/PID/stat) and the boot id. The run is live when a process
with that pid and that start time exists in this boot: a SIGKILLed driver
leaves its marker behind, but its pid is then gone, or reused by a process
that started later. Then the journal decides: a run whose last record is the
run's final record has that status (succeeded, failed, cancelled); one with
records after it, or none at all, was stopped half-way: `crashed`.
"""

from __future__ import annotations

import os
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeGuard

from dagrun.errors import DagrunError, RunLocked, UnknownRun, UsageError
from dagrun.model import TaskResult, TaskState, to_ms

# The live marker is written by every run: its own small module (store/live.py),
# so that a run does not import all of this.
from dagrun.store.live import LIVE, clear_live, is_live, mark_live  # noqa: F401

RUNNING, CRASHED = "running", "crashed"
FINISHED = ("succeeded", "failed")  # what gc may delete
RESUMABLE = (CRASHED, "cancelled")  # what `resume --last` picks
_GC_TMP = ".gc-"


# ---------------------------------------------------------------- one run


@dataclass
class RunView:
    """One run as `runs` and `status` show it; `tasks` like run --json's."""

    run_id: str
    pipeline: str
    status: str
    started_at: float
    ended_at: float | None
    counts: dict[str, int]
    tasks: dict[str, TaskResult] = field(default_factory=dict)
    path: Path | None = None
    selection: dict[str, Any] | None = None  # a partial run's (_selection)

    @property
    def duration_s(self) -> float | None:
        if self.ended_at is None:
            return None
        return to_ms(max(0.0, self.ended_at - self.started_at))

    def summary(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "pipeline": self.pipeline, "status": self.status,
                "started_at": self.started_at, "ended_at": self.ended_at,
                "duration_s": self.duration_s, "counts": self.counts,
                "partial": self.selection is not None}

    def to_dict(self) -> dict[str, Any]:
        """The shape of run --json, plus the run's own fields."""
        return {"run_id": self.run_id, "status": self.status, "pipeline": self.pipeline,
                "started_at": self.started_at, "ended_at": self.ended_at,
                "duration_s": self.duration_s, "counts": self.counts,
                "selection": self.selection,
                "tasks": {tid: t.to_dict() for tid, t in self.tasks.items()}}


def read_run(state: Any, run_id: str) -> RunView:
    """The run's status and its tasks' states, read-only; UnknownRun (exit 2)
    if there is no such run. One read of the journal and one pass over it."""
    from dagrun.model import FINAL_STATES, TaskError, TaskStatus
    from dagrun.results import error_text
    from dagrun.store.journal import read_journal

    info = state.open_run(run_id)
    task_ids = info.spec.tasks
    # Looked at before and after the journal is read: a driver finishing
    # meanwhile (final record, then marker gone) or starting meanwhile (marker,
    # then records) is live at one of the two instants, never read as crashed.
    live = is_live(info.path)
    contents = read_journal(info.journal_path)
    live = live or is_live(info.path)
    last, starts, ends, ending, last_is_final = _fold(contents.records, contents.digests,
                                                      info, task_ids)
    del contents
    if live:
        status = RUNNING
    elif last_is_final and isinstance(ending.get("status"), str):
        status = ending["status"]
    else:
        status = CRASHED
    tasks: dict[str, TaskResult] = {}
    pending = TaskState.PENDING.value
    for tid in task_ids:
        rec = last.get(tid)
        name = rec["state"] if rec else pending
        state_ = TaskState(name)
        started = ended = None
        if tid in starts:
            started = to_ms(starts[tid])
            end = ends.get(tid)
            if name == "cancelled" and rec:  # cut short: no attempt entry, its record ends it
                end = max(end or 0.0, rec["at"]) if _num(rec.get("at")) else end
            if state_ in FINAL_STATES and end is not None:
                ended = to_ms(max(end, started))
        if name == "completed" and rec:
            cached = rec.get("cached_from")  # a cache hit (dagrun/cache/)
            tasks[tid] = TaskResult(name, rec["attempts"], rec.get("output"), None,
                                    started_at=started, ended_at=ended,
                                    extra={"cached": True, "cached_from": cached}
                                    if isinstance(cached, str) else None)
            continue
        st = TaskStatus(state=state_,
                        error=TaskError.from_dict(rec.get("error")) if rec else None,
                        reason=rec.get("reason") if rec else None,
                        benign=bool(rec.get("benign")) if rec else False)
        tasks[tid] = TaskResult(name, rec["attempts"] if rec else 0, None, error_text(st),
                                reason=st.reason if name == "skipped" else None,
                                started_at=started, ended_at=ended)
    ended_at = ending.get("at") if status not in (RUNNING, CRASHED) else None
    counts = dict(Counter(t.state for t in tasks.values()))
    settings = info.meta.get("settings")
    selection = _selection(settings.get("selection")) if isinstance(settings, dict) else None
    return RunView(run_id, info.meta.get("pipeline", info.spec.name), status,
                   float(info.meta.get("created", 0.0)), ended_at, counts, tasks, info.path,
                   selection)


def _selection(record: Any) -> dict[str, Any] | None:
    """A partial run's selection (selection.Selected.record) as `status --json`
    shows it: what was asked, its tasks, where outside outputs came from."""
    if not isinstance(record, dict):
        return None
    taken = record.get("taken")
    return {"only": record.get("only", []), "from": record.get("from", []),
            "until": record.get("until", []), "tasks": record.get("tasks", []),
            "taken_from": {tid: v.get("run_id") for tid, v in taken.items()
                           if isinstance(v, dict)} if isinstance(taken, dict) else {}}


def _num(value: Any) -> TypeGuard[float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0


_STATES = frozenset(s.value for s in TaskState)


def _fold(records: list[dict[str, Any]], digests: list[str], info: Any,
          task_ids: Any) -> tuple[dict[str, dict[str, Any]], dict[str, float],
                                  dict[str, float], dict[str, Any], bool]:
    """The trust rules of repair.fold (this run's records only, each task's
    chain from its anchor), for reading: last record per task, first start and
    last end per task, the last run record and whether it ends the journal.
    Leaner than fold (no attempt-ordinal or letter bookkeeping): status of a
    100k-task run costs about one more pass over the records."""
    run_id, nonce = info.run_id, info.meta["nonce"]
    anchors = info.meta.get("anchors")
    heads: dict[str, Any] = dict(anchors) if isinstance(anchors, dict) else {}
    last: dict[str, dict[str, Any]] = {}
    starts: dict[str, float] = {}
    ends: dict[str, float] = {}
    dispatched: dict[str, float] = {}
    ending: dict[str, Any] = {}
    last_is_final = False
    for rec, digest in zip(records, digests, strict=True):
        if rec.get("run") != run_id or rec.get("nonce") != nonce:
            continue
        tid = rec.get("task")
        if tid is None:
            last_is_final = rec.get("kind") == "run"
            if last_is_final:
                ending = rec
            continue
        last_is_final = False
        if "el" in rec:  # a map's element rows (kinds/fanout.py) move its chain on
            if rec.get("prev") == heads.get(tid):
                heads[tid] = digest
            continue
        state = rec.get("state")
        attempts = rec.get("attempts")
        if (tid not in task_ids or rec.get("prev") != heads.get(tid) or state not in _STATES
                or not isinstance(attempts, int) or (state == "completed" and "output" not in rec)):
            continue
        heads[tid] = digest
        last[tid] = rec
        at = rec.get("at")
        if state == "running" and _num(at) and tid not in dispatched:
            dispatched[tid] = at
        attempt = rec.get("attempt")
        if isinstance(attempt, dict):
            began, done = attempt.get("started"), attempt.get("ended")
            if _num(began) and (tid not in starts or began < starts[tid]):
                starts[tid] = began
            if _num(done) and (tid not in ends or done > ends[tid]):
                ends[tid] = done
    # As model.task_span: a dispatch time stands in only where no attempt finished.
    for tid, at in dispatched.items():
        starts.setdefault(tid, at)
    return last, starts, ends, ending, last_is_final


# ---------------------------------------------------------------- all runs


@dataclass
class Listing:
    runs: list[RunView]
    unreadable: list[str]  # one line per run folder that could not be read


def _metas(state: Any) -> tuple[list[tuple[float, str, str]], list[str]]:
    """(created, run id, pipeline) of every run, newest first; and problems."""
    found, bad = [], []
    for rid in state.list_run_ids():
        try:
            info = state.open_run(rid)
        except DagrunError as exc:
            bad.append(str(exc))
            continue
        found.append((float(info.meta.get("created", 0.0)), rid,
                      str(info.meta.get("pipeline", ""))))
    found.sort(reverse=True)
    return found, bad


def list_runs(state: Any, *, limit: int | None = None, pipeline: str | None = None,
              status: str | None = None) -> Listing:
    """Runs newest first (by creation), filtered; journals are read only for
    the runs shown (all of them when filtering by status)."""
    metas, bad = _metas(state)
    out: list[RunView] = []
    for _created, rid, name in metas:
        if pipeline is not None and name != pipeline:
            continue
        if limit is not None and len(out) >= limit:
            break
        try:
            view = read_run(state, rid)
        except DagrunError as exc:
            bad.append(str(exc))
            continue
        if status is not None and view.status != status:
            continue
        view.tasks = {}  # the listing shows counts only
        out.append(view)
    return Listing(out, bad)


def last_unfinished(state: Any, pipeline: str | None = None) -> str:
    """The newest crashed or cancelled run (of `pipeline`), for `resume --last`."""
    metas, _bad = _metas(state)
    for _created, rid, name in metas:
        if pipeline is not None and name != pipeline:
            continue
        try:
            if read_run(state, rid).status in RESUMABLE:
                return rid
        except DagrunError:
            continue
    scope = f" of pipeline {pipeline!r}" if pipeline else ""
    raise UnknownRun(f"no unfinished run (crashed or cancelled){scope} in {state.root}; "
                     "see `dagrun runs`")


# ---------------------------------------------------------------- retention


@dataclass(frozen=True)
class Deleted:
    run_id: str
    pipeline: str
    status: str
    ended_at: float | None


def gc(state: Any, *, keep: int | None = None, older_than: float | None = None,
       dry_run: bool = False, now: float | None = None) -> tuple[list[Deleted], list[str]]:
    """Delete finished runs (succeeded or failed) beyond the `keep` newest of
    each pipeline and/or finished more than `older_than` seconds ago (a run
    goes when every scope given selects it), with their dead letters. Never a
    live, crashed or cancelled run: each is re-checked under its lock (taken
    without waiting) so a run resumed meanwhile is kept. Returns what was
    deleted (would be, with `dry_run`) and a line per run left alone."""
    from dagrun.store.runs import Lock

    if keep is None and older_than is None:
        raise UsageError("gc needs a scope: --keep N and/or --older-than DURATION")
    if keep is not None and keep < 0:
        raise UsageError(f"--keep must be 0 or more, got {keep}")
    now = time.time() if now is None else now
    _sweep(state)
    listing = list_runs(state)
    seen: Counter[str] = Counter()
    chosen: list[RunView] = []
    for view in listing.runs:  # newest first
        if view.status not in FINISHED:
            continue
        seen[view.pipeline] += 1
        if keep is not None and seen[view.pipeline] <= keep:
            continue
        ended = view.ended_at if view.ended_at is not None else view.started_at
        if older_than is not None and now - ended < older_than:
            continue
        chosen.append(view)
    deleted: list[Deleted] = []
    notes: list[str] = []
    for view in chosen:
        if dry_run:
            deleted.append(Deleted(view.run_id, view.pipeline, view.status, view.ended_at))
            continue
        lock = Lock(state.run_path(view.run_id) / "lock", f"run {view.run_id}")
        try:
            lock.acquire()
        except RunLocked:
            notes.append(f"kept run {view.run_id}: a live dagrun process holds it")
            continue
        try:
            again = read_run(state, view.run_id).status
            if again not in FINISHED:
                notes.append(f"kept run {view.run_id}: it is {again} now")
                continue
            _delete(state, view.run_id)
        finally:
            lock.release()
        deleted.append(Deleted(view.run_id, view.pipeline, view.status, view.ended_at))
    notes.extend(_expire_cache(state, dry_run, now))
    return deleted, notes


def _expire_cache(state: Any, dry_run: bool, now: float) -> list[str]:
    """Cache entries past their ttl go with the runs (dagrun/cache/store.py)."""
    from dagrun.cache.store import CacheStore, drop_expired

    n = drop_expired(CacheStore(state.root), dry_run=dry_run, now=now)
    if not n:
        return []
    verb = "would drop" if dry_run else "dropped"
    return [f"{verb} {n} expired cache entr{'y' if n == 1 else 'ies'}"]


def _delete(state: Any, run_id: str) -> None:
    """Out of the way in one rename (nothing can open it by id after that),
    then removed; the dead letters go after it."""
    from dagrun.errors import StateIOError
    from dagrun.store.fs import describe_os_error, fsync_dir

    path = state.run_path(run_id)
    tmp = state.runs / f"{_GC_TMP}{run_id}-{os.getpid()}-{os.urandom(4).hex()}"
    try:
        os.rename(path, tmp)
        fsync_dir(state.runs)
    except OSError as exc:
        raise StateIOError(f"cannot delete {path}: {describe_os_error(exc)}") from None
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(state.root / "dlq" / run_id, ignore_errors=True)


def _sweep(state: Any) -> None:
    """Finish the deletions of a gc killed half-way (its pid is in the name)."""
    from dagrun.store.fs import pid_alive

    try:
        names = [e.name for e in os.scandir(state.runs) if e.name.startswith(_GC_TMP)]
    except OSError:
        return
    for name in names:
        try:
            pid = int(name.rsplit("-", 2)[-2])
        except (ValueError, IndexError):
            continue
        if pid != os.getpid() and not pid_alive(pid):
            shutil.rmtree(state.runs / name, ignore_errors=True)
