"""The repair rules on journal records, without processes (store/repair.py)."""

from __future__ import annotations

from dagrun.model import TaskState
from dagrun.spec import parse_document
from dagrun.store.repair import MAX_LINES_PER_KIND, fold, repair

SPEC = parse_document({"tasks": {
    "a": {"call": "basic:const"},
    "b": {"call": "basic:const", "deps": ["a"]},
    "c": {"call": "basic:const", "deps": ["b"]},
    "d": {"call": "basic:const"},
}})


def rec(task, state, attempts=1, **extra):
    return {"v": 1, "task": task, "state": state, "attempts": attempts, "at": 0.0, **extra}


def states(repaired):
    return {tid: (st.state.value, st.attempts) for tid, st in repaired.statuses.items()}


def test_cut_short_attempts_do_not_count():
    records = [rec("a", "running", 1), rec("a", "retrying", 1, error={"type": "E"}),
               rec("a", "running", 2),  # killed here: only 1 attempt really failed
               rec("d", "retrying", 2, error={"type": "E", "message": "m"})]
    r = repair(SPEC, fold(records, SPEC.tasks))
    assert states(r)["a"] == ("pending", 1)
    assert states(r)["d"] == ("pending", 2)
    assert r.statuses["d"].error.message == "m"
    assert any("repaired a: running -> pending" in line for line in r.lines)


def test_completed_stays_with_its_output_and_cancelled_runs_again():
    records = [rec("a", "completed", 1, output=[1, 2]), rec("b", "cancelled", 0),
               rec("c", "cancelled", 0), {"v": 1, "kind": "run", "status": "cancelled"}]
    r = repair(SPEC, fold(records, SPEC.tasks))
    assert states(r) == {"a": ("completed", 1), "b": ("pending", 0), "c": ("pending", 0),
                         "d": ("pending", 0)}
    assert r.statuses["a"].output == [1, 2]
    assert r.previously == "cancelled" and r.changed


def test_dead_letters_stay_unless_retried_and_take_their_skips_along():
    records = [rec("a", "dead_lettered", 3, error={"type": "E"}),
               rec("b", "skipped", 0, reason="a"), rec("c", "skipped", 0, reason="a"),
               rec("d", "completed", 1, output=None)]
    kept = repair(SPEC, fold(records, SPEC.tasks))
    assert states(kept) == {"a": ("dead_lettered", 3), "b": ("skipped", 0),
                            "c": ("skipped", 0), "d": ("completed", 1)}
    assert kept.lines == [] and not kept.changed
    retried = repair(SPEC, fold(records, SPEC.tasks), retry={"a"})
    assert states(retried) == {"a": ("pending", 0), "b": ("pending", 0), "c": ("pending", 0),
                               "d": ("completed", 1)}


def test_a_skip_whose_upstream_runs_again_is_undone():
    # a's dead-letter record was lost (torn) while b's skip record made it.
    records = [rec("a", "running", 1), rec("b", "skipped", 0, reason="a")]
    r = repair(SPEC, fold(records, SPEC.tasks))
    assert states(r)["b"] == ("pending", 0)


def test_changed_tasks_and_their_descendants_run_afresh():
    records = [rec(t, "completed", 1, output=1) for t in "abcd"]
    r = repair(SPEC, fold(records, SPEC.tasks), changed={"b"})
    assert states(r) == {"a": ("completed", 1), "b": ("pending", 0), "c": ("pending", 0),
                         "d": ("completed", 1)}


def test_malformed_records_are_ignored_and_counted():
    records = [rec("a", "completed", 1),  # no output: not a record dagrun writes
               rec("b", "exploded", 1), {"v": 2, "task": "c", "state": "completed",
                                         "attempts": 1, "output": 5},
               rec("nosuchtask", "completed", 1, output=1)]
    folded = fold(records, SPEC.tasks)
    assert folded.malformed == 3
    assert all(st.state == TaskState.PENDING for st in repair(SPEC, folded).statuses.values())


def test_many_repairs_are_tallied_not_listed():
    n = MAX_LINES_PER_KIND + 30
    spec = parse_document({"tasks": {f"t{i}": {"call": "basic:const"} for i in range(n)}})
    r = repair(spec, fold([rec(f"t{i}", "running", 1) for i in range(n)], spec.tasks))
    assert len(r.lines) == MAX_LINES_PER_KIND + 1
    assert r.lines[-1].startswith("repaired 30 more tasks: running -> pending")
