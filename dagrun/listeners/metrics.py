"""`--metrics-file PATH`: the run's numbers in Prometheus text format, for
node_exporter's textfile collector (or anything that scrapes a file).

The listener keeps plain counters as events arrive (a dict increment each) and
renders them through prometheus_client only when it writes: at the start, every
WRITE_INTERVAL seconds from tick(), and at the end. Each write is atomic
(prometheus_client's write_to_textfile: a temp file beside PATH, then rename),
so a scraper never reads half a file. prometheus_client is imported on the
first write, so runs without --metrics-file never pay for it.

The time of the last successful run of each pipeline is what people alert on
("nightly-etl has not succeeded for 26 hours"), so it must outlive the run: a
failed run still exports the previous success. It lives in
STATE_DIR/metrics/PIPELINE, one checksummed frame (store/records.py).

A metrics file that cannot be written is one warning and the listener is
switched off (events.py); it never fails the run, and never exits 4: the
run's own state is not at stake.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dagrun.events import Event, RunFinished, RunStarted, TaskChanged
from dagrun.model import TaskState

# How often a running run rewrites the file. node_exporter reads it at each
# scrape (typically every 15-60 s), so a few seconds is fresh enough; each
# write renders every series, which for a run of thousands of tasks costs
# milliseconds, so it must not happen on every event. The interval also
# stretches to WRITE_COST_FACTOR times the last write's duration, so that even
# a huge run spends at most ~1/WRITE_COST_FACTOR of its time writing metrics.
WRITE_INTERVAL = 5.0
WRITE_COST_FACTOR = 50

LAST_SUCCESS_VERSION = 1


class MetricsError(Exception):
    """The metrics file (or the last-success record) could not be written."""


class MetricsListener:
    name = "metrics file"

    def __init__(self, path: str | os.PathLike[str], state_root: Path) -> None:
        self.path = Path(path)
        self.state_root = state_root
        self.pipeline = ""
        self.run_id = ""
        self.status = "running"
        self.started_wall = time.time()
        self.started = time.monotonic()
        self.duration: float | None = None
        self.states: dict[str, TaskState] = {}
        self.counts = dict.fromkeys(
            ("started", "completed", "failed", "dead_lettered", "retries", "skipped",
             "timeouts", "cancelled", "cached"), 0)
        self.running_since: dict[str, float] = {}  # task -> wall clock of its attempt's start
        self.task_seconds: dict[str, float] = {}  # task -> its last finished attempt's length
        self.last_success: float | None = None
        self._next_write = 0.0
        self._interval = WRITE_INTERVAL

    # ------------------------------------------------------------ events

    def on_event(self, event: Event) -> None:
        if isinstance(event, TaskChanged):
            self._changed(event)
        elif isinstance(event, RunStarted):
            self.pipeline = event.spec.name
            self.run_id = event.run_id
            self.states = dict(event.states)
            self.last_success = read_last_success(self.state_root, self.pipeline)
            self.write()
        elif isinstance(event, RunFinished):
            self.status = event.result.status
            self.duration = time.monotonic() - self.started
            failure: Exception | None = None
            if self.status == "succeeded":
                self.last_success = time.time()
                try:
                    save_last_success(self.state_root, self.pipeline, self.run_id,
                                      self.last_success)
                except MetricsError as exc:
                    failure = exc  # the file below still says it; the warning says why
            self.write()
            if failure is not None:
                raise failure

    def _changed(self, ev: TaskChanged) -> None:
        new, counts = ev.new, self.counts
        self.states[ev.task_id] = new
        if new == TaskState.RUNNING:
            counts["started"] += 1
            self.running_since[ev.task_id] = ev.at
            return
        began = self.running_since.pop(ev.task_id, None)
        if ev.old == TaskState.RUNNING and began is not None and new != TaskState.PENDING:
            self.task_seconds[ev.task_id] = max(0.0, ev.at - began)
        if new == TaskState.COMPLETED:
            counts["completed"] += 1
            if ev.old == TaskState.PENDING:  # the one move of a cache hit (dagrun/cache/)
                counts["cached"] += 1
        elif new == TaskState.RETRYING:
            if ev.old == TaskState.RUNNING:
                counts["failed"] += 1
                counts["retries"] += 1
                self._timed_out(ev)
        elif new == TaskState.DEAD_LETTERED:
            counts["dead_lettered"] += 1
            if ev.old == TaskState.RUNNING:
                counts["failed"] += 1
                self._timed_out(ev)
        elif new == TaskState.SKIPPED:
            counts["skipped"] += 1
        elif new == TaskState.CANCELLED:
            counts["cancelled"] += 1

    def _timed_out(self, ev: TaskChanged) -> None:
        if ev.error is not None and ev.error.type == "TaskTimeout":
            self.counts["timeouts"] += 1

    def tick(self) -> None:
        if time.monotonic() >= self._next_write:
            self.write()

    def abort(self) -> None:
        """The run stopped on an error (e.g. exit 4): leave the file as it stood."""
        try:
            self.status = "aborted"
            self.duration = time.monotonic() - self.started
            self.write()
        except Exception:  # noqa: S110 - already stopping on another error
            pass

    # ------------------------------------------------------------ writing

    def write(self) -> None:
        from prometheus_client import CollectorRegistry, write_to_textfile

        t0 = time.monotonic()
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Collector(self))
        try:
            write_to_textfile(str(self.path), registry)
        except OSError as exc:
            raise MetricsError(f"cannot write {self.path}: {exc.strerror or exc}") from None
        done = time.monotonic()
        self._interval = max(WRITE_INTERVAL, WRITE_COST_FACTOR * (done - t0))
        self._next_write = done + self._interval

    def families(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        p = [self.pipeline]
        fam: CounterMetricFamily | GaugeMetricFamily
        counters = (
            ("tasks_started", "started", "Task attempts started"),
            ("tasks_completed", "completed", "Tasks completed"),
            ("tasks_failed", "failed", "Task attempts that failed (retried or dead-lettered)"),
            ("tasks_dead_lettered", "dead_lettered", "Tasks that used up their retries"),
            ("task_retries", "retries", "Retries scheduled after a failed attempt"),
            ("task_timeouts", "timeouts", "Task attempts stopped by their timeout"),
            ("tasks_skipped", "skipped", "Tasks skipped because an upstream task failed"),
            ("tasks_cancelled", "cancelled", "Tasks cancelled by a signal or the deadline"),
            ("tasks_cached", "cached", "Tasks completed by a cache hit, without an attempt"),
        )
        for name, key, doc in counters:
            fam = CounterMetricFamily(f"dagrun_{name}", f"{doc}, in this run or resume.",
                                      labels=["pipeline"])
            fam.add_metric(p, self.counts[key])
            yield fam
        by_state = dict.fromkeys((s.value for s in TaskState), 0)
        for state in self.states.values():
            by_state[state.value] += 1
        fam = GaugeMetricFamily("dagrun_tasks", "Tasks of the run by state (at the end: "
                                "their final state).", labels=["pipeline", "state"])
        for value, n in by_state.items():
            fam.add_metric([self.pipeline, value], n)
        yield fam
        fam = GaugeMetricFamily("dagrun_run_status", "1 for the run's status (running, "
                                "succeeded, failed, cancelled, aborted), 0 for the others.",
                                labels=["pipeline", "status"])
        for status in ("running", "succeeded", "failed", "cancelled", "aborted"):
            fam.add_metric([self.pipeline, status], 1 if status == self.status else 0)
        yield fam
        fam = GaugeMetricFamily("dagrun_run_info", "The run this file describes.",
                                labels=["pipeline", "run_id"])
        fam.add_metric([self.pipeline, self.run_id], 1)
        yield fam
        yield _gauge("dagrun_run_start_timestamp_seconds", "When this run (or resume) started, "
                     "Unix time.", p, self.started_wall)
        duration = self.duration if self.duration is not None else (
            time.monotonic() - self.started)
        yield _gauge("dagrun_run_duration_seconds", "How long this run (or resume) has run, "
                     "or ran.", p, duration)
        if self.last_success is not None:
            yield _gauge("dagrun_last_success_timestamp_seconds", "When a run of the pipeline "
                         "last succeeded, Unix time (kept across runs).", p, self.last_success)
        fam = GaugeMetricFamily("dagrun_task_duration_seconds", "Length of each task's last "
                                "finished attempt.", labels=["pipeline", "task"])
        for task, seconds in self.task_seconds.items():
            fam.add_metric([self.pipeline, task], seconds)
        yield fam


class _Collector:
    def __init__(self, listener: MetricsListener) -> None:
        self.listener = listener

    def collect(self) -> Iterator[Any]:
        return self.listener.families()


def _gauge(name: str, doc: str, labels: list[str], value: float) -> Any:
    from prometheus_client.core import GaugeMetricFamily

    fam = GaugeMetricFamily(name, doc, labels=["pipeline"])
    fam.add_metric(labels, value)
    return fam


# ---------------------------------------------------------------- last success


def _last_success_path(state_root: Path, pipeline: str) -> Path:
    # Pipeline names match the task-id pattern (spec/load.py): a safe file name.
    return state_root / "metrics" / pipeline


def read_last_success(state_root: Path, pipeline: str) -> float | None:
    """The time the pipeline last succeeded; None if unknown (or the record is
    corrupt: a bad checksum reads as absent)."""
    from dagrun.errors import DagrunError
    from dagrun.store.fs import read_state_file
    from dagrun.store.records import unframe

    try:
        doc = unframe(read_state_file(_last_success_path(state_root, pipeline)))
        value = doc["last_success"]
    except (OSError, ValueError, KeyError, TypeError, DagrunError):
        return None
    return float(value) if isinstance(value, int | float) else None


def save_last_success(state_root: Path, pipeline: str, run_id: str, when: float) -> None:
    from dagrun.errors import DagrunError
    from dagrun.store.fs import make_private_dir, write_atomic_raw
    from dagrun.store.records import frame

    path = _last_success_path(state_root, pipeline)
    try:
        make_private_dir(path.parent)
        write_atomic_raw(path, frame({"v": LAST_SUCCESS_VERSION, "pipeline": pipeline,
                                      "run_id": run_id, "last_success": when}))
    except OSError as exc:
        raise MetricsError(f"cannot write {path}: {exc.strerror or exc}") from None
    except DagrunError as exc:  # make_private_dir's StateIOError: not the run's state
        raise MetricsError(str(exc)) from None
