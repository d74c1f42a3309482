"""The helper process of the Dask backend: one per Dask worker, started with a
clean exec (`python -m dagrun.executor.dask_helper SLOTS LOG_DIR`) by the
worker's plugin (dask_worker.py).

A Dask worker is multi-threaded and its threads cannot be killed, so attempts
do not run there: the worker hands each one to this single-threaded process,
which runs them exactly as the local backend does — it *is* the local backend
(process.py) with SLOTS forked children, so timeouts kill the task's process
group (SIGTERM, grace, SIGKILL), memory limits, crash isolation (WorkerCrashed)
and the reuse of warm children come with it.

    Dask worker thread --- stdin: frames {"op": "run"|"cancel", ...} ---> helper
    reader thread      <-- stdout: frames {"id", "result"} | {"emit"} --- helper
                                          | {"lines"}: what running attempts print

EOF on stdin (the Dask worker exited, however it died) ends the helper and
every attempt it runs: SIGKILL to their groups, then exit. The children's
sentinels cover the helper's own death (process.py's lifeline).

Also here: the attempt and its result as plain dicts, shared by the client
side (dask_client.py), which encodes attempts and decodes results.
"""

from __future__ import annotations

import os
import select
import sys
from collections import deque
from pathlib import Path
from typing import Any

import orjson

from dagrun.executor import wire
from dagrun.model import Attempt, AttemptResult, TaskError

# The most of one attempt's output shipped back with its result; the rest is
# cut from the middle (the worker's own log file keeps it all).
MAX_LOG = 8 << 20  # bytes
# How often the lines running attempts print are sent on (when their client shows them).
ECHO_INTERVAL = 0.25  # seconds

_FIELDS = ("run_id", "task_id", "number", "call", "kwargs", "timeout", "timeout_grace",
           "memory_limit", "state", "when", "loop", "map_index")


def attempt_to_dict(attempt: Attempt) -> dict[str, Any]:
    return {f: getattr(attempt, f) for f in _FIELDS}


def attempt_from_dict(d: dict[str, Any]) -> Attempt:
    fields: dict[str, Any] = {f: d[f] for f in _FIELDS if f in d}
    return Attempt(**fields)


def result_to_dict(r: AttemptResult, log_text: str | None = None) -> dict[str, Any]:
    d: dict[str, Any] = {"output": r.output, "started": r.started, "ended": r.ended}
    if r.error is not None:
        d["error"] = r.error.to_dict()
    if r.cancelled:
        d["cancelled"] = True
    if r.state is not None:
        d["state"] = r.state
    if r.condition_false:
        d["condition_false"] = True
    if r.stop:
        d["stop"] = True
    if log_text:
        d["log_text"] = log_text
    return d


def crashed(message: str, now: float) -> dict[str, Any]:
    """A result dict for an attempt whose runner was lost."""
    return {"started": now, "ended": now,
            "error": TaskError("WorkerCrashed", message,
                               types=("WorkerCrashed",)).to_dict()}


def _identity(a: Attempt | AttemptResult) -> tuple[Any, ...]:
    return (a.task_id, a.number, a.map_index)


class Helper:
    def __init__(self, slots: int, log_dir: str, req_fd: int, res_fd: int) -> None:
        self.slots = max(1, slots)
        self.log_dir = log_dir
        self.req_fd = req_fd
        self.res_fd = res_fd
        self.buf = bytearray()
        self.eof = False
        # (request id, attempt, the local backend it needs: import paths, max_tasks_per_worker)
        self.queue: deque[tuple[int, Attempt, tuple[tuple[str, ...], int | None]]] = deque()
        # What the local backend runs, by its AttemptResult's identity: two runs
        # sharing a cluster may send the same task and attempt number; the second
        # waits, so that a result can never go to the other run.
        self.running: dict[tuple[Any, ...], tuple[int, Attempt]] = {}
        self.paths: tuple[str, ...] = ()
        self.max_tasks: int | None = None  # the running local backend's max_tasks_per_worker
        self.added: set[str] = set()  # entries of sys.path put there for requests
        self.ex: Any = None  # the ProcessExecutor; started at the first attempt
        self.echo: set[tuple[Any, ...]] = set()  # attempts whose lines go to their client
        self.lines: list[list[str]] = []  # [run, task, line] not yet sent

    # ------------------------------------------------------------ requests

    def on_readable(self) -> None:
        if wire.read_available(self.req_fd, self.buf):
            self.eof = True
        while len(self.buf) >= wire.HEADER.size:
            _, _, size = wire.HEADER.unpack_from(self.buf)
            end = wire.HEADER.size + size
            if len(self.buf) < end:
                break
            msg = orjson.loads(bytes(self.buf[wire.HEADER.size:end]))
            del self.buf[:end]
            self._request(msg)

    def _request(self, msg: dict[str, Any]) -> None:
        if msg["op"] == "run":
            attempt = attempt_from_dict(msg["attempt"])
            if msg.get("echo"):
                self.echo.add(_identity(attempt))
            setup = (tuple(msg.get("paths") or ()), msg.get("max_tasks_per_worker") or None)
            self.queue.append((msg["id"], attempt, setup))
        elif msg["op"] == "cancel":
            for i, (rid, attempt, _) in enumerate(self.queue):
                if rid == msg["id"]:
                    del self.queue[i]
                    self.echo.discard(_identity(attempt))
                    self._send({"id": rid, "result": {"cancelled": True}})
                    return
            if self.ex is not None:
                target = msg["id"]
                self.ex.cancel_where(
                    lambda a: self.running.get(_identity(a), (None,))[0] == target,
                    float(msg.get("grace", 1.0)))

    def _send(self, obj: dict[str, Any]) -> None:
        try:
            wire.write_all(self.res_fd, wire.encode(obj, obj.get("id", 0)))
        except OSError:
            self.eof = True  # the worker is gone: nobody to answer

    # ------------------------------------------------------------ running

    def _start_queued(self) -> None:
        while self.queue:
            rid, attempt, setup = self.queue[0]
            if _identity(attempt) in self.running:
                return  # its twin from another run first (see self.running)
            if self.ex is None or setup != (self.paths, self.max_tasks):
                # Another pipeline's code or worker quota (a cluster serving several
                # runs): fresh children once idle, so that an attempt never runs in
                # a child set up for another run (its modules, its recycling).
                if self.running:
                    return
                self._restart(*setup)
            if self.ex.free_slots() <= 0:
                return
            self.queue.popleft()
            self.running[_identity(attempt)] = (rid, attempt)
            self.ex.submit(attempt)

    def _restart(self, paths: tuple[str, ...], max_tasks: int | None) -> None:
        """(Re)start the local backend with `paths` importable (its children are
        forked from here, so they inherit this sys.path, e.g. the shipped zip),
        each child replaced after `max_tasks` attempts (None: never)."""
        from dagrun.executor.process import ProcessExecutor

        if self.ex is not None:
            self.ex.shutdown()
        for p in self.added - set(paths):  # another run's (e.g. its shipped zip)
            if p in sys.path:
                sys.path.remove(p)
        self.added &= set(paths)
        for p in reversed(paths):
            if p not in sys.path:
                sys.path.insert(0, p)
                self.added.add(p)
        self.paths, self.max_tasks = paths, max_tasks
        self.ex = ProcessExecutor(self.slots, log_dir=self.log_dir, output=self._line,
                                  max_tasks_per_worker=max_tasks)
        self.ex.start()
        self.ex.add_reader(self.req_fd, self.on_readable)

    def _answer(self, r: AttemptResult) -> None:
        rid, attempt = self.running.pop(_identity(r))
        self.echo.discard(_identity(r))
        self._send({"id": rid, "result": result_to_dict(r, self._log_text(r))})

    def _log_text(self, r: AttemptResult) -> str | None:
        if r.log is not None:
            if r.log["end"] <= r.log["start"]:
                return None  # it printed nothing: no file to open
            where: tuple[str, int, int | None] | None = (
                os.path.join(self.log_dir, r.log["file"]), r.log["start"], r.log["end"])
        elif r.error is not None and not r.cancelled:  # it died: whatever it wrote
            from dagrun.logs import _from_index

            found = _from_index(Path(self.log_dir), r.task_id, r.number)
            where = None if found is None else (str(found[0]), found[1], found[2])
        else:
            return None
        if where is None:
            return None
        path, start, end = where
        try:
            with open(path, "rb") as fh:
                fh.seek(start)
                data = fh.read() if end is None else fh.read(max(0, end - start))
        except OSError:
            return None
        if len(data) > MAX_LOG:
            half = MAX_LOG // 2
            data = (data[:half] + f"\n… {len(data) - MAX_LOG} bytes cut …\n".encode()
                    + data[-half:])
        return data.decode("utf-8", "replace") or None

    def serve(self) -> None:
        while not self.eof:
            self._start_queued()
            if self.ex is None:
                select.select([self.req_fd], [], [])
                self.on_readable()
                continue
            results = self.ex.poll(ECHO_INTERVAL if self.echo else None)
            # Events and lines first: the attempt they belong to may be among the results.
            for task, name in self.ex.take_emitted():
                run = self._run_of(task)
                if run is not None:
                    self._send({"id": 0, "emit": name, "task": task, "run_id": run})
            if self.lines:
                self._send({"id": 0, "lines": self.lines})
                self.lines = []
            for r in results:
                if _identity(r) in self.running:
                    self._answer(r)

    def _run_of(self, task: str, echo: bool = False) -> str | None:
        """The run of the running attempt of `task` (with `echo`: if it wants its lines)."""
        for key, (_, a) in self.running.items():
            if a.task_id == task and (not echo or key in self.echo):
                return a.run_id
        return None

    def _line(self, task: str, line: str) -> None:
        """A line a running attempt printed (the local backend's echo)."""
        run = self._run_of(task, echo=True)
        if run is not None:
            self.lines.append([run, task, line])

    def close(self) -> None:
        if self.ex is not None:
            self.ex.cancel(0)  # the worker is gone: nobody waits for a polite stop
            self.ex.shutdown()


def main(argv: list[str]) -> None:
    slots, log_dir = int(argv[0]), argv[1]
    # Requests and answers move off fds 0 and 1, which get /dev/null and stderr:
    # a stray print here must not corrupt the answers.
    req_fd, res_fd = os.dup(0), os.dup(1)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.dup2(2, 1)
    for fd in (req_fd, res_fd):
        os.set_inheritable(fd, False)
    os.set_blocking(req_fd, False)
    os.makedirs(log_dir, exist_ok=True)
    helper = Helper(slots, log_dir, req_fd, res_fd)
    try:
        helper.serve()
    finally:
        helper.close()


if __name__ == "__main__":
    main(sys.argv[1:])
