"""Review of task caching (issue 13) as a user would meet it: a hit must never
hand back an output the task would not produce now. Through the CLI."""

from __future__ import annotations

import os

import orjson
import pytest
from proc import start, wait_for

RUN = ("run", "--json")


def outputs(result) -> dict:
    return {tid: (t["state"], t["output"], t.get("cached", False))
            for tid, t in result.json["tasks"].items()}


def test_editing_the_module_that_defines_a_reexported_callable_is_a_miss(cli, write):
    # call names tasks_api:f, but f is written in impl.py: its code is impl's source.
    write("tasks_api.py", "from impl import f\n")
    write("impl.py", "def f():\n    return 1\n")
    spec = write("p.toml", '[tasks.t]\ncall = "tasks_api:f"\ncache = true\n')
    assert outputs(cli(*RUN, str(spec)))["t"] == ("completed", 1, False)
    write("impl.py", "def f():\n    return 2 + 0\n")  # another size: no stale .pyc
    assert outputs(cli(*RUN, str(spec)))["t"] == ("completed", 2, False)


def test_a_directory_in_files_in_is_hashed_by_its_content(cli, write, tmp_path):
    write("reader.py", """
        import os
        def read(path):
            return sorted(open(os.path.join(r, n)).read()
                          for r, _, names in os.walk(path) for n in names)
        """)
    write("data/one.txt", "1")
    spec = write("p.toml", f"""
        [tasks.r]
        call = "reader:read"
        kwargs = {{ path = "{tmp_path / 'data'}" }}
        files_in = ["data"]
        cache = true
        """)
    assert outputs(cli(*RUN, str(spec)))["r"] == ("completed", ["1"], False)
    write("data/one.txt", "2")  # an edit inside the folder
    assert outputs(cli(*RUN, str(spec)))["r"] == ("completed", ["2"], False)
    write("data/sub/two.txt", "3")  # a new file, deeper
    assert outputs(cli(*RUN, str(spec)))["r"] == ("completed", ["2", "3"], False)
    assert outputs(cli(*RUN, str(spec)))["r"] == ("completed", ["2", "3"], True)


def test_a_directory_in_files_out_is_an_output_not_a_missing_one(cli, write, tmp_path):
    write("maker.py", f"""
        import os
        def make():
            os.makedirs({str(tmp_path / 'out')!r}, exist_ok=True)
            with open({str(tmp_path / 'out' / 'f.txt')!r}, "w") as fh:
                fh.write("made")
            return 1
        """)
    spec = write("p.toml", '[tasks.m]\ncall = "maker:make"\nfiles_out = ["out"]\ncache = true\n')
    first = cli(*RUN, str(spec))
    assert first.code == 0, first.json["tasks"]["m"]["error"]
    assert outputs(cli(*RUN, str(spec)))["m"] == ("completed", 1, True)
    (tmp_path / "out" / "f.txt").write_text("edited by hand")
    assert outputs(cli(*RUN, str(spec)))["m"] == ("completed", 1, False)  # ran again


def test_a_cached_task_with_a_false_condition_is_skipped_not_a_hit(cli, write, tmp_path):
    gate = tmp_path / "GO"
    write("gate.py", f"""
        import os
        def open_():
            return os.path.exists({str(gate)!r})
        def one():
            return 1
        """)
    spec = write("p.toml", """
        [defaults]
        cache = true
        [tasks.publish]
        call = "gate:one"
        when = "gate:open_"
        [tasks.after]
        call = "gate:one"
        deps = ["publish"]
        """)
    gate.touch()
    assert outputs(cli(*RUN, str(spec)))["publish"] == ("completed", 1, False)
    os.unlink(gate)
    second = cli(*RUN, str(spec))
    assert second.json["tasks"]["publish"]["state"] == "skipped"
    assert second.json["tasks"]["after"]["state"] == "skipped"


def test_cache_with_when_on_the_same_task_is_a_spec_error(cli, write):
    write("gate.py", "def yes():\n    return True\ndef one():\n    return 1\n")
    spec = write("p.toml", '[tasks.t]\ncall = "gate:one"\nwhen = "gate:yes"\ncache = true\n')
    r = cli("validate", str(spec))
    assert r.code == 2
    assert r.stderr.count("\n") == 1 and "'cache' cannot be set on a task with 'when'" in r.stderr


def test_a_cached_task_that_emits_an_event_still_releases_its_waiter(cli, write):
    write("emitter.py", """
        import dagrun
        def produce():
            dagrun.emit("ready")
            return 5
        def consume():
            return 6
        """)
    # Generous event_timeout: only a never-emitted event can reach it.
    spec = write("p.toml", """
        [tasks.prod]
        call = "emitter:produce"
        cache = true
        [tasks.cons]
        call = "emitter:consume"
        wait_for = ["ready"]
        event_timeout = "10s"
        """)
    assert cli(*RUN, str(spec)).code == 0
    second = cli(*RUN, str(spec))
    assert outputs(second)["prod"] == ("completed", 5, True)
    assert outputs(second)["cons"] == ("completed", 6, False)


@pytest.mark.parametrize("command", [("cache", "list"), ("cache", "clear"),
                                     ("gc", "--keep", "5")])
def test_a_cache_folder_that_is_a_file_is_one_line_and_exit_4(cli, tmp_path, command):
    state = tmp_path / "state"
    state.mkdir()
    (state / "cache").write_text("not a folder")
    r = cli(*command, "--state-dir", str(state))
    assert (r.code, r.stderr.count("\n")) == (4, 1), r.stderr
    assert "Traceback" not in r.stderr and "cache" in r.stderr


def test_a_torn_last_entry_costs_one_rerun_not_the_next_entry_too(cli, write, tmp_path):
    log = tmp_path / "side.log"
    write("steps.py", f"""
        def step(name):
            with open({str(log)!r}, "a") as fh:
                fh.write(name + "\\n")
            return name
        """)
    spec = write("p.toml", """
        [defaults]
        cache = true
        [tasks.x]
        call = "steps:step"
        kwargs = { name = "x" }
        [tasks.y]
        call = "steps:step"
        kwargs = { name = "y" }
        """)
    assert cli(*RUN, str(spec)).code == 0
    entries = tmp_path / "state" / "cache" / "p"
    data = entries.read_bytes()
    entries.write_bytes(data[:-20])  # a crash in the middle of the last entry
    log.write_text("")
    assert cli(*RUN, str(spec)).code == 0
    assert cli(*RUN, str(spec)).code == 0
    torn = orjson.loads(data.splitlines()[-1].split(b" ", 1)[1])["task"]
    assert log.read_text().split() == [torn]  # only the torn entry's task ran again


def test_cache_clear_of_one_task_mid_run_keeps_the_entries_written_after_it(cli, write,
                                                                          tmp_path):
    gate = tmp_path / "go"
    write("slow.py", f"""
        import os, time
        def quick():
            return 1
        def held(x):
            while not os.path.exists({str(gate)!r}):
                time.sleep(0.02)
            return x + 1
        """)
    spec = write("p.toml", """
        [defaults]
        cache = true
        [tasks.a]
        call = "slow:quick"
        [tasks.b]
        call = "slow:held"
        deps = ["a"]
        inputs = { x = "a" }
        """)
    entries = tmp_path / "state" / "cache" / "p"
    proc = start("run", str(spec))
    # Generous: a's entry is written within a second (FLUSH_SECONDS) of its completion.
    wait_for(lambda: entries.exists() and b'"task":"a"' in entries.read_bytes(), timeout=30)
    assert cli("cache", "clear", "p", "a").code == 0
    gate.touch()
    assert proc.wait(timeout=60) == 0
    listed = cli("cache", "list", "p", "--json").json
    assert [e["task"] for e in listed] == ["b"]


def test_no_digest_of_a_secret_param_is_written_to_the_cache(cli, write, tmp_path):
    write("tok.py", "def f(token, n):\n    return n\n")
    spec = write("p.toml", """
        [pipeline]
        secret_params = ["token"]
        [params]
        n = 3
        [defaults]
        cache = true
        [tasks.t]
        call = "tok:f"
        kwargs = { token = "${params.token}", n = "${params.n}" }
        [tasks.u]
        call = "tok:f"
        kwargs = { token = "public", n = "${params.n}" }
        """)
    first = cli(*RUN, str(spec), "--param", "token=hunter2")
    assert first.code == 0
    entries = (tmp_path / "state" / "cache" / "p").read_bytes()
    # A dictionary attack on the key parts is exactly this: hash a guess, grep.
    import hashlib

    for guess in ({"token": "hunter2", "n": 3}, {"n": 3, "token": "hunter2"}):
        digest = hashlib.sha256(orjson.dumps(guess, option=orjson.OPT_SORT_KEYS)).hexdigest()
        assert digest.encode() not in entries
    assert b"hunter2" not in entries
    second = cli(*RUN, str(spec), "--param", "token=hunter2")
    assert outputs(second) == {"t": ("completed", 3, False), "u": ("completed", 3, True)}


def test_a_task_waiting_for_an_event_is_not_a_hit_without_the_event(cli, write, tmp_path):
    write("gate.py", "def one():\n    return 1\n")
    spec = write("p.toml", """
        [defaults]
        cache = true
        [tasks.publish]
        call = "gate:one"
        wait_for = ["approved"]
        [tasks.deploy]
        call = "gate:one"
        deps = ["publish"]
        """)
    first = start("run", str(spec), "--run-id", "first")
    # Generous: the run must exist before it can take an event.
    wait_for(lambda: (tmp_path / "state" / "runs" / "first" / "journal").exists(), timeout=30)
    assert cli("emit", "first", "approved").code == 0
    assert first.wait(timeout=60) == 0
    # No approval this time: publish waits (and times out), deploy does not run.
    second = cli(*RUN, str(spec), "--run-id", "second", "--deadline", "3s")
    assert second.code == 130
    assert second.json["tasks"]["publish"]["state"] != "completed"
    assert second.json["tasks"]["deploy"]["state"] != "completed"


def test_cache_with_wait_for_on_the_same_task_is_a_spec_error(cli, write):
    write("gate.py", "def one():\n    return 1\n")
    spec = write("p.toml", '[tasks.t]\ncall = "gate:one"\nwait_for = ["go"]\ncache = true\n')
    r = cli("validate", str(spec))
    assert r.code == 2
    assert r.stderr.count("\n") == 1
    assert "'cache' cannot be set on a task with 'wait_for'" in r.stderr


def test_a_file_whose_name_looks_like_a_glob_is_hashed(cli, write, tmp_path):
    write("reader.py", "def read(path):\n    return open(path).read()\n")
    write("report[1].csv", "old")
    spec = write("p.toml", f"""
        [tasks.r]
        call = "reader:read"
        kwargs = {{ path = "{tmp_path / 'report[1].csv'}" }}
        files_in = ["report[1].csv"]
        cache = true
        """)
    assert outputs(cli(*RUN, str(spec)))["r"] == ("completed", "old", False)
    write("report[1].csv", "new!")
    assert outputs(cli(*RUN, str(spec)))["r"] == ("completed", "new!", False)
