"""Event-driven tasks (wait_for, event_timeout, dagrun.emit, dagrun emit)
through the CLI with real workers."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from proc import start, wait_for

WAITER_SPEC = """
[pipeline]
name = "ev"
workers = 2

[tasks.waiter]
call = "pdkinds:touch"
kwargs = {{ marker = "{marker}" }}
wait_for = ["go"]
"""


def test_task_waits_for_an_event_emitted_by_a_running_task(cli, write, tmp_path):
    marker = tmp_path / "waiter-started"
    spec = write("p.toml", f"""
        [pipeline]
        name = "ev"
        workers = 2

        [tasks.emitter]
        call = "pdkinds:emit_and_wait"
        kwargs = {{ name = "ready", marker = "{marker}" }}

        [tasks.waiter]
        call = "pdkinds:touch"
        kwargs = {{ marker = "{marker}" }}
        wait_for = ["ready"]
    """)
    r = cli("run", str(spec), "--json")
    # The emitter only finishes once the waiter has started: the event reached
    # the parent while the emitter was still running.
    assert r.code == 0, r.stderr
    assert r.json["tasks"]["emitter"]["output"] == "emitter done"
    assert r.json["tasks"]["waiter"]["output"] == "waited"


def test_emit_outside_dagrun_is_a_no_op():
    import pdkinds

    assert pdkinds.emit_outside() is False


def test_dagrun_emit_from_a_second_process_into_a_live_run(cli, write, tmp_path):
    marker = tmp_path / "m"
    spec = write("p.toml", WAITER_SPEC.format(marker=marker))
    p = start("run", str(spec), "--run-id", "live1", "--json")
    try:
        run_dir = Path(os.environ["DAGRUN_STATE_DIR"]) / "runs" / "live1"
        wait_for(lambda: (run_dir / "journal").exists())
        assert not marker.exists()
        r = cli("emit", "live1", "go")
        assert r.code == 0, r.stderr
        assert "not live" not in r.stderr
        out, err = p.communicate(timeout=60)  # generous: a loaded machine
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 0, err
    assert marker.read_text() == "started"
    journal = (run_dir / "journal").read_bytes()
    assert b'"kind":"event","name":"go"' in journal
    assert not list((run_dir / "inbox").iterdir())  # picked up, then removed


def test_emit_into_a_stopped_run_is_kept_for_its_resume(cli, write, tmp_path):
    marker = tmp_path / "m"
    spec = write("p.toml", WAITER_SPEC.format(marker=marker))
    p = start("run", str(spec), "--run-id", "stopped1")
    run_dir = Path(os.environ["DAGRUN_STATE_DIR"]) / "runs" / "stopped1"
    wait_for(lambda: (run_dir / "journal").exists())
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130, err
    r = cli("emit", "stopped1", "go")
    assert r.code == 0, r.stderr
    assert "is not live" in r.stderr
    assert not marker.exists()
    r = cli("resume", "stopped1", "--json")
    assert r.code == 0, r.stderr
    assert r.json["tasks"]["waiter"]["state"] == "completed"
    assert marker.exists()


def test_sigkill_during_an_event_wait_then_resume_remembers_emitted_events(cli, write, tmp_path):
    log = tmp_path / "log"
    marker = tmp_path / "m"
    spec = write("p.toml", f"""
        [pipeline]
        name = "ev"
        workers = 1

        [tasks.emitter]
        call = "pdkinds:emit_only"
        kwargs = {{ name = "a", log = "{log}" }}

        [tasks.waiter]
        call = "pdkinds:touch"
        kwargs = {{ marker = "{marker}" }}
        wait_for = ["a", "b"]
    """)
    p = start("run", str(spec), "--run-id", "killed1")
    journal = Path(os.environ["DAGRUN_STATE_DIR"]) / "runs" / "killed1" / "journal"
    wait_for(lambda: journal.exists() and b'"name":"a"' in journal.read_bytes()
             and b'"task":"emitter","state":"completed"' in journal.read_bytes())
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=30)
    assert not marker.exists()
    assert cli("emit", "killed1", "b").code == 0
    r = cli("resume", "killed1", "--json")
    assert r.code == 0, r.stderr
    assert r.json["tasks"]["waiter"]["state"] == "completed"
    # "a" came from the journal: the emitter did not run again.
    assert log.read_text() == "emitter ran\n"


def test_emit_errors_exit_2(cli, write, tmp_path):
    r = cli("emit", "no-such-run", "go")
    assert r.code == 2
    assert "no run 'no-such-run'" in r.stderr
    spec = write("p.toml", WAITER_SPEC.format(marker=tmp_path / "m"))
    p = start("run", str(spec), "--run-id", "r2")
    try:
        r = cli("emit", "r2", "bad name!")
        assert r.code == 2
        assert "invalid event name" in r.stderr
        assert cli("emit", "r2", "go").code == 0
        assert p.wait(timeout=60) == 0  # generous: a loaded machine
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_event_timeout_is_an_event_timeout_failure_retried_per_retries(cli, write, tmp_path):
    spec = write("p.toml", f"""
        [pipeline]
        name = "ev"

        [tasks.waiter]
        call = "pdkinds:touch"
        kwargs = {{ marker = "{tmp_path / 'm'}" }}
        wait_for = ["never"]
        event_timeout = "0.3s"
        retries = 1
        retry_delay = 0
    """)
    r = cli("run", str(spec), "--json")
    assert r.code == 1, r.stderr
    t = r.json["tasks"]["waiter"]
    assert t["state"] == "dead_lettered"
    assert t["attempts"] == 2
    assert t["error"].startswith("EventTimeout: waited 0.3s for event(s) never emitted: never")


def test_bad_event_keys_exit_2(cli, write):
    for extra, needle in (('wait_for = ["bad name"]', "'wait_for'"),
                          ("wait_for = 3", "'wait_for'"),
                          ('event_timeout = "1s"', "'event_timeout' needs 'wait_for'"),
                          ('wait_for = ["a"]\nevent_timeout = -1', "'event_timeout'")):
        spec = write("p.toml", f"""
[tasks.t]
call = "pdkinds:counter"
{extra}
""")
        r = cli("validate", str(spec))
        assert r.code == 2, extra
        assert "task 't'" in r.stderr and needle in r.stderr, r.stderr
