"""`dagrun resume` through the real CLI: repair, continue, retry, edited spec."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import orjson
import pytest
from proc import start, wait_for
from shapes import core
from tasks.sidefx import runs_of

from dagrun import api
from dagrun.errors import UsageError
from dagrun.store.journal import read_journal

CHAIN = """
[pipeline]
name = "chain"
workers = 2
[tasks.a]
call = "sidefx:step"
kwargs = {{ log = "{log}", name = "a", k = 1 }}
[tasks.b]
call = "sidefx:step"
deps = ["a"]
inputs = {{ x = "a" }}
kwargs = {{ log = "{log}", name = "b", k = 10, sleep = {sleep} }}
[tasks.c]
call = "sidefx:step"
deps = ["b"]
inputs = {{ x = "b" }}
kwargs = {{ log = "{log}", name = "c", k = 100 }}
"""




def test_sigterm_then_resume_finishes_without_rerunning_completed(cli, write, tmp_path):
    log = tmp_path / "log"
    spec = write("chain.toml", CHAIN.format(log=log, sleep=30))
    proc = start("run", str(spec), "--run-id", "r1", "--json")
    wait_for(lambda: "b" in runs_of(log))
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    result = orjson.loads(out)
    assert result["status"] == "cancelled"
    assert result["tasks"]["a"]["state"] == "completed"
    assert result["tasks"]["b"]["state"] == "cancelled"
    assert result["tasks"]["b"]["attempts"] == 0  # cut short: does not count
    assert "dagrun resume r1" in err.decode()

    spec.write_text(CHAIN.format(log=log, sleep=0))
    r = cli("resume", "r1", "--json", "--deadline", "1s")
    # The stored spec still sleeps 30 s in b: the snapshot wins, so the deadline hits.
    assert r.code == 130, r.stderr
    assert "repaired b: cancelled -> pending" in r.stderr
    r = cli("resume", "r1", "--json", "--spec", str(spec))
    assert r.code == 0, r.stderr
    assert {t: v["output"] for t, v in r.json["tasks"].items()} == {"a": 1, "b": 11, "c": 111}
    assert runs_of(log)["a"] == 1  # completed before the signal: never again


def test_resume_of_a_succeeded_run_prints_the_stored_result(cli, write, tmp_path):
    log = tmp_path / "log"
    spec = write("chain.toml", CHAIN.format(log=log, sleep=0))
    first = cli("run", str(spec), "--run-id", "ok", "--json")
    assert first.code == 0
    again = cli("resume", "ok", "--json")
    assert again.code == 0, again.stderr
    assert again.json == first.json
    assert "already succeeded" in again.stderr
    assert runs_of(log) == {"a": 1, "b": 1, "c": 1}


def test_retry_failed_gives_dead_letters_a_fresh_budget(cli, write, tmp_path):
    log, flag = tmp_path / "log", tmp_path / "flag"
    flag.touch()
    spec = write("f.toml", f"""
        [tasks.a]
        call = "sidefx:fail_if"
        kwargs = {{ log = "{log}", name = "a", flag = "{flag}", k = 2 }}
        retries = 1
        [tasks.b]
        call = "sidefx:step"
        deps = ["a"]
        inputs = {{ x = "a" }}
        kwargs = {{ log = "{log}", name = "b", k = 1 }}
        [tasks.other]
        call = "sidefx:step"
        kwargs = {{ log = "{log}", name = "other" }}
    """)
    r = cli("run", str(spec), "--run-id", "f", "--json")
    assert r.code == 1
    assert r.json["tasks"]["a"]["state"] == "dead_lettered"
    assert r.json["tasks"]["b"]["state"] == "skipped"
    flag.unlink()
    plain = cli("resume", "f", "--json")  # dead letters stay without --retry-failed
    assert plain.code == 1 and plain.json["tasks"]["a"]["state"] == "dead_lettered"
    r = cli("resume", "f", "--json", "--retry-failed")
    assert r.code == 0, r.stderr
    assert core(r.json["tasks"]["a"]) == {"state": "completed", "attempts": 1, "output": 2,
                                    "error": None}
    assert r.json["tasks"]["b"]["output"] == 3
    assert "repaired a: dead_lettered -> pending" in r.stderr
    assert "repaired b: skipped -> pending" in r.stderr
    assert runs_of(log) == {"a": 3, "b": 1, "other": 1}


def test_resume_with_edited_spec_reruns_changed_tasks_and_descendants(cli, write, tmp_path):
    log = tmp_path / "log"
    text = CHAIN.format(log=log, sleep=0) + f"""
[tasks.side]
call = "sidefx:step"
kwargs = {{ log = "{log}", name = "side", k = 5 }}
"""
    spec = write("chain.toml", text)
    assert cli("run", str(spec), "--run-id", "e", "--json").code == 0
    spec.write_text(text.replace('name = "b", k = 10', 'name = "b", k = 20'))
    r = cli("resume", "e", "--json", "--spec", str(spec))
    assert r.code == 0, r.stderr
    assert r.json["tasks"]["b"]["output"] == 21 and r.json["tasks"]["c"]["output"] == 121
    assert runs_of(log) == {"a": 1, "b": 2, "c": 2, "side": 1}
    # The new snapshot is stored: a later resume has nothing left to do.
    again = cli("resume", "e", "--json")
    assert again.code == 0 and again.json["tasks"]["c"]["output"] == 121
    assert runs_of(log)["c"] == 2


def test_unreadable_run_metadata_is_refused_naming_the_file(cli, write, tmp_path):
    spec = write("chain.toml", CHAIN.format(log=tmp_path / "log", sleep=0))
    assert cli("run", str(spec), "--run-id", "m").code == 0
    meta = tmp_path / "state" / "runs" / "m" / "run.json"
    data = bytearray(meta.read_bytes())
    data[100] ^= 0x01
    meta.write_bytes(bytes(data))
    r = cli("resume", "m", "--json")
    assert r.code == 2
    assert str(meta) in r.stderr and "Traceback" not in r.stderr
    assert r.stdout == ""


def test_run_ids_are_never_used_as_paths_unchecked(cli, tmp_path):
    for bad in ("../../etc", "..", "a/b", "/etc/passwd", ".hidden", "x" * 200):
        r = cli("resume", bad, "--json")
        assert r.code == 2, bad
        assert "invalid run id" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "state").exists()  # nothing was created anywhere


def test_unknown_run_exits_2(cli):
    r = cli("resume", "nosuchrun")
    assert r.code == 2 and "no run 'nosuchrun'" in r.stderr


def test_state_is_private(cli, write, tmp_path):
    spec = write("chain.toml", CHAIN.format(log=tmp_path / "log", sleep=0))
    assert cli("run", str(spec), "--run-id", "p").code == 0
    state = tmp_path / "state"
    for path in [state, *state.rglob("*")]:
        mode = path.stat().st_mode & 0o777
        if path.is_dir():
            assert mode == 0o700, path
        else:
            assert mode == 0o600, path


def test_second_process_on_the_same_run_exits_3_naming_the_pid(cli, write, tmp_path):
    log = tmp_path / "log"
    spec = write("chain.toml", CHAIN.format(log=log, sleep=30))
    proc = start("run", str(spec), "--run-id", "busy")
    try:
        wait_for(lambda: "b" in runs_of(log))
        t0 = time.monotonic()
        r = cli("resume", "busy", "--json")
        assert r.code == 3, r.stderr
        assert f"pid {proc.pid}" in r.stderr and r.stdout == ""
        assert time.monotonic() - t0 < 10  # at once: no waiting for the lock
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
    assert proc.returncode == 130
    # The lock dies with its holder: resume works now, even after SIGKILL.
    proc = start("resume", "busy")
    wait_for(lambda: runs_of(log).get("b", 0) >= 2)
    proc.kill()
    proc.communicate(timeout=30)
    spec.write_text(CHAIN.format(log=log, sleep=0))
    r = cli("resume", "busy", "--json", "--spec", str(spec))
    assert r.code == 0, r.stderr


def test_if_running_skip_fail_wait(cli, write, tmp_path):
    log = tmp_path / "log"
    # b runs 8 s: long enough for the three checks below even on a slow machine.
    slow = write("chain.toml", CHAIN.format(log=log, sleep=8))
    proc = start("run", str(slow), "--run-id", "first")
    try:
        wait_for(lambda: "b" in runs_of(log))
        skip = cli("run", str(slow), "--if-running", "skip", "--json")
        assert skip.code == 0, skip.stderr
        assert "still going" in skip.stderr and f"pid {proc.pid}" in skip.stderr
        assert skip.json["status"] == "skipped"
        fail = cli("run", str(slow), "--if-running", "fail")
        assert fail.code == 3 and "chain" in fail.stderr
        short = cli("run", str(slow), "--if-running", "wait", "--wait-timeout", "0.5s")
        assert short.code == 3 and "after waiting" in short.stderr
        # The same pipeline (by name): waits for the first run's remaining seconds.
        quick = write("quick.toml", CHAIN.format(log=tmp_path / "log2", sleep=0))
        waited = cli("run", str(quick), "--if-running", "wait", "--json", timeout=90)
        assert waited.code == 0, waited.stderr
        assert proc.poll() is not None  # it only started once the first had finished
    finally:
        proc.communicate(timeout=30)
    runs = sorted(p.name for p in (tmp_path / "state" / "runs").iterdir())
    assert len(runs) == 2  # skip and fail started nothing


def test_bad_durability_and_deadline_values_exit_2(cli, write, tmp_path):
    spec = write("chain.toml", CHAIN.format(log=tmp_path / "log", sleep=0))
    assert cli("run", str(spec), "--durability", "sometimes").code == 2
    assert cli("run", str(spec), "--deadline", "soon").code == 2
    assert cli("run", str(spec), "--wait-timeout", "1s").code == 2




def test_a_corrupt_record_mid_journal_reruns_only_its_task(cli, write, tmp_path):
    log = tmp_path / "log"
    spec = write("chain.toml", CHAIN.format(log=log, sleep=0))
    assert cli("run", str(spec), "--run-id", "mid", "--json").code == 0
    journal = tmp_path / "state" / "runs" / "mid" / "journal"
    lines = journal.read_bytes().split(b"\n")
    number = next(i for i, line in enumerate(lines) if b'"task":"a","state":"completed"' in line)
    lines[number] = lines[number].replace(b'"output":1', b'"output":7')
    journal.write_bytes(b"\n".join(lines))
    r = cli("resume", "mid", "--json")
    assert r.code == 0, r.stderr
    assert f"{journal} line {number + 1} is corrupt" in r.stderr
    assert r.json["tasks"]["a"]["output"] == 1  # re-run, never the changed value
    assert runs_of(log) == {"a": 2, "b": 1, "c": 1}  # its completed dependents stay


def test_resume_on_a_terminal_shows_repairs_and_the_live_display(cli, write, tmp_path):
    from test_report import _run_on_tty

    log = tmp_path / "log"
    spec = write("chain.toml", CHAIN.format(log=log, sleep=2))
    assert cli("run", str(spec), "--run-id", "tty", "--deadline", "1s").code == 130
    # The run's 1 s deadline applies to each resume too, unless given anew.
    code, screen = _run_on_tty(["resume", "tty", "--deadline", "60s"], {})
    assert code == 0, screen
    assert "repaired b: cancelled -> pending" in screen and "\x1b[" in screen
    code, screen = _run_on_tty(["resume", "tty"], {})
    assert code == 0 and "already succeeded" in screen, screen


@pytest.mark.parametrize("mode", ["fast", "atomic", "durable"])
def test_every_durability_mode_runs_and_resumes(cli, write, tmp_path, mode):
    log = tmp_path / "log"
    spec = write("chain.toml", CHAIN.format(log=log, sleep=1))
    r = cli("run", str(spec), "--run-id", "d", "--durability", mode, "--deadline", "0.5s",
            "--json")
    assert r.code == 130, r.stderr
    done = cli("resume", "d", "--json", "--deadline", "60s", "--durability", mode)
    assert done.code == 0, done.stderr
    assert done.json["tasks"]["c"]["output"] == 111
    assert read_journal(tmp_path / "state" / "runs" / "d" / "journal").bad_lines == []


def test_api_resume_retries_named_dead_letters_only(write, tmp_path):
    flag = tmp_path / "flag"
    flag.touch()
    spec = write("f.toml", f"""
        [tasks.x]
        call = "sidefx:fail_if"
        kwargs = {{ log = "{tmp_path / 'log'}", name = "x", flag = "{flag}" }}
        [tasks.y]
        call = "sidefx:fail_if"
        kwargs = {{ log = "{tmp_path / 'log'}", name = "y", flag = "{flag}" }}
    """)
    state = tmp_path / "state"
    assert api.run(spec, state_dir=state, run_id="f").status == "failed"
    flag.unlink()
    with pytest.raises(UsageError, match="no task 'nope'"):
        api.resume("f", state_dir=state, retry_tasks=["nope"])
    result = api.resume("f", state_dir=state, retry_tasks=["x"])
    assert result.tasks["x"].state == "completed" and result.tasks["y"].state == "dead_lettered"
    assert result.exit_code == 1


def test_a_sigkilled_run_never_blocks_the_next_cron_run(cli, write, tmp_path):
    log = tmp_path / "log"
    spec = write("chain.toml", CHAIN.format(log=log, sleep=30))
    proc = start("run", str(spec), "--if-running", "fail")
    wait_for(lambda: "b" in runs_of(log))
    proc.kill()
    proc.communicate(timeout=30)
    quick = write("quick.toml", CHAIN.format(log=tmp_path / "log2", sleep=0))
    # Its workers die with it within moments (their sentinel); none holds the lock.
    end = time.monotonic() + 10
    while True:
        r = cli("run", str(quick), "--if-running", "fail", "--json")
        if r.code != 3 or time.monotonic() > end:
            break
        time.sleep(0.2)
    assert r.code == 0, r.stderr


def test_sigkill_during_resume_with_a_new_spec_never_keeps_stale_outputs(cli, write, tmp_path):
    chain = """
        [pipeline]
        name = "chain"
        [tasks.a]
        call = "basic:sleep"
        kwargs = {{ seconds = {secs}, value = {value} }}
        [tasks.b]
        call = "basic:add"
        deps = ["a"]
        inputs = {{ x = "a" }}
        kwargs = {{ y = 10 }}
        [tasks.c]
        call = "basic:add"
        deps = ["b"]
        inputs = {{ x = "b" }}
        kwargs = {{ y = 100 }}
    """
    old = write("chain.toml", chain.format(secs=0, value=1))
    new = write("chain2.toml", chain.format(secs=3, value=2))
    state = Path(os.environ["DAGRUN_STATE_DIR"])
    assert cli("run", str(old), "--run-id", "ch", "--json").json["tasks"]["c"]["output"] == 111
    proc = start("resume", "ch", "--spec", str(new))
    meta = state / "runs" / "ch" / "run.json"
    wait_for(lambda: b'"seconds":3' in meta.read_bytes())  # the new snapshot is in place
    proc.kill()
    proc.communicate()
    r = cli("resume", "ch", "--json")
    assert r.code == 0, r.stderr
    outputs = {t: v["output"] for t, v in r.json["tasks"].items()}
    assert outputs == {"a": 2, "b": 12, "c": 112}


def test_resume_with_a_task_module_gone_is_one_clear_error(cli, write, tmp_path):
    write("gone_mod.py", "def f():\n    return 1\n")
    spec = write("g.toml", '[tasks.a]\ncall = "gone_mod:f"\nretries = 2\n'
                 '[tasks.b]\ncall = "basic:const"\ndeps = ["a"]\n')
    assert cli("run", str(spec), "--run-id", "g1").code == 0
    journal = Path(os.environ["DAGRUN_STATE_DIR"]) / "runs" / "g1" / "journal"
    journal.write_bytes(b"")  # as if nothing had run yet
    (tmp_path / "gone_mod.py").unlink()
    r = cli("resume", "g1", "--json")
    assert r.code == 2 and "gone_mod" in r.stderr and r.stdout == ""
    assert "Traceback" not in r.stderr


def test_a_retry_delay_cut_short_by_a_kill_is_waited_out_on_resume(cli, write, tmp_path):
    flag = tmp_path / "flag"
    spec = write("rt.toml", f"""
        [tasks.f]
        call = "misbehave:fail_if_exists"
        kwargs = {{ flag = "{flag}" }}
        retries = 1
        retry_delay = 4
        retry_backoff = "fixed"
        retry_jitter = false
    """)
    flag.write_text("")
    journal = Path(os.environ["DAGRUN_STATE_DIR"]) / "runs" / "rt" / "journal"
    proc = start("run", str(spec), "--run-id", "rt")
    wait_for(lambda: journal.exists() and b'"retrying"' in journal.read_bytes())
    proc.kill()
    proc.communicate()
    flag.unlink()
    t0 = time.monotonic()
    r = cli("resume", "rt", "--json")
    assert r.code == 0, r.stderr
    assert r.json["tasks"]["f"]["attempts"] == 2
    assert time.monotonic() - t0 > 2  # the rest of the 4 s delay, not an immediate retry


def test_attempt_numbers_never_repeat_after_a_sigkill(cli, write, tmp_path):
    log = tmp_path / "log"
    spec = write("slow.toml", f"""
        [tasks.a]
        call = "sidefx:step"
        kwargs = {{ log = "{log}", name = "a", sleep = 1.5 }}
    """)
    for args in (("run", str(spec), "--run-id", "att"), ("resume", "att")):
        proc = start(*args)
        count = len(log.read_text().splitlines()) if log.exists() else 0
        wait_for(lambda n=count: log.exists() and len(log.read_text().splitlines()) > n)
        proc.kill()  # while a runs
        proc.communicate()
    r = cli("resume", "att", "--json")
    assert r.code == 0, r.stderr
    numbers = [line.split()[1] for line in log.read_text().splitlines()]
    assert numbers == ["1", "2", "3"]
    assert r.json["tasks"]["a"]["attempts"] == 1  # cut-short attempts do not count


def test_resume_spec_of_another_pipeline_or_dropping_tasks_is_refused(cli, write, tmp_path):
    spec = write("chain.toml", CHAIN.format(log=tmp_path / "log", sleep=0))
    assert cli("run", str(spec), "--run-id", "p").code == 0
    other = write("other.toml", '[pipeline]\nname = "other"\n[tasks.x]\ncall = "basic:const"\n')
    r = cli("resume", "p", "--spec", str(other), "--json")
    assert r.code == 2 and r.stdout == "" and len(r.stderr.strip().splitlines()) == 1
    assert "pipeline 'chain'" in r.stderr and "'other'" in r.stderr
    fewer = write("fewer.toml", CHAIN.format(log=tmp_path / "log", sleep=0).split("[tasks.c]")[0])
    r = cli("resume", "p", "--spec", str(fewer), "--json")
    assert r.code == 2 and "drops 1 task(s)" in r.stderr and ": c;" in r.stderr
    assert "--allow-removed" in r.stderr
    r = cli("resume", "p", "--spec", str(fewer), "--allow-removed", "--json")
    assert r.code == 0, r.stderr
    assert set(r.json["tasks"]) == {"a", "b"}


def test_a_retry_delay_cut_by_sigterm_is_waited_out_on_resume(cli, write, tmp_path):
    flag = tmp_path / "flag"
    spec = write("rd.toml", f"""
        [tasks.f]
        call = "misbehave:fail_if_exists"
        kwargs = {{ flag = "{flag}" }}
        retries = 1
        retry_delay = 20
        retry_backoff = "fixed"
        retry_jitter = false
    """)
    flag.write_text("")
    journal = Path(os.environ["DAGRUN_STATE_DIR"]) / "runs" / "rd" / "journal"
    proc = start("run", str(spec), "--run-id", "rd")
    wait_for(lambda: journal.exists() and b'"retrying"' in journal.read_bytes())
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 130
    flag.unlink()
    r = cli("resume", "rd", "--json")
    assert r.code == 0, r.stderr
    history = [rec["attempt"] for rec in read_journal(journal).records if "attempt" in rec]
    assert len(history) == 2
    # 1 s of slack for clock granularity; the delay is 20 s, a skipped one ~0.3 s.
    assert history[1]["started"] >= history[0]["ended"] + 19


def test_a_run_of_an_older_state_format_is_refused_in_one_line(cli, write, tmp_path):
    from dagrun.store.records import frame, unframe

    spec = write("chain.toml", CHAIN.format(log=tmp_path / "log", sleep=0))
    assert cli("run", str(spec), "--run-id", "old").code == 0
    meta_path = tmp_path / "state" / "runs" / "old" / "run.json"
    meta = unframe(meta_path.read_bytes())
    meta["v"] = 1
    del meta["nonce"]
    meta_path.write_bytes(frame(meta))
    r = cli("resume", "old", "--json")
    assert r.code == 2 and r.stdout == "" and len(r.stderr.strip().splitlines()) == 1
    assert "older dagrun" in r.stderr
