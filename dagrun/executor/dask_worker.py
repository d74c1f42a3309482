"""The Dask-worker side of the Dask backend: a WorkerPlugin that keeps one
helper process per worker (dask_helper.py) and the task function each
attempt is on the cluster (run_attempt), which hands the attempt to that
helper and waits for its result.

The task function never runs the user's code in the Dask worker: a worker
thread cannot be killed, and forking a multi-threaded process is unsafe.
While it waits it watches its own Dask task: once the client that wanted it
is gone or cancelled it (the scheduler then marks the task cancelled on this
worker), it has the helper stop the attempt — SIGTERM, grace, SIGKILL.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from typing import Any

import orjson
from distributed import get_worker
from distributed.diagnostics.plugin import WorkerPlugin

from dagrun.executor import wire
from dagrun.executor.dask_helper import crashed

PLUGIN = "dagrun"
CHECK = 0.25  # seconds between looks at whether the attempt is still wanted
# After asking the helper to stop a cancelled attempt, how long beyond its
# grace to wait for the helper's answer before giving up on it.
STOP_MARGIN = 5.0
ATTEMPTS = "dagrun-attempts"  # scheduler metadata: attempts started, by session
EMIT_TOPIC = "dagrun-emit-"  # + run id: dagrun.emit() from a task, to its client
LINES_TOPIC = "dagrun-lines-"  # + run id: what running tasks print, to a client showing it


class _Waiter:
    __slots__ = ("done", "result", "proc")

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.done = threading.Event()
        self.result: dict[str, Any] | None = None
        self.proc = proc  # the helper that runs it


class HelperLink:
    """The Dask worker's end of its helper: requests from many task threads,
    answers read by one thread and handed to whoever waits for them."""

    def __init__(self, worker: Any, slots: int, log_dir: str) -> None:
        self.worker = worker
        self.slots = slots
        self.log_dir = log_dir
        self.lock = threading.Lock()
        self.proc: subprocess.Popen[bytes] | None = None
        self.waiting: dict[int, _Waiter] = {}
        self.next_id = 0
        self.closed = False

    def _ensure(self) -> subprocess.Popen[bytes]:
        """The helper, (re)started if it is not running; under self.lock."""
        if self.proc is not None and self.proc.poll() is None:
            return self.proc
        proc = subprocess.Popen(
            # -P: the worker's working directory is not put on the helper's path
            # (tasks import what the client sent: its paths, the shipped zip).
            [sys.executable, "-P", "-m", "dagrun.executor.dask_helper", str(self.slots),
             self.log_dir], stdin=subprocess.PIPE, stdout=subprocess.PIPE, close_fds=True)
        self.proc = proc
        threading.Thread(target=self._read, args=(proc,), daemon=True,
                         name="dagrun-helper-reader").start()
        return proc

    def _read(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        while True:
            try:
                header = wire.read_exact(fd, wire.HEADER.size)
                body = None if header is None else wire.read_exact(
                    fd, wire.HEADER.unpack(header)[2])
            except OSError:
                body = None
            if body is None:
                break
            msg = orjson.loads(body)
            if "emit" in msg:
                self._emit(msg)
                continue
            if "lines" in msg:
                self._lines(msg["lines"])
                continue
            with self.lock:
                waiter = self.waiting.pop(msg["id"], None)
            if waiter is not None:
                waiter.result = msg["result"]
                waiter.done.set()
        status = proc.wait()
        with self.lock:
            if self.proc is proc:
                self.proc = None
            lost = [w for w in self.waiting.values() if w.proc is proc]
            for rid in [rid for rid, w in self.waiting.items() if w.proc is proc]:
                del self.waiting[rid]
        now = time.time()
        for w in lost:
            w.result = crashed(f"the dagrun helper process on dask worker "
                               f"{self.worker.address} exited (status {status}) while the "
                               "attempt ran", now)
            w.done.set()

    def _emit(self, msg: dict[str, Any]) -> None:
        topic = EMIT_TOPIC + msg["run_id"]
        event = {"task": msg["task"], "event": msg["emit"]}
        self.worker.loop.add_callback(self.worker.log_event, topic, event)

    def _lines(self, lines: list[list[str]]) -> None:
        by_run: dict[str, list[list[str]]] = {}
        for run, task, line in lines:
            by_run.setdefault(run, []).append([task, line])
        for run, batch in by_run.items():
            self.worker.loop.add_callback(self.worker.log_event, LINES_TOPIC + run,
                                          {"lines": batch})

    def _send(self, proc: subprocess.Popen[bytes], obj: dict[str, Any]) -> None:
        assert proc.stdin is not None
        wire.write_all(proc.stdin.fileno(), wire.encode(obj, obj["id"]))

    def run(self, attempt: dict[str, Any], paths: list[str], key: str,
            echo: bool = False, max_tasks: int | None = None) -> dict[str, Any]:
        with self.lock:
            if self.closed:
                return crashed(f"dask worker {self.worker.address} is closing", time.time())
            proc = self._ensure()
            waiter = _Waiter(proc)
            self.next_id += 1
            rid = self.next_id
            self.waiting[rid] = waiter
            try:
                self._send(proc, {"op": "run", "id": rid, "attempt": attempt, "paths": paths,
                                  "echo": echo, "max_tasks_per_worker": max_tasks})
            except OSError:
                pass  # the helper died: its reader reports the attempt crashed
        while not waiter.done.wait(CHECK):
            if self._unwanted(key):
                grace = float(attempt.get("timeout_grace") or 0.0)
                with self.lock:
                    try:
                        self._send(proc, {"op": "cancel", "id": rid, "grace": grace})
                    except OSError:
                        pass
                waiter.done.wait(grace + STOP_MARGIN)
                return {"cancelled": True}
        assert waiter.result is not None
        return waiter.result

    def _unwanted(self, key: str) -> bool:
        """The scheduler no longer wants this task run here (its client cancelled
        it or went away): the task is cancelled or forgotten on this worker."""
        ts = self.worker.state.tasks.get(key)
        return ts is None or ts.state in ("cancelled", "released", "forgotten")

    def close(self) -> None:
        with self.lock:
            self.closed = True
            proc = self.proc
        if proc is not None and proc.stdin is not None:
            proc.stdin.close()  # EOF: the helper kills what it runs and exits
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()


class DagrunPlugin(WorkerPlugin):
    """Registered by the client under PLUGIN; one helper per Dask worker, shared
    by every dagrun run using the cluster."""

    idempotent = True

    def setup(self, worker: Any) -> None:
        log_dir = os.path.join(worker.local_directory, "dagrun-logs")
        self.link = HelperLink(worker, worker.state.nthreads, log_dir)
        with self.link.lock:
            self.link._ensure()  # warm: the first attempt does not wait for its start

    def teardown(self, worker: Any) -> None:
        link = getattr(self, "link", None)
        if link is not None:
            link.close()


def run_attempt(key: str, attempt: dict[str, Any], paths: list[str], ship: str | None,
                once: str | None, echo: bool = False, max_tasks: int | None = None) -> bytes:
    """One attempt, as a Dask task: its result as orjson bytes (dask_helper's
    result dict). `once` (the client's session): this cluster retries a task
    whose worker died (an external scheduler), so a second execution of this
    key is reported as the crash it follows rather than run again. `echo`: the
    lines the attempt prints go to the client while it runs (LINES_TOPIC).
    `max_tasks`: the run's max_tasks_per_worker, for the helper's children."""
    worker = get_worker()
    if once and _ran_before(worker, once, key):
        return orjson.dumps(crashed(
            "its dask worker died while running it (the scheduler sent it again, to "
            f"{worker.address})", time.time()))
    plugin = worker.plugins.get(PLUGIN)
    if plugin is None or not hasattr(plugin, "link"):
        return orjson.dumps(crashed(f"dask worker {worker.address} has no dagrun plugin",
                                    time.time()))
    if ship:
        paths = [os.path.join(worker.local_directory, ship), *paths]
    result = plugin.link.run(attempt, paths, key, echo, max_tasks)
    _name_worker(result, attempt, worker.address)
    return orjson.dumps(result, option=orjson.OPT_NON_STR_KEYS)


def _ran_before(worker: Any, session: str, key: str) -> bool:
    """Whether this key started before (a marker in the scheduler's metadata,
    under the client's session, which clears it at the end)."""
    from distributed.utils import sync

    where = [ATTEMPTS, session, key]
    seen = sync(worker.loop, worker.scheduler.get_metadata, keys=where, default=None)
    if seen:
        return True
    sync(worker.loop, worker.scheduler.set_metadata, keys=where, value=worker.address)
    return False


def _name_worker(result: dict[str, Any], attempt: dict[str, Any], address: str) -> None:
    """An attempt whose callable's module cannot be imported on this worker: the
    message says which worker and which module (the code was not shipped, or
    a library is missing there)."""
    error = result.get("error")
    if not error or "ImportError" not in (error.get("types") or ()):
        return
    module = str(attempt.get("call", "")).partition(":")[0]
    message = str(error.get("message", ""))
    missing = message.partition("No module named ")[2].strip("'\"")
    if missing and (module == missing or module.startswith(missing + ".")):
        error["message"] = (f"cannot import module {module!r} on dask worker {address}: "
                            f"{message}")
