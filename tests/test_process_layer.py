"""The process layer through `dagrun run`: real misbehaving tasks, real signals.

Time bounds are generous (several seconds for things measured in milliseconds)
because CI machines are small and shared; the assertions that matter are
about exit codes, error messages and which processes are still alive.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from shapes import core


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            state = fh.read().rsplit(b")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in (b"Z", b"X")


def task_error(result, tid: str) -> str:
    return result.json["tasks"][tid]["error"] or ""


def test_timeouts_kill_hung_tasks_and_leave_others_running(cli, write, tmp_path):
    """Hangs in Python, in C (regex, sleep), ignoring SIGTERM, with a grandchild:
    each is killed at its deadline; a long task next to them completes."""
    write("p.toml", f"""
        [pipeline]
        workers = 6
        [defaults]
        timeout = 0.5
        timeout_grace = 0.3
        [tasks.py]
        call = "misbehave:hang_python"
        [tasks.regex]
        call = "misbehave:hang_regex"
        [tasks.sleep]
        call = "misbehave:hang_sleep"
        [tasks.stubborn]
        call = "misbehave:ignore_sigterm"
        kwargs = {{ marker = "{tmp_path}/stubborn.pid" }}
        [tasks.parent]
        call = "misbehave:grandchild"
        kwargs = {{ pidfile = "{tmp_path}/grandchild.pid" }}
        [tasks.bystander]
        call = "basic:sleep"
        kwargs = {{ seconds = 1.5, value = "fine" }}
        timeout = 30
        [tasks.after]
        call = "basic:const"
        kwargs = {{ value = 1 }}
        deps = ["py"]
    """)
    started = time.monotonic()
    r = cli("run", "p.toml", "--json")
    elapsed = time.monotonic() - started
    assert r.code == 1, r.stderr
    tasks = r.json["tasks"]
    for tid in ("py", "regex", "sleep", "stubborn", "parent"):
        assert tasks[tid]["state"] == "dead_lettered", tid
        assert task_error(r, tid).startswith("TaskTimeout: timed out after 0.5s"), tid
    assert "SIGKILL after the grace period" in task_error(r, "stubborn")
    assert "(SIGTERM)" in task_error(r, "sleep")
    assert core(tasks["bystander"]) == {"state": "completed", "attempts": 1, "output": "fine",
                                  "error": None}
    assert tasks["after"]["state"] == "skipped"
    assert "'py'" in tasks["after"]["error"]
    # Everything the tasks started is gone when dagrun exits, grandchild included.
    for name in ("stubborn.pid", "grandchild.pid"):
        pid = int((tmp_path / name).read_text())
        assert not alive(pid), name
    # Generous: the 0.5 s timeouts run in parallel with a 1.5 s task; startup on
    # a loaded CI box can take a few seconds.
    assert elapsed < 15


def test_zero_grace_kills_at_once(cli, write, tmp_path):
    write("p.toml", f"""
        [tasks.stubborn]
        call = "misbehave:ignore_sigterm"
        kwargs = {{ marker = "{tmp_path}/m.pid" }}
        timeout = 0.3
        timeout_grace = 0
    """)
    r = cli("run", "p.toml", "--json")
    assert r.code == 1
    assert r.json["tasks"]["stubborn"]["error"] == (
        "TaskTimeout: timed out after 0.3s; the task's process group was killed (SIGKILL)")
    assert not alive(int((tmp_path / "m.pid").read_text()))
    letter = cli("dlq", "show", r.json["run_id"], "stubborn", "--json").json
    (only,) = letter["attempts"]
    assert only["ended"] - only["started"] >= 0.3  # the attempt's real span
    assert only["error"]["type"] == "TaskTimeout" and only["error"]["signal"] == 9


def test_crashes_fail_alone_with_exit_code_or_signal(cli, write):
    write("p.toml", """
        [pipeline]
        workers = 4
        [tasks.exits]
        call = "misbehave:exit_hard"
        kwargs = { code = 3 }
        [tasks.segv]
        call = "misbehave:segfault"
        [tasks.oom]
        call = "misbehave:kill_self"
        [tasks.bystander]
        call = "basic:sleep"
        kwargs = { seconds = 0.5, value = 7 }
        [tasks.later]
        call = "basic:const"
        kwargs = { value = "still runs" }
        deps = ["bystander"]
    """)
    r = cli("run", "p.toml", "--json")
    assert r.code == 1, r.stderr
    t = r.json["tasks"]
    assert t["exits"]["error"] == ("WorkerCrashed: the task's process exited with code 3 "
                                   "before returning a result")
    assert t["segv"]["error"] == ("WorkerCrashed: the task's process was killed by SIGSEGV "
                                  "(segmentation fault)")
    assert t["oom"]["error"] == ("WorkerCrashed: the task's process was killed by SIGKILL "
                                 "— possibly out of memory")
    assert t["bystander"]["output"] == 7
    assert core(t["later"]) == {"state": "completed", "attempts": 1, "output": "still runs",
                          "error": None}


def test_flaky_task_succeeds_on_attempt_3(cli, write, tmp_path):
    """Fails twice (a file counts its attempts), then succeeds within its retries."""
    write("p.toml", f"""
        [tasks.t]
        call = "misbehave:flaky"
        kwargs = {{ counter = "{tmp_path}/n" }}
        retries = 3
        retry_delay = 0.05
    """)
    r = cli("run", "p.toml", "--json")
    assert r.code == 0, r.stderr
    assert core(r.json["tasks"]["t"]) == {"state": "completed", "attempts": 3,
                                    "output": {"attempts": 3}, "error": None}


def test_crash_is_retried_like_any_failure(cli, write):
    """A worker death uses an attempt and is retried on a fresh worker; retry_on and
    no_retry_on can name WorkerCrashed and TaskTimeout."""
    write("p.toml", """
        [tasks.crash]
        call = "misbehave:exit_hard"
        retries = 2
        retry_delay = 0.01
        retry_on = ["WorkerCrashed"]
        [tasks.timeout]
        call = "misbehave:hang_sleep"
        timeout = 0.2
        timeout_grace = 0
        retries = 2
        retry_delay = 0.01
        no_retry_on = ["TaskTimeout"]
    """)
    r = cli("run", "p.toml", "--json")
    assert r.code == 1
    assert r.json["tasks"]["crash"]["attempts"] == 3
    assert r.json["tasks"]["timeout"]["attempts"] == 1


def test_max_tasks_per_worker_recycles_workers(cli, write, tmp_path):
    write("p.toml", f"""
        [pipeline]
        workers = 1
        max_tasks_per_worker = 2
        [tasks.a]
        call = "misbehave:pid"
        [tasks.b]
        call = "misbehave:pid"
        [tasks.c]
        call = "misbehave:pid"
        [tasks.d]
        call = "misbehave:pid"
        [tasks.e]
        call = "misbehave:pid"
        [tasks.leaver]
        call = "misbehave:grandchild_then_return"
        kwargs = {{ pidfile = "{tmp_path}/left.pid" }}
        priority = -1
    """)
    r = cli("run", "p.toml", "--json")
    assert r.code == 0, r.stderr
    outputs = [r.json["tasks"][t]["output"] for t in "abcde"]
    # One worker at a time; no worker runs more than two tasks.
    counts = {p: outputs.count(p) for p in set(outputs)}
    assert len(counts) == 3 and max(counts.values()) == 2, outputs
    assert r.json["tasks"]["leaver"]["output"] not in outputs
    # A retired worker takes what its tasks left behind with it.
    assert not alive(int((tmp_path / "left.pid").read_text()))


def test_dagrun_sigkilled_leaves_no_process(cli, write, tmp_path):
    """SIGKILL dagrun itself while tasks (and their children) run."""
    import subprocess
    import sys

    write("p.toml", f"""
        [pipeline]
        workers = 2
        [tasks.parent]
        call = "misbehave:grandchild"
        kwargs = {{ pidfile = "{tmp_path}/g.pid" }}
        [tasks.stubborn]
        call = "misbehave:ignore_sigterm"
        kwargs = {{ marker = "{tmp_path}/s.pid" }}
    """)
    proc = subprocess.Popen([sys.executable, "-m", "dagrun", "run", "p.toml"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30  # generous: interpreter start-up on a busy box
        while not ((tmp_path / "g.pid").exists() and (tmp_path / "s.pid").exists()):
            assert time.monotonic() < deadline, "tasks never started"
            time.sleep(0.02)
    finally:
        proc.kill()
        proc.wait()
    pids = [int((tmp_path / n).read_text()) for n in ("g.pid", "s.pid")]
    deadline = time.monotonic() + 3  # the contract: within a few seconds
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not any(alive(p) for p in pids)


@pytest.mark.parametrize("grace", ["0", "0.2"])
def test_timed_out_worker_is_replaced(cli, write, grace):
    """After a timeout the pool has a fresh worker: later tasks run normally."""
    write("p.toml", f"""
        [pipeline]
        workers = 1
        [tasks.hang]
        call = "misbehave:hang_sleep"
        timeout = 0.2
        timeout_grace = {grace}
        priority = 5
        [tasks.next]
        call = "misbehave:pid"
    """)
    r = cli("run", "p.toml", "--json")
    assert r.code == 1
    assert r.json["tasks"]["next"]["state"] == "completed"
    assert r.json["tasks"]["next"]["output"] != os.getpid()


def test_task_processes_never_write_to_stdout_on_crash(cli, write):
    write("p.toml", """
        [tasks.segv]
        call = "misbehave:segfault"
    """)
    r = cli("run", "p.toml", "--json")
    assert r.code == 1
    # Exactly the one JSON line: a crashing task that wrote to dagrun's stdout
    # would add lines (or break the JSON parse above).
    assert r.stdout.count("\n") == 1 and r.stdout.endswith("\n")
    assert r.json["status"] == "failed"


def test_letters_dir_untouched_by_success(cli, write):
    write("p.toml", """
        [tasks.a]
        call = "basic:const"
    """)
    r = cli("run", "p.toml", "--json")
    assert r.code == 0
    assert not (Path(os.environ["DAGRUN_STATE_DIR"]) / "dlq").exists() or not any(
        (Path(os.environ["DAGRUN_STATE_DIR"]) / "dlq").iterdir())


def test_memory_limit_breach_is_a_clear_failure(cli, write):
    write("p.toml", """
        [pipeline]
        workers = 1
        [tasks.leaky]
        call = "misbehave:leak"
        memory_limit = "128MB"
        [tasks.modest]
        call = "misbehave:allocate"
        kwargs = { mb = 32 }
        memory_limit = "128MB"
        deps = ["leaky"]
        [tasks.unlimited]
        call = "misbehave:allocate"
        kwargs = { mb = 200 }
        priority = -1
    """)
    r = cli("run", "p.toml", "--json")
    assert r.code == 1, r.stderr
    t = r.json["tasks"]
    assert t["leaky"]["state"] == "dead_lettered"
    assert t["leaky"]["error"] == "MemoryLimitExceeded: exceeded memory_limit 128MB"
    assert t["modest"]["state"] == "skipped"
    # The limit was for that task only: the next task on the pool has none.
    assert t["unlimited"]["output"] == 200


def test_memory_limit_leaves_room_for_the_task(cli, write):
    write("p.toml", """
        [tasks.modest]
        call = "misbehave:allocate"
        kwargs = { mb = 32 }
        memory_limit = "128MiB"
        [tasks.leaky]
        call = "misbehave:leak"
        memory_limit = "128MiB"
        retries = 1
        retry_delay = 0.01
        retry_on = ["MemoryError"]
    """)
    r = cli("run", "p.toml", "--json")
    assert r.json["tasks"]["modest"]["output"] == 32
    assert r.json["tasks"]["leaky"]["attempts"] == 2  # MemoryError in retry_on matches
    assert r.json["tasks"]["leaky"]["error"] == (
        "MemoryLimitExceeded: exceeded memory_limit 128MiB")


def test_worker_death_seen_even_if_a_forked_child_holds_its_pipes(cli, write, tmp_path):
    write("p.toml", f"""
        [tasks.t]
        call = "misbehave:fork_then_die"
        kwargs = {{ pidfile = "{tmp_path}/child.pid" }}
        [tasks.after]
        call = "basic:const"
        kwargs = {{ value = 1 }}
    """)
    started = time.monotonic()
    r = cli("run", "p.toml", "--json", timeout=60)
    assert r.code == 1, r.stderr
    assert r.json["tasks"]["t"]["error"].startswith("WorkerCrashed: the task's process was "
                                                    "killed by SIGKILL")
    assert r.json["tasks"]["after"]["state"] == "completed"
    assert not alive(int((tmp_path / "child.pid").read_text()))
    assert time.monotonic() - started < 20  # generous; without the fix it never ends


def test_sentinel_survives_a_group_wide_sigterm(write, tmp_path):
    """A task SIGTERMs its own group (the sentinel's too), then dagrun is SIGKILLed:
    the sentinel must still be there to kill what the task started."""
    import subprocess
    import sys

    write("p.toml", f"""
        [tasks.t]
        call = "misbehave:killpg_own_group"
        kwargs = {{ pidfile = "{tmp_path}/sleep.pid" }}
    """)
    proc = subprocess.Popen([sys.executable, "-m", "dagrun", "run", "p.toml"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30  # generous: interpreter start-up on a busy box
        while not (tmp_path / "sleep.pid").exists():
            assert time.monotonic() < deadline, "the task never started"
            time.sleep(0.02)
        time.sleep(0.3)  # let the group's SIGTERM be delivered (default action: at once)
    finally:
        proc.kill()
        proc.wait()
    pid = int((tmp_path / "sleep.pid").read_text())
    deadline = time.monotonic() + 5  # the contract: within a few seconds
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not alive(pid), "the task's `sleep 45` outlived the SIGKILLed dagrun"
