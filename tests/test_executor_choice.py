"""Choosing the executor: --executor, DAGRUN_EXECUTOR, [pipeline] executor, the
run's stored choice on resume, and a clear exit 2 when dask cannot be used."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from proc import start, wait_for

from dagrun.executor import choice
from dagrun.store.journal import read_journal
from dagrun.store.runs import StateDir

SPEC = """
[pipeline]
name = "pick"
workers = 1
{executor}
[tasks.a]
call = "basic:const"
kwargs = {{ value = 1 }}
[tasks.b]
call = "basic:sleep"
deps = ["a"]
kwargs = {{ seconds = {sleep}, value = 2 }}
"""

# A `dagrun` whose interpreter cannot import `distributed`, installed or not:
# a meta-path finder in front of every other refuses it.
HIDE_DISTRIBUTED = """
import sys
class Hide:
    def find_spec(self, name, path=None, target=None):
        if name == "distributed" or name.startswith("distributed."):
            raise ImportError("No module named 'distributed'", name=name)
        return None
sys.meta_path.insert(0, Hide())
from dagrun.cli import main
sys.argv[0] = "dagrun"
main()
"""
MISSING_LINE = ("dagrun: error: the dask executor needs the 'distributed' package: "
                "pip install 'dagrun[dask]'")


def without_distributed(*args: str, env: dict[str, str] | None = None):
    return subprocess.run([sys.executable, "-c", HIDE_DISTRIBUTED, *args], capture_output=True,
                          text=True, timeout=60, env={**os.environ, **(env or {})},
                          stdin=subprocess.DEVNULL)


def stored_executor(run_id: str) -> str:
    return StateDir(os.environ["DAGRUN_STATE_DIR"]).open_run(run_id).meta["settings"]["executor"]


def runs_in_state() -> list[str]:
    runs = Path(os.environ["DAGRUN_STATE_DIR"]) / "runs"
    return sorted(p.name for p in runs.iterdir()) if runs.is_dir() else []


@pytest.mark.parametrize(("value", "parsed"), [
    ("local", "local"), ("dask", "dask"), (" dask ", "dask"),
    ("dask://10.0.0.5:8786", "tcp://10.0.0.5:8786"),
    ("dask://[::1]:8786", "tcp://[::1]:8786"),
    ("tcp://sched.example:8786", "tcp://sched.example:8786"),
    ("tls://sched.example:8786", "tls://sched.example:8786"),
    ("tcp://sched.example", "tcp://sched.example"),  # Dask's default port
    ("dask://host", None), ("dask://host:0", None), ("dask://host:99999", None),
    ("dask://:8786", None), ("tcp://", None), ("http://host:8786", None),
    ("Dask", None), ("", None), ("tcp://a b:1", None), ("tcp://host:80/x", None), (3, None),
])
def test_the_forms_an_executor_takes(value, parsed):
    assert choice.parse(value) == parsed


def test_precedence_flag_then_env_then_spec():
    env = {"DAGRUN_EXECUTOR": "dask://h:1"}
    assert choice.resolve("local", env, "dask") == "local"
    assert choice.resolve(None, env, "dask") == "tcp://h:1"
    assert choice.resolve(None, {}, "dask") == "dask"
    assert choice.resolve(None, {"DAGRUN_EXECUTOR": " "}, None) == "local"


@pytest.mark.parametrize(("args", "env", "spec_line", "named"), [
    (["--executor", "kubernetes"], {}, "", "--executor must be local, dask"),
    ([], {"DAGRUN_EXECUTOR": "dask://nohost"}, "", "DAGRUN_EXECUTOR must be local, dask"),
    ([], {}, 'executor = "dask:/x"', "[pipeline]: 'executor' must be local, dask"),
    ([], {}, "executor = 4", "[pipeline]: 'executor' must be local, dask"),
    (["--executor-timeout", "0"], {}, "", "--executor-timeout"),
    (["--executor-timeout", "soon"], {}, "", "--executor-timeout"),
])
def test_a_bad_executor_is_one_line_and_exit_2(cli, write, args, env, spec_line, named):
    spec = write("p.toml", SPEC.format(executor=spec_line, sleep=0))
    r = cli("run", str(spec), *args, env=env)
    assert r.code == 2, r.stderr
    assert named in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert runs_in_state() == []


def test_the_flag_wins_over_env_and_spec_and_is_stored(cli, write):
    spec = write("p.toml", SPEC.format(executor='executor = "dask://nowhere.invalid:1"',
                                       sleep=0))
    r = cli("run", str(spec), "--run-id", "r1", "--json", "--executor", "local",
            env={"DAGRUN_EXECUTOR": "tcp://nowhere.invalid:2"})
    assert r.code == 0, r.stderr
    assert stored_executor("r1") == "local"
    r = cli("run", str(spec), "--run-id", "r2", "--json", env={"DAGRUN_EXECUTOR": "local"})
    assert r.code == 0, r.stderr
    assert stored_executor("r2") == "local"


def test_resume_uses_the_runs_executor_not_the_spec(cli, write, tmp_path):
    """Started with --executor local on a spec that says dask, killed: resume
    without a flag continues on local (the run's), not on the spec's."""
    spec = write("p.toml", SPEC.format(executor='executor = "dask://nowhere.invalid:1"',
                                       sleep=30))
    proc = start("run", str(spec), "--run-id", "r1", "--executor", "local")
    journal = Path(os.environ["DAGRUN_STATE_DIR"]) / "runs" / "r1" / "journal"
    wait_for(lambda: journal.exists() and any(  # generous: a loaded machine forks slowly
        r.get("task") == "b" and r["state"] == "running"
        for r in read_journal(journal).records), timeout=30)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    spec.write_text(SPEC.format(executor='executor = "dask://nowhere.invalid:1"', sleep=0))
    r = cli("resume", "r1", "--json", "--spec", str(spec))
    assert r.code == 0, r.stderr
    assert r.json["tasks"]["b"]["output"] == 2


def test_dask_without_distributed_is_exit_2_before_any_run(write):
    spec = write("p.toml", SPEC.format(executor="", sleep=0))
    for how in (["--executor", "dask"], ["--executor", "dask://127.0.0.1:8786"]):
        r = without_distributed("run", str(spec), *how)
        assert r.returncode == 2, r.stderr
        assert r.stderr.strip() == MISSING_LINE
    r = without_distributed("run", str(spec), env={"DAGRUN_EXECUTOR": "dask"})
    assert (r.returncode, r.stderr.strip()) == (2, MISSING_LINE)
    spec = write("q.toml", SPEC.format(executor='executor = "tcp://127.0.0.1:8786"', sleep=0))
    r = without_distributed("run", str(spec))
    assert (r.returncode, r.stderr.strip()) == (2, MISSING_LINE)
    assert runs_in_state() == []  # nothing created


def test_resume_and_dlq_retry_on_dask_without_distributed(cli, write):
    spec = write("p.toml", SPEC.format(executor="", sleep=0).replace(
        '"basic:const"', '"basic:fail"').replace("value = 1", 'message = "no"'))
    r = cli("run", str(spec), "--run-id", "r1", "--json")
    assert r.code == 1, r.stderr
    before = (Path(os.environ["DAGRUN_STATE_DIR"]) / "runs" / "r1" / "journal").read_bytes()
    r = without_distributed("resume", "r1", "--retry-failed", "--executor", "dask")
    assert (r.returncode, r.stderr.strip()) == (2, MISSING_LINE)
    r = without_distributed("dlq", "retry", "r1", env={"DAGRUN_EXECUTOR": "dask"})
    assert (r.returncode, r.stderr.strip()) == (2, MISSING_LINE)
    after = (Path(os.environ["DAGRUN_STATE_DIR"]) / "runs" / "r1" / "journal").read_bytes()
    assert after == before  # nothing ran
    # The same commands with the local executor go on as usual.
    r = without_distributed("dlq", "retry", "r1", "--json", "--executor", "local")
    assert r.returncode == 1, r.stderr
    assert orjson.loads(r.stdout)["tasks"]["a"]["attempts"] == 1


def test_prepare_gives_the_dask_backend_its_settings(write, tmp_path, monkeypatch):
    from dagrun.executor import base
    from dagrun.spec import load_spec

    monkeypatch.setitem(base.BACKENDS, "dask", "dagrun.executor.dask_client:DaskExecutor")
    write("flowmod.py", "def f(): return 1\n")
    spec = load_spec(write("p.toml", '[tasks.a]\ncall = "flowmod:f"\n'))
    run_path = tmp_path / "state" / "runs" / "r1"
    run_path.mkdir(parents=True)
    local = choice.prepare({"workers": 2, "executor": "local"}, spec, run_path)
    assert local == {"workers": 2, "executor": "local"}
    got = choice.prepare({"workers": 2, "executor": "tcp://10.1.2.3:8786",
                          "executor_timeout": 7.5}, spec, run_path)
    assert got["executor"] == "dask" and got["address"] == "tcp://10.1.2.3:8786"
    assert got["connect_timeout"] == 7.5
    assert got["scratch_dir"] == str(run_path / "dask")
    assert Path(got["ship"]).parent == run_path / "dask"
    import zipfile

    assert zipfile.ZipFile(got["ship"]).namelist() == ["flowmod.py"]
    own = choice.prepare({"workers": 3, "executor": "dask"}, spec, run_path)
    assert own["address"] is None and own["connect_timeout"] == choice.DEFAULT_TIMEOUT


def test_the_python_api_takes_executor(write):
    from dagrun import api
    from dagrun.errors import UsageError

    spec = write("p.toml", SPEC.format(executor='executor = "dask"', sleep=0))
    with pytest.raises(UsageError, match="--executor must be"):
        api.run(spec, executor="kubernetes")
    state = os.environ["DAGRUN_STATE_DIR"]
    result = api.run(spec, run_id="a1", state_dir=state, executor="local", executor_timeout=5)
    assert result.status == "succeeded"
    meta = StateDir(os.environ["DAGRUN_STATE_DIR"]).open_run("a1").meta["settings"]
    assert (meta["executor"], meta["executor_timeout"]) == ("local", 5.0)
    with pytest.raises(UsageError, match="--executor-timeout must be positive"):
        api.run(spec, state_dir=state, executor="local", executor_timeout=-1)
