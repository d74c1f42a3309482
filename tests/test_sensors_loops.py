"""Sensors (`sensor = {...}`) and loops (`repeat = {...}`) through the CLI, with
real workers, validate, and SIGKILL + resume."""

from __future__ import annotations

import http.server
import os
import signal
import threading
from pathlib import Path
from typing import Any

import pytest
from proc import start, wait_for


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_sensor_holds_no_worker_while_waiting(cli, write, tmp_path):
    log, flag = tmp_path / "log", tmp_path / "flag"
    spec = write("p.toml", f"""
        [pipeline]
        workers = 1
        [tasks.sense]
        call = "pc_kinds:poll_file"
        kwargs = {{ log = "{log}", path = "{flag}" }}
        sensor = {{ interval = "0.1s", timeout = "60s" }}
        priority = 1
        [tasks.other]
        call = "pc_kinds:work"
        kwargs = {{ log = "{log}", name = "other", sleep = 0.5, touch = "{flag}" }}
    """)
    r = cli("run", str(spec), "--json")
    assert r.code == 0, r.stderr
    sense = r.json["tasks"]["sense"]
    assert sense["state"] == "completed" and sense["output"] == str(flag)
    assert sense["attempts"] == 1 and sense["polls"] >= 2
    assert isinstance(sense["last_poll_at"], float)
    # The sensor polled first (priority), then the one worker ran the other
    # task, which finished before the sensor did: its flag made it ready.
    log_lines = lines(log)
    assert log_lines[0] == "poll" and log_lines[-1] == "poll"
    assert log_lines.index("done other") < len(log_lines) - 1


class _Handler(http.server.BaseHTTPRequestHandler):
    ready = False

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.send_response(200 if _Handler.ready else 503)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def http_url():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    _Handler.ready = False
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/health"
    server.shutdown()
    server.server_close()


def test_the_shipped_sensors(cli, write, tmp_path, http_url):
    data = tmp_path / "data"
    data.mkdir()
    spec = write("p.yaml", f"""
        pipeline: {{workers: 3}}
        tasks:
          file:
            call: dagrun.sensors:file_exists
            kwargs: {{path: "{data}/a.csv"}}
            sensor: {{interval: 0.1s, timeout: 60s}}
          files:
            call: dagrun.sensors:glob_count
            kwargs: {{pattern: "{data}/*.csv", min_count: 2}}
            sensor: {{interval: 0.1s, timeout: 60s}}
          web:
            call: dagrun.sensors:http_ok
            kwargs: {{url: "{http_url}"}}
            sensor: {{interval: 0.1s, timeout: 60s}}
    """)
    proc = start("run", str(spec), "--run-id", "s", "--json")
    try:
        # Generous: forking workers on a loaded machine.
        wait_for(lambda: (tmp_path / "state" / "runs" / "s").exists())
        import time

        time.sleep(0.5)  # a few "not yet" polls first
        (data / "a.csv").write_text("1")
        (data / "b.csv").write_text("2")
        _Handler.ready = True
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    import orjson

    tasks = orjson.loads(out)["tasks"]
    assert tasks["file"]["output"] == f"{data}/a.csv"
    assert tasks["files"]["output"] == [f"{data}/a.csv", f"{data}/b.csv"]
    assert tasks["web"]["output"] == 200
    assert all(t["polls"] >= 2 for t in tasks.values())


def test_sensor_timeout_exits_1_with_sensortimeout(cli, write, tmp_path):
    spec = write("p.toml", f"""
        [tasks.never]
        call = "dagrun.sensors:file_exists"
        kwargs = {{ path = "{tmp_path}/nope" }}
        sensor = {{ interval = "0.1s", timeout = "0.5s" }}
        retries = 1
        retry_delay = 0
    """)
    r = cli("run", str(spec), "--json")
    assert r.code == 1
    t = r.json["tasks"]["never"]
    assert t["state"] == "dead_lettered" and t["attempts"] == 2
    assert t["error"].startswith("SensorTimeout: ")
    # Its attempt is the whole window (was: the last poll only, a duration of 0).
    assert t["duration_s"] >= 0.4


def test_a_ready_sensor_s_attempt_spans_its_polls(cli, write, tmp_path):
    flag = tmp_path / "flag"
    spec = write("p.toml", f"""
        [pipeline]
        workers = 1
        [tasks.sense]
        call = "dagrun.sensors:file_exists"
        kwargs = {{ path = "{flag}" }}
        sensor = {{ interval = "0.1s", timeout = "60s" }}
        priority = 10
        [tasks.late]
        call = "sidefx:step"
        kwargs = {{ log = "{flag}", name = "late", sleep = 0.5 }}
    """)
    r = cli("run", str(spec), "--json")
    assert r.code == 0, r.stderr
    t = r.json["tasks"]["sense"]
    assert t["polls"] >= 2 and t["duration_s"] >= 0.4
    status = cli("status", r.json["run_id"], "--json")
    assert status.code == 0, status.stderr
    assert status.json["tasks"]["sense"]["duration_s"] == t["duration_s"]


def loop_spec(write, log, **repeat):
    body = ", ".join(f"{k} = {v!r}".replace("'", '"').replace("True", "true").replace(
        "False", "false") for k, v in repeat.items())
    return write("loop.toml", f"""
        [tasks.loop]
        call = "pc_kinds:counter"
        kwargs = {{ log = "{log}" }}
        repeat = {{ {body} }}
        [tasks.after]
        call = "pc_kinds:identity"
        deps = ["loop"]
        inputs = {{ value = "loop" }}
    """)


def test_loop_stops_by_predicate(cli, write, tmp_path):
    log = tmp_path / "log"
    spec = loop_spec(write, log, until="pc_kinds:at_least", max_iterations=10)
    r = cli("run", str(spec), "--json")
    assert r.code == 0, r.stderr
    loop = r.json["tasks"]["loop"]
    assert loop["output"] == 3 and loop["iterations"] == 4 and loop["stopped_by"] == "predicate"
    assert r.json["tasks"]["after"]["output"] == 3
    assert lines(log) == ["iter 0 None", "iter 1 0", "iter 2 1", "iter 3 2"]


def test_loop_stops_by_the_cap_or_fails_with_fail_on_max(cli, write, tmp_path):
    log = tmp_path / "log"
    spec = loop_spec(write, log, until="pc_kinds:never", max_iterations=3, delay="0.05s")
    r = cli("run", str(spec), "--json")
    assert r.code == 0, r.stderr
    loop = r.json["tasks"]["loop"]
    assert (loop["output"], loop["iterations"], loop["stopped_by"]) == (2, 3, "max_iterations")

    spec = loop_spec(write, log, until="pc_kinds:never", max_iterations=3, fail_on_max=True)
    r = cli("run", str(spec), "--json")
    assert r.code == 1
    loop = r.json["tasks"]["loop"]
    assert loop["state"] == "dead_lettered" and loop["error"].startswith("LoopMaxIterations")
    assert r.json["tasks"]["after"]["state"] == "skipped"


@pytest.mark.parametrize("key, value, message", [
    ("sensor", '{ interval = "soon" }', "'sensor.interval' must be a positive duration"),
    ("sensor", '{ every = "1s" }', "'sensor.every' is not a sensor key"),
    ("repeat", '{ until = "pc_kinds:at_least" }', "'repeat.max_iterations' is missing"),
    ("repeat", '{ max_iterations = 0 }', "'repeat.max_iterations' must be a positive"),
    ("repeat", '{ max_iterations = 2, delay = -1 }', "'repeat.delay' must be a non-negative"),
    ("repeat", '{ max_iterations = 2, fail_on_max = "yes" }', "'repeat.fail_on_max' must be"),
    ("repeat", '{ max_iterations = 2, until = "pc_kinds:nope" }',
     "'repeat.until': module 'pc_kinds' has no attribute 'nope'"),
    ("repeat", '{ max_iterations = 2, until = "nomod:f" }',
     "'repeat.until': cannot import 'nomod:f'"),
    ("repeat", '{ max_iterations = 2, until = "pc_kinds:needs_two" }',
     "cannot take the output as its one positional argument"),
])
def test_validate_rejects_bad_values_naming_file_task_and_key(cli, write, key, value, message):
    spec = write("bad.toml", f"""
        [tasks.t]
        call = "pc_kinds:counter"
        kwargs = {{ log = "x" }}
        {key} = {value}
    """)
    r = cli("validate", str(spec))
    assert r.code == 2
    err = r.stderr.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert f"{spec}: task 't'" in err and message in err, err


def test_validate_supplies_iteration_and_previous_only_to_loops(cli, write, tmp_path):
    spec = loop_spec(write, tmp_path / "log", max_iterations=2)
    assert cli("validate", str(spec)).code == 0
    plain = write("plain.toml", """
        [tasks.t]
        call = "pc_kinds:counter"
        kwargs = { log = "x" }
    """)
    r = cli("validate", str(plain))
    assert r.code == 2 and "iteration" in r.stderr


def test_sigkill_during_a_loop_then_resume_goes_on_from_the_last_iteration(cli, write,
                                                                            tmp_path):
    log = tmp_path / "log"
    spec = write("loop.toml", f"""
        [tasks.loop]
        call = "pc_kinds:counter"
        kwargs = {{ log = "{log}", sleep = 0.3 }}
        repeat = {{ until = "pc_kinds:at_least", max_iterations = 20 }}
    """)
    proc = start("run", str(spec), "--run-id", "k", "--json")
    wait_for(lambda: len(lines(log)) >= 3)  # iteration 2 has started: 0 and 1 are done
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    before = lines(log)
    r = cli("resume", "k", "--json")
    assert r.code == 0, r.stderr
    loop = r.json["tasks"]["loop"]
    assert loop["output"] == 3 and loop["iterations"] == 4
    after = lines(log)[len(before):]
    # Only the iteration in flight at the kill (or later ones) run again.
    assert after and int(after[0].split()[1]) >= len(before) - 1
    assert [line.split()[1] for line in after][-1] == "3"
    finished = {line.split()[1] for line in before[:-1]}
    assert not finished & {line.split()[1] for line in after}


def test_sigkill_during_a_sensor_wait_then_resume_finishes(cli, write, tmp_path):
    log, flag = tmp_path / "log", tmp_path / "flag"
    spec = write("s.toml", f"""
        [tasks.sense]
        call = "pc_kinds:poll_file"
        kwargs = {{ log = "{log}", path = "{flag}" }}
        sensor = {{ interval = "0.2s", timeout = "60s" }}
    """)
    proc = start("run", str(spec), "--run-id", "w", "--json")
    wait_for(lambda: len(lines(log)) >= 2)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    polls_before = len(lines(log))
    flag.touch()
    r = cli("resume", "w", "--json")
    assert r.code == 0, r.stderr
    sense = r.json["tasks"]["sense"]
    assert sense["state"] == "completed" and sense["output"] == str(flag)
    assert sense["polls"] >= polls_before  # the count goes on from the journal


def test_a_sensor_deadline_survives_resume(cli, write, tmp_path):
    log = tmp_path / "log"
    spec = write("s.toml", f"""
        [tasks.sense]
        call = "pc_kinds:poll_file"
        kwargs = {{ log = "{log}", path = "{tmp_path}/never" }}
        sensor = {{ interval = "0.2s", timeout = "2s" }}
    """)
    proc = start("run", str(spec), "--run-id", "d", "--json")
    wait_for(lambda: len(lines(log)) >= 1)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    import time

    time.sleep(2.5)  # past the window that opened at the first poll
    r = cli("resume", "d", "--json")
    assert r.code == 1, r.stderr
    sense = r.json["tasks"]["sense"]
    assert sense["error"].startswith("SensorTimeout")
    # A fresh 2 s window would have taken ~10 more polls; the old one had closed.
    assert len(lines(log)) <= 4
    assert os.path.exists(tmp_path / "state" / "runs" / "d")
