"""What comes back from the Dask cluster, as AttemptResults: finished futures
gathered in one call, each attempt's output appended to RUN/logs/dask-PID.log,
a Dask task that erred (a KilledWorker: the worker died) described, and the
cluster's health (a lost scheduler, no workers, attempts to run again after a
reconnection). A part of dask_client.DaskExecutor moved here whole, so that
module keeps to connecting, dispatching and cancelling.

`DaskResults` is a base class of DaskExecutor and holds no state of its own:
the in-flight table, the queue of done futures the client's thread fills, the
lost attempts and the log file descriptor are the executor's.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from dagrun.errors import ExecutorLost
from dagrun.model import Attempt, AttemptResult, TaskError


class DaskResults:
    if TYPE_CHECKING:  # the executor's, used here
        address: str | None
        connect_timeout: float
        log_dir: str | None
        notify: Callable[[str], None]
        cluster: Any
        client: Any
        _inflight: dict[str, tuple[Attempt, Any]]
        _done: deque[Any]
        _lost: dict[str, Attempt]
        _trouble_since: float | None
        _log_fd: int
        _log_name: str
        _mean_duration: float

        def _resubmit(self) -> None: ...

    def _collect(self) -> list[AttemptResult]:
        finished, out = [], []
        while self._done:
            future = self._done.popleft()
            if future is None:
                continue  # an emitted event's wake-up
            entry = self._inflight.get(future.key)
            if entry is None or entry[1] is not future:
                continue  # cancelled by us, already reported
            if future.status == "finished":
                finished.append(future)
            elif future.status == "cancelled":
                # Not by us: the connection to the scheduler was lost. Held until
                # we know whether it comes back (requeue) or not (ExecutorLost).
                del self._inflight[future.key]
                self._lost[future.key] = entry[0]
            else:
                del self._inflight[future.key]
                out.append(self._failed(entry[0], future))
        if finished:
            try:
                values = self.client.gather(finished, errors="skip")
            except Exception:  # the connection went away between done and gather
                values = None
            if values is None or len(values) != len(finished):
                for future in finished:
                    attempt, _ = self._inflight.pop(future.key)
                    self._lost[future.key] = attempt
            else:
                for future, raw in zip(finished, values, strict=True):
                    attempt, _ = self._inflight.pop(future.key)
                    out.append(self._result(attempt, orjson.loads(raw)))
        return out

    def _result(self, attempt: Attempt, d: dict[str, Any]) -> AttemptResult:
        now = time.time()
        if d.get("cancelled"):
            return AttemptResult(attempt.task_id, attempt.number, cancelled=True,
                                 started=now, ended=now, map_index=attempt.map_index)
        took = d.get("ended", now) - d.get("started", now)
        self._mean_duration += (took - self._mean_duration) / 8
        log = self._write_log(attempt, d.get("log_text"))
        return AttemptResult(
            task_id=attempt.task_id, number=attempt.number, output=d.get("output"),
            error=TaskError.from_dict(d.get("error")), started=d.get("started", now),
            ended=d.get("ended", now), state=d.get("state"),
            condition_false=bool(d.get("condition_false")), stop=bool(d.get("stop")),
            map_index=attempt.map_index, log=log)

    def _failed(self, attempt: Attempt, future: Any) -> AttemptResult:
        """A Dask task that erred: the task function itself failed, or (KilledWorker)
        the worker running it died."""
        now = time.time()
        try:
            exc = future.exception(timeout=5)
        except Exception as got:
            exc = got
        name = type(exc).__name__
        if name == "KilledWorker":
            where = getattr(getattr(exc, "last_worker", None), "address", None)
            error = TaskError("WorkerCrashed", f"its dask worker{f' {where}' if where else ''} "
                              "died while running it", types=("WorkerCrashed",))
        else:
            error = TaskError(name, f"on the Dask cluster: {exc}",
                              types=tuple(c.__name__ for c in type(exc).__mro__[:-1]))
        return AttemptResult(attempt.task_id, attempt.number, error=error, started=now,
                             ended=now, map_index=attempt.map_index)

    def _write_log(self, attempt: Attempt, text: str | None) -> dict[str, Any] | None:
        """Append an attempt's output to RUN/logs/dask-PID.log; its byte range."""
        if not text or not self.log_dir:
            return None
        try:
            if self._log_fd < 0:
                flags = (os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
                         | getattr(os, "O_NOFOLLOW", 0))
                self._log_fd = os.open(Path(self.log_dir) / self._log_name, flags, 0o600)
            data = text.encode("utf-8", "surrogateescape")
            start = os.lseek(self._log_fd, 0, os.SEEK_END)
            os.write(self._log_fd, data)
        except OSError as exc:
            self.notify(f"warning: cannot write task logs: {exc.strerror or exc}")
            return None
        return {"file": self._log_name, "start": start, "end": start + len(data)}

    def _check_cluster(self, out: list[AttemptResult]) -> None:
        """Give up on a scheduler lost, or a cluster without workers, for longer
        than connect_timeout; requeue what a reconnection cancelled."""
        now = time.monotonic()
        status = getattr(self.client, "status", "closed")
        info = getattr(self.client, "_scheduler_identity", None) or {}
        no_workers = bool(self._inflight) and status == "running" and not info.get("n_workers")
        if status == "running" and not no_workers:
            self._trouble_since = None
            wall = time.time()
            for attempt in self._lost.values():  # back: run them again, uncounted
                out.append(AttemptResult(attempt.task_id, attempt.number, cancelled=True,
                                         started=wall, ended=wall,
                                         map_index=attempt.map_index))
            self._lost.clear()
            self._resubmit()
            return
        if self._trouble_since is None:
            self._trouble_since = now
        if status in ("closed", "closing", "failed") or (
                now - self._trouble_since > self.connect_timeout):
            where = getattr(self.cluster, "scheduler_address", None) or self.address
            what = (f"the Dask cluster at {where} has had no worker for "
                    f"{self.connect_timeout:g}s" if no_workers else
                    f"lost the Dask scheduler at {where} (not reachable for "
                    f"{self.connect_timeout:g}s)")
            raise ExecutorLost(what)
