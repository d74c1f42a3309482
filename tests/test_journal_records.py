"""The journal as a unit: its last sync, and records of any shape fed to the
loader and to resume (only documented errors may come out)."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dagrun import api
from dagrun.errors import DagrunError, StateIOError
from dagrun.store.journal import Journal, read_journal
from dagrun.store.records import Chain, frame
from dagrun.store.repair import fold, repair
from dagrun.store.runs import StateDir


def test_a_failed_final_sync_is_a_state_io_error(tmp_path):
    journal = Journal(tmp_path / "journal", "atomic")
    journal.append([{"task": "a", "state": "pending"}])  # unsynced: within the first second
    os.close(journal._fd)  # the descriptor goes from under it: the final fsync fails (EBADF)
    with pytest.raises(StateIOError, match="cannot sync"):
        journal.close()
    journal.close()  # closed once and for all: a second close is a no-op


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats()
    | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner,
                                                                max_size=3),
    max_leaves=6)
STATES = st.sampled_from(["pending", "running", "retrying", "completed", "failed",
                          "dead_lettered", "skipped", "cancelled"])
ERROR = st.fixed_dictionaries({"type": st.text(max_size=4) | JSON},
                              optional={"message": JSON, "types": JSON, "exit_code": JSON,
                                        "signal": JSON, "traceback": JSON})
RECORD = st.fixed_dictionaries(
    {"v": st.just(2) | JSON, "task": st.sampled_from(["a", "b", "zz"]) | JSON,
     "state": STATES | JSON, "attempts": st.integers(-2, 5) | JSON},
    optional={"output": JSON, "error": ERROR | JSON, "reason": JSON, "number": JSON,
              "retry_at": st.floats() | JSON,
              "attempt": st.fixed_dictionaries({"attempt": st.integers(-1, 5) | JSON},
                                               optional={"started": JSON, "ended": JSON,
                                                         "error": ERROR | JSON}) | JSON,
              "kind": st.just("run") | JSON, "status": JSON})
RECORDS = st.lists(RECORD, max_size=8)
SPEC = """
[tasks.a]
call = "basic:const"
kwargs = { value = 1 }
[tasks.b]
call = "basic:add"
deps = ["a"]
inputs = { x = "a" }
"""


def _journal_bytes(records, run_id, nonce):
    chain = Chain(run_id, nonce)
    out = []
    for rec in records:
        if isinstance(rec.get("task"), str):
            out.append(chain.seal(rec))  # bound and chained: only the shape can be wrong
        else:
            out.append(frame({**rec, "run": run_id, "nonce": nonce}))
    return b"".join(out)


@pytest.fixture
def made_run(write, tmp_path):
    spec = write("p.toml", SPEC)
    assert api.run(str(spec), run_id="h", state_dir=tmp_path / "state").status == "succeeded"
    return StateDir(tmp_path / "state").open_run("h")


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(records=RECORDS)
def test_the_loader_takes_any_record(made_run, records):
    info = made_run
    info.journal_path.write_bytes(_journal_bytes(records, "h", info.meta["nonce"]))
    contents = read_journal(info.journal_path)
    folded = fold(contents.records, contents.digests, info.spec.tasks, run_id="h",
                  nonce=info.meta["nonce"], lines=contents.lines)
    repair(info.spec, folded)


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(records=RECORDS)
def test_resume_takes_any_record(made_run, tmp_path, records):
    info = made_run
    info.journal_path.write_bytes(_journal_bytes(records, "h", info.meta["nonce"]))
    try:
        result = api.resume("h", state_dir=tmp_path / "state")
    except DagrunError:
        return  # documented: one line and an exit code
    assert result.status == "succeeded"
    assert result.tasks["b"].output == 1


def test_seal_fast_path_writes_the_bytes_of_the_general_one() -> None:
    # Chain.seal splices the pre-encoded run/nonce tail into a task record (issue 9:
    # per-record cost); the bytes and the chain must be exactly those of setting
    # the fields on the dict and framing it.
    import copy

    from dagrun.store.records import Chain, unframe

    recs = [{"v": 2, "task": "a", "state": "running", "attempts": 1, "at": 1.5, "number": 1},
            {"v": 2, "task": "a", "state": "completed", "attempts": 1, "at": 2.5,
             "output": {"x": [1, "é", None]}, "attempt": {"log": {"file": "w", "start": 0}}},
            {"v": 2, "task": "b", "state": "running", "attempts": 1, "at": 1.5},
            {"v": 2, "run_started": 1.0}]
    fast, general = Chain('r"1', "n0nce"), Chain('r"1', "n0nce")
    for rec in recs:
        sealed = fast.seal(copy.deepcopy(rec))
        assert sealed == general._seal_dict(copy.deepcopy(rec), rec.get("task"))
        assert unframe(sealed)["run"] == 'r"1'
    assert fast.heads == general.heads and set(fast.heads) == {"a", "b"}
