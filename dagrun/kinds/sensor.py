"""Sensors: a task whose callable is polled until it returns a truthy value.

Each poll is a short attempt on a worker; between polls the task waits on a
scheduler timer in state `retrying`, holding no worker, so with one worker
other tasks run meanwhile. A falsy poll does not count against `retries`.
The sensor's window opens at its first poll (`sensor_started`, a wall time
kept in every record of the task, so a resume keeps the deadline); when it
closes the task fails with `SensorTimeout`, retried like any failure (a retry
opens a new window). A poll that raises is a failure too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dagrun.durations import parse_duration
from dagrun.errors import SpecError
from dagrun.model import AttemptResult, TaskError, TaskState, TaskStatus

if TYPE_CHECKING:
    from dagrun.scheduler import Scheduler
    from dagrun.spec.model import TaskSpec

KEYS = ("interval", "timeout")
DEFAULT_INTERVAL = 30.0
DEFAULT_TIMEOUT = 7 * 86400.0  # Airflow's default: a forgotten sensor does not wait forever


@dataclass(frozen=True, slots=True)
class SensorSpec:
    interval: float = DEFAULT_INTERVAL
    timeout: float = DEFAULT_TIMEOUT

    def to_dict(self) -> dict[str, Any]:
        return {"interval": self.interval, "timeout": self.timeout}


def from_dict(d: dict[str, Any] | None) -> SensorSpec | None:
    return None if d is None else SensorSpec(d["interval"], d["timeout"])


def parse(value: Any, ctx: str) -> SensorSpec | None:
    """`sensor = { interval = "30s", timeout = "6h" }` (`sensor = true`: the defaults)."""
    if value is None or value is False:
        return None
    if value is True:
        return SensorSpec()
    if not isinstance(value, dict):
        raise SpecError(f"{ctx}: 'sensor' must be a table like {{ interval = \"30s\", "
                        f"timeout = \"6h\" }}, got {value!r}")
    for key in value:
        if key not in KEYS:
            raise SpecError(f"{ctx}: 'sensor.{key}' is not a sensor key (use "
                            f"{', '.join(KEYS)})")
    return SensorSpec(_duration(value, "interval", DEFAULT_INTERVAL, ctx),
                      _duration(value, "timeout", DEFAULT_TIMEOUT, ctx))


def _duration(doc: dict[str, Any], key: str, default: float, ctx: str) -> float:
    if key not in doc:
        return default
    try:
        seconds = parse_duration(doc[key])
    except ValueError:
        seconds = -1.0
    if seconds <= 0:
        raise SpecError(f"{ctx}: 'sensor.{key}' must be a positive duration (like \"30s\", "
                        f"\"6h\"), got {doc[key]!r}")
    return seconds


def before_dispatch(st: TaskStatus, wall: float) -> None:
    if st.sensor_started is None:
        st.sensor_started = wall  # the window opens at the first poll


def on_result(sched: Scheduler, t: TaskSpec, st: TaskStatus,
              r: AttemptResult) -> AttemptResult | None:
    """None: the poll was not ready and the next one is scheduled; otherwise the
    result for the default decision (a ready poll, a failure, a timeout)."""
    assert t.sensor is not None
    wall = sched.wall()
    st.polls += 1
    st.last_poll_at = r.ended or wall
    started = st.sensor_started if st.sensor_started is not None else wall
    # The attempt the history keeps is the whole window, first poll to last.
    window = min(started, r.started) if r.started else started
    if r.error is not None or r.output:
        st.sensor_started = None  # a retry opens a new window
        return r._replace(started=window)
    left = started + t.sensor.timeout - wall
    if left <= 0:
        st.sensor_started = None
        return r._replace(started=window, error=TaskError(
            "SensorTimeout", f"not ready after {st.polls} polls in {t.sensor.timeout:g}s",
            types=("SensorTimeout",)))
    delay = min(t.sensor.interval, left)  # the last poll falls on the deadline
    # The poll is not an attempt against the retries: take it off again.
    sched._transition(t.id, TaskState.RETRYING, attempts=st.attempts - 1, error=None,
                      retry_at=wall + delay)
    sched._timer(t.id, delay)
    return None


def record_fields(st: TaskStatus, rec: dict[str, Any]) -> None:
    if st.polls or st.sensor_started is not None:
        rec["polls"] = st.polls
        rec["last_poll_at"] = st.last_poll_at
        rec["sensor_started"] = st.sensor_started


def restore(st: TaskStatus, rec: dict[str, Any]) -> None:
    if "polls" in rec:
        st.polls = rec["polls"]
        st.last_poll_at = rec.get("last_poll_at")
        st.sensor_started = rec.get("sensor_started")


def well_formed(rec: dict[str, Any], count: Any, number: Any) -> bool:
    if "polls" not in rec:
        return True
    return count(rec["polls"]) and all(rec.get(k) is None or number(rec[k])
                                       for k in ("last_poll_at", "sensor_started"))


def extras(st: TaskStatus) -> dict[str, Any]:
    if not st.polls and st.sensor_started is None:
        return {}
    return {"polls": st.polls, "last_poll_at": st.last_poll_at}
