"""Partial runs through the CLI: `run --only/--from/--until` (dagrun/selection.py).
What ran is read from the side-effect log each task appends to."""

from __future__ import annotations

import shutil
import signal
from pathlib import Path

import pytest
from proc import start, wait_for
from tasks.sidefx import runs_of

from dagrun import api

#   a -> b -> d
#   a -> c -> d      outputs: a 1, b 11, c 101, d 1112
DIAMOND = """
[pipeline]
name = "diamond"
workers = 2
[tasks.a]
call = "sidefx:step"
kwargs = {{ log = "{log}", name = "a", k = 1 }}
[tasks.b]
call = "sidefx:step"
deps = ["a"]
inputs = {{ x = "a" }}
kwargs = {{ log = "{log}", name = "b", k = 10, sleep = {sleep} }}
[tasks.c]
call = "sidefx:step"
deps = ["a"]
inputs = {{ x = "a" }}
kwargs = {{ log = "{log}", name = "c", k = {kc} }}
[tasks.d]
call = "sidefx:step"
deps = ["b", "c"]
inputs = {{ x = "b", y = "c" }}
kwargs = {{ log = "{log}", name = "d", k = 1000 }}
"""


@pytest.fixture
def diamond(write, tmp_path):
    log = tmp_path / "log"

    def make(sleep: float = 0, kc: int = 100) -> Path:
        return write("diamond.toml", DIAMOND.format(log=log, sleep=sleep, kc=kc))

    make.log = log
    return make


def _outputs(result) -> dict:
    return {t: v["output"] for t, v in result.json["tasks"].items()}


def test_only_after_a_full_run_runs_that_task_with_the_earlier_outputs(cli, diamond):
    spec = diamond()
    full = cli("run", str(spec), "--json", "--run-id", "full")
    assert full.code == 0, full.stderr
    spec = diamond(kc=200)  # c's edit shows it ran again, on a's output from run `full`
    r = cli("run", str(spec), "--only", "c", "--json")
    assert r.code == 0, r.stderr
    assert _outputs(r) == {"c": 201}
    assert runs_of(diamond.log) == {"a": 1, "b": 1, "c": 2, "d": 1}
    assert "taking a from run full" in r.stderr
    # d takes b from `full` and c from the newest run where c completed (the --only run).
    r = cli("run", str(spec), "--only", "d", "--json")
    assert _outputs(r) == {"d": 1000 + 11 + 201}


def test_only_without_an_earlier_run_runs_the_needed_upstreams_and_says_so(cli, diamond):
    r = cli("run", str(diamond()), "--only", "b", "--json")
    assert r.code == 0, r.stderr
    assert _outputs(r) == {"a": 1, "b": 11}
    assert runs_of(diamond.log) == {"a": 1, "b": 1}
    assert "upstream a has no completed run: running it too" in r.stderr


def test_from_reruns_the_downstream_closure(cli, diamond):
    spec = diamond()
    assert cli("run", str(spec), "--json").code == 0
    r = cli("run", str(spec), "--from", "b", "--json")
    assert r.code == 0, r.stderr
    assert _outputs(r) == {"b": 11, "d": 1112}
    assert runs_of(diamond.log) == {"a": 1, "b": 2, "c": 1, "d": 2}


def test_until_runs_the_upstream_closure_only(cli, diamond):
    r = cli("run", str(diamond()), "--until", "b", "--json")
    assert r.code == 0, r.stderr
    assert _outputs(r) == {"a": 1, "b": 11}
    assert runs_of(diamond.log) == {"a": 1, "b": 1}
    assert "no completed run" not in r.stderr  # nothing outside was needed


def test_from_and_until_run_what_lies_between_plus_only(cli, diamond):
    spec = diamond()
    assert cli("run", str(spec), "--json").code == 0
    r = cli("run", str(spec), "--from", "a", "--until", "b", "--only", "c", "--json")
    assert r.code == 0, r.stderr
    assert _outputs(r) == {"a": 1, "b": 11, "c": 101}
    r = cli("run", str(spec), "--from", "d", "--until", "b", "--json")
    assert r.code == 2 and r.json is None
    assert "selects no task" in r.stderr


@pytest.mark.parametrize("flag", ["--only", "--from", "--until"])
def test_an_unknown_task_id_is_one_line_exit_2_with_a_suggestion(cli, diamond, flag):
    r = cli("run", str(diamond()), flag, "bb", "--json")
    assert r.code == 2
    assert r.stdout == ""
    assert r.stderr.strip().splitlines() == [
        f"dagrun: error: {flag} bb: pipeline 'diamond' has no task 'bb' (did you mean 'b'?)"]
    assert not diamond.log.exists()


def test_json_has_only_the_selected_tasks_and_outside_failures_do_not_count(cli, write,
                                                                            tmp_path):
    log, flag = tmp_path / "log", tmp_path / "flag"
    flag.touch()
    spec = write("p.toml", f"""
        [pipeline]
        name = "p"
        [tasks.a]
        call = "sidefx:step"
        kwargs = {{ log = "{log}", name = "a" }}
        [tasks.bad]
        call = "sidefx:fail_if"
        kwargs = {{ log = "{log}", name = "bad", flag = "{flag}" }}
        [tasks.b]
        call = "sidefx:step"
        deps = ["a"]
        inputs = {{ x = "a" }}
        kwargs = {{ log = "{log}", name = "b", k = 10 }}
    """)
    full = cli("run", str(spec), "--json")
    assert full.code == 1 and full.json["tasks"]["bad"]["state"] == "dead_lettered"
    r = cli("run", str(spec), "--only", "b", "--json")
    assert r.code == 0, r.stderr
    assert r.json["status"] == "succeeded"
    assert set(r.json["tasks"]) == {"b"}
    assert "bad" not in r.stderr.replace("partial run", "")  # not in the display either
    status = cli("status", r.json["run_id"], "--json")
    assert set(status.json["tasks"]) == {"b"}
    assert status.json["selection"]["only"] == ["b"]
    assert status.json["selection"]["taken_from"] == {"a": full.json["run_id"]}
    listed = {v["run_id"]: v["partial"] for v in cli("runs", "--json").json}
    assert listed == {full.json["run_id"]: False, r.json["run_id"]: True}
    assert "(partial)" in cli("runs").stdout


def test_sigkill_during_a_partial_run_then_resume_completes_the_same_selection(
        cli, diamond, tmp_path):
    spec = diamond()
    assert cli("run", str(spec), "--json", "--run-id", "full").code == 0
    spec = diamond(sleep=2)
    proc = start("run", str(spec), "--from", "b", "--run-id", "part", "--json")
    wait_for(lambda: runs_of(diamond.log).get("b") == 2)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    # The run keeps what it took: it resumes without the run it took it from.
    shutil.rmtree(tmp_path / "state" / "runs" / "full")
    r = cli("resume", "part", "--json")
    assert r.code == 0, r.stderr
    assert _outputs(r) == {"b": 11, "d": 1112}
    counts = runs_of(diamond.log)
    assert counts["a"] == 1 and counts["c"] == 1  # outside the selection: never again
    assert counts["d"] == 2


def test_resume_with_an_edited_spec_keeps_the_selection(cli, diamond, tmp_path):
    spec = diamond()
    assert cli("run", str(spec), "--json").code == 0
    flagged = cli("run", str(diamond(sleep=30)), "--only", "b", "--run-id", "part",
                  "--json", "--deadline", "1s")
    assert flagged.code == 130, flagged.stderr
    r = cli("resume", "part", "--spec", str(diamond()), "--json")
    assert r.code == 0, r.stderr
    assert _outputs(r) == {"b": 11}


def test_python_api_takes_the_selection(diamond, tmp_path):
    spec = diamond()
    state = tmp_path / "api-state"
    api.run(str(spec), state_dir=state)
    result = api.run(str(spec), state_dir=state, only=["d"], until=["c"])
    assert {t: r.output for t, r in result.tasks.items()} == {"a": 1, "c": 101, "d": 1112}
    result = api.run(str(spec), state_dir=state, only="b")  # one id, not its letters
    assert list(result.tasks) == ["b"]
    from dagrun.errors import UsageError

    with pytest.raises(UsageError, match="no task ''"):
        api.run(str(spec), state_dir=state, only="")  # an id, not "no selection"


ROOT = Path(__file__).resolve().parent.parent


def test_the_patterns_example_runs_part_of_itself(cli, tmp_path, monkeypatch):
    shutil.copytree(ROOT / "pipelines", tmp_path / "pipelines",
                    ignore=shutil.ignore_patterns("out", "__pycache__"))
    monkeypatch.setenv("DAGRUN_PARAM_alert_token", "test-token")
    spec = str(tmp_path / "pipelines" / "patterns.toml")
    full = cli("run", spec, "--json")
    assert full.code == 0, full.stderr
    before = full.json["tasks"]
    # status reads a map's element records too (they were read as a broken chain)
    status = cli("status", full.json["run_id"], "--json")
    assert status.json["tasks"]["parse"]["state"] == "completed"
    assert status.json["tasks"]["parse"]["output"] == before["parse"]["output"]
    assert status.json["tasks"]["quarantine"]["error"] == before["quarantine"]["error"] == (
        "skipped: condition false")  # a condition's skip, not a failure's

    only = cli("run", spec, "--only", "aggregate", "--only", "quarantine", "--json")
    assert only.code == 0, only.stderr
    assert set(only.json["tasks"]) == {"aggregate", "quarantine"}
    assert only.json["tasks"]["aggregate"]["output"]["rows"] == before["aggregate"]["output"][
        "rows"]
    assert only.json["tasks"]["quarantine"]["reason"] == "condition false"  # a condition

    # export is no upstream of the sensor that watches its files: --only adds it.
    until = cli("run", spec, "--until", "parse", "--only", "export", "--json")
    assert until.code == 0, until.stderr
    assert set(until.json["tasks"]) == {"export", "inbox", "parse"}
    assert until.json["tasks"]["parse"]["elements"]["completed"] == 6  # a map, a sensor

    # --from with --until: a map over a taken list, and its consumer
    frm = cli("run", spec, "--from", "parse", "--until", "aggregate", "--json")
    assert frm.code == 0, frm.stderr
    assert set(frm.json["tasks"]) == {"parse", "aggregate"}
    assert [(p["file"], p["rows"]) for p in frm.json["tasks"]["parse"]["output"]] == [
        (p["file"], p["rows"]) for p in before["parse"]["output"]]
    assert f"taking inbox from run {until.json['run_id']}" in frm.stderr  # the newest

    loop = cli("run", spec, "--only", "calibrate", "--json")
    assert loop.code == 0, loop.stderr
    assert loop.json["tasks"]["calibrate"]["iterations"] == before["calibrate"]["iterations"]
    assert loop.json["tasks"]["calibrate"]["output"] == before["calibrate"]["output"]


def test_the_etl_example_reruns_from_a_task(cli, tmp_path):
    shutil.copytree(ROOT / "pipelines", tmp_path / "pipelines",
                    ignore=shutil.ignore_patterns("out", "__pycache__"))
    spec = str(tmp_path / "pipelines" / "etl.toml")
    full = cli("run", spec, "--json")
    assert full.code == 0, full.stderr
    frm = cli("run", spec, "--from", "stats", "--json")
    assert frm.code == 0, frm.stderr
    assert set(frm.json["tasks"]) == {"stats", "anomalies", "report", "publish"}
    assert {t: v["output"] for t, v in frm.json["tasks"].items() if t != "publish"} == {
        t: full.json["tasks"][t]["output"] for t in ("stats", "anomalies", "report")}
    until = cli("run", spec, "--until", "clean", "--json")
    assert set(until.json["tasks"]) == {"extract", "clean"}


def test_a_taken_output_is_never_substituted_when_a_resume_binds_secrets_again(
        cli, write, tmp_path, monkeypatch):
    out, gate = tmp_path / "out", tmp_path / "gate"
    monkeypatch.setenv("DAGRUN_PARAM_token", "s3cret")
    spec = write("s.toml", f"""
        [pipeline]
        name = "s"
        secret_params = ["token"]
        [tasks.a]
        call = "params_tasks:reference_text"
        [tasks.b]
        call = "params_tasks:use_secret"
        deps = ["a"]
        inputs = {{ day = "a" }}
        kwargs = {{ token = "${{params.token}}", out = "{out}", gate = "{gate}" }}
    """)
    gate.touch()
    assert cli("run", str(spec), "--json").code == 0
    assert out.read_text() == "s3cret ${params.token}"
    gate.unlink()
    Path(str(gate) + ".started").unlink()
    proc = start("run", str(spec), "--only", "b", "--run-id", "part")
    wait_for(lambda: Path(str(gate) + ".started").exists())
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    out.unlink()
    gate.touch()
    r = cli("resume", "part", "--json")  # b's kwargs are bound again from its template
    assert r.code == 0, r.stderr
    assert out.read_text() == "s3cret ${params.token}"


def test_events_and_trigger_rules_work_inside_a_selection(cli, write, tmp_path):
    log, flag = tmp_path / "log", tmp_path / "flag"
    flag.touch()
    spec = write("t.toml", f"""
        [pipeline]
        name = "t"
        workers = 2
        [tasks.a]
        call = "sidefx:step"
        kwargs = {{ log = "{log}", name = "a" }}
        [tasks.bad]
        call = "sidefx:fail_if"
        kwargs = {{ log = "{log}", name = "bad", flag = "{flag}" }}
        [tasks.alert]
        call = "sidefx:step"
        deps = ["a", "bad"]
        kwargs = {{ log = "{log}", name = "alert" }}
        trigger = "one_failed"
        [tasks.emit]
        call = "sidefx:emitter"
        deps = ["a"]
        kwargs = {{ log = "{log}", name = "emit" }}
        [tasks.waiter]
        call = "sidefx:step"
        deps = ["a"]
        inputs = {{ x = "a" }}
        kwargs = {{ log = "{log}", name = "waiter" }}
        wait_for = ["go"]
        event_timeout = "60s"
    """)
    full = cli("run", str(spec), "--json")
    assert full.code == 1 and full.json["tasks"]["alert"]["state"] == "completed"
    flag.unlink()
    r = cli("run", str(spec), "--from", "bad", "--only", "emit", "--only", "waiter", "--json")
    assert r.code == 0, r.stderr
    t = r.json["tasks"]
    assert set(t) == {"bad", "alert", "emit", "waiter"}
    # a's taken output counts as completed: bad completed now, so no upstream failed.
    assert t["alert"]["state"] == "skipped"
    assert t["alert"]["reason"] == "trigger one_failed: no upstream failed"
    assert t["waiter"]["output"] == 2  # its event came from emit, its input from run 1
    assert runs_of(log)["a"] == 1
