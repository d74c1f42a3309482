"""`dagrun run SPEC --dry-run` through the CLI: what would run and why, with
nothing run (side-effect log), no run created (`dagrun runs`) and the state
dir unchanged byte for byte."""

from __future__ import annotations

import os
import time
from pathlib import Path

from tasks.sidefx import runs_of
from test_cache import MODULE, SPEC, setup

REPO = Path(__file__).resolve().parent.parent


def snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under the state dir: its bytes and mtime."""
    out = {}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            path = Path(dirpath) / name
            out[str(path.relative_to(root))] = (path.read_bytes(), path.stat().st_mtime_ns)
    return out


def dry(cli, spec, *args):
    state = Path(os.environ["DAGRUN_STATE_DIR"])
    before = snapshot(state), state.exists()
    runs = cli("runs", "--json").json if state.exists() else []
    r = cli("run", str(spec), "--dry-run", "--json", *args)
    assert r.code == 0, r.stderr
    assert (snapshot(state), state.exists()) == before
    assert (cli("runs", "--json").json if state.exists() else []) == runs
    return {tid: (v["run"], v["reason"] + (f" ({v['detail']})" if "detail" in v else ""))
            for tid, v in r.json["tasks"].items()}, r.json


def test_reasons_after_each_kind_of_edit_and_nothing_runs(cli, write, tmp_path):
    spec, log = setup(write, tmp_path)
    got, _ = dry(cli, spec)
    assert got == {**dict.fromkeys("acdm", (True, "new")), "b": (True, "upstream a runs")}
    assert runs_of(log) == {}
    first = cli("run", str(spec), "--json")
    assert first.code == 0
    logged = runs_of(log)
    got, plan = dry(cli, spec)
    assert got == dict.fromkeys("abcdm", (False, "cached"))
    assert {v["cached_from"] for v in plan["tasks"].values()} == {first.json["run_id"]}
    # The plain listing: one aligned line per task and a count line.
    r = cli("run", str(spec), "--dry-run")
    assert r.code == 0 and r.stdout.splitlines()[0].startswith("a  skip  cached (run ")
    assert r.stdout.splitlines()[-1] == "dry run: 0 of 5 tasks would run, 5 cached " \
        "(nothing was run)"

    assert dry(cli, spec, "--param", "n=2")[0]["c"] == (True, "input changed (kwargs)")
    assert dry(cli, spec, "--refresh", "b")[0]["b"] == (True, "forced (--refresh)")
    assert set(dry(cli, spec, "--no-cache")[0].values()) == {(True, "forced (--no-cache)")}
    assert dry(cli, spec, "--from", "a")[0] == {"a": (True, "forced (--from)"),
                                                "b": (True, "forced (--from)")}
    got, plan = dry(cli, spec, "--only", "b")
    assert got == {"b": (False, "cached")}
    assert plan["taken"] == {"a": {"run_id": first.json["run_id"], "cached": True}}

    time.sleep(0.01)
    write("mine.py", MODULE.format(value="v2"))
    write("data/x.csv", "changed\n")
    spec.write_text(SPEC.format(log=log, ka=7))
    got, _ = dry(cli, spec)
    assert got == {"a": (True, "input changed (kwargs)"), "b": (True, "upstream a runs"),
                   "c": (False, "cached"), "d": (True, "file changed"),
                   "m": (True, "code changed")}
    spec.write_text(SPEC.format(log=log, ka=1).replace("cache = true",
                                                       'cache = { version = "2" }'))
    got, _ = dry(cli, spec)  # (m and d: their code and file changed first)
    assert got["a"] == got["c"] == (True, "version changed")
    assert runs_of(log) == logged  # nothing ran, at any point


def test_the_example_pipelines_and_errors(cli, write):
    etl = REPO / "pipelines" / "etl.toml"
    got, _ = dry(cli, etl)
    assert set(got.values()) == {(True, "no cache")} and len(got) == 10
    got, plan = dry(cli, etl, "--only", "stats")
    assert set(got) == {"stats", "clean", "extract"}  # no earlier run: they run too
    assert "upstream clean has no completed run: running it too" in plan["notes"]
    r = cli("run", str(REPO / "pipelines" / "patterns.toml"), "--dry-run",
            "--param", "alert_token=t")  # a secret: needed, as by a run
    assert r.code == 0 and "tasks would run" in r.stdout.splitlines()[-1]
    # A spec error, an unknown task: exit 2, one line, as without --dry-run.
    bad = write("bad.toml", "[tasks.a]\ncall = \"sidefx:step\"\ndeps = [\"nope\"]\n")
    r = cli("run", str(bad), "--dry-run")
    assert r.code == 2 and "Traceback" not in r.stderr
    r = cli("run", str(etl), "--dry-run", "--only", "stat")
    assert r.code == 2 and "did you mean 'stats'" in r.stderr
    assert not Path(os.environ["DAGRUN_STATE_DIR"]).exists()


def test_the_python_api_returns_plain_data(tmp_path):
    import dagrun

    log = tmp_path / "log"
    p = dagrun.Pipeline("api")
    p.task("a", "sidefx:step", kwargs={"log": str(log), "name": "a"}, cache=True)
    p.task("b", "sidefx:step", kwargs={"log": str(log), "name": "b"})
    st = tmp_path / "st"
    first = dagrun.run(p, state_dir=st)
    plan = dagrun.api.dry_run(p, state_dir=st)
    assert plan["tasks"] == {"a": {"run": False, "reason": "cached",
                                   "cached_from": first.run_id},
                             "b": {"run": True, "reason": "no cache"}}
    assert runs_of(log) == {"a": 1, "b": 1}
