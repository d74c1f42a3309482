"""AttemptResults of the local backend, built from what a worker sent (a result
frame, an event frame) or from its death. process.py owns the Worker records
and their fds and decides when; this only turns them into plain data."""

from __future__ import annotations

import orjson

from dagrun.executor import procs, wire
from dagrun.model import Attempt, AttemptResult, TaskError


def from_message(worker: procs.Worker, attempt: Attempt, msg: dict) -> AttemptResult:
    """The result frame of `attempt`, the task `worker` ran."""
    get = msg.get
    log = get("log")
    error = get("error")
    # Positional (AttemptResult's field order): this runs for every result.
    return AttemptResult(
        attempt.task_id, attempt.number, get("output"),
        TaskError.from_dict(error) if error else None,
        get("started", 0.0), get("ended", 0.0), False, get("state"),
        get("condition") is False and error is None, get("stop") is True, attempt.map_index,
        None if log is None else {"file": f"worker-{worker.pid}.log",
                                  "start": log[0], "end": log[1]},
    )


def from_plain(worker: procs.Worker, attempt: Attempt, msg: list) -> AttemptResult:
    """A plain success, [started, ended, log start, log end, output]
    (wire.result_message), the frame most results come in."""
    started, ended, start, end, output = msg
    return AttemptResult(
        attempt.task_id, attempt.number, output, None, started, ended, False, None, False,
        False, attempt.map_index,
        None if start is None else {"file": f"worker-{worker.pid}.log", "start": start,
                                    "end": end},
    )


def from_death(worker: procs.Worker, status: int, now: float) -> list[AttemptResult]:
    """What the reaped worker held when it exited (emptying its inflight queue)."""
    results: list[AttemptResult] = []
    first = True
    while worker.inflight:
        _, attempt = worker.inflight.popleft()
        if not first:  # queued behind the one that died: it never started
            results.append(AttemptResult(attempt.task_id, attempt.number, cancelled=True,
                                         started=now, ended=now,
                                         map_index=attempt.map_index))
            continue
        first = False
        clean_exit = worker.retiring and not worker.kill_reason and status == 0
        if worker.kill_reason == "cancel" or clean_exit:
            results.append(AttemptResult(attempt.task_id, attempt.number, cancelled=True,
                                         started=now, ended=now,
                                         map_index=attempt.map_index))
        else:
            results.append(AttemptResult(attempt.task_id, attempt.number,
                                         error=procs.death_error(worker, attempt, status),
                                         started=worker.head_wall or now, ended=now,
                                         map_index=attempt.map_index))
    return results


def emit_name(body: bytes) -> str:
    from dagrun.kinds.events import EVENT_NAME

    try:
        name = orjson.loads(body).get("emit")
    except orjson.JSONDecodeError:
        raise wire.FrameError("a frame whose body is not JSON") from None
    if not isinstance(name, str) or not EVENT_NAME.fullmatch(name):
        raise wire.FrameError("an event frame without a valid event name")
    return name
