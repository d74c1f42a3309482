"""Trigger rules and condition skips in the scheduler loop alone (fake executor,
fake clocks: see test_scheduler.py). Every rule against upstreams that
completed, were dead-lettered, or were skipped by a condition, and the run's
status / exit code in each case."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from test_scheduler import FakeExecutor, make

from dagrun.model import Attempt, AttemptResult, TaskState
from dagrun.pipeline import Pipeline
from dagrun.store.journal import read_journal


class CondExecutor(FakeExecutor):
    """A task whose `when` names "m:no" reports condition false, as a worker does."""

    def poll(self, timeout: float | None) -> list[AttemptResult]:
        out = []
        for r in super().poll(timeout):
            when = self._when.pop((r.task_id, r.number), None)
            if when == "m:no" and r.error is None:
                r = AttemptResult(r.task_id, r.number, condition_false=True)
            out.append(r)
        return out

    def submit(self, attempt: Attempt) -> None:
        self._when[(attempt.task_id, attempt.number)] = attempt.when
        super().submit(attempt)


def run(tmp_path: Path, p: Pipeline, fails: set[str] = frozenset()) -> tuple[Any, dict]:
    seen: dict[str, dict[str, Any]] = {}

    def outcome(a: Attempt, _now: float) -> Any:
        seen[a.task_id] = dict(a.kwargs)
        if a.task_id in fails:
            raise RuntimeError("boom")
        return a.task_id

    sched, ex, _, clock = make(tmp_path, p, outcome, slots=4)
    cond = CondExecutor(clock, outcome, 4)
    cond._when = {}
    sched.executor = cond
    return sched.run(), seen


UPSTREAMS = {  # how the two upstreams end
    "ok_ok": ((), ()),
    "ok_dead": ((), ("b",)),
    "dead_dead": ((), ("a", "b")),
    "ok_cond": (("b",), ()),
    "cond_cond": (("a", "b"), ()),
    "dead_cond": (("b",), ("a",)),
}
# rule -> upstream case -> (state of "t", run status)
EXPECT = {
    "all_success": {"ok_ok": ("completed", "succeeded"), "ok_dead": ("skipped", "failed"),
                    "dead_dead": ("skipped", "failed"), "ok_cond": ("skipped", "succeeded"),
                    "cond_cond": ("skipped", "succeeded"), "dead_cond": ("skipped", "failed")},
    "all_done": {case: ("completed", "failed" if "dead" in case else "succeeded")
                 for case in UPSTREAMS},
    "one_failed": {"ok_ok": ("skipped", "succeeded"), "ok_dead": ("completed", "failed"),
                   "dead_dead": ("completed", "failed"), "ok_cond": ("skipped", "succeeded"),
                   "cond_cond": ("skipped", "succeeded"), "dead_cond": ("completed", "failed")},
    "none_failed": {"ok_ok": ("completed", "succeeded"), "ok_dead": ("skipped", "failed"),
                    "dead_dead": ("skipped", "failed"), "ok_cond": ("completed", "succeeded"),
                    "cond_cond": ("completed", "succeeded"), "dead_cond": ("skipped", "failed")},
    "one_success": {"ok_ok": ("completed", "succeeded"), "ok_dead": ("completed", "failed"),
                    "dead_dead": ("skipped", "failed"), "ok_cond": ("completed", "succeeded"),
                    "cond_cond": ("skipped", "succeeded"), "dead_cond": ("skipped", "failed")},
}


@pytest.mark.parametrize("rule", list(EXPECT))
@pytest.mark.parametrize("case", list(UPSTREAMS))
def test_rule_against_upstreams(tmp_path: Path, rule: str, case: str) -> None:
    conds, dead = UPSTREAMS[case]
    p = Pipeline("rules")
    for up in ("a", "b"):
        p.task(up, "m:f", **({"when": "m:no"} if up in conds else {}))
    p.task("t", "m:f", inputs={"x": "a", "y": "b"}, trigger=rule)
    p.task("after", "m:f", deps=["t"])
    result, seen = run(tmp_path, p, set(dead))
    state, status = EXPECT[rule][case]
    assert (result.tasks["t"].state, result.status) == (state, status)
    assert result.exit_code == (0 if status == "succeeded" else 1)
    if state == "completed":
        # An upstream that did not complete hands on null.
        assert seen["t"] == {"x": "a" if case.startswith("ok") else None,
                             "y": "b" if case == "ok_ok" else None}
        assert result.tasks["after"].state == "completed"
    else:
        assert "t" not in seen
        # Skipped downstream of a skip: failure-caused or benign like it.
        assert result.tasks["after"].state == "skipped"
        # A failure-caused skip's reason is the dead-lettered task's id.
        failure = " " not in result.tasks["t"].reason
        assert (" " not in result.tasks["after"].reason) == failure


def test_failure_skip_keeps_its_message_and_benign_skips_say_why(tmp_path: Path) -> None:
    p = Pipeline("msgs")
    p.task("a", "m:f")
    p.task("b", "m:f", deps=["a"])
    p.task("c", "m:f", deps=["b"])
    p.task("alert", "m:f", deps=["c"], trigger="one_failed")
    p.task("cond", "m:f", when="m:no")
    p.task("below", "m:f", deps=["cond"])
    result, _ = run(tmp_path, p, {"a"})
    t = result.tasks
    assert t["b"].error == "skipped: upstream task 'a' failed"
    assert t["c"].error == "skipped: upstream task 'a' failed"
    assert t["alert"].state == "completed"
    assert t["cond"].error == "skipped: condition false" and t["cond"].attempts == 0
    assert t["below"].error == "skipped: upstream 'cond' was skipped"
    assert result.to_dict()["tasks"]["cond"]["reason"] == "condition false"
    assert result.status == "failed"


def test_clean_run_with_only_benign_skips_succeeds(tmp_path: Path) -> None:
    p = Pipeline("clean")
    p.task("a", "m:f")
    p.task("alert", "m:f", deps=["a"], trigger="one_failed")
    p.task("cond", "m:f", deps=["a"], when="m:no")
    p.task("below", "m:f", deps=["cond"])
    result, _ = run(tmp_path, p)
    assert [result.tasks[t].state for t in ("a", "alert", "cond", "below")] == [
        "completed", "skipped", "skipped", "skipped"]
    assert result.status == "succeeded" and result.exit_code == 0
    # The journal records which skips are benign (resume needs it).
    recs = {r["task"]: r for r in read_journal(tmp_path / "journal").records
            if r.get("state") == "skipped"}
    assert all(recs[t].get("benign") is True for t in ("alert", "cond", "below"))


def test_one_success_waits_for_every_upstream(tmp_path: Path) -> None:
    p = Pipeline("wait")
    p.task("fast", "m:f")
    p.task("slow", "m:f", deps=["fast"])
    p.task("t", "m:f", deps=["fast", "slow"], trigger="one_success")
    seen = []

    def outcome(a: Attempt, _now: float) -> Any:
        seen.append(a.task_id)
        return 1

    sched, _, rec, _ = make(tmp_path, p, outcome, slots=4)
    sched.run()
    assert seen == ["fast", "slow", "t"]


def test_condition_false_uses_no_attempt(tmp_path: Path) -> None:
    p = Pipeline("cond")
    p.task("t", "m:f", when="m:no", retries=2, retry_delay=1)
    result, _ = run(tmp_path, p)
    assert result.tasks["t"].attempts == 0
    assert result.tasks["t"].state == TaskState.SKIPPED.value


def test_a_long_chain_of_skips_does_not_recurse(tmp_path: Path) -> None:
    p = Pipeline("chain")
    p.task("t0", "m:f", when="m:no")
    for i in range(1, 1500):
        p.task(f"t{i}", "m:f", deps=[f"t{i - 1}"])
    result, _ = run(tmp_path, p)
    assert result.tasks["t1499"].state == "skipped" and result.status == "succeeded"
