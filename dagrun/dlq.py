"""The dead-letter queue: one letter per task that failed for good.

    STATE_DIR/dlq/RUN_ID/TASK_ID     one checksummed frame (records.frame), written atomically

A letter holds the run id, the task id, every attempt (start, end, error type,
message, traceback, exit code or signal), the final error and a digest of the
task's inputs (its kwargs merged with its upstream outputs), so that "the same
task with the same inputs" can be recognised. Letters are written by the
DeadLetterOffice, a listener on the run's event stream (events.py), so *after*
the journal record that dead-letters the task; a letter missing because dagrun
died in between is written when the run is next driven (reconcile). A task of
the run that completes later (`dlq retry`, `resume`) has its letter removed.

A letter that fails its checksum is ignored (and listed as corrupt by
`dlq list`), never a crash.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from dagrun.errors import StateIOError, UsageError
from dagrun.events import Event, TaskChanged
from dagrun.kinds import fanout
from dagrun.model import TaskError, TaskState, TaskStatus
from dagrun.spec import PipelineSpec
from dagrun.store.fs import describe_os_error, make_private_dir, read_state_file, write_atomic_raw
from dagrun.store.records import FORMAT_VERSION, frame, unframe
from dagrun.store.runs import check_run_id


@dataclass(frozen=True)
class Letter:
    run_id: str
    task: str
    pipeline: str
    created: float  # wall clock, when the task was dead-lettered (last time)
    attempts: tuple[dict[str, Any], ...]  # {"attempt","started","ended","error": TaskError dict}
    error: dict[str, Any] | None  # the final TaskError as a dict
    inputs_digest: str
    call: str = ""

    @property
    def error_text(self) -> str:
        err = TaskError.from_dict(self.error)
        return err.summary() if err else "unknown error"

    def summary(self) -> dict[str, Any]:
        """The `dlq list --json` object."""
        return {"run_id": self.run_id, "task": self.task, "pipeline": self.pipeline,
                "attempts": len(self.attempts), "error": self.error_text,
                "created": self.created, "inputs_digest": self.inputs_digest}

    def to_dict(self) -> dict[str, Any]:
        return {"v": FORMAT_VERSION, "run_id": self.run_id, "task": self.task,
                "pipeline": self.pipeline, "created": self.created, "call": self.call,
                "attempts": list(self.attempts), "error": self.error,
                "inputs_digest": self.inputs_digest}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Letter:
        if d.get("v") != FORMAT_VERSION:
            raise ValueError("unknown letter version")
        return cls(run_id=d["run_id"], task=d["task"], pipeline=d.get("pipeline", ""),
                   created=float(d["created"]), attempts=tuple(d.get("attempts", ())),
                   error=d.get("error"), inputs_digest=d.get("inputs_digest", ""),
                   call=d.get("call", ""))


def inputs_digest(kwargs: Mapping[str, Any]) -> str:
    body = orjson.dumps(dict(kwargs), option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)
    return "sha256:" + hashlib.sha256(body).hexdigest()


class DeadLetterQueue:
    """The letters under one state directory."""

    def __init__(self, state_dir: str | os.PathLike[str]) -> None:
        self.root = Path(state_dir) / "dlq"

    def _path(self, run_id: str, task: str | None = None) -> Path:
        base = self.root / check_run_id(run_id)
        if task is None:
            return base
        from dagrun.spec import TASK_ID

        if not TASK_ID.fullmatch(fanout.base_task(task)) or task.startswith("."):
            raise UsageError(f"invalid task id {task!r}")
        return base / task

    def write(self, letter: Letter) -> None:
        """`dlq purge` may remove the run's folder between our mkdir and our write
        (its rmdir of an emptied folder): the folder is made again and the
        write retried, so a purge never fails a live run."""
        folder, path = self._path(letter.run_id), self._path(letter.run_id, letter.task)
        data = frame(letter.to_dict())
        for attempt in range(100):
            make_private_dir(folder)
            try:
                write_atomic_raw(path, data)
                return
            except FileNotFoundError:
                if attempt == 99:
                    raise StateIOError(f"cannot write {path}: its folder keeps "
                                       "disappearing") from None
            except OSError as exc:
                raise StateIOError(f"cannot write {path}: {describe_os_error(exc)}") from None

    def read(self, run_id: str, task: str) -> Letter | None:
        """The letter, or None if there is none or it is corrupt."""
        try:
            data = read_state_file(self._path(run_id, task))
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StateIOError(f"cannot read the letter of {task!r} in run {run_id!r}: "
                               f"{describe_os_error(exc)}") from None
        try:
            return Letter.from_dict(unframe(data))
        except (ValueError, KeyError, TypeError):
            return None

    def get(self, run_id: str, task: str) -> Letter:
        letter = self.read(run_id, task)
        if letter is None and self._path(run_id, task).exists():
            raise UsageError(f"the dead letter of task {task!r} in run {run_id!r} is corrupt "
                             "(checksum mismatch); delete it with `dagrun dlq purge "
                             f"--run-id {run_id}`")
        if letter is None:
            raise UsageError(f"no dead letter for task {task!r} of run {run_id!r} in "
                             f"{self.root.parent} (see `dagrun dlq list`)")
        return letter

    def tasks(self, run_id: str) -> list[str]:
        try:
            return sorted(p.name for p in self._path(run_id).iterdir()
                          if not p.name.startswith("."))
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise StateIOError(f"cannot list {self._path(run_id)}: "
                               f"{describe_os_error(exc)}") from None

    def run_ids(self) -> list[str]:
        try:
            from dagrun.store.runs import RUN_ID

            # Anything else in the folder (a temp dir, a stray copy) is not ours.
            return sorted(p.name for p in self.root.iterdir()
                          if p.is_dir() and RUN_ID.match(p.name) and ".." not in p.name)
        except FileNotFoundError:
            return []

    def scan(self, run_id: str | None = None) -> Iterator[tuple[str, str, Letter | None]]:
        """(run id, task, letter or None if corrupt) for every letter, oldest run first."""
        for rid in ([check_run_id(run_id)] if run_id else self.run_ids()):
            for task in self.tasks(rid):
                yield rid, task, self.read(rid, task)

    def remove(self, run_id: str, task: str) -> bool:
        try:
            self._path(run_id, task).unlink()
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise StateIOError(f"cannot delete the letter of {task!r}: "
                               f"{describe_os_error(exc)}") from None
        try:
            self._path(run_id).rmdir()  # the run's last letter: drop its folder too
        except OSError:
            pass
        return True

    def purge(self, *, run_id: str | None = None, older_than: float | None = None,
              now: float | None = None, dry_run: bool = False) -> list[tuple[str, str]]:
        """Delete letters (of one run, and/or older than `older_than` seconds);
        the (run id, task) of each one deleted, or with `dry_run` to be deleted."""
        now = time.time() if now is None else now
        chosen = []
        for rid, task, letter in list(self.scan(run_id)):
            if older_than is not None:
                if letter is not None:
                    created = letter.created
                else:  # corrupt: its file's age stands in for the unreadable date
                    try:
                        created = self._path(rid, task).stat().st_mtime
                    except OSError:
                        continue
                if now - created < older_than:
                    continue
            if dry_run or self.remove(rid, task):
                chosen.append((rid, task))
        return chosen


class DeadLetterOffice:
    """A listener of one run: writes letters, removes them on success."""

    name = "dead-letter office"
    critical = True  # a letter it failed to write would never be written (events.py)

    def __init__(self, queue: DeadLetterQueue, run_id: str, spec: PipelineSpec,
                 statuses: Mapping[str, TaskStatus]) -> None:
        self.queue = queue
        self.run_id = run_id
        self.spec = spec
        self.statuses = statuses
        # Read once: only tasks with a letter pay for a removal on completion.
        self.lettered = set(queue.tasks(run_id))

    def reconcile(self, unsettled: set[str]) -> None:
        """Settle what a previous process recorded in the journal but died before
        doing (the journal record comes first): write (or complete) the letters
        of tasks dead-lettered since the run last stopped cleanly — only those,
        so that a letter the user purged does not come back — and remove the
        letters of tasks that have completed since."""
        for tid in unsettled:
            st = self.statuses.get(tid)
            if st is not None and st.state == TaskState.DEAD_LETTERED:
                self.on_dead_letter(tid, st)
        for name in list(self.lettered):
            tid = fanout.base_task(name)  # TASK[i]: an element of a map task
            st = self.statuses.get(tid)
            if st is not None and st.state == TaskState.COMPLETED:
                self.on_completed(tid, st)

    @property
    def task_states(self) -> frozenset[TaskState]:
        """The task changes it acts on (events.py skips the others; it asks once
        per state and keeps the answer). A completion matters only to a task
        with a letter, and without letters when asked, none written later can
        matter: a task dead-lettered during the run cannot complete in it
        (transitions.py: only a resume reopens it)."""
        if self.lettered:
            return frozenset({TaskState.DEAD_LETTERED, TaskState.COMPLETED})
        return frozenset({TaskState.DEAD_LETTERED})

    def on_event(self, event: Event) -> None:
        if isinstance(event, TaskChanged):
            if event.new == TaskState.DEAD_LETTERED:
                self.on_dead_letter(event.task_id, self.statuses[event.task_id])
            elif event.new == TaskState.COMPLETED:
                self.on_completed(event.task_id, self.statuses[event.task_id])

    def on_dead_letter(self, tid: str, st: TaskStatus) -> None:
        t = self.spec.tasks[tid]
        # A secret param's value never reaches the state dir, not even hashed.
        kwargs = dict(t.kwargs if t.template is None else t.template)
        for param, upstream in t.inputs.items():
            kwargs[param] = (self.statuses[upstream].output if isinstance(upstream, str)
                             else [self.statuses[u].output for u in upstream])
        if st.elements is not None:
            self._element_letters(tid, st, kwargs)
            return
        old = self.queue.read(self.run_id, tid) if tid in self.lettered else None
        attempts = list(old.attempts) if old else []
        seen = {(a.get("attempt"), a.get("started")) for a in attempts}
        attempts += [a for a in st.history if (a.get("attempt"), a.get("started")) not in seen]
        self.queue.write(Letter(
            run_id=self.run_id, task=tid, pipeline=self.spec.name, created=time.time(),
            attempts=tuple(attempts), error=st.error.to_dict() if st.error else None,
            inputs_digest=inputs_digest(kwargs), call=t.call))
        self.lettered.add(tid)

    def _element_letters(self, tid: str, st: TaskStatus, kwargs: dict[str, Any]) -> None:
        """A failed map task: one letter per failed element, named TASK[i]; the
        letters of its elements that have completed since go."""
        el, t = st.elements, self.spec.tasks[tid]
        assert t.map is not None  # only a map task has elements
        value = kwargs.get(t.map)
        items = value if isinstance(value, list) else []
        for name in [n for n in self.lettered if fanout.base_task(n) == tid and n != tid]:
            if int(name[len(tid) + 1:-1]) not in el.errors:
                self.queue.remove(self.run_id, name)
                self.lettered.discard(name)
        for i, error in el.errors.items():
            name = f"{tid}[{i}]"
            element_kwargs = {**kwargs, t.map: items[i] if i < len(items) else None}
            self.queue.write(Letter(
                run_id=self.run_id, task=name, pipeline=self.spec.name, created=time.time(),
                attempts=tuple(el.history.get(i, ())), error=error.to_dict(),
                inputs_digest=inputs_digest(element_kwargs), call=t.call))
            self.lettered.add(name)

    def on_completed(self, tid: str, st: TaskStatus) -> None:
        if not self.lettered or (tid not in self.lettered and st.elements is None):
            return
        for name in [n for n in self.lettered if n == tid or fanout.base_task(n) == tid]:
            self.queue.remove(self.run_id, name)
            self.lettered.discard(name)


def describe(letter: Letter) -> str:
    """`dlq show` without --json: the letter for a human, tracebacks included."""
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(letter.created))
    lines = [f"run       {letter.run_id}", f"task      {letter.task}",
             f"pipeline  {letter.pipeline}", f"call      {letter.call}",
             f"letter    {when}", f"inputs    {letter.inputs_digest}",
             f"error     {letter.error_text}", f"attempts  {len(letter.attempts)}"]
    for a in letter.attempts:
        err = TaskError.from_dict(a.get("error"))
        took = (a.get("ended") or 0) - (a.get("started") or 0)
        start = time.strftime("%H:%M:%S", time.localtime(a.get("started") or 0))
        lines.append("")
        lines.append(f"--- attempt {a.get('attempt')} (started {start}, {took:.3f}s)")
        if err is None:
            continue
        lines.append(err.summary())
        if err.exit_code is not None:
            lines.append(f"exit code {err.exit_code}")
        if err.signal is not None:
            lines.append(f"signal {err.signal}")
        if err.traceback:
            lines.append(err.traceback.rstrip())
    return "\n".join(lines)
