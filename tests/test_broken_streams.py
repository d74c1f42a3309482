"""A stderr or stdout that breaks or is closed never stops a run: the display
switches itself off, the run goes on and dagrun exits with the run's code.
Real processes with real pipes that the test closes early."""

from __future__ import annotations

import subprocess
import sys

import orjson
import pytest


def chain_spec(write, n=40):
    """n tasks one after the other, each a little slow, so that the run is still
    going when the test closes the pipe after the first line."""
    parts = ['[pipeline]\nname = "chain"\nworkers = 2\n']
    for i in range(n):
        dep = f'deps = ["t{i - 1}"]\n' if i else ""
        parts.append(f'[tasks.t{i}]\ncall = "basic:sleep"\n'
                     f'kwargs = {{ seconds = 0.02, value = {i} }}\n{dep}')
    return write("chain.toml", "\n".join(parts))


def assert_all_completed(cli, run_id, n=40):
    """resume of a succeeded run runs nothing and prints its stored result."""
    r = cli("resume", run_id, "--json")
    assert r.code == 0, r.stderr
    assert "already succeeded" in r.stderr
    assert r.json["status"] == "succeeded"
    assert [t["state"] for t in r.json["tasks"].values()] == ["completed"] * n
    assert r.json["tasks"][f"t{n - 1}"]["output"] == n - 1


def test_stderr_closed_by_its_reader_does_not_stop_the_run(cli, write):
    spec = chain_spec(write)
    proc = subprocess.Popen([sys.executable, "-m", "dagrun", "run", str(spec), "--run-id",
                             "piped"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL)
    assert proc.stderr is not None
    assert b"40 tasks" in proc.stderr.readline()  # like `2>&1 | head -1`
    proc.stderr.close()
    assert proc.wait(timeout=120) == 0  # generous: 40 short tasks on shared cores
    assert_all_completed(cli, "piped")


def test_started_with_stderr_closed(cli, write):
    spec = chain_spec(write)
    for args, run_id in ((["--json"], "closed-json"), ([], "closed")):
        proc = subprocess.run(
            ["bash", "-c", 'exec "$@" 2>&-', "bash", sys.executable, "-m", "dagrun", "run",
             str(spec), "--run-id", run_id, *args],
            stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, timeout=120)
        assert proc.returncode == 0, proc.stdout
        if args:  # the JSON on stdout is still printed
            assert orjson.loads(proc.stdout)["status"] == "succeeded"
        else:
            assert proc.stdout == b""
        assert_all_completed(cli, run_id)


def test_failed_run_keeps_its_exit_code_and_json_with_stderr_gone(write):
    spec = write("f.toml", """
        [tasks.a]
        call = "basic:sleep"
        kwargs = { seconds = 0.5 }
        [tasks.b]
        call = "basic:fail"
        deps = ["a"]
    """)
    proc = subprocess.run(["bash", "-c", 'exec "$@" 2>&-', "bash", sys.executable, "-m",
                           "dagrun", "run", str(spec), "--json"], stdout=subprocess.PIPE,
                          stdin=subprocess.DEVNULL, timeout=120)
    assert proc.returncode == 1
    assert orjson.loads(proc.stdout)["tasks"]["b"]["state"] == "dead_lettered"


@pytest.mark.parametrize("read", [0, 10])  # like `| true` and `| head -c 10`
def test_json_reader_leaving_early_keeps_the_exit_code(cli, write, read):
    # An output well over a pipe's 64 KiB, so that writing it must hit the closed pipe.
    spec = write("big.toml", """
        [tasks.big]
        call = "basic:big_list"
        kwargs = { n = 20000 }
    """)
    proc = subprocess.Popen([sys.executable, "-m", "dagrun", "run", str(spec), "--json",
                             "--run-id", "big"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.read(read) == b'{"run_id":'[:read]
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0, err  # the run's code, not 1 for the pipe
    assert "Traceback" not in err and "Exception ignored" not in err, err
    r = cli("resume", "big", "--json")
    assert r.code == 0 and len(r.json["tasks"]["big"]["output"]) == 20000


def test_started_with_stdout_closed(cli, write):
    """`>&-`: Python has no sys.stdout at all; the run still goes on (its JSON
    has nowhere to go) and exits with its real code."""
    spec = chain_spec(write, n=5)
    for args, run_id in ((["--json"], "noout-json"), ([], "noout")):
        proc = subprocess.run(
            ["bash", "-c", 'exec "$@" >&-', "bash", sys.executable, "-m", "dagrun", "run",
             str(spec), "--run-id", run_id, *args],
            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert b"Traceback" not in proc.stderr
        assert_all_completed(cli, run_id, n=5)
