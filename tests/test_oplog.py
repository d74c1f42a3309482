"""dagrun's own log (--log-level, --log-format, RUN/dagrun.log) and what the
terminal shows: the live counts on a TTY and the capped final summary."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from test_report import _run_on_tty

KEYS = {"ts", "level", "run_id", "event", "task", "message"}

FAILING = """
[pipeline]
workers = 2
[tasks.a]
call = "basic:add"
kwargs = { x = 1 }
[tasks.b]
call = "basic:fail"
retries = 1
retry_delay = "0.1s"
[tasks.c]
call = "basic:add"
deps = ["b"]
inputs = { x = "b" }
"""


def _run_dir(tmp_path: Path) -> Path:
    (run,) = (tmp_path / "state" / "runs").iterdir()
    return run


def test_json_log_lines_on_stderr_and_in_dagrun_log(cli, write, tmp_path):
    spec = write("p.toml", FAILING)
    r = cli("run", str(spec), "--log-format", "json", "--json")
    assert r.code == 1
    assert r.json["status"] == "failed"  # stdout still carries only the result
    for text in (r.stderr, (_run_dir(tmp_path) / "dagrun.log").read_text()):
        lines = [json.loads(line) for line in text.splitlines()]
        assert lines and all(set(line) == KEYS for line in lines)
        assert {line["run_id"] for line in lines} == {r.json["run_id"]}
        events = [(line["level"], line["event"], line["task"]) for line in lines]
        assert ("warning", "task_retrying", "b") in events
        assert ("error", "task_dead_lettered", "b") in events
        assert ("info", "task_skipped", "c") in events
        assert events[0][1] == "run_started" and events[-1][1] == "run_finished"
        # The default level (info) keeps a completion off the log: W1 stays cheap.
        assert ("debug", "task_completed", "a") not in events


def test_log_level_from_env_and_debug_lines(cli, write, tmp_path):
    spec = write("p.toml", FAILING)
    r = cli("run", str(spec), env={"DAGRUN_LOG_LEVEL": "debug", "DAGRUN_LOG_FORMAT": "json"})
    assert r.code == 1
    events = {(x["event"], x["task"]) for x in map(json.loads, r.stderr.splitlines())}
    assert ("task_completed", "a") in events and ("task_running", "a") in events
    r = cli("run", str(spec), "--log-level", "error", "--log-format", "json")
    levels = {json.loads(x)["level"] for x in r.stderr.splitlines()}
    assert levels == {"error"}


def test_dagrun_log_after_a_successful_and_a_failed_run(cli, write, tmp_path):
    ok = write("ok.toml", '[tasks.a]\ncall = "basic:add"\nkwargs = { x = 1 }\n')
    r = cli("run", str(ok), "--run-id", "good", "--json")
    assert r.code == 0
    text = (tmp_path / "state" / "runs" / "good" / "dagrun.log").read_text()
    assert "event=run_started" in text and "event=run_finished" in text
    assert "run good succeeded" in text
    bad = write("bad.toml", FAILING)
    r = cli("run", str(bad), "--run-id", "bad", "--json")
    assert r.code == 1
    text = (tmp_path / "state" / "runs" / "bad" / "dagrun.log").read_text()
    assert re.search(r"ERROR +run=bad event=task_dead_lettered task=b: .*ValueError: boom",
                     text)
    assert "run bad failed" in text


def test_an_internal_error_writes_its_traceback_to_dagrun_log(write, tmp_path):
    spec = write("p.toml", '[tasks.a]\ncall = "basic:add"\nkwargs = { x = 1 }\n')
    # A bug in dagrun, injected: the scheduler loop raises something unexpected.
    code = ("import dagrun.scheduler as s, dagrun.cli as c\n"
            "def boom(self): raise ZeroDivisionError('injected bug')\n"
            "s.Scheduler.run = boom\n"
            f"c.main(['run', {str(spec)!r}, '--run-id', 'r1'])\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL)
    assert proc.returncode == 1
    log = tmp_path / "state" / "runs" / "r1" / "dagrun.log"
    assert "Traceback" not in proc.stderr
    (line,) = [x for x in proc.stderr.splitlines() if "internal error" in x]
    assert "ZeroDivisionError: injected bug" in line and str(log) in line
    text = log.read_text()
    assert "Traceback (most recent call last)" in text and "def boom" not in proc.stderr
    assert "in boom" in text


def _many(n_ok: int, n_bad: int) -> str:
    lines = ["[pipeline]", "workers = 2"]
    for i in range(n_ok):
        lines += [f"[tasks.ok{i:02d}]", 'call = "basic:add"', "kwargs = { x = 1 }"]
    for i in range(n_bad):
        lines += [f"[tasks.bad{i:02d}]", 'call = "basic:fail"']
    return "\n".join(lines) + "\n"


def test_the_summary_is_capped_and_ends_with_the_next_command(cli, write):
    spec = write("p.toml", _many(30, 30))
    r = cli("run", str(spec), "--run-id", "cap", env={"NO_COLOR": "1"})
    assert r.code == 1
    tail = r.stderr.split("[60/60]", 1)[1].splitlines()[1:]  # after the last progress line
    task_lines = [x for x in tail if re.match(r"  \S+ bad\d\d: dead_lettered", x)]
    assert 1 <= len(task_lines) <= 20
    assert "  and 40 more: dagrun status cap" in tail
    assert len(tail) <= 24  # tasks, "and N more", the run's line, the hint
    first = task_lines[0].split()[1].rstrip(":")
    assert tail[-1] == (f"dagrun: next: `dagrun logs cap {first}` (its output), "
                        f"`dagrun dlq show cap {first}` (every attempt's error)")


def test_a_big_cancelled_run_prints_a_short_summary(cli, write):
    lines = ["[pipeline]", "workers = 2"]
    for i in range(500):
        lines += [f"[tasks.t{i:03d}]", 'call = "basic:sleep"', "kwargs = { seconds = 0.3 }"]
    spec = write("p.toml", "\n".join(lines) + "\n")
    r = cli("run", str(spec), "--run-id", "big", "--deadline", "1s", env={"NO_COLOR": "1"})
    assert r.code == 130
    assert "dagrun: run `dagrun resume big` to continue" in r.stderr
    summary = [x for x in r.stderr.splitlines() if re.match(r"  (\S+ )?t\d{3}: ", x)]
    assert len(summary) <= 20
    assert re.search(r"  and \d+ more: dagrun status big", r.stderr)


def test_live_counts_a_retry_as_retrying_not_failed(write, tmp_path):
    counter = tmp_path / "counter"
    spec = write("p.toml", f"""
        [tasks.flaky]
        call = "misbehave:flaky"
        kwargs = {{ counter = "{counter}", succeed_on = 2 }}
        retries = 2
        retry_delay = "1s"
        retry_jitter = false
        """)
    code, screen = _run_on_tty(["run", str(spec)], {})
    assert code == 0
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen)
    # Drawn every 0.1 s during the 1 s retry delay: the header showed it waiting.
    assert "· 1 retrying ·" in plain
    # Not "failed": it failed once, then succeeded. Every frame's header says 0.
    failed_counts = set(re.findall(r"· (\d+) failed ·", plain))
    assert failed_counts == {"0"}
    assert "1 completed" in plain
    assert os.path.exists(counter)


def test_a_sensor_waiting_is_not_a_warning(cli, write, tmp_path):
    # Each "not yet" of a sensor is a debug line; a retry after an error stays a warning.
    flag = tmp_path / "flag"
    spec = write("s.toml", f"""
[pipeline]
workers = 1
[tasks.sense]
call = "dagrun.sensors:file_exists"
kwargs = {{ path = "{flag}" }}
sensor = {{ interval = "0.05s", timeout = "60s" }}
priority = 10
[tasks.touch]
call = "sidefx:step"
kwargs = {{ log = "{flag}", name = "touch" }}
""")
    r = cli("run", str(spec), "--log-format", "json", "--json")
    assert r.code == 0, r.stderr
    assert r.json["tasks"]["sense"]["polls"] >= 2  # the first said "not yet"
    lines = [json.loads(x) for x in r.stderr.splitlines()]
    assert not [x for x in lines if x["level"] == "warning"]
    flag.unlink()
    r = cli("run", str(spec), "--log-format", "json", "--log-level", "debug")
    events = {(json.loads(x)["level"], json.loads(x)["event"]) for x in r.stderr.splitlines()}
    assert ("debug", "task_retrying") in events
