"""dagrun against a real external Dask cluster through the CLI: `dask scheduler`
and `dask worker` processes on 127.0.0.1 (each in its own process group, all
stopped at the end), a pipeline whose module exists only in the spec's folder
(the workers run elsewhere, without the test's PYTHONPATH: it must be shipped),
`--executor dask://127.0.0.1:PORT`. A worker killed mid-run costs only a retry;
a scheduler stopped mid-run is exit 5 with one line, and the run resumes locally.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from proc import start, wait_for
from test_backend_contract import needs_dask

pytestmark = needs_dask

DASK = str(Path(sys.executable).with_name("dask"))

TASKS = textwrap.dedent("""
    import json, os, time

    def _ancestors():
        # This task's process and its parents, up to the `dask worker` and beyond.
        pids, pid = [], os.getpid()
        while pid > 1:
            pids.append(pid)
            with open(f"/proc/{pid}/stat") as fh:
                pid = int(fh.read().rsplit(")", 1)[1].split()[1])
        return pids

    def square(log, i, seconds):
        with open(log, "a") as fh:
            fh.write(json.dumps([i, os.environ["DAGRUN_ATTEMPT"], _ancestors()]) + "\\n")
        time.sleep(seconds)
        return i * i

    def total(xs):
        return sum(xs)

    def hold_while(flag, marker):
        if os.path.exists(flag):
            open(marker, "w").close()
            time.sleep(300)
        return "held"
""")


class Cluster:
    """A `dask scheduler` and `dask worker`s started in a folder of their own."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.procs: list[subprocess.Popen] = []
        self.workers: list[subprocess.Popen] = []
        # Nothing importable from the tests: the pipeline's module is shipped.
        self.env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        self.address = ""

    def _start(self, args: list[str], log: str) -> subprocess.Popen:
        with open(self.folder / log, "wb") as out:
            proc = subprocess.Popen([DASK, *args], cwd=self.folder, env=self.env,
                                    stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        self.procs.append(proc)
        return proc

    def start_scheduler(self) -> None:
        info = self.folder / "scheduler.json"
        self.scheduler = self._start(["scheduler", "--host", "127.0.0.1", "--port", "0",
                                      "--no-dashboard", "--scheduler-file", str(info)],
                                     "scheduler.log")
        # Generous: a cold `dask scheduler` takes seconds on a loaded machine.
        wait_for(lambda: info.exists() and info.stat().st_size > 0, timeout=60)
        self.address = json.loads(info.read_text())["address"]

    def start_worker(self) -> subprocess.Popen:
        n = len(self.workers)
        log = f"worker{n}.log"
        (self.folder / f"w{n}").mkdir()
        proc = self._start(["worker", self.address, "--nthreads", "1", "--no-nanny",
                            "--no-dashboard", "--name", f"w{n}", "--memory-limit", "0",
                            "--local-directory", str(self.folder / f"w{n}")], log)
        self.workers.append(proc)
        wait_for(lambda: b"Registered to" in (self.folder / log).read_bytes(), timeout=60)
        return proc

    def kill(self, proc: subprocess.Popen) -> None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()

    def stop_all(self) -> None:
        for proc in self.procs:
            self.kill(proc)


@pytest.fixture
def cluster(tmp_path: Path) -> Any:
    folder = tmp_path / "cluster"
    folder.mkdir()
    c = Cluster(folder)
    try:
        c.start_scheduler()
        yield c
    finally:
        c.stop_all()


def write_pipeline(tmp_path: Path, spec: str) -> Path:
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "cluster_tasks.py").write_text(TASKS)
    path = folder / "flow.toml"
    path.write_text(textwrap.dedent(spec))
    return path


def test_a_worker_killed_mid_run_costs_only_a_retry(cli, tmp_path, cluster):
    workers = [cluster.start_worker(), cluster.start_worker()]
    log = tmp_path / "starts"
    squares = "\n".join(f"""
        [tasks.sq{i}]
        call = "cluster_tasks:square"
        kwargs = {{ log = "{log}", i = {i}, seconds = 1.5 }}
        retries = 2
        retry_delay = 0
        """ for i in range(6))
    spec = write_pipeline(tmp_path, f"""
        {squares}
        [tasks.sum]
        call = "cluster_tasks:total"
        deps = [{", ".join(f'"sq{i}"' for i in range(6))}]
        inputs = {{ xs = [{", ".join(f'"sq{i}"' for i in range(6))}] }}
    """)
    port = cluster.address.rpartition(":")[2]
    proc = start("run", str(spec), "--json", "--executor", f"dask://127.0.0.1:{port}",
                 "--executor-timeout", "20")

    def started() -> list[Any]:
        return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []

    def victim() -> Any:
        for i, _attempt, ancestors in started():
            for w in workers:
                if w.pid in ancestors:
                    return i, w
        return None

    wait_for(victim, timeout=60)  # generous: first tasks on a loaded machine
    task, worker = victim()
    cluster.kill(worker)  # the worker, its helper and its task, at once
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()
    result = json.loads(out)
    tasks = result["tasks"]
    assert tasks["sum"]["output"] == sum(i * i for i in range(6))
    assert all(tasks[f"sq{i}"]["output"] == i * i for i in range(6))
    assert tasks[f"sq{task}"]["attempts"] >= 2  # its attempt on the dead worker failed
    survivor = next(w for w in workers if w is not worker)
    reruns = [a for i, _n, a in started() if i == task][1:]
    assert reruns and all(survivor.pid in ancestors for ancestors in reruns)


def test_a_lost_scheduler_is_exit_5_then_resume_locally(cli, tmp_path, cluster):
    cluster.start_worker()
    flag, marker = tmp_path / "hold", tmp_path / "holding"
    flag.touch()
    spec = write_pipeline(tmp_path, f"""
        [tasks.first]
        call = "cluster_tasks:total"
        kwargs = {{ xs = [1, 2] }}
        [tasks.long]
        call = "cluster_tasks:hold_while"
        deps = ["first"]
        kwargs = {{ flag = "{flag}", marker = "{marker}" }}
        [tasks.last]
        call = "cluster_tasks:total"
        deps = ["first", "long"]
        inputs = {{ xs = ["first"] }}
    """)
    proc = start("run", str(spec), "--json", "--run-id", "r1", "--executor", cluster.address,
                 "--executor-timeout", "3")
    wait_for(marker.exists, timeout=60)  # generous: a loaded machine
    cluster.kill(cluster.scheduler)
    # Generous: the client notices, retries for --executor-timeout (3 s), gives up.
    out, err = proc.communicate(timeout=60)
    lines = err.decode().strip().splitlines()
    assert proc.returncode == 5, err.decode()
    assert out == b""
    # One clear line: no progress note, no log line of Dask's own.
    assert len(lines) == 1 and lines[0].startswith("dagrun: error: "), lines
    assert "dagrun resume r1" in lines[0]

    status = cli("status", "r1", "--json")
    assert status.json["tasks"]["first"]["state"] == "completed"
    assert status.json["tasks"]["long"]["state"] == "cancelled"
    assert status.json["tasks"]["long"]["attempts"] == 0

    flag.unlink()
    r = cli("resume", "r1", "--json", "--executor", "local")
    assert r.code == 0, r.stderr
    assert {t: v["output"] for t, v in r.json["tasks"].items()} == {
        "first": 3, "long": "held", "last": 3}
    assert r.json["tasks"]["first"]["attempts"] == 1
