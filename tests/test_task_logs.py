"""Per-task logs through the CLI: `dagrun logs`, `--follow`, the `[task]` echo,
`--quiet`, `--json`, after a SIGKILL of dagrun; and dagrun.logs.read_log."""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

from dagrun.logs import read_log

RETRIED = """
[tasks.a]
call = "tasklogs:talk"
retries = 2
retry_delay = 0
kwargs = { fail_before = 2 }
"""

# Generous: the machine is shared by several test runs at once.
SLOW = 60.0


def _spec(write, name, text):
    return str(write(name, text))


def _wait_for(path: Path, proc: subprocess.Popen) -> None:
    end = time.monotonic() + SLOW
    while not path.exists():
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        assert time.monotonic() < end, f"{path} never appeared"
        time.sleep(0.02)


def _dagrun(*args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "dagrun", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, **kw)


def _read_until(proc: subprocess.Popen, needle: bytes) -> bytes:
    """What `proc` printed on stdout until `needle` appeared (a deadline, not a sleep)."""
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    got = b""
    end = time.monotonic() + SLOW
    while needle not in got:
        assert time.monotonic() < end, f"never printed {needle!r}; got {got!r}"
        if sel.select(0.5):
            chunk = os.read(proc.stdout.fileno(), 4096)
            assert chunk, f"stdout closed before {needle!r}; got {got!r}"
            got += chunk
    return got


def test_each_attempt_has_its_own_log(cli, write):
    r = cli("run", _spec(write, "r.toml", RETRIED), "--run-id", "r1")
    assert r.code == 0, r.stderr
    first = cli("logs", "r1", "a", "--attempt", "1")
    second = cli("logs", "r1", "a", "--attempt", "2")
    assert first.code == second.code == 0
    # stdout, stderr and a child process's output, in the order written
    assert first.stdout == ("stdout of attempt 1\nstderr of attempt 1\n"
                            "child of attempt 1\n")
    assert second.stdout == first.stdout.replace("1", "2")
    assert cli("logs", "r1", "a").stdout == second.stdout  # default: the last attempt
    # the library call the HTML report uses
    assert read_log(Path("state/runs/r1"), "a", 1) == first.stdout.encode()
    assert read_log(Path("state/runs/r1"), "a", 3) is None


def test_plain_mode_echoes_task_lines_prefixed_and_quiet_does_not(cli, write):
    spec = _spec(write, "r.toml", RETRIED)
    r = cli("run", spec)
    assert r.code == 0
    for line in ("[a] stdout of attempt 1", "[a] stderr of attempt 1",
                 "[a] child of attempt 1", "[a] child of attempt 2"):
        assert line in r.stderr.splitlines()
    assert "attempt" not in r.stdout
    q = cli("run", spec, "--quiet", "--run-id", "q1")
    assert q.code == 0
    assert "[a]" not in q.stderr and "of attempt" not in q.stderr
    assert "child of attempt 2" in cli("logs", "q1", "a").stdout  # still kept


def test_json_prints_only_its_object_and_no_echo(cli, write):
    r = cli("run", _spec(write, "r.toml", RETRIED), "--json", "--run-id", "j1")
    assert r.code == 0
    assert r.stdout.count("\n") == 1 and r.json["tasks"]["a"]["attempts"] == 2
    assert "of attempt" not in r.stderr  # --json off a TTY: not echoed
    assert "stdout of attempt 1" in cli("logs", "j1", "a", "--attempt", "1").stdout


def test_failed_task_summary_names_the_logs_command(cli, write):
    spec = '[tasks.bad]\ncall = "tasklogs:talk"\nkwargs = { fail_before = 9 }\n'
    r = cli("run", _spec(write, "f.toml", spec), "--run-id", "f1")
    assert r.code == 1
    line = next(x for x in r.stderr.splitlines() if "bad: dead_lettered" in x)
    assert line.endswith("dagrun logs f1 bad")
    assert "stdout of attempt 1" in cli("logs", "f1", "bad").stdout


def test_unknown_run_task_or_attempt_exit_2_naming_the_state_dir(cli, write):
    cli("run", _spec(write, "r.toml", RETRIED), "--run-id", "u1")
    for args in (("nope", "a"), ("u1", "nope"), ("u1", "a", "--attempt", "7")):
        r = cli("logs", *args)
        assert r.code == 2, args
        assert "state" in r.stderr and r.stderr.count("\n") == 1, r.stderr


def test_follow_prints_a_running_attempt_until_it_ends(cli, write, tmp_path):
    marker, go = tmp_path / "printed", tmp_path / "go"
    spec = _spec(write, "w.toml", '[tasks.w]\ncall = "tasklogs:talk_and_wait"\n'
                 f'kwargs = {{ marker = "{marker}", go = "{go}" }}\n')
    run = _dagrun("run", spec, "--run-id", "w1")
    try:
        _wait_for(marker, run)
        follow = _dagrun("logs", "w1", "w", "--follow")
        got = _read_until(follow, b"child before the wait\n")
        assert got == b"before the wait\nchild before the wait\n"
        assert follow.poll() is None  # still following: the attempt runs
        go.write_text("go")
        out, _ = follow.communicate(timeout=SLOW)
        assert follow.returncode == 0
        assert got + out == b"before the wait\nchild before the wait\nafter the wait\n"
        assert run.wait(timeout=SLOW) == 0
    finally:
        run.kill()
        run.wait()


def test_logs_of_an_attempt_cut_short_by_sigkill_of_dagrun(cli, write, tmp_path):
    marker = tmp_path / "printed"
    spec = _spec(write, "w.toml", '[tasks.w]\ncall = "tasklogs:talk_and_wait"\n'
                 f'kwargs = {{ marker = "{marker}", go = "{tmp_path / "never"}" }}\n')
    run = _dagrun("run", spec, "--run-id", "k1")
    _wait_for(marker, run)
    run.send_signal(signal.SIGKILL)
    run.wait()
    r = cli("logs", "k1", "w")
    assert r.code == 0
    assert r.stdout == "before the wait\nchild before the wait\n"
    f = cli("logs", "k1", "w", "--follow", timeout=SLOW)  # the run is dead: no waiting
    assert f.code == 0 and f.stdout == r.stdout


def test_logs_of_a_worker_that_crashed(cli, write):
    r = cli("run", _spec(write, "d.toml", '[tasks.d]\ncall = "tasklogs:talk_then_die"\n'),
            "--run-id", "d1")
    assert r.code == 1
    assert "[d] last words" in r.stderr
    assert cli("logs", "d1", "d").stdout == "last words\n"


def test_task_lines_above_the_live_display_on_a_tty(write):
    from test_report import _run_on_tty

    code, screen = _run_on_tty(["run", _spec(write, "r.toml", RETRIED)], {})
    assert code == 0
    assert "\x1b[" in screen  # the live display drew
    assert "[a] child of attempt 1" in screen and "[a] stdout of attempt 2" in screen
