"""The Dask backend (issue 12) on a real LocalCluster(processes=True) on 127.0.0.1.

One cluster serves the module (started in its own process, as an external
scheduler is: the test process never holds Dask threads); dagrun runs in a
subprocess pointed at it. The test that needs dagrun's own LocalCluster
(lost worker, no orphans after SIGKILL, resume) starts one.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

pytest.importorskip("distributed")

CLUSTER = textwrap.dedent("""
    import sys
    from distributed import LocalCluster
    if __name__ == "__main__":
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                               host="127.0.0.1", dashboard_address=None,
                               local_directory=sys.argv[1], memory_limit=0)
        print(cluster.scheduler_address, flush=True)
        sys.stdin.read()  # until the test module ends (or pytest dies)
        cluster.close()
""")

# dagrun with the Dask backend through its Python API (dagrun.run, executor=),
# printing what `run --json` prints and exiting with its exit code.
RUNNER = textwrap.dedent("""
    import sys
    import orjson
    import dagrun
    from dagrun.errors import DagrunError
    if __name__ == "__main__":
        spec, state, extra = sys.argv[1], sys.argv[2], orjson.loads(sys.argv[3])
        reporter = None
        if extra.get("plain"):
            from dagrun.report import PlainReporter
            reporter = PlainReporter()
        try:
            result = dagrun.run(spec, state_dir=state, workers=2, reporter=reporter,
                                executor=extra.get("address", "dask"), executor_timeout=20)
        except DagrunError as exc:
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(exc.exit_code)
        print(orjson.dumps(result.to_dict()).decode())
        sys.exit(result.exit_code)
""")

MODS = textwrap.dedent("""
    import os, signal, subprocess, time

    def env():
        print("env of", os.environ["DAGRUN_TASK_ID"], flush=True)
        return {k: os.environ[k] for k in ("DAGRUN_RUN_ID", "DAGRUN_TASK_ID",
                                           "DAGRUN_ATTEMPT")}

    def add(a, b):
        print(f"adding {a['DAGRUN_TASK_ID']} and {b['DAGRUN_TASK_ID']}")
        return a["DAGRUN_TASK_ID"] + b["DAGRUN_TASK_ID"]

    def dask_worker_pid():
        # task child -> helper -> Dask worker process
        with open(f"/proc/{os.getppid()}/stat") as fh:
            return int(fh.read().rsplit(")", 1)[1].split()[1])

    def segfault(marker):
        with open(marker, "w") as fh:
            fh.write(str(dask_worker_pid()))
        os.kill(os.getpid(), signal.SIGSEGV)

    def pause(seconds):
        time.sleep(seconds)
        return dask_worker_pid()

    def grandchild(pidfile):
        proc = subprocess.Popen(["sleep", "300"])
        with open(pidfile, "w") as fh:
            fh.write(f"{os.getpid()} {proc.pid}")
        time.sleep(300)

    def flaky():
        attempt = int(os.environ["DAGRUN_ATTEMPT"])
        print("attempt", attempt)
        if attempt < 3:
            raise RuntimeError(f"flaky attempt {attempt}")
        return attempt

    def ticks(release):
        print("tick 0", flush=True)
        while not os.path.exists(release):  # until the test saw the line on dagrun's side
            time.sleep(0.05)
        print("tick 1")
        return 1

    def nap(seconds, marker=None):
        if marker:
            with open(marker, "a") as fh:
                fh.write(f"{os.getpid()}\\n")
        time.sleep(seconds)
        return seconds
""")


@pytest.fixture(scope="module")
def scheduler(tmp_path_factory: pytest.TempPathFactory) -> Any:
    folder = tmp_path_factory.mktemp("dask-cluster")
    script = folder / "cluster.py"
    script.write_text(CLUSTER)
    proc = subprocess.Popen([sys.executable, str(script), str(folder)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None and proc.stdin is not None
    address = proc.stdout.readline().strip()
    assert address.startswith("tcp://"), address
    yield address
    proc.stdin.close()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _setup(tmp_path: Path, spec: str) -> Path:
    (tmp_path / "dxmods.py").write_text(MODS)
    (tmp_path / "runner.py").write_text(RUNNER)
    path = tmp_path / "p.toml"
    path.write_text(textwrap.dedent(spec))
    return path


def _run(tmp_path: Path, spec: Path, timeout: float = 120, **extra: Any) -> tuple[int, Any, str]:
    proc = subprocess.run(
        [sys.executable, str(tmp_path / "runner.py"), str(spec), str(tmp_path / "state"),
         orjson.dumps(extra).decode()], capture_output=True, timeout=timeout,
        stdin=subprocess.DEVNULL, cwd=tmp_path)
    out = proc.stdout.decode().strip()
    return proc.returncode, orjson.loads(out) if out else None, proc.stderr.decode()


def _log(tmp_path: Path, run_id: str, task: str) -> str:
    from dagrun.logs import read_log

    data = read_log(tmp_path / "state" / "runs" / run_id, task)
    return (data or b"").decode()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[0] not in (b"Z", b"X")
    except OSError:
        return False


def test_diamond_outputs_env_and_logs(tmp_path: Path, scheduler: str) -> None:
    spec = _setup(tmp_path, """
        [tasks.a]
        call = "dxmods:env"
        [tasks.b]
        call = "dxmods:env"
        deps = ["a"]
        [tasks.c]
        call = "dxmods:env"
        deps = ["a"]
        priority = 5
        [tasks.d]
        call = "dxmods:add"
        deps = ["b", "c"]
        inputs = { a = "b", b = "c" }
    """)
    code, out, err = _run(tmp_path, spec, address=scheduler)
    assert code == 0, err
    tasks = out["tasks"]
    assert tasks["d"]["output"] == "bc"
    assert tasks["a"]["output"] == {"DAGRUN_RUN_ID": out["run_id"], "DAGRUN_TASK_ID": "a",
                                    "DAGRUN_ATTEMPT": "1"}
    # Each attempt's output, captured on the worker, in the run's per-task log.
    assert _log(tmp_path, out["run_id"], "b") == "env of b\n"
    assert _log(tmp_path, out["run_id"], "d") == "adding b and c\n"


def test_retries_are_dagruns(tmp_path: Path, scheduler: str) -> None:
    spec = _setup(tmp_path, """
        [tasks.f]
        call = "dxmods:flaky"
        retries = 2
        retry_delay = 0
    """)
    code, out, err = _run(tmp_path, spec, address=scheduler)
    assert code == 0, err
    assert out["tasks"]["f"] == {**out["tasks"]["f"], "state": "completed", "attempts": 3,
                                 "output": 3}
    assert _log(tmp_path, out["run_id"], "f") == "attempt 3\n"


def test_timeout_kills_the_tasks_process_group(tmp_path: Path, scheduler: str) -> None:
    pidfile = tmp_path / "pids"
    spec = _setup(tmp_path, f"""
        [tasks.hang]
        call = "dxmods:grandchild"
        kwargs = {{ pidfile = "{pidfile}" }}
        timeout = 1
        timeout_grace = 0.5
        [tasks.after]
        call = "dxmods:env"
        deps = ["hang"]
        trigger = "all_done"
    """)
    code, out, err = _run(tmp_path, spec, address=scheduler)
    assert code == 1, err
    assert out["tasks"]["hang"]["state"] == "dead_lettered"
    assert "TaskTimeout" in out["tasks"]["hang"]["error"]
    assert out["tasks"]["after"]["state"] == "completed"  # the worker serves on
    task_pid, sleeper = (int(p) for p in pidfile.read_text().split())
    # Generous: the group is killed at the deadline; reaping may lag on a busy machine.
    end = time.monotonic() + 10
    while (_alive(task_pid) or _alive(sleeper)) and time.monotonic() < end:
        time.sleep(0.1)
    assert not _alive(task_pid) and not _alive(sleeper)


def test_segfault_fails_only_its_attempt(tmp_path: Path, scheduler: str) -> None:
    marker = tmp_path / "segv-worker"
    naps = "\n".join(f"""
        [tasks.n{i}]
        call = "dxmods:pause"
        kwargs = {{ seconds = 0.3 }}
        """ for i in range(8))
    spec = _setup(tmp_path, f"""
        [tasks.seg]
        call = "dxmods:segfault"
        kwargs = {{ marker = "{marker}" }}
        priority = 10
        {naps}
    """)
    code, out, err = _run(tmp_path, spec, address=scheduler)
    assert code == 1, err
    tasks = out["tasks"]
    assert "WorkerCrashed" in tasks["seg"]["error"] and "SIGSEGV" in tasks["seg"]["error"]
    served_by = {tasks[f"n{i}"]["output"] for i in range(8)}
    assert all(tasks[f"n{i}"]["state"] == "completed" for i in range(8))
    # The Dask worker whose task segfaulted is alive and ran tasks after it.
    segv_worker = int(marker.read_text())
    assert _alive(segv_worker)
    assert segv_worker in served_by


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as fh:
                    ppid = int(fh.read().rsplit(b")", 1)[1].split()[1])
            except OSError:
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, stack = set(), [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in found:
                found.add(child)
                stack.append(child)
    return found


def _parent(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as fh:
        return int(fh.read().rsplit(")", 1)[1].split()[1])


def test_lost_worker_then_sigkill_leaves_no_process_and_resume_completes(
        tmp_path: Path) -> None:
    """dagrun's own LocalCluster: a Dask worker killed mid-task fails that attempt
    (WorkerCrashed, retried); SIGKILL of dagrun takes every process it started
    with it; resume completes the run."""
    marker = tmp_path / "started"
    spec = _setup(tmp_path, f"""
        [tasks.first]
        call = "dxmods:nap"
        kwargs = {{ seconds = 0.1 }}
        [tasks.long]
        call = "dxmods:nap"
        kwargs = {{ seconds = 300, marker = "{marker}" }}
        deps = ["first"]
        retries = 1
        retry_delay = 0
        [tasks.last]
        call = "dxmods:env"
        deps = ["long"]
    """)
    proc = _start(tmp_path, spec)
    # Generous: a LocalCluster starts in seconds, more on a loaded machine.
    first = int(_wait_for_file(marker, proc, timeout=60).split()[0])
    os.kill(_parent(_parent(first)), signal.SIGKILL)  # task -> helper -> Dask worker
    end = time.monotonic() + 60
    while len(marker.read_text().split()) < 2 and time.monotonic() < end:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.1)
    second = int(marker.read_text().split()[1])  # attempt 2, on a live worker
    assert not _alive(first)
    tree = _descendants(proc.pid)
    assert second in tree and len(tree) >= 5  # workers, helpers, task children, ...
    proc.kill()
    proc.wait()
    # The contract: nothing outlives a SIGKILLed dagrun by more than a few seconds.
    end = time.monotonic() + 10
    while any(_alive(p) for p in tree) and time.monotonic() < end:
        time.sleep(0.2)
    assert not [p for p in tree if _alive(p)]
    (run_id,) = os.listdir(tmp_path / "state" / "runs")
    scratch = tmp_path / "state" / "runs" / run_id / "dask"
    assert any(scratch.glob("**/worker-*"))  # Dask's scratch is under the state dir
    from dagrun.logs import attempts

    crashed = attempts(tmp_path / "state" / "runs" / run_id, "long")[1]
    assert crashed is not None and crashed["error"]["type"] == "WorkerCrashed", crashed
    assert "dask worker tcp://127.0.0.1:" in crashed["error"]["message"]
    spec.write_text(spec.read_text().replace("seconds = 300", "seconds = 0.1"))
    resumed = subprocess.run(
        [sys.executable, "-m", "dagrun", "resume", run_id, "--spec", str(spec), "--json",
         "--state-dir", str(tmp_path / "state")],
        capture_output=True, timeout=120, stdin=subprocess.DEVNULL, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr.decode()
    tasks = orjson.loads(resumed.stdout)["tasks"]
    assert {t: v["state"] for t, v in tasks.items()} == {
        "first": "completed", "long": "completed", "last": "completed"}


def _start(tmp_path: Path, spec: Path, **extra: Any) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, str(tmp_path / "runner.py"), str(spec), str(tmp_path / "state"),
         orjson.dumps(extra).decode()],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path)


def _wait_for_file(path: Path, proc: subprocess.Popen[bytes], timeout: float = 60) -> str:
    end = time.monotonic() + timeout
    while not (path.exists() and path.read_text().endswith("\n")) and time.monotonic() < end:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.1)
    return path.read_text()


def test_lost_worker_is_a_crashed_attempt_not_a_second_run(tmp_path: Path,
                                                           scheduler: str) -> None:
    """On an external scheduler (which retries a task whose worker died), the
    second execution of an attempt's key is reported as WorkerCrashed, and the
    retry is dagrun's own (attempt 2)."""
    marker = tmp_path / "ran"
    spec = _setup(tmp_path, f"""
        [tasks.m]
        call = "dxmods:nap"
        kwargs = {{ seconds = 4, marker = "{marker}" }}
        retries = 1
        retry_delay = 0
    """)
    proc = _start(tmp_path, spec, address=scheduler)
    task_pid = int(_wait_for_file(marker, proc).split()[0])
    with open(f"/proc/{task_pid}/stat") as fh:  # task child -> helper -> Dask worker
        helper = int(fh.read().rsplit(")", 1)[1].split()[1])
    with open(f"/proc/{helper}/stat") as fh:
        dask_worker = int(fh.read().rsplit(")", 1)[1].split()[1])
    os.kill(dask_worker, signal.SIGKILL)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()
    task = orjson.loads(out)["tasks"]["m"]
    assert task["state"] == "completed" and task["attempts"] == 2
    assert len(marker.read_text().split()) == 2  # attempt 1 ran once, then attempt 2
    assert not _alive(task_pid)  # the helper took its task with it


def test_attempts_of_a_vanished_client_are_killed(tmp_path: Path, scheduler: str) -> None:
    marker = tmp_path / "ran"
    spec = _setup(tmp_path, f"""
        [tasks.m]
        call = "dxmods:nap"
        kwargs = {{ seconds = 300, marker = "{marker}" }}
    """)
    proc = _start(tmp_path, spec, address=scheduler)
    task_pid = int(_wait_for_file(marker, proc).split()[0])
    proc.kill()
    proc.wait()
    # "Within a few seconds": the scheduler sees the client go, the worker-side
    # wrapper sees its task cancelled (every 0.25 s) and stops the attempt.
    end = time.monotonic() + 15
    while _alive(task_pid) and time.monotonic() < end:
        time.sleep(0.1)
    assert not _alive(task_pid)


def test_callable_missing_on_the_worker_names_worker_and_module(tmp_path: Path,
                                                               scheduler: str) -> None:
    # `basic` (tests/tasks) imports here, where dagrun validates the spec, but
    # not on the cluster, which was started without it and was not shipped it.
    spec = _setup(tmp_path, """
        [tasks.c]
        call = "basic:const"
    """)
    code, out, err = _run(tmp_path, spec, address=scheduler)
    assert code == 1, err
    error = out["tasks"]["c"]["error"]
    assert "cannot import module 'basic' on dask worker tcp://127.0.0.1:" in error, error


def test_output_is_shown_while_the_task_runs(tmp_path: Path, scheduler: str) -> None:
    release = tmp_path / "release"
    spec = _setup(tmp_path, f"""
        [tasks.t]
        call = "dxmods:ticks"
        kwargs = {{ release = "{release}" }}
        timeout = 60
    """)
    proc = _start(tmp_path, spec, address=scheduler, plain=True)
    assert proc.stderr is not None
    seen = []
    for raw in proc.stderr:  # the task blocks until its first line is shown here
        seen.append(raw.decode())
        if raw.decode().strip() == "[t] tick 0":
            release.touch()
            break
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, "".join(seen) + err.decode()
    assert "[t] tick 1" in err.decode()
    assert _log(tmp_path, orjson.loads(out)["run_id"], "t") == "tick 0\ntick 1\n"
