"""The dead-letter queue through the CLI: letters written by `run`, listed,
shown, purged and retried; corrupt letters are ignored, never a crash."""

from __future__ import annotations

import os
import time
from pathlib import Path

from shapes import core

from dagrun.store.records import frame, unframe

FAILING = """
    [pipeline]
    name = "letters"
    workers = 2
    [tasks.up]
    call = "basic:numbers"
    [tasks.bad]
    call = "misbehave:fail_if_exists"
    kwargs = {{ flag = "{flag}" }}
    inputs = {{ log = "nothing" }}
    deps = ["nothing"]
    retries = 1
    retry_delay = 0.01
    [tasks.crash]
    call = "misbehave:exit_hard"
    kwargs = {{ code = 9 }}
    [tasks.down]
    call = "basic:total"
    inputs = {{ xs = "up" }}
    deps = ["up", "bad"]
    [tasks.nothing]
    call = "basic:const"
"""


def dlq_dir() -> Path:
    return Path(os.environ["DAGRUN_STATE_DIR"]) / "dlq"


def failing_run(cli, write, tmp_path, run_id="r1"):
    flag = tmp_path / "down.flag"
    flag.write_text("")
    write("p.toml", FAILING.format(flag=flag))
    r = cli("run", "p.toml", "--json", "--run-id", run_id)
    assert r.code == 1, r.stderr
    return r, flag


def test_failed_tasks_get_letters_with_every_attempt(cli, write, tmp_path):
    r, _ = failing_run(cli, write, tmp_path)
    assert r.json["tasks"]["bad"]["state"] == "dead_lettered"
    assert r.json["tasks"]["down"]["state"] == "skipped"

    listed = cli("dlq", "list", "--json")
    assert listed.code == 0
    by_task = {x["task"]: x for x in listed.json}
    assert set(by_task) == {"bad", "crash"}  # skipped tasks get no letter
    assert by_task["bad"]["run_id"] == "r1"
    assert by_task["bad"]["attempts"] == 2
    assert by_task["bad"]["error"] == "ConnectionError: service down"
    assert by_task["crash"]["error"].startswith("WorkerCrashed: the task's process exited "
                                                "with code 9")

    shown = cli("dlq", "show", "r1", "bad", "--json")
    letter = shown.json
    assert letter["run_id"] == "r1" and letter["task"] == "bad"
    assert [a["attempt"] for a in letter["attempts"]] == [1, 2]
    for a in letter["attempts"]:
        assert a["ended"] >= a["started"] > 0
        assert a["error"]["type"] == "ConnectionError"
        assert a["error"]["message"] == "service down"
        assert "fail_if_exists" in a["error"]["traceback"]
    assert letter["inputs_digest"].startswith("sha256:")
    crash = cli("dlq", "show", "r1", "crash", "--json").json
    assert crash["attempts"][0]["error"]["exit_code"] == 9

    # The letter is one checksummed frame on disk.
    raw = (dlq_dir() / "r1" / "bad").read_bytes()
    assert unframe(raw)["task"] == "bad"

    plain = cli("dlq", "show", "r1", "bad")
    assert plain.code == 0
    assert "--- attempt 2" in plain.stdout and "Traceback" in plain.stdout
    table = cli("dlq", "list")
    assert "bad" in table.stdout and "ConnectionError: service down" in table.stdout


def test_same_inputs_same_digest(cli, write, tmp_path):
    failing_run(cli, write, tmp_path, "r1")
    failing_run(cli, write, tmp_path, "r2")
    one = cli("dlq", "show", "r1", "bad", "--json").json["inputs_digest"]
    two = cli("dlq", "show", "r2", "bad", "--json").json["inputs_digest"]
    other = cli("dlq", "show", "r2", "crash", "--json").json["inputs_digest"]
    assert one == two != other
    only = cli("dlq", "list", "--run-id", "r2", "--json").json
    assert {x["run_id"] for x in only} == {"r2"} and len(only) == 2


def test_show_and_list_errors_are_one_line(cli, write, tmp_path):
    r = cli("dlq", "show", "nope", "bad")
    assert r.code == 2 and "no dead letter for task 'bad' of run 'nope'" in r.stderr
    assert "Traceback" not in r.stderr
    r = cli("dlq", "show", "../etc", "x")
    assert r.code == 2 and "invalid run id" in r.stderr
    r = cli("dlq", "list", "--json")
    assert r.code == 0 and r.json == []
    r = cli("dlq", "retry", "nope", "--json")
    assert r.code == 2 and r.stdout == "" and "no run 'nope'" in r.stderr
    write("ok.toml", """
        [tasks.a]
        call = "basic:const"
    """)
    assert cli("run", "ok.toml", "--run-id", "fine").code == 0
    r = cli("dlq", "retry", "fine", "--json")
    assert r.code == 2 and r.stdout == "" and "has no dead letters" in r.stderr


def test_corrupt_letter_is_ignored_with_a_warning(cli, write, tmp_path):
    failing_run(cli, write, tmp_path)
    path = dlq_dir() / "r1" / "bad"
    data = bytearray(path.read_bytes())
    data[80] ^= 1
    path.write_bytes(bytes(data))
    r = cli("dlq", "list", "--json")
    assert r.code == 0
    assert [x["task"] for x in r.json] == ["crash"]
    assert "r1/bad is corrupt" in r.stderr
    r = cli("dlq", "show", "r1", "bad")
    assert r.code == 2 and "is corrupt (checksum mismatch)" in r.stderr


def test_purge(cli, write, tmp_path):
    failing_run(cli, write, tmp_path, "r1")
    failing_run(cli, write, tmp_path, "r2")
    r = cli("dlq", "purge", "--run-id", "r1")
    assert r.code == 0 and "deleted 2 dead letters" in r.stderr
    assert {x["run_id"] for x in cli("dlq", "list", "--json").json} == {"r2"}
    # Age letters of r2's 'bad' by rewriting its timestamp (a real, valid frame).
    path = dlq_dir() / "r2" / "bad"
    from dagrun.store.records import unframe as uf

    letter = uf(path.read_bytes())
    letter["created"] = time.time() - 8 * 86400
    path.write_bytes(frame(letter))
    r = cli("dlq", "purge", "--older-than", "7d")
    assert r.code == 0 and "deleted 1 dead letter" in r.stderr
    assert [x["task"] for x in cli("dlq", "list", "--json").json] == ["crash"]
    r = cli("dlq", "purge", "--older-than", "soon")
    assert r.code == 2 and "Traceback" not in r.stderr
    r = cli("dlq", "purge", "--all")
    assert r.code == 0
    assert cli("dlq", "list", "--json").json == []


def test_purge_needs_a_scope_and_can_dry_run(cli, write, tmp_path):
    failing_run(cli, write, tmp_path, "r1")
    state = os.environ["DAGRUN_STATE_DIR"]
    r = cli("dlq", "purge")  # no scope: a usage error, nothing deleted
    assert r.code == 2 and "--all" in r.stderr and "Traceback" not in r.stderr
    r = cli("dlq", "purge", "--all", "--dry-run")
    assert r.code == 0, r.stderr
    assert r.stdout.splitlines() == ["r1 bad", "r1 crash"]
    assert f"would delete 2 dead letters in {state}" in r.stderr
    assert len(cli("dlq", "list", "--json").json) == 2  # nothing deleted
    r = cli("dlq", "purge", "--run-id", "nosuchrun")
    assert r.code == 2 and "nosuchrun" in r.stderr and state in r.stderr
    r = cli("dlq", "purge", "--run-id", "r1", "--dry-run")
    assert r.code == 0 and len(r.stdout.splitlines()) == 2
    assert len(cli("dlq", "list", "--json").json) == 2
    assert cli("dlq", "purge", "--all", "--run-id", "r1").code == 2


def _drop_final_run_record(run_id: str) -> None:
    """As if dagrun had been killed after recording its dead letters but before
    finishing: the journal's last line (the run record) goes."""
    journal = Path(os.environ["DAGRUN_STATE_DIR"]) / "runs" / run_id / "journal"
    lines = journal.read_bytes().splitlines(keepends=True)
    assert b'"kind":"run"' in lines[-1]
    journal.write_bytes(b"".join(lines[:-1]))


def test_letter_written_on_resume_if_dagrun_died_before_writing_it(cli, write, tmp_path):
    """The journal record comes first; a letter missing because dagrun died
    before writing it is written when the run is next driven."""
    failing_run(cli, write, tmp_path)
    (dlq_dir() / "r1" / "crash").unlink()
    _drop_final_run_record("r1")
    r = cli("resume", "r1", "--json")
    assert r.code == 1, r.stderr
    shown = cli("dlq", "show", "r1", "crash", "--json")
    assert shown.code == 0 and shown.json["task"] == "crash"


def test_purged_letters_stay_purged_across_resume(cli, write, tmp_path):
    failing_run(cli, write, tmp_path)
    assert cli("dlq", "purge", "--run-id", "r1").code == 0
    assert cli("resume", "r1").code == 1
    assert cli("dlq", "list", "--json").json == []


def test_stale_letter_of_a_completed_task_is_removed_on_resume(cli, write, tmp_path):
    """dagrun killed after a retried task completed, before its letter was deleted."""
    r, flag = failing_run(cli, write, tmp_path)
    letter = (dlq_dir() / "r1" / "bad").read_bytes()
    flag.unlink()
    assert cli("dlq", "retry", "r1", "bad").code == 1  # 'crash' still fails
    (dlq_dir() / "r1" / "bad").write_bytes(letter)  # as if the unlink never happened
    cli("resume", "r1")
    assert [x["task"] for x in cli("dlq", "list", "--json").json] == ["crash"]


def test_retry_gives_a_fresh_budget_and_removes_letters_on_success(cli, write, tmp_path):
    r, flag = failing_run(cli, write, tmp_path)
    flag.unlink()  # the 'service' is back
    # Only 'bad' is retried: 'crash' keeps its letter; 'down' (skipped) runs again.
    retried = cli("dlq", "retry", "r1", "bad", "--json")
    assert retried.code == 1, retried.stderr  # 'crash' is still dead-lettered
    t = retried.json["tasks"]
    assert t["bad"]["state"] == "completed"
    assert t["bad"]["attempts"] == 1  # a fresh budget: counted from zero
    assert core(t["down"]) == {"state": "completed", "attempts": 1, "output": 6, "error": None}
    assert t["crash"]["state"] == "dead_lettered"
    assert [x["task"] for x in cli("dlq", "list", "--json").json] == ["crash"]


def test_retry_of_every_letter_and_exit_codes(cli, write, tmp_path):
    failing_run(cli, write, tmp_path)
    r = cli("dlq", "retry", "r1", "up")
    assert r.code == 2 and "no dead letter for task 'up'" in r.stderr
    r = cli("dlq", "retry", "nope")
    assert r.code == 2 and "no run 'nope'" in r.stderr
    # All letters (the default): both fail again -> exit 1, letters kept and updated.
    r = cli("dlq", "retry", "r1", "--json")
    assert r.code == 1
    assert r.json["tasks"]["bad"]["state"] == "dead_lettered"
    letter = cli("dlq", "show", "r1", "bad", "--json").json
    assert len(letter["attempts"]) == 4  # 2 from the run, 2 from the retry


def test_retry_is_locked_like_resume(cli, write, tmp_path):
    import subprocess
    import sys

    failing_run(cli, write, tmp_path)
    lock_path = Path(os.environ["DAGRUN_STATE_DIR"]) / "runs" / "r1" / "lock"
    # A real second process holds the run's lock, as a live dagrun would.
    holder = subprocess.Popen([sys.executable, "-c",
                               "import fcntl, os, time; "
                               f"fd = os.open({str(lock_path)!r}, os.O_RDWR | os.O_CREAT); "
                               "fcntl.flock(fd, fcntl.LOCK_EX); "
                               "print('locked', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline().strip() == b"locked"
        r = cli("dlq", "retry", "r1", "--json")
        assert r.code == 3 and r.stdout == ""
        assert "locked" in r.stderr
    finally:
        holder.kill()
        holder.wait()


def test_attempt_numbers_keep_counting_after_a_dlq_retry(cli, write, tmp_path):
    flag = tmp_path / "flag"
    flag.write_text("")
    write("a.toml", f"""
        [tasks.t]
        call = "basic:attempt_unless_flag"
        kwargs = {{ flag = "{flag}" }}
        retries = 1
        retry_delay = 0.01
    """)
    assert cli("run", "a.toml", "--run-id", "at").code == 1
    flag.unlink()
    r = cli("dlq", "retry", "at", "--json")
    assert r.code == 0, r.stderr
    assert r.json["tasks"]["t"]["output"] == 3  # DAGRUN_ATTEMPT: 1, 2, then 3 — never 1 again


def test_purge_during_a_live_run_never_aborts_it(cli, write, tmp_path):
    """A purge loop in another process removes letters (and their emptied
    folder) while the run writes more: the run still ends with exit 1."""
    import subprocess
    import sys

    n = 1000
    write("p.toml", "[pipeline]\nname = \"many\"\nworkers = 2\n[defaults]\nretries = 0\n"
          + "".join(f"[tasks.t{i}]\ncall = \"basic:fail\"\n" for i in range(n)))
    stop = tmp_path / "stop"
    purger = subprocess.Popen([sys.executable, "-c",
                               "import os, sys\n"
                               "from dagrun.dlq import DeadLetterQueue\n"
                               f"q = DeadLetterQueue({str(dlq_dir().parent)!r})\n"
                               "rounds = 0\n"
                               f"while not os.path.exists({str(stop)!r}):\n"
                               "    q.purge(run_id='big'); rounds += 1\n"
                               "print(rounds)\n"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        r = cli("run", "p.toml", "--run-id", "big", "--json", timeout=300)
    finally:
        stop.write_text("")
        out, err = purger.communicate(timeout=60)
    assert purger.returncode == 0, err.decode()
    assert int(out) > 0  # it did purge while the run went on
    assert r.code == 1, r.stderr
    assert all(t["state"] == "dead_lettered" for t in r.json["tasks"].values())
