"""An executor that goes away mid-run (ExecutorLost, exit 5): tasks in flight
are recorded cancelled, not failed or dead-lettered, their attempts do not
count, and `resume` finishes the run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from test_scheduler import Clock, FakeExecutor, make

from dagrun.errors import ExecutorLost
from dagrun.events import RunFinished
from dagrun.model import Attempt, AttemptResult
from dagrun.pipeline import Pipeline
from dagrun.store.journal import read_journal


class LosingFake(FakeExecutor):
    """Loses the cluster on the first poll after `after` results came back
    while attempts are still running."""

    def __init__(self, clock: Clock, outcome: Any, slots: int, after: int) -> None:
        super().__init__(clock, outcome, slots)
        self.after = after
        self.returned = 0

    def poll(self, timeout: float | None) -> list[AttemptResult]:
        if self.returned >= self.after and self.running:
            raise ExecutorLost("the Dask scheduler at tcp://127.0.0.1:1 went away")
        results = super().poll(timeout)
        self.returned += len(results)
        return results


def test_in_flight_tasks_are_cancelled_not_failed(tmp_path: Path) -> None:
    p = Pipeline("lost", defaults={"retries": 0})
    p.task("quick", "m:f")  # completes before the loss
    p.task("slow1", "m:f", deps=["quick"])
    p.task("slow2", "m:f", deps=["quick"])
    p.task("after", "m:f", deps=["slow1", "slow2"])
    p.task("m", "m:f", deps=["quick"], map="x", kwargs={"x": [1, 2, 3]})

    def outcome(attempt: Attempt, _now: float) -> Any:
        return attempt.task_id

    sched, ex, rec, _ = make(tmp_path, p, outcome, slots=3)
    sched.executor = ex = LosingFake(ex.clock, outcome, 3, after=1)
    with pytest.raises(ExecutorLost) as info:
        sched.run()
    message = str(info.value)
    assert "went away" in message and "dagrun resume r1" in message
    assert "\n" not in message
    states = {tid: st.state.value for tid, st in sched.status.items()}
    assert states == {"quick": "completed", "slow1": "cancelled", "slow2": "cancelled",
                      "after": "cancelled", "m": "cancelled"}
    # The attempts cut short do not count, and nothing was dead-lettered or failed.
    assert sched.status["slow1"].attempts == sched.status["slow2"].attempts == 0
    records = read_journal(tmp_path / "journal").records
    assert not [r for r in records if r.get("state") in ("failed", "dead_lettered")]
    last = {r["task"]: r for r in records if "task" in r}
    assert last["slow1"]["state"] == "cancelled"
    assert last["slow1"]["reason"] == "cancelled (executor lost)"
    run_records = [r for r in records if r.get("kind") == "run"]
    assert run_records[-1]["status"] == "cancelled"
    assert run_records[-1]["reason"] == "executor lost"
    # The display is not told the run finished: the exit-5 line says what happened.
    assert not [e for e in rec.events if isinstance(e, RunFinished)]


# `dagrun` whose local executor is the losing one (tests/tasks/losing.py).
LOSING_DAGRUN = """
import sys
from dagrun.executor import base
base.BACKENDS["local"] = "losing:LosingExecutor"
from dagrun.cli import main
sys.argv[0] = "dagrun"
main()
"""

SPEC = """
[pipeline]
name = "lostrun"
workers = 2
[tasks.first]
call = "sidefx:step"
kwargs = {{ log = "{log}", name = "first", k = 1 }}
[tasks.second]
call = "sidefx:step"
deps = ["first"]
inputs = {{ x = "first" }}
kwargs = {{ log = "{log}", name = "second", k = 10, sleep = {sleep} }}
[tasks.third]
call = "sidefx:step"
deps = ["second"]
inputs = {{ x = "second" }}
kwargs = {{ log = "{log}", name = "third", k = 100 }}
"""


def test_exit_5_one_line_then_resume_finishes(cli, write, tmp_path):
    from proc import wait_for
    from tasks.sidefx import runs_of

    log = tmp_path / "log"
    marker = tmp_path / "lose-now"
    spec = write("lost.toml", SPEC.format(log=log, sleep=30))
    env = {**os.environ, "DAGRUN_TEST_LOSE_WHEN": str(marker)}
    proc = subprocess.Popen([sys.executable, "-c", LOSING_DAGRUN, "run", str(spec),
                             "--run-id", "r1", "--json"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    wait_for(lambda: "second" in runs_of(log), timeout=60)  # generous: a loaded machine
    marker.touch()
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 5, err
    assert out == b""  # exit 5 prints nothing on stdout, even with --json
    lines = err.decode().strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("dagrun: error: lost the cluster") and "dagrun resume r1" in lines[0]

    status = cli("status", "r1", "--json")
    assert status.json["status"] == "cancelled"
    assert status.json["tasks"]["second"]["state"] == "cancelled"
    assert status.json["tasks"]["second"]["attempts"] == 0

    spec.write_text(SPEC.format(log=log, sleep=0))
    r = cli("resume", "r1", "--json", "--spec", str(spec))
    assert r.code == 0, r.stderr
    assert {t: v["output"] for t, v in r.json["tasks"].items()} == {
        "first": 1, "second": 11, "third": 111}
    assert r.json["tasks"]["second"]["attempts"] == 1  # the cut-short attempt did not count
    assert runs_of(log)["first"] == 1  # completed before the loss: never again
