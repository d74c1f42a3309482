"""Run history through the CLI: `runs`, `status`, `resume --last`, timing fields,
`gc` and `breaker list/reset`."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import orjson
from proc import start, wait_for

GATED = """
[pipeline]
name = "{name}"
workers = 2
[tasks.gate]
call = "gated:until"
kwargs = {{ path = "{release}", started = "{started}" }}
[tasks.after]
call = "basic:const"
kwargs = {{ value = 7 }}
deps = ["gate"]
"""

FAILS = """
[pipeline]
name = "{name}"
[tasks.ok]
call = "basic:const"
kwargs = {{ value = 1 }}
[tasks.bad]
call = "basic:fail"
deps = ["ok"]
[tasks.later]
call = "basic:const"
deps = ["bad"]
"""


def state_dir() -> Path:
    return Path(os.environ["DAGRUN_STATE_DIR"])


def gated(write, tmp_path, name="gated", tag="g"):
    release, started = tmp_path / f"{tag}.release", tmp_path / f"{tag}.started"
    spec = write(f"{tag}.toml", GATED.format(name=name, release=release, started=started))
    return spec, release, started


def status_of(cli, run_id):
    r = cli("status", run_id, "--json")
    assert r.code == 0, r.stderr
    return r.json


def test_run_json_has_per_task_timing(cli, write):
    write("p.toml", """
        [tasks.nap]
        call = "basic:sleep"
        kwargs = { seconds = 0.3, value = 1 }
        [tasks.bad]
        call = "basic:fail"
        deps = ["nap"]
        [tasks.never]
        call = "basic:const"
        deps = ["bad"]
    """)
    before = time.time()
    r = cli("run", "p.toml", "--json")
    assert r.code == 1, r.stderr
    nap, bad, never = (r.json["tasks"][t] for t in ("nap", "bad", "never"))
    assert before - 1 <= nap["started_at"] <= nap["ended_at"] <= time.time() + 1
    assert 0.3 <= nap["duration_s"] < 30  # generous upper bound: a loaded machine
    assert bad["started_at"] >= nap["ended_at"] - 0.01 and bad["duration_s"] is not None
    assert never == {**never, "started_at": None, "ended_at": None, "duration_s": None}
    # status shows the same timings, read from the journal.
    shown = status_of(cli, r.json["run_id"])["tasks"]
    for tid in ("nap", "bad", "never"):
        assert shown[tid]["duration_s"] == r.json["tasks"][tid]["duration_s"]
        assert shown[tid]["state"] == r.json["tasks"][tid]["state"]


def test_runs_and_status_during_and_after_a_run(cli, write, tmp_path):
    spec, release, started = gated(write, tmp_path)
    proc = start("run", str(spec), "--run-id", "live1", "--json")
    try:
        wait_for(started.exists)
        live = status_of(cli, "live1")
        assert live["status"] == "running" and live["ended_at"] is None
        assert live["tasks"]["gate"]["state"] == "running"
        assert live["tasks"]["gate"]["started_at"] is not None
        assert live["tasks"]["gate"]["ended_at"] is None
        assert live["tasks"]["after"]["state"] == "pending"
        listed = cli("runs", "--json").json
        assert [(x["run_id"], x["status"]) for x in listed] == [("live1", "running")]
        text = cli("runs")
        assert text.code == 0 and "live1" in text.stdout and "running" in text.stdout
        release.touch()
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    done = status_of(cli, "live1")
    assert done["status"] == "succeeded" and done["ended_at"] >= done["started_at"]
    assert done["tasks"]["after"]["output"] == 7
    assert done["tasks"] == {tid: {**t} for tid, t in orjson.loads(out)["tasks"].items()}
    failed = cli("run", str(write("f.toml", FAILS.format(name="fails"))), "--run-id", "f1")
    assert failed.code == 1
    listed = cli("runs", "--json").json
    assert [(x["run_id"], x["status"]) for x in listed] == [("f1", "failed"),
                                                           ("live1", "succeeded")]
    assert all(x["ended_at"] is not None for x in listed)
    assert [x["run_id"] for x in cli("runs", "--json", "--limit", "1").json] == ["f1"]
    assert [x["run_id"] for x in cli("runs", "--json", "--pipeline", "gated").json] == ["live1"]
    assert [x["run_id"] for x in cli("runs", "--json", "--status", "failed").json] == ["f1"]
    shown = cli("status", "f1")
    assert shown.code == 0 and "dead_lettered" in shown.stdout and "ValueError" in shown.stdout


def test_unknown_run_exits_2_naming_the_state_dir(cli):
    r = cli("status", "nope", "--json")
    assert r.code == 2 and r.stdout == ""
    assert "no run 'nope'" in r.stderr and str(state_dir()) in r.stderr
    assert "Traceback" not in r.stderr


def test_sigkilled_run_reads_crashed_and_resume_last_finishes_it(cli, write, tmp_path):
    spec, release, started = gated(write, tmp_path)
    proc = start("run", str(spec), "--run-id", "k1")
    wait_for(started.exists)
    assert status_of(cli, "k1")["status"] == "running"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    crashed = status_of(cli, "k1")
    assert crashed["status"] == "crashed" and crashed["ended_at"] is None
    assert [x["run_id"] for x in cli("runs", "--json", "--status", "crashed").json] == ["k1"]
    text = cli("status", "k1")
    assert text.code == 0 and "crashed" in text.stdout and "dagrun resume k1" in text.stderr
    # A newer finished run is not what --last picks: it picks the newest unfinished one.
    assert cli("run", str(write("f.toml", FAILS.format(name="fails")))).code == 1
    assert cli("resume", "--last", "--pipeline", "fails").code == 2
    release.touch()
    r = cli("resume", "--last", "--json")
    assert r.code == 0, r.stderr
    assert r.json["run_id"] == "k1" and r.json["tasks"]["after"]["output"] == 7
    assert "resuming run k1" in r.stderr
    assert status_of(cli, "k1")["status"] == "succeeded"
    none = cli("resume", "--last")
    assert none.code == 2 and "no unfinished run" in none.stderr
    assert cli("resume", "k1", "--last").code == 2  # both: a usage error


def test_a_reused_pid_does_not_make_a_dead_run_live(cli, write, tmp_path):
    """The live marker names pid + start time: a marker left by a killed driver
    whose pid now belongs to another process (here: this test's own) reads crashed."""
    spec, release, started = gated(write, tmp_path)
    proc = start("run", str(spec), "--run-id", "k2")
    wait_for(started.exists)
    marker = state_dir() / "runs" / "k2" / "live"
    pid, start_time, boot = marker.read_text().split()
    assert int(pid) == proc.pid
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert marker.exists()  # a SIGKILL leaves it behind
    marker.write_text(f"{os.getpid()} {start_time} {boot}\n")  # same start time, other pid
    assert status_of(cli, "k2")["status"] == "crashed"
    with open(f"/proc/{os.getpid()}/stat", "rb") as fh:
        mine = fh.read().rsplit(b")", 1)[1].split()[19].decode()
    marker.write_text(f"{os.getpid()} {int(mine) + 1} {boot}\n")  # our pid, a later start
    assert status_of(cli, "k2")["status"] == "crashed"
    marker.write_text(f"{os.getpid()} {mine} {boot}\n")  # exactly a live process
    assert status_of(cli, "k2")["status"] == "running"
    marker.write_text(f"{os.getpid()} {mine} another-boot\n")
    assert status_of(cli, "k2")["status"] == "crashed"


def test_resume_never_exits_3_while_status_is_polled(cli, write, tmp_path):
    spec, release, started = gated(write, tmp_path)
    proc = start("run", str(spec), "--run-id", "p1")
    wait_for(started.exists)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    release.touch()
    stop = threading.Event()
    polled: list[int] = []

    def poll() -> None:
        while not stop.is_set():
            polled.append(cli("status", "p1", "--json").code)

    pollers = [threading.Thread(target=poll) for _ in range(2)]
    for t in pollers:
        t.start()
    try:
        codes = [cli("resume", "p1", "--json").code for _ in range(4)]
    finally:
        stop.set()
        for t in pollers:
            t.join()
    assert codes == [0, 0, 0, 0]
    assert polled and set(polled) == {0}


def finished_runs(cli, write):
    """succeeded (two pipelines), failed (with a dead letter), in that order."""
    spec_a = write("a.toml", '[pipeline]\nname = "a"\n[tasks.t]\ncall = "basic:const"\n')
    spec_b = write("b.toml", '[pipeline]\nname = "b"\n[tasks.t]\ncall = "basic:const"\n')
    for rid, spec in (("a1", spec_a), ("a2", spec_a), ("b1", spec_b), ("a3", spec_a)):
        assert cli("run", str(spec), "--run-id", rid).code == 0
    assert cli("run", str(write("f.toml", FAILS.format(name="a"))), "--run-id", "a4").code == 1
    assert (state_dir() / "dlq" / "a4" / "bad").exists()


def run_ids() -> set[str]:
    return {p.name for p in (state_dir() / "runs").iterdir()}


def test_gc_deletes_only_finished_runs(cli, write, tmp_path):
    finished_runs(cli, write)
    # cancelled (its deadline), crashed (SIGKILL) and live runs: never deleted.
    spec, release, started = gated(write, tmp_path, name="a", tag="c")
    assert cli("run", str(spec), "--run-id", "cancelled", "--deadline", "1s").code == 130
    spec, release, started = gated(write, tmp_path, name="a", tag="k")
    proc = start("run", str(spec), "--run-id", "crashed")
    wait_for(started.exists)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    spec, release, started = gated(write, tmp_path, name="a", tag="l")
    live = start("run", str(spec), "--run-id", "live")
    try:
        wait_for(started.exists)
        keep = {"cancelled", "crashed", "live"}
        assert cli("gc").code == 2  # no scope
        dry = cli("gc", "--keep", "0", "--dry-run")
        assert dry.code == 0
        assert {line.split()[2] for line in dry.stdout.splitlines()} == {
            "a1", "a2", "a3", "a4", "b1"}
        assert run_ids() == keep | {"a1", "a2", "a3", "a4", "b1"}  # dry: nothing deleted
        assert cli("gc", "--older-than", "14d").stdout == ""  # all younger than that
        kept_one = cli("gc", "--keep", "1")
        assert kept_one.code == 0, kept_one.stderr
        # The newest finished run of each pipeline stays: a4 (a), b1 (b).
        assert run_ids() == keep | {"a4", "b1"}
        time.sleep(1.1)
        assert cli("gc", "--older-than", "1s").code == 0
        assert run_ids() == keep
        assert not (state_dir() / "dlq" / "a4").exists()  # its dead letters went with it
        assert status_of(cli, "live")["status"] == "running"
        release.touch()
        out, err = live.communicate(timeout=60)
        assert live.returncode == 0, err
    finally:
        if live.poll() is None:
            live.kill()
            live.wait()
    assert {x["run_id"]: x["status"] for x in cli("runs", "--json").json} == {
        "cancelled": "cancelled", "crashed": "crashed", "live": "succeeded"}
    assert cli("gc", "--keep", "0").code == 0
    assert run_ids() == {"cancelled", "crashed"}


def test_gc_keeps_a_run_whose_lock_is_held(cli, write):
    """gc takes each run's lock before deleting it: a run another process holds
    (here a resume of it, simulated by holding the lock) is kept."""
    from dagrun.store.runs import Lock

    finished_runs(cli, write)
    lock = Lock(state_dir() / "runs" / "a1" / "lock", "run a1")
    lock.acquire()
    try:
        r = cli("gc", "--keep", "0")
    finally:
        lock.release()
    assert r.code == 0 and "kept run a1" in r.stderr
    assert run_ids() == {"a1"}


BREAKER = """
[pipeline]
workers = 1
[breakers.api]
failure_threshold = 1
cooldown = "1h"
max_wait = 0.2
[tasks.call]
call = "basic:fail"
breaker = "api"
"""


def test_breaker_list_and_reset(cli, write):
    assert cli("breaker", "list", "--json").json == []
    write("p.toml", BREAKER)
    before = time.time()
    assert cli("run", "p.toml").code == 1
    found = cli("breaker", "list", "--json").json
    assert [(b["name"], b["state"]) for b in found] == [("api", "open")]
    assert before + 3600 - 5 <= found[0]["reopens_at"] <= time.time() + 3600 + 5
    text = cli("breaker", "list")
    assert text.code == 0 and "api" in text.stdout and "open" in text.stdout
    held = cli("run", "p.toml", "--json")
    assert held.json["tasks"]["call"]["error"].startswith("CircuitOpen")
    unknown = cli("breaker", "reset", "nope")
    assert unknown.code == 2 and "no breaker 'nope'" in unknown.stderr
    assert cli("breaker", "reset", "api").code == 0
    found = cli("breaker", "list", "--json").json
    assert found == [{"name": "api", "state": "closed", "failures": 0, "reopens_at": None}]
    ran = cli("run", "p.toml", "--json")  # the task is attempted again
    assert ran.json["tasks"]["call"]["error"].startswith("ValueError")
