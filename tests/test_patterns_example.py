"""The workflow-patterns example (pipelines/patterns.toml, `make patterns`)
stays runnable: it validates, runs twice carrying its watermark across runs,
and survives a SIGKILL midway with the same outputs after resume."""

from __future__ import annotations

import json
import re
import shutil
import signal
from pathlib import Path

import orjson
import pytest
from proc import start, wait_for

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The pipelines folder copied into the test's folder (the cwd), since the
    example writes under ./pipelines/out; the alert's secret token set."""
    shutil.copytree(ROOT / "pipelines", tmp_path / "pipelines",
                    ignore=shutil.ignore_patterns("out", "__pycache__"))
    monkeypatch.setenv("DAGRUN_PARAM_alert_token", "test-token")
    return tmp_path / "pipelines" / "patterns.toml"


def _ledger(tmp_path: Path) -> list[dict]:
    text = (tmp_path / "pipelines" / "out" / "patterns" / "ledger.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines()]


def _key_outputs(tasks: dict) -> dict:
    """What a night produces, without the run's own paths and times."""
    calib = tasks["calibrate"]
    agg = tasks["aggregate"]["output"]
    return {"parsed": [(p["file"], p["rows"]) for p in tasks["parse"]["output"]],
            "aggregate": {k: agg[k] for k in ("files", "rejected", "rows", "total", "mean")},
            "estimate": calib["output"]["estimate"], "iterations": calib["iterations"],
            "states": {name: t["state"] for name, t in tasks.items()}}


def test_validates_and_runs_twice_with_state_carried(cli, example, tmp_path):
    state_dir = str(tmp_path / "st")
    r = cli("validate", str(example))
    assert r.code == 0, r.stderr

    first = cli("run", str(example), "--state-dir", state_dir, "--json")
    assert first.code == 0, first.stderr
    t = first.json["tasks"]
    assert first.json["status"] == "succeeded"
    assert t["inbox"]["polls"] >= 1 and len(t["inbox"]["output"]) == 6      # sensor
    assert t["parse"]["elements"] == {"count": 6, "completed": 6, "failed": 0}  # map
    assert t["aggregate"]["output"]["rows"] == 1200
    assert t["quarantine"]["state"] == "skipped"                              # when
    assert t["quarantine"]["reason"] == "condition false"
    assert t["calibrate"]["stopped_by"] == "predicate"                        # repeat
    assert t["calibrate"]["iterations"] > 1
    assert t["dashboard"]["state"] == "completed"                             # wait_for
    assert t["cleanup"]["output"] == ["amounts.json"]                          # all_done
    assert t["alert"]["state"] == "skipped"                                   # one_failed
    assert t["publish"]["output"] == {"nights": 1, "previous_run": None, "rows_published": 1200}
    run_dir = tmp_path / "pipelines" / "out" / "patterns" / first.json["run_id"]
    assert (run_dir / "dashboard.json").exists() and (run_dir / "inbox-archive.zip").exists()
    assert not (run_dir / "scratch").exists()

    second = cli("run", str(example), "--state-dir", state_dir, "--json",
                 "--param", "files=8", "--param", "corrupt=1", "--param", "day=2026-11-27")
    assert second.code == 0, second.stderr
    t2 = second.json["tasks"]
    assert t2["parse"]["elements"]["count"] == 8 and t2["parse"]["elements"]["failed"] == 1
    assert t2["aggregate"]["output"]["rejected"] == [7]
    assert t2["quarantine"]["output"] == ["part-007.csv"]
    # The watermark of the first run reached the second.
    assert t2["publish"]["output"] == {"nights": 2, "previous_run": first.json["run_id"],
                                       "rows_published": 1200 + 1400}
    assert t2["dashboard"]["output"] == {"nights_shown": 2}
    ledger = _ledger(tmp_path)
    assert [n["run_id"] for n in ledger] == [first.json["run_id"], second.json["run_id"]]
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", ledger[0]["day"])  # ${run.date}
    assert ledger[1]["day"] == "2026-11-27"                       # --param
    shown = cli("state", "show", "patterns", "publish", "--state-dir", state_dir)
    assert shown.code == 0, shown.stderr
    assert orjson.loads(shown.stdout)["nights"] == 2


def test_sigkill_midway_then_resume_gives_the_same_outputs(cli, example, tmp_path):
    state_dir = str(tmp_path / "st")
    clean = cli("run", str(example), "--state-dir", state_dir, "--json", "--run-id", "clean")
    assert clean.code == 0, clean.stderr

    parsed = tmp_path / "pipelines" / "out" / "patterns" / "k1" / "parsed"
    proc = start("run", str(example), "--state-dir", state_dir, "--json", "--run-id", "k1")
    # Killed inside the map: some files parsed, not all.
    wait_for(lambda: len(list(parsed.glob("*.json"))) >= 2, timeout=60)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    assert len(list(parsed.glob("*.json"))) < 6

    r = cli("resume", "k1", "--state-dir", state_dir, "--json")
    assert r.code == 0, r.stderr
    assert r.json["status"] == "succeeded"
    assert _key_outputs(r.json["tasks"]) == _key_outputs(clean.json["tasks"])
    assert r.json["tasks"]["publish"]["output"]["previous_run"] == "clean"
    assert [n["run_id"] for n in _ledger(tmp_path)] == ["clean", "k1"]
