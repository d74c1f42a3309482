"""A full disk for real: dagrun runs under RLIMIT_FSIZE with SIGXFSZ ignored, so
writes past the limit fail with EFBIG. The run must stop with one clear line
and exit 4, leave every earlier record valid, and resume once space is back."""

from __future__ import annotations

import resource
import signal
import subprocess
import sys

from tasks.sidefx import runs_of

from dagrun.store.journal import read_journal

NAMES = ["a", "b", "c", "d", "e", "f"]


def chain(log) -> str:
    text = "[pipeline]\nworkers = 1\n"
    for i, name in enumerate(NAMES):
        text += (f'[tasks.{name}]\ncall = "sidefx:padded"\n'
                 f'kwargs = {{ log = "{log}", name = "{name}", size = 1000 }}\n')
        if i:
            text += f'deps = ["{NAMES[i - 1]}"]\n'
    return text


def limited(limit: int, *args: str) -> subprocess.CompletedProcess:
    def preexec() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a core dump
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return subprocess.run([sys.executable, "-m", "dagrun", *args], capture_output=True,
                          preexec_fn=preexec, stdin=subprocess.DEVNULL, timeout=120)


def test_full_disk_stops_with_exit_4_and_resume_finishes(cli, write, tmp_path):
    log = tmp_path / "log"
    spec = write("chain.toml", chain(log))
    # Measure the run's metadata file, so that the limit lets it through and
    # stops the journal after a couple of 1 kB outputs.
    probe = cli("run", str(spec), "--run-id", "probe-1", "--state-dir", str(tmp_path / "probe"))
    assert probe.code == 0
    meta_size = (tmp_path / "probe" / "runs" / "probe-1" / "run.json").stat().st_size
    log.unlink()

    r = limited(meta_size + 2500, "run", str(spec), "--run-id", "full-1", "--json")
    err = r.stderr.decode()
    assert r.returncode == 4, err
    assert r.stdout == b""  # exit 4 prints nothing on stdout, even with --json
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if "error" in line]
    assert len(errors) == 1 and "file too large" in errors[0], err
    run_dir = tmp_path / "state" / "runs" / "full-1"
    contents = read_journal(run_dir / "journal")
    assert contents.bad_lines == []  # every record written before stays valid
    completed = {rec["task"] for rec in contents.records if rec.get("state") == "completed"}
    assert completed and completed != set(NAMES)

    done = cli("resume", "full-1", "--json")
    assert done.code == 0, done.stderr
    assert {t: v["output"] for t, v in done.json["tasks"].items()} == {
        n: n * 1000 for n in NAMES}
    runs = runs_of(log)
    for name in completed:
        assert runs[name] == 1  # recorded as completed: never run again


def test_state_dir_that_cannot_be_created_exits_4(cli, write, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    spec = write("chain.toml", chain(tmp_path / "log"))
    r = cli("run", str(spec), "--state-dir", str(blocker / "state"), "--json")
    assert r.code == 4, r.stderr
    assert r.stdout == "" and "Traceback" not in r.stderr
