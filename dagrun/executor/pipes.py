"""The supervisor's side of the workers' pipes (a base class of
process.ProcessExecutor, moved here whole): requests written as far as a pipe
takes them (the selector resumes a full one), results read and split into
frames, and the tags the selector's registrations carry.
"""

from __future__ import annotations

import os
import selectors
from collections.abc import Callable
from typing import TYPE_CHECKING

from dagrun.executor import procs, results, wire
from dagrun.model import AttemptResult


class Exited:
    """Selector data of a worker's pidfd."""

    __slots__ = ("worker",)

    def __init__(self, worker: procs.Worker) -> None:
        self.worker = worker


class Reader:
    """Selector data of an fd its owner reads itself (add_reader)."""

    __slots__ = ("on_readable",)

    def __init__(self, on_readable: Callable[[], None]) -> None:
        self.on_readable = on_readable


class Writable:
    """Selector data of a worker's request pipe while a request is being sent."""

    __slots__ = ("worker",)

    def __init__(self, worker: procs.Worker) -> None:
        self.worker = worker


class Pipes:
    if TYPE_CHECKING:  # the executor's, used here
        _sel: selectors.BaseSelector
        _emitted: list[tuple[str, str]]

        def _finish(self, worker: procs.Worker, msg: dict | list) -> AttemptResult: ...
        def _reap(self, worker: procs.Worker, out: list[AttemptResult]) -> None: ...

    def _flush(self, worker: procs.Worker) -> None:
        """Write what the pipe takes now; the selector resumes when it has room."""
        out = worker.out
        while out:
            try:
                written = os.write(worker.req_fd, out)
            except BlockingIOError:
                break
            except InterruptedError:
                continue
            except OSError:
                out.clear()  # the worker died: its exit reports the attempt
                break
            del out[:written]
        if out and not worker.writing:
            self._sel.register(worker.req_fd, selectors.EVENT_WRITE, Writable(worker))
            worker.writing = True
        elif not out:
            self._stop_writing(worker)

    def _stop_writing(self, worker: procs.Worker) -> None:
        if worker.writing:
            worker.writing = False
            try:
                self._sel.unregister(worker.req_fd)
            except (KeyError, ValueError):
                pass

    def _read(self, worker: procs.Worker, out: list[AttemptResult]) -> None:
        eof = wire.read_available(worker.res_fd, worker.buf)
        while worker.buf and worker.kill_reason != "protocol":
            try:
                body = wire.take_frame(worker.buf,
                                       worker.inflight[0][0] if worker.inflight else None)
                if body is None:
                    break
                if body.startswith(b'{"emit":'):  # dagrun.emit() while the task runs
                    self._emitted.append((worker.inflight[0][1].task_id,
                                          results.emit_name(body)))
                    continue
                msg = wire.result_message(body)
            except wire.FrameError as exc:
                # Bytes dagrun did not write (the task wrote to the inherited pipe)
                # or an answer nobody asked for: the worker can no longer be trusted.
                self._protocol_error(worker, str(exc))
                break
            out.append(self._finish(worker, msg))
        if worker.kill_reason == "protocol":
            worker.buf.clear()
        if eof:
            if worker.pidfd >= 0:
                # The pipe closing does not mean the worker exited (a task may
                # close its fds): reap when the pidfd says so, never block here.
                worker.eof = True
                self._sel.unregister(worker.res_fd)
            else:
                self._reap(worker, out)

    def _protocol_error(self, worker: procs.Worker, detail: str) -> None:
        worker.protocol_detail = detail
        if worker.kill_reason is None or worker.kill_reason == "timeout":
            worker.kill_reason = "protocol"  # a cancel stays a cancel
            procs.refresh_due(worker)
        procs.kill_hard(worker)
