"""Dynamic fan-out (`map = "param"`) through the real CLI: outputs in order,
per-element retries and letters, resume after SIGKILL, `dlq retry TASK[i]`."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import orjson
from proc import start, wait_for

MAPPED = """
[pipeline]
name = "mapped"
workers = 2
[tasks.src]
call = "maptasks:numbers"
kwargs = {{ n = 5 }}
[tasks.sq]
call = "maptasks:square"
deps = ["src"]
inputs = {{ x = "src" }}
map = "x"
{extra}
[tasks.sum]
call = "maptasks:total"
deps = ["sq"]
inputs = {{ values = "sq" }}
"""


def test_map_over_an_upstream_output_keeps_element_order(cli, write):
    spec = write("m.toml", MAPPED.format(extra=""))
    r = cli("run", str(spec), "--json")
    assert r.code == 0, r.stderr
    sq = r.json["tasks"]["sq"]
    assert sq["output"] == [0, 1, 4, 9, 16]
    assert sq["elements"] == {"count": 5, "completed": 5, "failed": 0}
    assert r.json["tasks"]["sum"]["output"] == 30


def test_each_element_sees_its_index_and_its_own_attempt_number(cli, write):
    spec = write("w.toml", """
        [tasks.w]
        call = "maptasks:where"
        kwargs = { x = ["a", "b", "c"] }
        map = "x"
    """)
    r = cli("run", str(spec), "--json")
    assert r.code == 0, r.stderr
    assert r.json["tasks"]["w"]["output"] == [
        {"index": 0, "attempt": 1, "x": "a"}, {"index": 1, "attempt": 1, "x": "b"},
        {"index": 2, "attempt": 1, "x": "c"}]


def test_an_empty_list_completes_at_once_with_an_empty_list(cli, write):
    spec = write("e.toml", """
        [tasks.e]
        call = "maptasks:where"
        kwargs = { x = [] }
        map = "x"
        [tasks.after]
        call = "maptasks:total"
        deps = ["e"]
        inputs = { values = "e" }
    """)
    r = cli("run", str(spec), "--json")
    assert r.code == 0, r.stderr
    assert r.json["tasks"]["e"]["output"] == []
    assert r.json["tasks"]["after"]["output"] == 0


def test_one_element_failing_once_is_retried_alone(cli, write, tmp_path):
    marks = tmp_path / "marks"
    marks.mkdir()
    spec = write("f.toml", f"""
        [tasks.f]
        call = "maptasks:flaky"
        kwargs = {{ x = [0, 1, 2, 3], marks = "{marks}" }}
        map = "x"
        retries = 1
        retry_delay = 0
    """)
    r = cli("run", str(spec), "--json")
    assert r.code == 0, r.stderr
    assert r.json["tasks"]["f"]["output"] == [0, 1, 2, 3]


def test_an_element_failing_for_good_dead_letters_the_task_with_one_letter_each(cli, write):
    spec = write("b.toml", """
        [tasks.b]
        call = "maptasks:bad"
        kwargs = { x = [1, 2, 3, 4, 5], broken = [2, 4] }
        map = "x"
        [tasks.after]
        call = "maptasks:total"
        deps = ["b"]
        inputs = { values = "b" }
    """)
    r = cli("run", str(spec), "--json", "--run-id", "r1")
    assert r.code == 1, r.stderr
    b = r.json["tasks"]["b"]
    assert b["state"] == "dead_lettered"
    assert b["elements"]["count"] == 5 and b["elements"]["failed"] == 2
    assert "b[1]: ValueError: bad element 2" in b["error"]
    assert r.json["tasks"]["after"]["state"] == "skipped"
    letters = cli("dlq", "list", "--json")
    assert sorted(x["task"] for x in letters.json) == ["b[1]", "b[3]"]
    shown = cli("dlq", "show", "r1", "b[3]", "--json")
    assert shown.code == 0, shown.stderr
    assert "bad element 4" in orjson.dumps(shown.json).decode()


def test_map_allow_failures_leaves_null_slots_and_lists_the_errors(cli, write):
    spec = write("a.toml", """
        [tasks.b]
        call = "maptasks:bad"
        kwargs = { x = [1, 2, 3] }
        map = "x"
        map_allow_failures = true
    """)
    r = cli("run", str(spec), "--json")
    assert r.code == 0, r.stderr
    b = r.json["tasks"]["b"]
    assert b["output"] == [1, 2, None]
    assert b["elements"]["failed"] == 1
    assert b["elements"]["errors"] == [{"index": 2, "error": "ValueError: bad element 3"}]
    assert cli("dlq", "list", "--json").json == []


def test_a_value_that_is_not_a_list_fails_the_task_with_a_clear_message(cli, write):
    spec = write("n.toml", """
        [tasks.src]
        call = "maptasks:total"
        kwargs = { values = [1, 2] }
        [tasks.m]
        call = "maptasks:square"
        deps = ["src"]
        inputs = { x = "src" }
        map = "x"
    """)
    r = cli("run", str(spec), "--json")
    assert r.code == 1
    assert r.json["tasks"]["m"]["error"] == (
        "MapInputError: 'map' parameter 'x' is a number, not a list: a map runs the task "
        "once per element of a list")


def test_validate_rejects_a_map_naming_a_missing_parameter(cli, write):
    spec = write("v.toml", """
        [tasks.m]
        call = "maptasks:square"
        kwargs = { x = [1] }
        map = "y"
    """)
    r = cli("validate", str(spec))
    assert r.code == 2
    assert r.stderr.strip().splitlines()[-1] == (
        f"dagrun: error: {spec}: task 'm': 'map' names parameter 'y', which is neither in "
        "'inputs' nor in 'kwargs' (parameters given: x)")
    yaml = write("v.yaml", """
        tasks:
          m:
            call: maptasks:square
            kwargs: {x: 3}
            map: x
    """)
    r = cli("validate", str(yaml))
    assert r.code == 2
    assert "'map' names 'kwargs.x', which is a number, not a list" in r.stderr


def _log_lines(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def _recorded_elements(state: Path, run_id: str) -> int:
    from dagrun.store.journal import read_journal

    journal = state / "runs" / run_id / "journal"
    if not journal.exists():
        return 0
    return sum(len(r.get("el", ())) for r in read_journal(journal).records)


def test_sigkill_during_a_map_then_resume_reruns_only_unfinished_elements(cli, write,
                                                                          tmp_path):
    log = tmp_path / "log"
    state = Path(os.environ["DAGRUN_STATE_DIR"])
    spec = write("k.toml", f"""
        [pipeline]
        workers = 2
        [tasks.m]
        call = "maptasks:square"
        kwargs = {{ x = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], log = "{log}", sleep = 0.3 }}
        map = "x"
    """)
    proc = start("run", str(spec), "--run-id", "k1", "--json")
    # Killed once at least 4 elements are recorded as finished.
    wait_for(lambda: _recorded_elements(state, "k1") >= 4, timeout=60)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    finished = _recorded_elements(state, "k1")
    assert finished < 10
    r = cli("resume", "k1", "--json")
    assert r.code == 0, r.stderr
    assert r.json["tasks"]["m"]["output"] == [i * i for i in range(10)]
    runs = [line.split()[0] for line in _log_lines(log)]
    # Every element ran; the recorded ones exactly once (at most the 2 in flight
    # when killed ran twice).
    assert sorted(set(runs), key=int) == [str(i) for i in range(10)]
    assert len(runs) <= 10 + 2
    recorded = _recorded_indexes(state, "k1", before_resume=finished)
    for i in recorded:
        assert runs.count(str(i)) == 1, (i, runs)


def _recorded_indexes(state: Path, run_id: str, before_resume: int) -> list[int]:
    from dagrun.store.journal import read_journal

    out: list[int] = []
    for rec in read_journal(state / "runs" / run_id / "journal").records:
        for row in rec.get("el", ()):
            if len(out) < before_resume:
                out.append(row[0])
    return out


def test_dlq_retry_of_one_element_reruns_only_that_element(cli, write, tmp_path):
    marks = tmp_path / "marks"
    marks.mkdir()
    spec = write("d.toml", f"""
        [tasks.m]
        call = "maptasks:fixable"
        kwargs = {{ x = [0, 1, 2, 3], marks = "{marks}" }}
        map = "x"
    """)
    (marks / "fixed-0").touch()
    (marks / "fixed-2").touch()
    r = cli("run", str(spec), "--json", "--run-id", "d1")
    assert r.code == 1
    assert sorted(x["task"] for x in cli("dlq", "list", "--json").json) == ["m[1]", "m[3]"]
    (marks / "fixed-3").touch()
    r = cli("dlq", "retry", "d1", "m[3]", "--json")
    # m[1] is still failed, so the task stays dead-lettered, with one letter left.
    assert r.code == 1, r.stderr
    m = r.json["tasks"]["m"]
    assert m["state"] == "dead_lettered"
    assert m["elements"] == {"count": 4, "completed": 3, "failed": 1,
                             "errors": [{"index": 1, "error": "ValueError: not fixed: 1"}]}
    assert [x["task"] for x in cli("dlq", "list", "--json").json] == ["m[1]"]
    (marks / "fixed-1").touch()
    r = cli("dlq", "retry", "d1", "m[1]", "--json")
    assert r.code == 0, r.stderr
    assert r.json["tasks"]["m"]["output"] == [0, 1, 2, 3]
    assert cli("dlq", "list", "--json").json == []
