"""End-to-end runs through the real CLI: real worker processes, real files."""

from __future__ import annotations

from pathlib import Path

from shapes import core

DIAMOND = """
[pipeline]
workers = 2
[tasks.source]
call = "basic:numbers"
kwargs = { n = 4 }
[tasks.left]
call = "basic:total"
deps = ["source"]
inputs = { xs = "source" }
[tasks.right]
call = "basic:double"
deps = ["source"]
inputs = { xs = "source" }
[tasks.join]
call = "basic:combine"
deps = ["left", "right"]
inputs = { a = "left", b = "right" }
"""


def test_outputs_flow_through_a_diamond(cli, write):
    r = cli("run", str(write("diamond.toml", DIAMOND)), "--json")
    assert r.code == 0, r.stderr
    tasks = r.json["tasks"]
    assert r.json["status"] == "succeeded"
    assert core(tasks["source"]) == {"state": "completed", "attempts": 1, "output": [1, 2, 3, 4],
                               "error": None}
    assert tasks["left"]["output"] == 10
    assert tasks["right"]["output"] == [2, 4, 6, 8]
    assert tasks["join"]["output"] == {"a": 10, "b": [2, 4, 6, 8]}


def test_json_mode_prints_exactly_one_object(cli, write):
    spec = write("chatty.toml", '[tasks.talk]\ncall = "basic:chatty"\n')
    r = cli("run", str(spec), "--json")
    assert r.code == 0
    assert r.stdout.count("\n") == 1  # one line: the JSON object, nothing a task printed
    assert r.json["tasks"]["talk"]["output"] == "done"
    # Off a TTY --json echoes nothing a task prints: it is in the task's log.
    assert "this goes to stdout of the task" not in r.stderr
    assert "this goes to stdout of the task" in cli("logs", r.json["run_id"], "talk").stdout


def test_task_prints_never_reach_stdout_without_json(cli, write):
    spec = write("chatty.toml", '[tasks.talk]\ncall = "basic:chatty"\n')
    r = cli("run", str(spec))
    assert r.code == 0
    assert "this goes to stdout" not in r.stdout and "raw fd 1" not in r.stdout
    assert "raw fd 1 write" in r.stderr


def test_priority_order_with_one_worker(cli, write, tmp_path: Path):
    log = tmp_path / "order.log"
    tasks = "".join(
        f'[tasks.{name}]\ncall = "basic:log_order"\npriority = {prio}\n'
        f'kwargs = {{ path = "{log}", name = "{name}" }}\n'
        for name, prio in [("low", -1), ("mid1", 5), ("high", 10), ("mid2", 5), ("zero", 0)])
    r = cli("run", str(write("prio.toml", "[pipeline]\nworkers = 1\n" + tasks)), "--json")
    assert r.code == 0, r.stderr
    # highest priority first, FIFO (spec order) among equals
    assert log.read_text().split() == ["high", "mid1", "mid2", "zero", "low"]


INTERVALS = """
import time

def timed(log, name, seconds):
    start = time.monotonic()  # Linux: one clock for every process of the machine
    time.sleep(seconds)
    with open(log, "a") as fh:  # one short append per task: lines do not interleave
        fh.write(f"{name} {start} {time.monotonic()}\\n")
"""


def test_parallel_tasks_run_at_the_same_time(cli, write, tmp_path):
    # Asserts what parallel means (the tasks' own intervals overlap), not a wall
    # time, which a loaded shared box can stretch at will.
    write("intervals.py", INTERVALS)
    log = tmp_path / "intervals.log"
    tasks = "".join(f'[tasks.s{i}]\ncall = "intervals:timed"\n'
                    f'kwargs = {{ log = "{log}", name = "s{i}", seconds = 0.5 }}\n'
                    for i in range(4))
    r = cli("run", str(write("par.toml", "[pipeline]\nworkers = 2\n" + tasks)), "--json")
    assert r.code == 0, r.stderr
    rows = [line.split() for line in log.read_text().splitlines()]
    assert sorted(name for name, *_ in rows) == ["s0", "s1", "s2", "s3"]
    spans = sorted((float(a), float(b)) for _, a, b in rows)
    # Sorted by start: a task starting before the one before it ended ran alongside it.
    pairs = zip(spans, spans[1:], strict=False)
    assert any(start < prev_end for (_, prev_end), (start, _) in pairs), spans


def test_toml_and_yaml_give_the_same_run(cli, write):
    toml = write("p.toml", DIAMOND)
    yaml = write("p.yaml", """
        pipeline: {workers: 2}
        tasks:
          source: {call: "basic:numbers", kwargs: {n: 4}}
          left: {call: "basic:total", deps: [source], inputs: {xs: source}}
          right: {call: "basic:double", deps: [source], inputs: {xs: source}}
          join: {call: "basic:combine", deps: [left, right], inputs: {a: left, b: right}}
    """)
    a = cli("run", str(toml), "--json")
    b = cli("run", str(yaml), "--json")
    assert a.code == b.code == 0
    assert {t: core(x) for t, x in a.json["tasks"].items()} == {
        t: core(x) for t, x in b.json["tasks"].items()}


def test_non_json_return_fails_cleanly(cli, write):
    spec = write("nj.toml", '[tasks.bad]\ncall = "basic:not_json"\n'
                 '[tasks.after]\ncall = "basic:const"\ndeps = ["bad"]\n'
                 '[tasks.other]\ncall = "basic:const"\nkwargs = { value = 1 }\n')
    r = cli("run", str(spec), "--json")
    assert r.code == 1
    bad = r.json["tasks"]["bad"]
    assert bad["state"] == "dead_lettered"
    assert "not JSON-serialisable" in bad["error"] and "set" in bad["error"]
    assert r.json["tasks"]["after"]["state"] == "skipped"
    assert "'bad'" in r.json["tasks"]["after"]["error"]
    assert core(r.json["tasks"]["other"]) == {"state": "completed", "attempts": 1, "output": 1,
                                        "error": None}
    assert "Traceback" not in r.stderr


def test_task_exception_is_a_failed_task_not_a_crash(cli, write):
    spec = write("f.toml", '[tasks.f]\ncall = "basic:fail"\nkwargs = { message = "no luck" }\n')
    r = cli("run", str(spec), "--json")
    assert r.code == 1
    assert r.json["status"] == "failed"
    assert r.json["tasks"]["f"]["error"] == "ValueError: no luck"


def test_environment_of_a_task(cli, write):
    spec = write("env.toml", '[tasks.e]\ncall = "basic:env"\n')
    r = cli("run", str(spec), "--json", "--run-id", "my-run.1")
    assert r.json["tasks"]["e"]["output"] == {
        "DAGRUN_RUN_ID": "my-run.1", "DAGRUN_TASK_ID": "e", "DAGRUN_ATTEMPT": "1"}


def test_run_writes_checksummed_records(cli, write, tmp_path: Path):
    r = cli("run", str(write("d.toml", DIAMOND)), "--json", "--run-id", "r1")
    assert r.code == 0
    from dagrun.store.journal import read_journal

    contents = read_journal(tmp_path / "state" / "runs" / "r1" / "journal")
    assert not contents.bad_lines
    done = [rec for rec in contents.records if rec.get("state") == "completed"]
    assert {rec["task"] for rec in done} == {"source", "left", "right", "join"}


def test_spec_folder_is_importable(cli, tmp_path: Path, write):
    write("proj/mytasks.py", "def hello(name):\n    return f'hello {name}'\n")
    spec = write("proj/p.toml", '[tasks.h]\ncall = "mytasks:hello"\nkwargs = { name = "x" }\n')
    r = cli("run", str(spec), "--json", cwd=tmp_path.parent)
    assert r.code == 0, r.stderr
    assert r.json["tasks"]["h"]["output"] == "hello x"


def test_plain_progress_and_summary_off_a_tty(cli, write):
    r = cli("run", str(write("d.toml", DIAMOND)))
    assert r.code == 0
    assert r.stdout == ""
    assert "[4/4] join completed" in r.stderr
    assert "succeeded" in r.stderr
    assert "\x1b[" not in r.stderr  # no colour or animation off a TTY


def test_example_pipelines_run(cli, tmp_path: Path):
    root = Path(__file__).resolve().parent.parent / "pipelines"
    for spec in ("etl.toml", "wordcount.yaml"):
        r = cli("run", str(root / spec), "--json")
        assert r.code == 0, r.stderr
        assert all(t["state"] == "completed" for t in r.json["tasks"].values())
