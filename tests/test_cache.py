"""Caching across runs (issue 13), through the CLI: which tasks run is read off
a side-effect log (tasks append a line each time they run)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import orjson
from proc import start, wait_for
from tasks.sidefx import runs_of

# a -> b (b takes a's output); c uses a param; d reads a file; m is in a module
# of the spec's folder (so editing it is a code change).
SPEC = """
[params]
n = 1

[defaults]
cache = true

[tasks.a]
call = "sidefx:step"
kwargs = {{ log = "{log}", name = "a", k = {ka} }}

[tasks.b]
call = "sidefx:step"
deps = ["a"]
inputs = {{ x = "a" }}
kwargs = {{ log = "{log}", name = "b", k = 10 }}

[tasks.c]
call = "sidefx:step"
kwargs = {{ log = "{log}", name = "c", k = "${{params.n}}" }}

[tasks.d]
call = "sidefx:step"
kwargs = {{ log = "{log}", name = "d" }}
files_in = ["data/*.csv"]

[tasks.m]
call = "mine:work"
kwargs = {{ log = "{log}" }}
"""

MODULE = """
from sidefx import _log

def work(log):
    _log(log, "m")
    return {value!r}
"""


def state_dir() -> Path:
    return Path(os.environ["DAGRUN_STATE_DIR"])


def cache_file(pipeline: str = "p") -> Path:
    return state_dir() / "cache" / pipeline


def setup(write, tmp_path, ka=1, value="v1"):
    log = tmp_path / "log"
    spec = write("p.toml", SPEC.format(log=log, ka=ka))
    write("mine.py", MODULE.format(value=value))
    write("data/x.csv", "1,2\n")
    return spec, log


def ran(log: Path, before: dict[str, int]) -> set[str]:
    """Tasks that ran since the log showed `before`."""
    now = runs_of(log)
    return {t for t, n in now.items() if n > before.get(t, 0)}


def test_a_second_run_runs_nothing_and_prints_the_same_outputs(cli, write, tmp_path):
    spec, log = setup(write, tmp_path)
    first = cli("run", str(spec), "--json")
    assert first.code == 0, first.stderr
    assert ran(log, {}) == {"a", "b", "c", "d", "m"}
    assert not any("cached" in t for t in first.json["tasks"].values())
    before = runs_of(log)
    second = cli("run", str(spec), "--json")
    assert second.code == 0, second.stderr
    assert ran(log, before) == set()
    for tid, t in second.json["tasks"].items():
        assert t["output"] == first.json["tasks"][tid]["output"]
        assert t["state"] == "completed" and t["attempts"] == 0
        assert t["cached"] is True and t["cached_from"] == first.json["run_id"]
    assert second.json["tasks"]["b"]["output"] == 11
    # `dagrun logs` of a hit says where its output came from.
    r = cli("logs", second.json["run_id"], "b")
    assert r.code == 2 and f"dagrun logs {first.json['run_id']} b" in r.stderr
    # The plain display and its summary say so too.
    third = cli("run", str(spec), "--metrics-file", str(tmp_path / "m.prom"))
    assert third.code == 0
    assert "a completed (cached)" in third.stderr and "5 cached" in third.stderr
    assert 'dagrun_tasks_cached_total{pipeline="p"} 5.0' in (tmp_path / "m.prom").read_text()
    assert ran(log, before) == set()


def test_each_part_of_the_key_reruns_exactly_the_affected_tasks(cli, write, tmp_path):
    spec, log = setup(write, tmp_path)
    assert cli("run", str(spec)).code == 0

    def rerun(*args):
        before = runs_of(log)
        r = cli("run", str(spec), "--json", *args)
        assert r.code == 0, r.stderr
        return ran(log, before), r.json

    # A param changes only the task that uses it.
    assert rerun("--param", "n=2")[0] == {"c"}
    assert rerun("--param", "n=2")[0] == set()
    # An edit of the callable's module re-runs its task.
    time.sleep(0.01)
    write("mine.py", MODULE.format(value="v1") + "\n# an edit\n")
    # (c is back to its default n = 1: a hit on the first run's entry.)
    assert rerun()[0] == {"m"}
    # An input file's content.
    write("data/x.csv", "1,2,3\n")
    assert rerun()[0] == {"d"}
    write("data/y.csv", "new\n")  # a new file matching the glob
    assert rerun()[0] == {"d"}
    # A kwarg of a (its output changes): a, and b whose input changed.
    spec.write_text(SPEC.format(log=log, ka=5))
    changed, result = rerun()
    assert changed == {"a", "b"}
    assert result["tasks"]["b"]["output"] == 15
    assert result["tasks"]["c"]["cached"] is True


def test_an_unchanged_upstream_output_keeps_the_downstream_cached(cli, write, tmp_path):
    spec, log = setup(write, tmp_path)
    assert cli("run", str(spec)).code == 0
    before = runs_of(log)
    # a's kwargs change but its output (k + nothing) stays 1: b is still a hit.
    spec.write_text(SPEC.format(log=log, ka=1).replace('name = "a", k = 1',
                                                       'name = "a", k = 1, sleep = 0.0'))
    r = cli("run", str(spec), "--json")
    assert ran(log, before) == {"a"}
    assert r.json["tasks"]["b"]["cached"] is True


OUT_SPEC = """
[tasks.report]
call = "cachetasks:make"
kwargs = {{ log = "{log}", name = "report", path = "{out}", skip = {skip} }}
files_out = ["out/report.md"]
cache = true
retries = {retries}
retry_delay = 0
"""


def test_a_deleted_or_changed_declared_output_reruns_its_task(cli, write, tmp_path):
    log, out = tmp_path / "log", tmp_path / "out" / "report.md"
    spec = write("p.toml", OUT_SPEC.format(log=log, out=out, skip="false", retries=0))
    assert cli("run", str(spec)).code == 0
    assert cli("run", str(spec), "--json").json["tasks"]["report"]["cached"] is True
    assert runs_of(log) == {"report": 1}
    out.unlink()
    r = cli("run", str(spec), "--json")
    assert r.code == 0 and "cached" not in r.json["tasks"]["report"]
    assert runs_of(log) == {"report": 2} and out.exists()
    out.write_text("edited by hand")
    assert "cached" not in cli("run", str(spec), "--json").json["tasks"]["report"]
    assert runs_of(log) == {"report": 3}
    assert cli("run", str(spec), "--json").json["tasks"]["report"]["cached"] is True
    # A newly declared output: the task runs (and must make it) once more.
    spec.write_text(spec.read_text().replace('files_out = ["out/report.md"]',
                                             'files_out = ["out/report.md", "out/*.md"]'))
    assert "cached" not in cli("run", str(spec), "--json").json["tasks"]["report"]
    assert runs_of(log) == {"report": 4}


def test_a_task_that_does_not_make_its_declared_output_fails(cli, write, tmp_path):
    log, out = tmp_path / "log", tmp_path / "out" / "report.md"
    spec = write("p.toml", OUT_SPEC.format(log=log, out=out, skip="true", retries=1))
    r = cli("run", str(spec), "--json")
    assert r.code == 1, r.stderr
    t = r.json["tasks"]["report"]
    assert t["state"] == "dead_lettered" and t["attempts"] == 2  # retried like any failure
    assert t["error"].startswith("MissingOutput: ") and "out/report.md" in t["error"]
    assert runs_of(log) == {"report": 2}
    # Nothing was stored: the next run runs it again.
    cli("run", str(spec))
    assert runs_of(log) == {"report": 4}


TTL_SPEC = """
[tasks.t]
call = "sidefx:step"
kwargs = {{ log = "{log}", name = "t" }}
cache = {{ ttl = "{ttl}", version = "{version}" }}
"""


def test_an_entry_past_its_ttl_is_a_miss_and_gc_drops_it(cli, write, tmp_path):
    log = tmp_path / "log"
    spec = write("p.toml", TTL_SPEC.format(log=log, ttl="1s", version="1"))
    assert cli("run", str(spec)).code == 0
    assert cli("run", str(spec), "--json").json["tasks"]["t"]["cached"] is True
    time.sleep(1.5)  # past the 1 s ttl
    assert "cached" not in cli("run", str(spec), "--json").json["tasks"]["t"]
    assert runs_of(log) == {"t": 2}
    time.sleep(1.5)
    listed = cli("cache", "list", "p", "--json").json
    assert [e["expired"] for e in listed] == [True]
    r = cli("gc", "--keep", "100")
    assert r.code == 0 and "dropped 1 expired cache entry" in r.stderr
    assert cli("cache", "list", "--json").json == []
    assert not cache_file().exists()


def test_a_new_version_is_a_miss(cli, write, tmp_path):
    log = tmp_path / "log"
    spec = write("p.toml", TTL_SPEC.format(log=log, ttl="1h", version="1"))
    cli("run", str(spec))
    spec.write_text(TTL_SPEC.format(log=log, ttl="1h", version="2"))
    cli("run", str(spec))
    cli("run", str(spec))
    assert runs_of(log) == {"t": 2}


def test_a_corrupt_or_foreign_cache_line_is_a_miss_never_a_wrong_output(cli, write, tmp_path):
    spec, log = setup(write, tmp_path)
    assert cli("run", str(spec)).code == 0
    path = cache_file()
    lines = path.read_bytes().splitlines(keepends=True)
    assert len(lines) == 5
    # Change b's stored output (11 -> 99) without fixing the checksum.
    i = next(i for i, line in enumerate(lines) if b'"task":"b"' in line)
    lines[i] = lines[i].replace(b'"output":11', b'"output":99')
    # And a torn last line, as a crash mid-append leaves it.
    path.write_bytes(b"".join(lines) + lines[0][:40])
    before = runs_of(log)
    r = cli("run", str(spec), "--json")
    assert r.code == 0, r.stderr
    assert ran(log, before) == {"b"}
    assert r.json["tasks"]["b"]["output"] == 11
    # A whole, checksummed entry of another pipeline copied in: not this one's.
    before = runs_of(log)
    foreign = path.read_bytes().replace(b"p.toml", b"x")
    other = cache_file("q")
    other.write_bytes(foreign)
    write("q.toml", spec.read_text().replace("[params]", '[pipeline]\nname = "q"\n\n[params]'))
    r = cli("run", str(tmp_path / "q.toml"), "--json")
    assert r.code == 0 and ran(log, before) == {"a", "b", "c", "d", "m"}


def test_no_cache_and_refresh(cli, write, tmp_path):
    spec, log = setup(write, tmp_path)
    first = cli("run", str(spec), "--json")
    before = runs_of(log)
    r = cli("run", str(spec), "--json", "--no-cache")
    assert r.code == 0 and ran(log, before) == {"a", "b", "c", "d", "m"}
    assert not any("cached" in t for t in r.json["tasks"].values())
    # It stored fresh entries: the next run's hits come from it.
    again = cli("run", str(spec), "--json")
    assert {t["cached_from"] for t in again.json["tasks"].values()} == {r.json["run_id"]}
    assert first.json["run_id"] != r.json["run_id"]
    before = runs_of(log)
    r = cli("run", str(spec), "--json", "--refresh", "a", "--refresh", "d")
    assert ran(log, before) == {"a", "d"}
    assert r.json["tasks"]["b"]["cached"] is True  # a's output did not change
    r = cli("run", str(spec), "--refresh", "nope")
    assert r.code == 2 and "--refresh nope: no such task" in r.stderr


def test_cache_list_and_clear(cli, write, tmp_path):
    spec, log = setup(write, tmp_path)
    first = cli("run", str(spec), "--json")
    listed = cli("cache", "list", "--json")
    assert listed.code == 0
    assert sorted(e["task"] for e in listed.json) == ["a", "b", "c", "d", "m"]
    assert {e["run_id"] for e in listed.json} == {first.json["run_id"]}
    assert {e["expires_at"] for e in listed.json} == {None}
    table = cli("cache", "list", "p")
    assert table.code == 0 and "never" in table.stdout and first.json["run_id"] in table.stdout
    r = cli("cache", "clear", "p", "b")
    assert r.code == 0 and "cleared 1 cache entry" in r.stderr
    before = runs_of(log)
    cli("run", str(spec))
    assert ran(log, before) == {"b"}
    assert cli("cache", "clear", "p").code == 0
    assert cli("cache", "list", "--json").json == []
    before = runs_of(log)
    cli("run", str(spec))
    assert ran(log, before) == {"a", "b", "c", "d", "m"}
    assert cli("cache", "clear").code == 0
    assert cli("cache", "list", "--json").json == []
    assert cli("cache", "clear", "../x").code == 2


def test_bad_cache_keys_exit_2_naming_file_task_and_key(cli, write):
    cases = [
        ('cache = "yes"', "task 't': 'cache' must be true, false or a table"),
        ('cache = { ttl = "soon" }', "task 't': 'cache.ttl'"),
        ('cache = { tll = "1d" }', "'cache' has unknown key 'tll'"),
        ('cache = { version = [1] }', "'cache.version' must be a string"),
        ("files_in = [3]", "task 't': 'files_in' must be a list"),
        ('files_out = ""', "task 't': 'files_out' must be a list"),
    ]
    for line, message in cases:
        spec = write("bad.toml", f'[tasks.t]\ncall = "sidefx:step"\n{line}\n')
        r = cli("validate", str(spec))
        assert r.code == 2 and message in r.stderr and "bad.toml" in r.stderr, (line, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1
    spec = write("bad.toml", '[defaults]\ncache = 1\n[tasks.t]\ncall = "sidefx:step"\n')
    r = cli("validate", str(spec))
    assert r.code == 2 and "[defaults]: 'cache'" in r.stderr


def test_a_cached_task_stays_cached_across_a_sigkill_and_resume(cli, write, tmp_path):
    log = tmp_path / "log"
    spec = write("p.toml", f"""
        [params]
        nap = 0

        [tasks.a]
        call = "sidefx:step"
        kwargs = {{ log = "{log}", name = "a" }}
        cache = true

        [tasks.b]
        call = "sidefx:step"
        deps = ["a"]
        inputs = {{ x = "a" }}
        kwargs = {{ log = "{log}", name = "b", sleep = "${{params.nap}}" }}
    """)
    first = cli("run", str(spec), "--json")
    assert first.code == 0, first.stderr
    proc = start("run", str(spec), "--run-id", "second", "--param", "nap=2")
    try:
        wait_for(lambda: runs_of(log).get("b", 0) >= 2)
    finally:
        proc.kill()
        proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    journal = (state_dir() / "runs" / "second" / "journal").read_bytes()
    assert b'"cached_from":"' + first.json["run_id"].encode() in journal
    r = cli("resume", "second", "--json")
    assert r.code == 0, r.stderr
    assert r.json["tasks"]["a"]["cached_from"] == first.json["run_id"]
    assert r.json["tasks"]["b"]["output"] == 2
    assert runs_of(log) == {"a": 1, "b": 3}
    # A resume of the finished run prints the same.
    r = cli("resume", "second", "--json")
    assert r.json["tasks"]["a"]["cached"] is True
    status = orjson.loads(cli("status", "second", "--json").stdout)
    assert status["tasks"]["a"]["cached"] is True


def test_cache_under_defaults_leaves_stateful_and_map_tasks_running(cli, write, tmp_path):
    log = tmp_path / "log"
    spec = write("p.toml", f"""
        [defaults]
        cache = true

        [tasks.counter]
        call = "sidefx:counted"
        kwargs = {{ log = "{log}", name = "counter" }}

        [tasks.xs]
        call = "sidefx:items"
        kwargs = {{ log = "{log}", name = "xs", n = 2 }}

        [tasks.each]
        call = "sidefx:elem"
        deps = ["xs"]
        inputs = {{ x = "xs" }}
        kwargs = {{ log = "{log}", name = "each", sleep = 0 }}
        map = "x"
    """)
    outputs = [cli("run", str(spec), "--json").json["tasks"] for _ in range(2)]
    assert [o["counter"]["output"] for o in outputs] == [1, 2]  # its state moved on
    assert outputs[1]["xs"]["cached"] is True
    assert "cached" not in outputs[1]["each"] and outputs[1]["each"]["output"] == [0, 10]
    assert runs_of(log) == {"counter": 2, "xs": 1, "each[0]": 2, "each[1]": 2}
    spec = write("bad.toml", '[tasks.s]\ncall = "sidefx:never"\ncache = true\n'
                             'sensor = { interval = "1s" }\n')
    r = cli("validate", str(spec))
    assert r.code == 2 and "'cache' cannot be set on a task with 'sensor'" in r.stderr


def test_tasks_with_the_same_definition_each_have_their_own_entry(cli, write, tmp_path):
    # Same call and kwargs, so the same key: each task still hits its own entry.
    log = tmp_path / "log"
    rows = "".join(f'\n[tasks.t{i}]\ncall = "sidefx:step"\nkwargs = {{ log = "{log}", '
                   f'name = "same" }}\n' for i in range(5))
    spec = write("p.toml", "[defaults]\ncache = true\n" + rows)
    cli("run", str(spec))
    r = cli("run", str(spec), "--json")
    assert all(t["cached"] for t in r.json["tasks"].values())
    assert runs_of(log) == {"same": 5}


def test_sigkill_at_random_instants_with_half_the_tasks_cached(cli, write, tmp_path):
    """The torture loop (tests/test_torture.py) on a run where a cone of tasks
    changed: the others are hits, and stay hits through every kill and resume."""
    import random

    from test_torture import kill_and_resume, layered_spec

    seed = int(os.environ.get("DAGRUN_TORTURE_SEED", time.time_ns() % 10**6))
    log = tmp_path / "log"
    text, _ = layered_spec(log)
    cached = "[defaults]\ncache = true\n"
    spec = write("torture.toml", text.replace("[tasks.", cached + "[tasks.", 1))
    first = cli("run", str(spec), "--json", "--run-id", "first")
    assert first.code == 0, first.stderr
    # t0_3's output changes: it and its descendants run, the rest are hits.
    spec.write_text(spec.read_text().replace('name = "t0_3", k = 3,', 'name = "t0_3", k = 1003,'))
    _, expected = layered_spec(log)
    expected = {t: v + (1000 * _paths_from_t0_3(t)) for t, v in expected.items()}
    finished, kills = kill_and_resume(spec, tmp_path, log, random.Random(seed), seed, 8)
    assert finished is not None and finished["status"] == "succeeded", f"seed {seed}"
    assert {t: v["output"] for t, v in finished["tasks"].items()} == expected, f"seed {seed}"
    runs = runs_of(log)
    hits = {t for t, v in finished["tasks"].items() if v.get("cached")}
    assert hits and all(finished["tasks"][t]["cached_from"] == "first" for t in hits)
    assert all(runs[t] == 1 for t in hits), f"seed {seed}: a hit ran again"
    assert hits == {t for t in expected if _paths_from_t0_3(t) == 0}


def _paths_from_t0_3(tid: str) -> int:
    """How many times t0_3's output is summed into task `tid` (layered_spec's graph)."""
    from test_torture import WIDTH

    layer, i = (int(x) for x in tid[1:].split("_"))
    counts = [1 if j == 3 else 0 for j in range(WIDTH)]
    for _ in range(layer):
        counts = [counts[j] + counts[(j + 1) % WIDTH] for j in range(WIDTH)]
    return counts[i]


def test_reason_names_the_part_that_changed(cli, write, tmp_path):
    """CachePlug.reason(): what a dry run says of a task (the smallest real unit:
    entries written by a real run, read back by a plug on the edited spec)."""
    from dagrun.api import _bind_params
    from dagrun.cache.plug import CachePlug
    from dagrun.cache.store import CacheStore
    from dagrun.callables import add_import_paths
    from dagrun.model import TaskState, TaskStatus
    from dagrun.spec import load_spec

    spec, log = setup(write, tmp_path)
    assert cli("run", str(spec)).code == 0

    def reasons(path=spec, out=1, **kw):
        pipeline, _ = _bind_params(load_spec(path), None, "dry")  # as `run` binds them
        add_import_paths(pipeline)  # as `run` imports the callables
        # Upstream outputs as the first run left them (a: 1).
        statuses = {tid: TaskStatus(state=TaskState.COMPLETED, output=out)
                    for tid in pipeline.tasks}
        plug = CachePlug(pipeline, "dry", CacheStore(state_dir()), statuses, **kw)
        return {tid: plug.reason(t, plug.parts(t, statuses))
                for tid, t in pipeline.tasks.items()}

    assert set(reasons().values()) == {"cached"}
    assert reasons(use=False)["a"] == "forced (--no-cache)"
    assert reasons(out=2)["b"] == "input changed"
    assert reasons(refresh=["b"])["b"] == "forced (--refresh)"
    write("data/x.csv", "changed\n")
    write("mine.py", MODULE.format(value="v2"))
    spec.write_text(SPEC.format(log=log, ka=7))
    got = reasons()
    assert got["a"] == "kwargs changed" and got["d"] == "file changed"
    assert got["m"] == "code changed" and got["b"] == "cached"
    spec.write_text(SPEC.format(log=log, ka=1).replace('name = "b"', 'name = "b2"'))
    assert reasons()["b"] == "kwargs changed"
    cli("cache", "clear", "p", "c")
    assert reasons()["c"] == "not in the cache"


def test_two_concurrent_runs_append_to_one_cache_file(cli, write, tmp_path):
    log = tmp_path / "log"
    rows = "".join(f'\n[tasks.t{i}]\ncall = "sidefx:step"\nkwargs = {{ log = "{log}", '
                   f'name = "t{i}", k = {i} }}\n' for i in range(60))
    spec = write("p.toml", "[pipeline]\nname = \"p\"\nworkers = 2\n[defaults]\ncache = true\n"
                 + rows)
    procs = [start("run", str(spec), "--json") for _ in range(2)]
    for proc in procs:
        proc.communicate(timeout=120)  # generous: two runs of 60 tasks on a shared machine
        assert proc.returncode == 0
    from dagrun.store.records import unframe

    lines = cache_file().read_bytes().splitlines()
    # Both missed (120 lines), or the later one started after the first's
    # entries were written; either way every line is whole.
    assert 60 <= len(lines) <= 120
    assert {unframe(line)["task"] for line in lines} == {f"t{i}" for i in range(60)}
    r = cli("run", str(spec), "--json")
    assert all(t["cached"] for t in r.json["tasks"].values())
    assert [r.json["tasks"][f"t{i}"]["output"] for i in range(60)] == list(range(60))


def test_the_python_api_takes_cache_no_cache_and_refresh(tmp_path):
    import dagrun

    log = tmp_path / "log"
    p = dagrun.Pipeline("api")
    p.task("a", "sidefx:step", kwargs={"log": str(log), "name": "a"}, cache=True)
    p.task("b", "sidefx:step", kwargs={"log": str(log), "name": "b"},
           cache={"ttl": "1h", "version": "1"})
    st = tmp_path / "st"
    first = dagrun.run(p, state_dir=st)
    second = dagrun.run(p, state_dir=st)
    assert second.tasks["a"].extra == {"cached": True, "cached_from": first.run_id}
    dagrun.run(p, state_dir=st, refresh=["b"])
    assert runs_of(log) == {"a": 1, "b": 2}
    dagrun.run(p, state_dir=st, no_cache=True)
    assert runs_of(log) == {"a": 2, "b": 3}
    assert {e["task"] for e in dagrun.api.cache_list("api", state_dir=st)} == {"a", "b"}
    assert dagrun.api.cache_clear("api", state_dir=st) == 2
