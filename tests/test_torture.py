"""Kill `dagrun` with SIGKILL at random instants, resume each time, until the
run finishes: no completed task is lost, every output is right, and only the
tasks in flight at a kill run twice (default retries = 0: a task that counted
a cut-short attempt as a failure would be dead-lettered and fail the run)."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time

import orjson
from tasks.sidefx import runs_of

LAYERS, WIDTH, WORKERS = 5, 10, 2
ROUNDS = 20


def layered_spec(log) -> tuple[str, dict[str, int]]:
    """Task (l, i) takes (l-1, i) and (l-1, i+1) as inputs; outputs are sums."""
    text = f"[pipeline]\nname = \"torture\"\nworkers = {WORKERS}\n"
    expected: dict[str, int] = {}
    for layer in range(LAYERS):
        for i in range(WIDTH):
            tid, k = f"t{layer}_{i}", layer * 100 + i
            sleep = 0.01 + (i % 4) * 0.01
            text += f'[tasks.{tid}]\ncall = "sidefx:step"\n'
            if layer == 0:
                text += f'kwargs = {{ log = "{log}", name = "{tid}", k = {k}, sleep = {sleep} }}\n'
                expected[tid] = k
                continue
            x, y = f"t{layer - 1}_{i}", f"t{layer - 1}_{(i + 1) % WIDTH}"
            text += (f'deps = ["{x}", "{y}"]\ninputs = {{ x = "{x}", y = "{y}" }}\n'
                     f'kwargs = {{ log = "{log}", name = "{tid}", k = {k}, sleep = {sleep} }}\n')
            expected[tid] = k + expected[x] + expected[y]
    return text, expected


def runs_lines(log) -> list[str]:
    try:
        return log.read_text().splitlines()
    except FileNotFoundError:
        return []


def kill_and_resume(spec, tmp_path, log, rng, seed, rounds, extra=()):
    """Run `spec`, SIGKILL dagrun `rounds` times at random instants (resuming
    each time), then let it finish: its final --json object and the kill count."""
    kills = 0
    finished = None
    args = ["run", str(spec), "--run-id", "t", "--json", *extra]
    for _ in range(rounds * 3):  # bounded: a bug must fail the test, not hang it
        proc = subprocess.Popen([sys.executable, "-m", "dagrun", *args],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                stdin=subprocess.DEVNULL)
        if kills < rounds:
            if rng.random() < 0.3:
                # During start-up, repair or the first dispatch.
                time.sleep(rng.uniform(0.0, 0.5))
            else:
                # After a few more task executions, at a random instant between them.
                target = len(runs_lines(log)) + rng.randint(1, 5)
                end = time.monotonic() + 30  # generous: a slow, shared CI machine
                while (len(runs_lines(log)) < target and proc.poll() is None
                       and time.monotonic() < end):
                    time.sleep(0.002)
                time.sleep(rng.uniform(0.0, 0.03))
            if proc.poll() is None:
                proc.kill()
                proc.communicate(timeout=30)
                kills += 1
                if (tmp_path / "state" / "runs" / "t" / "run.json").exists():
                    # else killed before the run existed
                    args = ["resume", "t", "--json", *extra]
                continue
        out, err = proc.communicate(timeout=120)
        if proc.returncode == 3:  # the killed run's lock: released as its processes die
            time.sleep(0.1)
            continue
        assert b"Traceback" not in err, err.decode()
        assert proc.returncode == 0, f"seed {seed}: {err.decode()}"
        finished = orjson.loads(out)
        break
    return finished, kills


def test_sigkill_at_random_instants_then_resume(write, tmp_path):
    seed = int(os.environ.get("DAGRUN_TORTURE_SEED", time.time_ns() % 10**6))
    rng = random.Random(seed)
    log = tmp_path / "log"
    text, expected = layered_spec(log)
    spec = write("torture.toml", text)
    finished, kills = kill_and_resume(spec, tmp_path, log, rng, seed, ROUNDS)
    assert finished is not None, f"seed {seed}: never finished"
    assert finished["status"] == "succeeded"
    assert {t: v["output"] for t, v in finished["tasks"].items()} == expected, f"seed {seed}"
    runs = runs_of(log)
    assert set(runs) == set(expected)
    extra = sum(runs.values()) - len(expected)
    print(f"torture: seed {seed}, {kills} kills, {extra} re-runs")
    assert extra <= 2 * WORKERS * kills, f"seed {seed}: {extra} re-runs for {kills} kills"


KINDS_SPEC = """
[pipeline]
name = "kinds"
workers = 2

[tasks.src]
call = "sidefx:items"
kwargs = {{ log = "{log}", name = "src", n = {n} }}

[tasks.mapped]
call = "sidefx:elem"
deps = ["src"]
inputs = {{ x = "src" }}
map = "x"
kwargs = {{ log = "{log}", name = "mapped" }}

[tasks.agg]
call = "sidefx:total"
deps = ["mapped"]
inputs = {{ xs = "mapped" }}
kwargs = {{ log = "{log}", name = "agg" }}

[tasks.cond]
call = "sidefx:step"
deps = ["agg"]
when = "sidefx:never"
kwargs = {{ log = "{log}", name = "cond", k = 5 }}

[tasks.after]
call = "sidefx:step"
deps = ["cond", "agg"]
trigger = "all_done"
kwargs = {{ log = "{log}", name = "after", k = 7 }}

[tasks.loop]
call = "sidefx:count"
deps = ["src"]
repeat = {{ until = "sidefx:at_least_2", max_iterations = 5 }}
kwargs = {{ log = "{log}", name = "loop" }}

[tasks.emit]
call = "sidefx:emitter"
kwargs = {{ log = "{log}", name = "emit" }}

[tasks.waiter]
call = "sidefx:step"
wait_for = ["go"]
kwargs = {{ log = "{log}", name = "waiter", k = 3 }}

[tasks.stateful]
call = "sidefx:counted"
deps = ["agg"]
kwargs = {{ log = "{log}", name = "stateful" }}

[tasks.sense]
call = "dagrun.sensors:file_exists"
kwargs = {{ path = "{log}" }}
sensor = {{ interval = "0.05s", timeout = "60s" }}

[tasks.cached]
call = "sidefx:step"
deps = ["sense"]
cache = true
kwargs = {{ log = "{log}", name = "cached", k = 9 }}
"""


def test_sigkill_with_task_kinds_then_resume(write, tmp_path):
    """The same kill loop over a map, a condition, a trigger rule, a loop, an
    event, state across runs, a sensor and a cached task: finished elements
    and iterations survive, emitted events are remembered, state is saved
    once, the outputs are right."""
    seed = int(os.environ.get("DAGRUN_TORTURE_SEED", time.time_ns() % 10**6))
    rng = random.Random(seed)
    log = tmp_path / "log"
    n = 24  # elements: enough executions for several kills between them
    spec = write("kinds.toml", KINDS_SPEC.format(log=log, n=n))
    metrics = tmp_path / "kinds.prom"  # the listeners ride along: metrics, dagrun.log
    finished, kills = kill_and_resume(spec, tmp_path, log, rng, seed, 8,
                                      ("--metrics-file", str(metrics)))
    assert finished is not None, f"seed {seed}: never finished"
    assert finished["status"] == "succeeded", f"seed {seed}: {finished}"
    outputs = {t: v["output"] for t, v in finished["tasks"].items()}
    assert outputs == {"src": list(range(n)), "mapped": [10 * i for i in range(n)],
                       "agg": 10 * sum(range(n)), "cond": None, "after": 7, "loop": 2,
                       "emit": 1, "waiter": 3, "stateful": 1, "sense": str(log),
                       "cached": 9}, f"seed {seed}"
    assert finished["tasks"]["cond"]["state"] == "skipped"
    names = set(runs_of(log))
    assert {f"mapped[{i}]" for i in range(n)} <= names
    assert {"loop#0", "loop#1", "loop#2"} <= names and "loop#3" not in names
    assert 'dagrun_run_status{pipeline="kinds",status="succeeded"} 1.0' in metrics.read_text()
    assert (tmp_path / "state" / "runs" / "t" / "dagrun.log").stat().st_size > 0
    extra = sum(runs_of(log).values()) - len(names)
    print(f"torture kinds: seed {seed}, {kills} kills, {extra} re-runs")
    assert extra <= 2 * 2 * max(kills, 1), f"seed {seed}: {extra} re-runs for {kills} kills"


def test_sigkill_on_dask_then_resume(write, tmp_path):
    """The kinds' kill loop with `--executor dask`: dagrun's own LocalCluster
    dies with each SIGKILL (an orphaned one would keep running tasks and hold
    the run's lock), and every resume starts a new one and finishes the run."""
    import pytest

    pytest.importorskip("distributed")
    seed = int(os.environ.get("DAGRUN_TORTURE_SEED", time.time_ns() % 10**6))
    rng = random.Random(seed)
    log = tmp_path / "log"
    n = 12
    spec = write("kinds.toml", KINDS_SPEC.format(log=log, n=n))
    finished, kills = kill_and_resume(spec, tmp_path, log, rng, seed, 4,
                                      ("--executor", "dask"))
    assert finished is not None, f"seed {seed}: never finished"
    assert finished["status"] == "succeeded", f"seed {seed}: {finished}"
    outputs = {t: v["output"] for t, v in finished["tasks"].items()}
    assert outputs == {"src": list(range(n)), "mapped": [10 * i for i in range(n)],
                       "agg": 10 * sum(range(n)), "cond": None, "after": 7, "loop": 2,
                       "emit": 1, "waiter": 3, "stateful": 1, "sense": str(log),
                       "cached": 9}, f"seed {seed}"
    names = set(runs_of(log))
    assert {f"mapped[{i}]" for i in range(n)} <= names
    assert "loop#3" not in names
    print(f"torture dask: seed {seed}, {kills} kills")
