"""The backend contract: one set of tests, run through the real CLI on every
executor (`local`, and `dask` on a real LocalCluster(processes=True) on
127.0.0.1). A backend must give the same outputs, order, retries, timeouts,
crash isolation, task kinds and resume as the local one.

The dask side mostly uses one LocalCluster per module, started in a process of
its own like an external scheduler (`--executor tcp://…`: the pipeline's
module, which exists only in each test's folder, is shipped to it); the tests
of dagrun's own cluster (`--executor dask`: priorities on one worker, resume
after SIGKILL, which the autouse fixture checks leaves no process behind)
start one each.
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

import pytest
from proc import start, wait_for


def dask_available() -> bool:
    import importlib.util

    from dagrun.executor.base import BACKENDS

    return "dask" in BACKENDS and importlib.util.find_spec("distributed") is not None


needs_dask = pytest.mark.skipif(not dask_available(), reason="no dask backend or no "
                                "`distributed` here (pip install 'dagrun[dask]')")
BACKEND_NAMES = ["local", pytest.param("dask", marks=needs_dask)]

CLUSTER = textwrap.dedent("""
    import sys
    from distributed import LocalCluster
    if __name__ == "__main__":
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                               host="127.0.0.1", dashboard_address=None,
                               local_directory=sys.argv[1], memory_limit=0)
        print(cluster.scheduler_address, flush=True)
        sys.stdin.read()  # until the module's tests end (or pytest dies: EOF)
        cluster.close()
""")

# The pipeline's own module: written next to each spec, importable nowhere else.
TASKS = textwrap.dedent("""
    import os, signal, subprocess, time

    def value(v):
        return v

    def add(a, b):
        return a + b

    def env():
        return {k: os.environ[k] for k in ("DAGRUN_RUN_ID", "DAGRUN_TASK_ID",
                                           "DAGRUN_ATTEMPT")}

    def record(log, name):
        with open(log, "a") as fh:
            fh.write(name + "\\n")
        return name

    def flaky():
        attempt = int(os.environ["DAGRUN_ATTEMPT"])
        if attempt < 3:
            raise RuntimeError(f"flaky attempt {attempt}")
        return attempt

    def fail():
        raise ValueError("always")

    def grandchild(pidfile):
        proc = subprocess.Popen(["sleep", "300"])
        with open(pidfile, "w") as fh:
            fh.write(f"{os.getpid()} {proc.pid}")
        time.sleep(300)

    def segfault():
        os.kill(os.getpid(), signal.SIGSEGV)

    def square(x):
        return x * x

    def pid():
        return os.getpid()

    def exists(path):
        return os.path.exists(path)

    def touch_later(path, seconds):
        time.sleep(seconds)
        open(path, "w").close()
        return True

    def hold_while(flag, marker):
        # Stands in for a long task while `flag` exists; returns at once after.
        if os.path.exists(flag):
            open(marker, "w").close()
            time.sleep(300)
        return "held"

    def write_file(log, path, text):
        with open(log, "a") as fh:
            fh.write(path + "\\n")
        if text:
            with open(path, "w") as fh:
                fh.write(text)
        return text

    def ancestry():
        pids, pid = [], os.getpid()
        while pid > 1:
            pids.append(pid)
            with open(f"/proc/{pid}/stat") as fh:
                pid = int(fh.read().rsplit(")", 1)[1].split()[1])
        return pids
""")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """(address, pid) of a module-wide LocalCluster in its own process."""
    folder = tmp_path_factory.mktemp("dask-cluster")
    (folder / "cluster.py").write_text(CLUSTER)
    # Not the test's PYTHONPATH (code is shipped) nor its token: the cluster is
    # the module's and outlives the test that first asks for it.
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "DAGRUN_TEST_TOKEN", "DAGRUN_STATE_DIR")}
    proc = subprocess.Popen([sys.executable, str(folder / "cluster.py"), str(folder)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, cwd=folder, env=env,
                            start_new_session=True)
    assert proc.stdout is not None and proc.stdin is not None
    address = proc.stdout.readline().strip()
    assert address.startswith("tcp://"), address
    yield address, proc.pid
    proc.stdin.close()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


@pytest.fixture(params=BACKEND_NAMES)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


def executor_args(backend: str, request: pytest.FixtureRequest) -> list[str]:
    """Where the test's runs go: local, or the module's cluster."""
    if backend == "local":
        return ["--executor", "local"]
    address, _ = request.getfixturevalue("cluster")
    return ["--executor", address]


def setup(write: Any, spec: str) -> Path:
    write("contract_tasks.py", TASKS)
    return write("p.toml", spec)


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[0] not in (b"Z", b"X")
    except OSError:
        return False


def test_diamond_outputs_and_env(cli, write, backend, request):
    spec = setup(write, """
        [tasks.a]
        call = "contract_tasks:value"
        kwargs = { v = 1 }
        [tasks.b]
        call = "contract_tasks:add"
        deps = ["a"]
        inputs = { a = "a" }
        kwargs = { b = 10 }
        [tasks.c]
        call = "contract_tasks:add"
        deps = ["a"]
        inputs = { a = "a" }
        kwargs = { b = 100 }
        [tasks.d]
        call = "contract_tasks:add"
        deps = ["b", "c"]
        inputs = { a = "b", b = "c" }
        [tasks.e]
        call = "contract_tasks:env"
        deps = ["d"]
    """)
    r = cli("run", str(spec), "--json", *executor_args(backend, request))
    assert r.code == 0, r.stderr
    outputs = {t: v["output"] for t, v in r.json["tasks"].items()}
    assert outputs == {"a": 1, "b": 11, "c": 101, "d": 112, "e": {
        "DAGRUN_RUN_ID": r.json["run_id"], "DAGRUN_TASK_ID": "e", "DAGRUN_ATTEMPT": "1"}}


def test_priorities_on_one_worker(cli, write, tmp_path, backend):
    log = tmp_path / "order"
    rows = "\n".join(f"""
        [tasks.{name}]
        call = "contract_tasks:record"
        deps = ["start"]
        priority = {prio}
        kwargs = {{ log = "{log}", name = "{name}" }}
        """ for name, prio in [("low", 1), ("high", 10), ("mid", 5), ("top", 20),
                               ("zero", 0)])
    spec = setup(write, f"""
        [tasks.start]
        call = "contract_tasks:record"
        kwargs = {{ log = "{log}", name = "start" }}
        {rows}
    """)
    # dagrun's own one-worker LocalCluster for dask: priorities decide the order.
    r = cli("run", str(spec), "--json", "--workers", "1", "--executor", backend)
    assert r.code == 0, r.stderr
    assert log.read_text().split() == ["start", "top", "high", "mid", "low", "zero"]


def test_retries_then_dead_letter(cli, write, backend, request):
    spec = setup(write, """
        [tasks.flaky]
        call = "contract_tasks:flaky"
        retries = 2
        retry_delay = 0
        [tasks.bad]
        call = "contract_tasks:fail"
        retries = 1
        retry_delay = 0
        [tasks.after_bad]
        call = "contract_tasks:value"
        deps = ["bad"]
        kwargs = { v = 0 }
    """)
    r = cli("run", str(spec), "--json", *executor_args(backend, request))
    assert r.code == 1, r.stderr
    tasks = r.json["tasks"]
    assert (tasks["flaky"]["state"], tasks["flaky"]["attempts"], tasks["flaky"]["output"]) == (
        "completed", 3, 3)
    assert (tasks["bad"]["state"], tasks["bad"]["attempts"]) == ("dead_lettered", 2)
    assert "ValueError: always" in tasks["bad"]["error"]
    assert tasks["after_bad"]["state"] == "skipped"
    letters = cli("dlq", "list", "--json")
    assert [(x["task"], x["attempts"]) for x in letters.json] == [("bad", 2)]


def test_timeout_kills_the_tasks_process_group(cli, write, tmp_path, backend, request):
    pidfile = tmp_path / "pids"
    spec = setup(write, f"""
        [tasks.hang]
        call = "contract_tasks:grandchild"
        kwargs = {{ pidfile = "{pidfile}" }}
        timeout = 1
        timeout_grace = 0.5
        [tasks.other]
        call = "contract_tasks:value"
        kwargs = {{ v = "fine" }}
    """)
    r = cli("run", str(spec), "--json", *executor_args(backend, request))
    assert r.code == 1, r.stderr
    assert r.json["tasks"]["hang"]["state"] == "dead_lettered"
    assert "TaskTimeout" in r.json["tasks"]["hang"]["error"]
    assert r.json["tasks"]["other"]["output"] == "fine"
    task_pid, sleeper = (int(p) for p in pidfile.read_text().split())
    # Generous: killed at the deadline; reaping can lag on a loaded machine.
    end = time.monotonic() + 10
    while (alive(task_pid) or alive(sleeper)) and time.monotonic() < end:
        time.sleep(0.1)
    assert not alive(task_pid) and not alive(sleeper)


def test_segfault_fails_only_its_own_attempt(cli, write, backend, request):
    others = "\n".join(f"""
        [tasks.ok{i}]
        call = "contract_tasks:value"
        kwargs = {{ v = {i} }}
        """ for i in range(4))
    spec = setup(write, f"""
        [tasks.seg]
        call = "contract_tasks:segfault"
        priority = 10
        {others}
        [tasks.after]
        call = "contract_tasks:value"
        deps = ["seg"]
        trigger = "all_done"
        kwargs = {{ v = "still serving" }}
    """)
    r = cli("run", str(spec), "--json", *executor_args(backend, request))
    assert r.code == 1, r.stderr
    tasks = r.json["tasks"]
    assert tasks["seg"]["state"] == "dead_lettered"
    assert "WorkerCrashed" in tasks["seg"]["error"], tasks["seg"]["error"]
    assert [tasks[f"ok{i}"]["output"] for i in range(4)] == [0, 1, 2, 3]
    assert tasks["after"]["output"] == "still serving"


def test_a_map_and_a_sensor(cli, write, tmp_path, backend, request):
    flag = tmp_path / "ready-flag"
    spec = setup(write, f"""
        [tasks.nums]
        call = "contract_tasks:value"
        kwargs = {{ v = [1, 2, 3, 4] }}
        [tasks.squares]
        call = "contract_tasks:square"
        deps = ["nums"]
        inputs = {{ x = "nums" }}
        map = "x"
        [tasks.maker]
        call = "contract_tasks:touch_later"
        kwargs = {{ path = "{flag}", seconds = 0.5 }}
        [tasks.wait]
        call = "contract_tasks:exists"
        kwargs = {{ path = "{flag}" }}
        sensor = {{ interval = "0.2s", timeout = "60s" }}
    """)
    r = cli("run", str(spec), "--json", *executor_args(backend, request))
    assert r.code == 0, r.stderr
    tasks = r.json["tasks"]
    assert tasks["squares"]["output"] == [1, 4, 9, 16]
    assert tasks["wait"]["state"] == "completed" and tasks["wait"]["output"] is True


def test_max_tasks_per_worker_recycles_the_process_running_tasks(cli, write, backend,
                                                                 request):
    """Each attempt in a fresh process with `max_tasks_per_worker = 1` (on dask:
    the helper's children); the next run, without it, on the same workers gets
    processes that are reused again (the setting is each run's own)."""
    tasks = "".join(f'[tasks.t{i}]\ncall = "contract_tasks:pid"\n' for i in range(8))
    spec = setup(write, "[pipeline]\nmax_tasks_per_worker = 1\n" + tasks)
    args = ["--json", "--workers", "2", *executor_args(backend, request)]
    r = cli("run", str(spec), *args)
    assert r.code == 0, r.stderr
    pids = [v["output"] for v in r.json["tasks"].values()]
    assert len(pids) == 8 and len(set(pids)) == 8, pids
    spec.write_text(tasks)
    again = cli("run", str(spec), *args)
    assert again.code == 0, again.stderr
    pids = [v["output"] for v in again.json["tasks"].values()]
    assert len(set(pids)) < 8, pids  # 8 tasks, 2 workers (processes) on either backend


CHAIN = """
[tasks.first]
call = "contract_tasks:value"
kwargs = {{ v = 1 }}
[tasks.long]
call = "contract_tasks:hold_while"
deps = ["first"]
kwargs = {{ flag = "{flag}", marker = "{marker}" }}
[tasks.last]
call = "contract_tasks:ancestry"
deps = ["long"]
"""


def kill_mid_run(write: Any, tmp_path: Path, *args: str) -> str:
    """Start a run of CHAIN, SIGKILL dagrun while `long` runs; the run id."""
    flag, marker = tmp_path / "hold", tmp_path / "holding"
    flag.touch()
    spec = setup(write, CHAIN.format(flag=flag, marker=marker))
    proc = start("run", str(spec), "--run-id", "r1", *args)
    # Generous: dagrun's own LocalCluster takes seconds to start on a loaded machine.
    wait_for(lambda: marker.exists() or proc.poll() is not None, timeout=90)
    assert marker.exists(), proc.communicate(timeout=30)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    flag.unlink()  # `long` returns at once from now on
    return "r1"


def test_cache_hits_and_declared_outputs(cli, write, tmp_path, backend, request):
    """A second run takes every cached task from the cache whatever ran the
    first; a declared output the task did not make fails it (MissingOutput)."""
    log, out = tmp_path / "ran", tmp_path / "out.txt"
    spec = setup(write, f"""
        [defaults]
        cache = true
        [tasks.make]
        call = "contract_tasks:write_file"
        kwargs = {{ log = "{log}", path = "{out}", text = "made" }}
        files_out = ["{out}"]
        [tasks.use]
        call = "contract_tasks:add"
        deps = ["make"]
        inputs = {{ a = "make" }}
        kwargs = {{ b = "!" }}
        [tasks.forgets]
        call = "contract_tasks:write_file"
        kwargs = {{ log = "{log}", path = "{tmp_path / 'never.txt'}", text = "" }}
        files_out = ["never.txt"]
    """)
    args = ["--json", *executor_args(backend, request)]
    first = cli("run", str(spec), *args)
    assert first.code == 1, first.stderr
    assert first.json["tasks"]["use"]["output"] == "made!"
    assert "MissingOutput" in first.json["tasks"]["forgets"]["error"]
    ran = log.read_text().split()
    second = cli("run", str(spec), *args)
    assert second.json["tasks"]["use"]["output"] == "made!"
    assert second.json["tasks"]["make"]["cached"] is True
    assert second.json["tasks"]["use"]["cached_from"] == first.json["run_id"]
    assert log.read_text().split() == ran + [str(tmp_path / "never.txt")]  # only it again


def test_resume_after_sigkill_of_dagrun(cli, write, tmp_path, backend):
    run_id = kill_mid_run(write, tmp_path, "--executor", backend, "--workers", "2")
    r = cli("resume", run_id, "--json")  # on the run's own executor
    assert r.code == 0, r.stderr
    tasks = r.json["tasks"]
    assert {t: v["state"] for t, v in tasks.items()} == {
        "first": "completed", "long": "completed", "last": "completed"}
    assert tasks["long"]["output"] == "held"
    assert tasks["first"]["attempts"] == 1  # completed before the kill: not run again
    # The autouse fixture then checks that no process of either run is left.


@needs_dask
def test_a_local_run_resumed_on_dask(cli, write, tmp_path, request):
    address, cluster_pid = request.getfixturevalue("cluster")
    run_id = kill_mid_run(write, tmp_path, "--executor", "local")
    r = cli("resume", run_id, "--json", "--executor", address)
    assert r.code == 0, r.stderr
    tasks = r.json["tasks"]
    assert tasks["long"]["output"] == "held"
    assert cluster_pid in tasks["last"]["output"]  # it ran on the cluster's workers
