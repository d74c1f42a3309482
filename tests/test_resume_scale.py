"""Resume at scale: 100k tasks, half of them completed, must be dispatching
again within seconds (the snapshot is orjson, not TOML; repair is linear)."""

from __future__ import annotations

import os
import signal
import time

from dagrun import api
from dagrun.report import QuietReporter
from dagrun.spec import parse_document
from dagrun.store.journal import Journal
from dagrun.store.records import Chain
from dagrun.store.runs import StateDir

N = 100_000


class FirstDispatch(QuietReporter):
    """Notes when the first task is handed to a worker, then stops the run
    (SIGINT, as Ctrl-C would): the time to get going is what is measured."""

    started: float | None = None

    def task_started(self, task_id: str, attempt: int) -> None:
        if self.started is None:
            self.started = time.perf_counter()
            os.kill(os.getpid(), signal.SIGINT)

    def message(self, text: str) -> None:
        pass


def test_resume_of_100k_tasks_dispatches_within_seconds(tmp_path):
    doc = {"pipeline": {"name": "big", "workers": 2}, "tasks": {}}
    for i in range(N):
        task = {"call": "basic:const", "kwargs": {"value": i}}
        if i >= 100:
            task["deps"] = [f"t{i - 100}"]
        doc["tasks"][f"t{i}"] = task
    spec = parse_document(doc, source="big")
    state = tmp_path / "state"
    info = StateDir(state).create_run("big", spec, {"workers": 2, "durability": "fast",
                                                    "deadline": None})
    journal = Journal(info.journal_path, chain=Chain("big", info.meta["nonce"]))
    records = []
    for i in range(N // 2):
        records.append({"v": 2, "task": f"t{i}", "state": "running", "attempts": 1, "at": 0})
        records.append({"v": 2, "task": f"t{i}", "state": "completed", "attempts": 1,
                        "at": 0, "output": i, "attempt": {"attempt": 1, "started": 0,
                                                          "ended": 0, "error": None}})
    records += [{"v": 2, "task": f"t{i}", "state": "running", "attempts": 1, "at": 0}
                for i in range(N // 2, N // 2 + 2)]
    journal.append(records)
    journal.close()
    del doc, spec, records, info

    reporter = FirstDispatch()
    t0 = time.perf_counter()
    result = api.resume("big", state_dir=state, reporter=reporter)
    assert result.status == "cancelled"
    assert reporter.started is not None
    took = reporter.started - t0
    # Target 3 s; ~1.7 s measured on a 2-core machine. Doubled for a shared CI box.
    assert took < 6.0, f"first dispatch after {took:.1f}s"
    assert result.tasks["t0"].output == 0 and result.tasks["t49999"].state == "completed"
