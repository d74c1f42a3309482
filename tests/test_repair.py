"""The repair rules on journal records, without processes (store/repair.py)."""

from __future__ import annotations

from dagrun.model import TaskState
from dagrun.spec import parse_document
from dagrun.store.records import Chain, short_digest, unframe
from dagrun.store.repair import MAX_LINES_PER_KIND, fold, repair

SPEC = parse_document({"tasks": {
    "a": {"call": "basic:const"},
    "b": {"call": "basic:const", "deps": ["a"]},
    "c": {"call": "basic:const", "deps": ["b"]},
    "d": {"call": "basic:const"},
}})


def rec(task, state, attempts=1, **extra):
    return {"v": 2, "task": task, "state": state, "attempts": attempts, "at": 0.0, **extra}


def sealed(records, chain=None):
    """The records as a journal of run r holds them: (records, digests)."""
    chain = chain or Chain("r", "n0nce")
    lines = [chain.seal(dict(r)) for r in records]
    return [unframe(line) for line in lines], [short_digest(line) for line in lines]


def folded(records, tasks=SPEC.tasks, **kw):
    recs, digests = sealed(records)
    return fold(recs, digests, tasks, run_id="r", nonce="n0nce", **kw)


def states(repaired):
    return {tid: (st.state.value, st.attempts) for tid, st in repaired.statuses.items()}


def test_cut_short_attempts_do_not_count():
    records = [rec("a", "running", 1), rec("a", "retrying", 1, error={"type": "E"}),
               rec("a", "running", 2),  # killed here: only 1 attempt really failed
               rec("d", "retrying", 2, error={"type": "E", "message": "m"})]
    r = repair(SPEC, folded(records))
    assert states(r)["a"] == ("pending", 1)
    assert states(r)["d"] == ("pending", 2)
    assert r.statuses["d"].error.message == "m"
    assert any("repaired a: running -> pending" in line for line in r.lines)


def test_completed_stays_with_its_output_and_cancelled_runs_again():
    records = [rec("a", "completed", 1, output=[1, 2]), rec("b", "cancelled", 0),
               rec("c", "cancelled", 0), {"v": 2, "kind": "run", "status": "cancelled"}]
    r = repair(SPEC, folded(records))
    assert states(r) == {"a": ("completed", 1), "b": ("pending", 0), "c": ("pending", 0),
                         "d": ("pending", 0)}
    assert r.statuses["a"].output == [1, 2]
    assert r.previously == "cancelled" and r.changed


def test_dead_letters_stay_unless_retried_and_take_their_skips_along():
    records = [rec("a", "dead_lettered", 3, error={"type": "E"}),
               rec("b", "skipped", 0, reason="a"), rec("c", "skipped", 0, reason="a"),
               rec("d", "completed", 1, output=None)]
    kept = repair(SPEC, folded(records))
    assert states(kept) == {"a": ("dead_lettered", 3), "b": ("skipped", 0),
                            "c": ("skipped", 0), "d": ("completed", 1)}
    assert kept.lines == [] and not kept.changed
    retried = repair(SPEC, folded(records), retry={"a"})
    assert states(retried) == {"a": ("pending", 0), "b": ("pending", 0), "c": ("pending", 0),
                               "d": ("completed", 1)}


def test_a_skip_whose_upstream_runs_again_is_undone():
    # a's dead-letter record was lost (torn) while b's skip record made it.
    records = [rec("a", "running", 1), rec("b", "skipped", 0, reason="a")]
    r = repair(SPEC, folded(records))
    assert states(r)["b"] == ("pending", 0)


def test_changed_tasks_and_their_descendants_run_afresh():
    records = [rec(t, "completed", 1, output=1) for t in "abcd"]
    r = repair(SPEC, folded(records), changed={"b"})
    assert states(r) == {"a": ("completed", 1), "b": ("pending", 0), "c": ("pending", 0),
                         "d": ("completed", 1)}


def test_malformed_records_are_ignored_and_counted():
    records = [rec("a", "completed", 1),  # no output: not a record dagrun writes
               rec("b", "exploded", 1), {"v": 1, "task": "c", "state": "completed",
                                         "attempts": 1, "output": 5},
               rec("nosuchtask", "completed", 1, output=1)]
    f = folded(records)
    assert f.malformed == 3
    assert all(st.state == TaskState.PENDING for st in repair(SPEC, f).statuses.values())


def test_many_repairs_are_tallied_not_listed():
    n = MAX_LINES_PER_KIND + 30
    spec = parse_document({"tasks": {f"t{i}": {"call": "basic:const"} for i in range(n)}})
    r = repair(spec, folded([rec(f"t{i}", "running", 1) for i in range(n)], spec.tasks))
    assert len(r.lines) == MAX_LINES_PER_KIND + 1
    assert r.lines[-1].startswith("repaired 30 more tasks: running -> pending")


def test_foreign_replayed_and_superseded_records_never_win():
    mine = [rec("a", "running", 1), rec("a", "completed", 1, output="A")]
    recs, digests = sealed(mine)
    other, other_digests = sealed([rec("a", "completed", 1, output="B")], Chain("r", "other"))
    # Another run's line appended, and a replay of a's running record: neither counts.
    f = fold(recs + other + recs[:1], digests + other_digests + digests[:1], SPEC.tasks,
             run_id="r", nonce="n0nce")
    assert f.foreign == 1 and f.last["a"]["output"] == "A"
    assert f.broken == {"a": 4}
    # The running record lost: the completed one after it is not trusted.
    f = fold(recs[1:], digests[1:], SPEC.tasks, run_id="r", nonce="n0nce")
    assert "a" not in f.last and f.broken == {"a": 1}
    # An anchor (resume --spec) supersedes every older record of its task.
    f = fold(recs, digests, SPEC.tasks, run_id="r", nonce="n0nce", anchors={"a": "fresh"})
    assert "a" not in f.last and f.heads["a"] == "fresh" and not f.broken


def test_records_with_a_valid_checksum_but_wrong_types_are_malformed():
    bad = [rec("a", "retrying", 1, error="boom"), rec("b", "retrying", 1, retry_at=1e300),
           rec("c", "completed", True, output=1), rec("d", "running", 1, number="1"),
           rec("d", "failed", 1, attempt={"attempt": "x"})]
    f = folded(bad)
    assert f.malformed == 5 and not f.last
