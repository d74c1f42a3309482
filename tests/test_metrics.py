"""--metrics-file: a Prometheus text file whose numbers match the run."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

MIXED = """
[pipeline]
name = "mixed"
workers = 2

[tasks.a]
call = "basic:const"
kwargs = { value = 1 }

[tasks.b]
call = "misbehave:flaky"
kwargs = { counter = "{counter}", succeed_on = 2 }
retries = 1

[tasks.c]
call = "misbehave:hang_sleep"
timeout = 0.5
timeout_grace = 0.2

[tasks.d]
call = "basic:const"
deps = ["c"]

[tasks.e]
call = "basic:const"
deps = ["a", "b"]
"""


def samples(path: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the file, keyed by (name, sorted labels); the parser is
    prometheus_client's own, so a malformed file fails here."""
    out = {}
    for family in text_string_to_metric_families(path.read_text()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(found: dict, name: str, **labels: str) -> float:
    return found[(name, tuple(sorted(labels.items())))]


def test_counts_match_the_run(cli, write, tmp_path):
    spec = write("mixed.toml", MIXED.replace("{counter}", str(tmp_path / "counter")))
    prom = tmp_path / "mixed.prom"
    res = cli("run", str(spec), "--json", "--metrics-file", str(prom))
    assert res.code == 1, res.stderr
    states = {t: v["state"] for t, v in res.json["tasks"].items()}
    assert states == {"a": "completed", "b": "completed", "c": "dead_lettered",
                      "d": "skipped", "e": "completed"}
    m = samples(prom)
    p = {"pipeline": "mixed"}
    assert value(m, "dagrun_tasks_started_total", **p) == 5  # a, b twice, c, e
    assert value(m, "dagrun_tasks_completed_total", **p) == 3
    assert value(m, "dagrun_tasks_failed_total", **p) == 2  # b's first attempt, c
    assert value(m, "dagrun_task_retries_total", **p) == 1
    assert value(m, "dagrun_task_timeouts_total", **p) == 1
    assert value(m, "dagrun_tasks_dead_lettered_total", **p) == 1
    assert value(m, "dagrun_tasks_skipped_total", **p) == 1
    for state, n in {"completed": 3, "dead_lettered": 1, "skipped": 1, "running": 0,
                     "pending": 0}.items():
        assert value(m, "dagrun_tasks", state=state, **p) == n
    assert value(m, "dagrun_run_status", status="failed", **p) == 1
    assert value(m, "dagrun_run_status", status="running", **p) == 0
    assert value(m, "dagrun_run_info", run_id=res.json["run_id"], **p) == 1
    assert value(m, "dagrun_run_duration_seconds", **p) > 0.5  # c ran into its timeout
    assert 0.4 < value(m, "dagrun_task_duration_seconds", task="c", **p) < 30
    assert ("dagrun_task_duration_seconds", (("pipeline", "mixed"), ("task", "d"))) not in m
    # No run of the pipeline ever succeeded: no last-success time to claim.
    assert not any(name == "dagrun_last_success_timestamp_seconds" for name, _ in m)
    assert not list(tmp_path.glob("mixed.prom.*")), "a temp file was left behind"


def test_last_success_survives_a_failed_run(cli, write, tmp_path):
    flag = tmp_path / "down"
    spec = write("job.toml", f"""
        [pipeline]
        name = "job"
        [tasks.only]
        call = "basic:attempt_unless_flag"
        kwargs = {{ flag = "{flag}" }}
        """)
    prom = tmp_path / "job.prom"
    before = time.time()
    assert cli("run", str(spec), "--metrics-file", str(prom)).code == 0
    first = samples(prom)
    success = value(first, "dagrun_last_success_timestamp_seconds", pipeline="job")
    assert before <= success <= time.time()
    assert value(first, "dagrun_run_status", pipeline="job", status="succeeded") == 1

    flag.touch()
    res = cli("run", str(spec), "--json", "--metrics-file", str(prom))
    assert res.code == 1
    second = samples(prom)
    assert value(second, "dagrun_run_status", pipeline="job", status="failed") == 1
    # What people alert on: still the earlier success, read from the state dir.
    assert value(second, "dagrun_last_success_timestamp_seconds", pipeline="job") == success
    assert (Path(os.environ["DAGRUN_STATE_DIR"]) / "metrics" / "job").is_file()

    # The failed run resumed to success (dlq retry) moves the time forward.
    flag.unlink()
    res = cli("dlq", "retry", res.json["run_id"], "--metrics-file", str(prom))
    assert res.code == 0, res.stderr
    assert value(samples(prom), "dagrun_last_success_timestamp_seconds",
                 pipeline="job") > success


def test_unwritable_metrics_file_is_one_warning(cli, write, tmp_path):
    spec = write("ok.toml", """
        [tasks.a]
        call = "basic:const"
        """)
    res = cli("run", str(spec), "--json", "--metrics-file", str(tmp_path / "no" / "m.prom"))
    assert res.code == 0, res.stderr
    assert res.json["status"] == "succeeded"
    warnings = [ln for ln in res.stderr.splitlines() if "metrics file" in ln]
    assert len(warnings) == 1 and "switched off" in warnings[0], res.stderr


def test_file_is_rewritten_while_the_run_goes(write, tmp_path):
    spec = write("slow.toml", """
        [pipeline]
        name = "slow"
        [tasks.nap]
        call = "basic:sleep"
        kwargs = { seconds = 7 }
        """)
    prom = tmp_path / "slow.prom"
    proc = subprocess.Popen([sys.executable, "-m", "dagrun", "run", str(spec),
                             "--metrics-file", str(prom)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # Generous: the first rewrite is due 5 s after the start (WRITE_INTERVAL);
        # a loaded machine may start the run late.
        deadline = time.monotonic() + 30
        seen_running = False
        while time.monotonic() < deadline and proc.poll() is None:
            if prom.exists():
                m = samples(prom)
                if value(m, "dagrun_tasks", pipeline="slow", state="running") == 1:
                    seen_running = True
                    assert value(m, "dagrun_run_status", pipeline="slow", status="running") == 1
                    break
            time.sleep(0.2)
        assert seen_running, "no rewrite showed the running task"
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert value(samples(prom), "dagrun_tasks", pipeline="slow", state="completed") == 1
