"""The state directory under hostile hands: deleted lock files, concurrent
`--if-running` claims, symlinked state files, leftovers of killed creations."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from proc import start, wait_for
from tasks.sidefx import runs_of
from test_resume import CHAIN


def state() -> Path:
    return Path(os.environ["DAGRUN_STATE_DIR"])


# ------------------------------------------------------------ item 15: lock file deleted

def test_deleting_the_lock_file_of_a_live_run_lets_no_second_process_in(cli, write, tmp_path):
    log = tmp_path / "log"
    # b sleeps 4 s: the resume below starts and is refused well within it.
    spec = write("chain.toml", CHAIN.format(log=log, sleep=4))
    proc = start("run", str(spec), "--run-id", "L1", "--json")
    wait_for(lambda: "b" in runs_of(log))
    (state() / "runs" / "L1" / "lock").unlink()  # "a stale lock file"
    r = cli("resume", "L1", "--json")
    out, err = proc.communicate(timeout=60)
    assert r.code == 3, r.stderr
    assert f"pid {proc.pid}" in r.stderr and r.stdout == ""
    assert proc.returncode == 0, err
    assert runs_of(log) == {"a": 1, "b": 1, "c": 1}  # nothing ran twice


# --------------------------------------------------- item 16: concurrent --if-running

def test_concurrent_if_running_skip_runs_exactly_one(write, tmp_path):
    log = tmp_path / "log"
    spec = write("p.toml", f"""
        [pipeline]
        name = "cron"
        [tasks.t]
        call = "sidefx:step"
        kwargs = {{ log = "{log}", name = "t", sleep = 2 }}
    """)
    procs = [start("run", str(spec), "--if-running", "skip", "--json") for _ in range(8)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * 8, [e.decode() for _, e in outs]
    assert runs_of(log) == {"t": 1}
    assert len(list((state() / "runs").iterdir())) == 1
    skipped = [e for _, e in outs if b"skipping" in e]
    assert len(skipped) == 7


def test_a_plain_run_never_goes_on_without_the_pipeline_lock(write, tmp_path):
    """Another process holds the pipeline lock exclusively for 11 s (dagrun
    used to give up after 10 s and run unseen): the plain run waits for it and
    holds it, so an --if-running fail run started meanwhile sees it live."""
    log = tmp_path / "log"
    spec = write("p.toml", f"""
        [pipeline]
        name = "cron"
        [tasks.t]
        call = "sidefx:step"
        kwargs = {{ log = "{log}", name = "t", sleep = 5 }}
    """)
    lock = state() / "locks" / "cron.lock"
    lock.parent.mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c",
                               "import fcntl, os, time; "
                               f"fd = os.open({str(lock)!r}, os.O_RDWR | os.O_CREAT); "
                               "fcntl.flock(fd, fcntl.LOCK_EX); "
                               "print('locked', flush=True); time.sleep(11)"],
                              stdout=subprocess.PIPE)
    assert holder.stdout.readline().strip() == b"locked"
    proc = start("run", str(spec))
    holder.wait(timeout=60)
    # t sleeps 5 s once it starts: ample time for the check below on a slow machine.
    wait_for(lambda: "t" in runs_of(log))
    r = subprocess.run([sys.executable, "-m", "dagrun", "run", str(spec), "--if-running", "fail"],
                       capture_output=True, timeout=60)
    assert r.returncode == 3, r.stderr
    proc.communicate(timeout=60)
    assert proc.returncode == 0


# ------------------------------------------------------------------ item 20: symlinks

def _outside(tmp_path: Path, content: bytes) -> Path:
    target = tmp_path / "outside" / "victim"
    target.parent.mkdir(exist_ok=True)
    target.write_bytes(content)
    return target


def _symlink_over(path: Path, target: Path) -> None:
    path.unlink()
    path.symlink_to(target)


def test_a_symlinked_journal_is_refused_and_its_target_untouched(cli, write, tmp_path):
    log = tmp_path / "log"
    write("chain.toml", CHAIN.format(log=log, sleep=0))
    assert cli("run", "chain.toml", "--run-id", "s1").code == 0
    journal = state() / "runs" / "s1" / "journal"
    target = _outside(tmp_path, journal.read_bytes()[:-5])  # a torn last line: would be cut
    before = target.read_bytes()
    _symlink_over(journal, target)
    r = cli("resume", "s1", "--json")
    assert r.code == 2, r.stderr
    assert str(journal) in r.stderr and "symbolic link" in r.stderr
    assert "Traceback" not in r.stderr
    assert target.read_bytes() == before


def test_a_symlinked_run_json_is_refused(cli, write, tmp_path):
    write("chain.toml", CHAIN.format(log=tmp_path / "log", sleep=0))
    assert cli("run", "chain.toml", "--run-id", "s2").code == 0
    meta = state() / "runs" / "s2" / "run.json"
    target = _outside(tmp_path, meta.read_bytes())
    _symlink_over(meta, target)
    r = cli("resume", "s2")
    assert r.code == 2 and str(meta) in r.stderr and "symbolic link" in r.stderr, r.stderr


def test_a_journal_that_is_a_fifo_is_refused_without_hanging(cli, write, tmp_path):
    write("chain.toml", CHAIN.format(log=tmp_path / "log", sleep=0))
    assert cli("run", "chain.toml", "--run-id", "s3").code == 0
    journal = state() / "runs" / "s3" / "journal"
    journal.unlink()
    os.mkfifo(journal)
    r = cli("resume", "s3", timeout=60)  # a hang here is the bug
    assert r.code == 2 and str(journal) in r.stderr and "FIFO" in r.stderr, r.stderr


def test_a_symlinked_letter_is_refused_and_its_target_untouched(cli, write, tmp_path):
    write("p.toml", """
        [pipeline]
        name = "letters"
        [tasks.bad]
        call = "basic:fail"
    """)
    assert cli("run", "p.toml", "--run-id", "s4").code == 1
    letter = state() / "dlq" / "s4" / "bad"
    target = _outside(tmp_path, letter.read_bytes())
    _symlink_over(letter, target)
    r = cli("dlq", "show", "s4", "bad")
    assert r.code == 2 and str(letter) in r.stderr and "symbolic link" in r.stderr, r.stderr
    assert target.read_bytes() == letter.read_bytes()  # read through the test only


def test_a_symlinked_breaker_file_is_refused_and_its_target_untouched(cli, write, tmp_path):
    write("p.toml", """
        [pipeline]
        name = "guarded"
        [breakers.api]
        failure_threshold = 1
        cooldown = "1h"
        [tasks.t]
        call = "basic:fail"
        breaker = "api"
    """)
    assert cli("run", "p.toml").code == 1
    saved = state() / "breakers" / "api"
    target = _outside(tmp_path, saved.read_bytes())
    before = target.read_bytes()
    _symlink_over(saved, target)
    r = cli("run", "p.toml")
    assert r.code == 2 and str(saved) in r.stderr and "symbolic link" in r.stderr, r.stderr
    assert target.read_bytes() == before


# ------------------------------------------------------- item 22: .new- leftovers

def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_leftovers_of_killed_run_creations_are_swept_only_when_dead(cli, write, tmp_path):
    runs = state() / "runs"
    runs.mkdir(parents=True)
    dead = runs / f".new-r1-{_dead_pid()}-00aa11bb"
    dead.mkdir()
    (dead / "run.json").write_bytes(b"half")
    held = runs / f".new-r2-{_dead_pid()}-22cc33dd"
    held.mkdir()
    alive = runs / f".new-r3-{os.getpid()}-44ee55ff"  # a live pid, no lock yet: mkdir->flock
    alive.mkdir()
    # A live builder (another pid namespace, say) holds the lock on its folder.
    holder = subprocess.Popen([sys.executable, "-c",
                               "import fcntl, os, time; "
                               f"fd = os.open({str(held)!r}, os.O_RDONLY); "
                               "fcntl.flock(fd, fcntl.LOCK_EX); "
                               "print('locked', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline().strip() == b"locked"
        write("p.toml", '[tasks.t]\ncall = "basic:const"\n')
        assert cli("run", "p.toml").code == 0
        assert not dead.exists()
        assert held.exists() and alive.exists()
    finally:
        holder.kill()
        holder.wait()
    assert cli("run", "p.toml").code == 0
    assert not held.exists() and alive.exists()
