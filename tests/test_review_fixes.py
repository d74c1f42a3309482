"""Bad inputs found in review: each gets one line and a documented exit code."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def test_huge_integer_in_kwargs_is_a_spec_error(cli, write):
    spec = write("big.toml", '[tasks.a]\ncall = "basic:const"\n'
                 "kwargs = { value = 99999999999999999999 }\n")
    for command in ("validate", "run"):
        r = cli(command, str(spec), "--json")
        assert r.code == 2 and "out of range" in r.stderr and r.stdout == ""
        assert "Traceback" not in r.stderr


def test_nan_in_yaml_kwargs_is_a_spec_error(cli, write):
    spec = write("nan.yaml", "tasks:\n  a: {call: 'basic:const', kwargs: {value: .nan}}\n")
    r = cli("validate", str(spec))
    assert r.code == 2 and "not a JSON number" in r.stderr


def test_nan_output_fails_the_task(cli, write):
    r = cli("run", str(write("n.toml", '[tasks.a]\ncall = "basic:nan"\n')), "--json")
    assert r.code == 1
    assert "NaN or infinity" in r.json["tasks"]["a"]["error"]


def test_prints_at_import_time_do_not_reach_stdout(cli, write):
    spec = write("loud.toml", '[tasks.a]\ncall = "loud:f"\n')
    r = cli("run", str(spec), "--json")
    assert r.code == 0
    assert r.stdout.count("\n") == 1 and r.json["tasks"]["a"]["output"] == 1
    assert "hello from import" in r.stderr
    v = cli("validate", str(spec), "--json")
    assert v.json["valid"] is True


def test_sys_exit_at_import_is_a_spec_error(cli, write):
    r = cli("validate", str(write("x.toml", '[tasks.a]\ncall = "exits_on_import:f"\n')))
    assert r.code == 2 and "SystemExit" in r.stderr


def test_common_options_on_every_command(cli, write, tmp_path: Path):
    spec = str(write("p.toml", '[tasks.a]\ncall = "basic:const"\n'))
    state = str(tmp_path / "st")
    assert cli("validate", spec, "--state-dir", state).code == 0
    assert cli("graph", spec, "--state-dir", state).code == 0
    r = cli("dlq", "list", "--state-dir", state, "--json")
    assert r.code == 0 and r.json == []


def test_state_dir_that_is_a_file_or_empty(cli, write, tmp_path: Path):
    spec = str(write("p.toml", '[tasks.a]\ncall = "basic:const"\n'))
    afile = write("afile", "x")
    for value in (str(afile), ""):
        r = cli("run", spec, "--state-dir", value)
        assert r.code == 2, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert "--state-dir" in r.stderr


def test_usage_errors_are_one_line(cli):
    r = cli("run")
    assert r.code == 2
    assert len(r.stderr.strip().splitlines()) == 1 and "Missing argument" in r.stderr


def test_spec_file_name_that_is_not_an_id(cli, write):
    spec = write("my etl.toml", '[tasks.a]\ncall = "basic:const"\n')
    r = cli("run", str(spec), "--json")
    assert r.code == 0, r.stderr


def test_stray_folder_in_dlq_is_ignored(cli, tmp_path: Path):
    (tmp_path / "state" / "dlq" / ".tmpx").mkdir(parents=True)
    r = cli("dlq", "list", "--json")
    assert r.code == 0 and r.json == []


def test_sigterm_while_validating_exits_130(write, tmp_path: Path):
    write("slowimport.py", "import time\ntime.sleep(30)\ndef f():\n    return 1\n")
    spec = write("s.toml", '[tasks.a]\ncall = "slowimport:f"\n')
    proc = subprocess.Popen([sys.executable, "-m", "dagrun", "run", str(spec), "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path,
                            env={**os.environ})
    time.sleep(1.5)  # dagrun is importing the task module
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert b'"status":"cancelled"' in out
    assert b"Traceback" not in err
