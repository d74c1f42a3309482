"""SIGINT, SIGTERM and the run deadline through the real CLI: running tasks (and
what they started) are stopped, recorded `cancelled`, exit 130, resumable."""

from __future__ import annotations

import os
import signal
import time

import orjson
from proc import start, wait_for
from tasks.sidefx import runs_of


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[0] not in (b"Z", b"X")
    except OSError:
        return False


def test_sigint_stops_tasks_and_their_children_then_resume_finishes(cli, write, tmp_path):
    log, pidfile = tmp_path / "log", tmp_path / "child.pid"
    spec = write("s.toml", f"""
        [pipeline]
        workers = 2
        [tasks.first]
        call = "sidefx:step"
        kwargs = {{ log = "{log}", name = "first", k = 1 }}
        [tasks.spawn]
        call = "sidefx:spawner"
        deps = ["first"]
        kwargs = {{ log = "{log}", name = "spawn", pidfile = "{pidfile}" }}
    """)
    proc = start("run", str(spec), "--run-id", "sig", "--json")
    wait_for(lambda: "spawn" in runs_of(log))
    child = int(pidfile.read_text())
    assert alive(child)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    result = orjson.loads(out)
    assert result["status"] == "cancelled"
    assert result["tasks"]["spawn"]["state"] == "cancelled"
    assert result["tasks"]["first"]["state"] == "completed"
    assert "dagrun resume sig" in err.decode() and "Traceback" not in err.decode()
    wait_for(lambda: not alive(child), timeout=10)  # the task's own child went with it
    # Resumable: the cancelled task runs again (here: interrupted again by a deadline).
    r = cli("resume", "sig", "--json", "--deadline", "1s")
    assert r.code == 130 and r.json["tasks"]["first"]["attempts"] == 1
    assert runs_of(log) == {"first": 1, "spawn": 2}


STUBBORN = """
[tasks.stubborn]
call = "sidefx:stubborn"
kwargs = {{ log = "{log}", name = "stubborn", seconds = 60 }}
timeout_grace = {grace}
"""


def test_sigterm_gives_the_grace_then_kills(write, tmp_path):
    log = tmp_path / "log"
    spec = write("s.toml", STUBBORN.format(log=log, grace=2))
    proc = start("run", str(spec), "--run-id", "term")
    wait_for(lambda: "stubborn" in runs_of(log))
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    took = time.monotonic() - t0
    assert proc.returncode == 130, err
    assert 1.5 <= took < 15  # waited the 2 s grace (generous upper bound: shared CI)
    assert b"dagrun resume term" in err


def test_second_ctrl_c_skips_the_grace(write, tmp_path):
    log = tmp_path / "log"
    spec = write("s.toml", STUBBORN.format(log=log, grace=60))
    proc = start("run", str(spec), "--run-id", "twice")
    wait_for(lambda: "stubborn" in runs_of(log))
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert time.monotonic() - t0 < 15  # not the 60 s grace (generous: shared CI)
    assert b"dagrun resume twice" in err


def test_pipeline_deadline_cancels_like_sigterm_and_stays_resumable(cli, write, tmp_path):
    log = tmp_path / "log"
    spec = write("d.toml", f"""
        [pipeline]
        deadline = "1s"
        workers = 1
        [tasks.quick]
        call = "sidefx:step"
        kwargs = {{ log = "{log}", name = "quick", k = 1 }}
        [tasks.slow]
        call = "sidefx:step"
        deps = ["quick"]
        inputs = {{ x = "quick" }}
        kwargs = {{ log = "{log}", name = "slow", k = 1, sleep = 3 }}
    """)
    t0 = time.monotonic()
    r = cli("run", str(spec), "--run-id", "late", "--json")
    assert r.code == 130, r.stderr
    assert time.monotonic() - t0 < 20  # the 1 s deadline, not the 3 s task (generous)
    assert r.json["status"] == "cancelled" and r.json["tasks"]["slow"]["state"] == "cancelled"
    assert "deadline" in r.stderr and "dagrun resume late" in r.stderr
    done = cli("resume", "late", "--json", "--deadline", "none")  # drops the 1 s deadline
    assert done.code == 0, done.stderr
    assert done.json["tasks"]["slow"]["output"] == 2
    assert runs_of(log) == {"quick": 1, "slow": 2}


def test_no_process_outlives_a_sigkilled_dagrun(write, tmp_path):
    log, pidfile = tmp_path / "log", tmp_path / "child.pid"
    spec = write("k.toml", f"""
        [tasks.spawn]
        call = "sidefx:spawner"
        kwargs = {{ log = "{log}", name = "spawn", pidfile = "{pidfile}" }}
    """)
    proc = start("run", str(spec))
    wait_for(lambda: "spawn" in runs_of(log))
    child = int(pidfile.read_text())
    proc.kill()
    proc.communicate(timeout=30)
    wait_for(lambda: not alive(child), timeout=10)  # contract: within a few seconds
    assert not alive(child)


def test_sighup_cancels_like_sigterm_and_stays_resumable(cli, write, tmp_path):
    """A closed terminal or a dropped ssh session: recorded, exit 130, resumable."""
    log = tmp_path / "log"
    spec = write("h.toml", f"""
        [tasks.slow]
        call = "sidefx:step"
        kwargs = {{ log = "{log}", name = "slow", k = 1, sleep = 30 }}
    """)
    proc = start("run", str(spec), "--run-id", "hup", "--json")
    wait_for(lambda: "slow" in runs_of(log))
    proc.send_signal(signal.SIGHUP)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert orjson.loads(out)["tasks"]["slow"]["state"] == "cancelled"
    assert b"SIGHUP" in err and b"dagrun resume hup" in err
    r = cli("resume", "hup", "--json", "--deadline", "1s")  # resumable: it runs again
    assert r.code == 130 and r.json["tasks"]["slow"]["state"] == "cancelled", r.stderr
    assert runs_of(log) == {"slow": 2}


def test_sigterm_after_the_result_is_decided_changes_nothing(tmp_path, write):
    """dagrun held in writing its --json result (the test does not read the pipe
    yet, the result is larger than a pipe's 64 KiB): a SIGTERM then neither
    changes the exit code nor adds a second JSON object."""
    import fcntl
    import termios

    spec = write("big.toml", """
        [tasks.big]
        call = "basic:big_list"
        kwargs = { n = 20000 }
    """)
    proc = start("run", str(spec), "--json", "--run-id", "late")
    assert proc.stdout is not None

    def pipe_full() -> bool:
        buf = bytearray(4)
        fcntl.ioctl(proc.stdout.fileno(), termios.FIONREAD, buf)
        return int.from_bytes(buf, "little") >= 65536

    wait_for(pipe_full, timeout=60)  # generous: workers fork slowly on shared CI
    proc.send_signal(signal.SIGTERM)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    result = orjson.loads(out)  # exactly one object: a second would not parse
    assert result["run_id"] == "late" and result["status"] == "succeeded"
    assert b"nothing was run" not in err


def test_sigterm_at_any_moment_names_an_existing_run(tmp_path, write):
    """SIGTERMs sent at delays spread over a whole run of a 2,000-task spec
    (most of it spent validating and creating the run): whatever the moment,
    stdout holds at most one JSON object, a run whose folder exists is named
    (in the JSON and in the resume hint), and the exit code matches the status."""
    parts = ['[pipeline]\nworkers = 1\n']
    parts += [f'[tasks.t{i}]\ncall = "basic:const"\nkwargs = {{ value = {i} }}\n'
              for i in range(2000)]
    spec = write("many.toml", "\n".join(parts))
    runs = tmp_path / "state" / "runs"
    t0 = time.monotonic()
    proc = start("run", str(spec), "--json", "--run-id", "whole")
    proc.communicate(timeout=120)
    whole = time.monotonic() - t0
    assert proc.returncode == 0
    trials = 24
    for i in range(trials):
        rid = f"t{i}"
        proc = start("run", str(spec), "--json", "--run-id", rid)
        time.sleep(whole * i / trials)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
        exists = (runs / rid / "run.json").exists()
        text = out.decode().strip()
        result = orjson.loads(text) if text else None  # a second object would not parse
        if proc.returncode == -signal.SIGTERM:  # before Python got to dagrun's code
            assert not exists and result is None
            continue
        assert proc.returncode in (0, 130), err
        if proc.returncode == 130:
            assert result is not None and result["status"] == "cancelled"
            assert (result["run_id"] == rid) == exists, (i, out, err)
            assert (f"dagrun resume {rid}".encode() in err) == exists, (i, err)
        else:
            assert result is not None and result["status"] == "succeeded", (i, out)
            assert result["run_id"] == rid


def test_a_stop_signal_wrapped_by_python_is_still_a_stop():
    """Python 3.11 wraps an exception raised in a class body's __set_name__ (a
    dataclass being defined while a module is lazily imported) in RuntimeError;
    a SIGTERM landing there must exit 130, not be reported as dagrun's bug."""
    from dagrun.cli import _stopped_by_signal
    from dagrun.cli.signals import Terminated

    class Raises:
        def __set_name__(self, owner, name):
            raise Terminated()

    try:
        type("Defined", (), {"field": Raises()})
    except Exception as exc:  # noqa: BLE001 - whatever Python wraps it in
        assert _stopped_by_signal(exc)
    else:
        raise AssertionError("__set_name__ did not raise")
    assert not _stopped_by_signal(RuntimeError("a real bug"))


SIGNAL_ON_IMPORT = '''
import os, signal, sys

class SignalOnImport:
    """SIGTERM to this process when {module!r} is first imported while a
    Python-level SIGTERM handler is installed (dagrun's start-up handler)."""
    def find_spec(self, name, path=None, target=None):
        if name == {module!r} and callable(signal.getsignal(signal.SIGTERM)):
            sys.meta_path.remove(self)
            os.kill(os.getpid(), signal.SIGTERM)
        return None

sys.meta_path.insert(0, SignalOnImport())
'''


def test_sigterm_while_orjson_initialises_is_a_stop_not_a_crash(tmp_path, write, cli):
    """orjson's extension module does not check the imports its init makes
    (`json` among them): dagrun's start-up handler raising there crashed dagrun
    with SIGSEGV (seen in CI). The signal arrives exactly there: exit 0 or 130."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(SIGNAL_ON_IMPORT.format(module="json"))
    spec = write("one.toml", """
        [tasks.a]
        call = "basic:const"
        kwargs = { value = 1 }
    """)
    path = f"{hook}{os.pathsep}{os.environ['PYTHONPATH']}"
    r = cli("run", str(spec), "--json", env={"PYTHONPATH": path})
    assert r.code in (0, 130), (r.code, r.stderr)
