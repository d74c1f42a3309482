"""What task modules do when imported: prints stay off stdout, sys.exit is a spec
error, and a SIGTERM during a slow import cancels the run cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path


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
