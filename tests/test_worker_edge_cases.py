"""Tasks that misbehave in ways that once took dagrun itself down: each must
fail (or pass) alone, as a task result, never crash or hang the parent."""

from __future__ import annotations

import pytest


def test_max_tasks_per_worker_1_with_many_short_tasks(cli, write):
    tasks = "".join(f'[tasks.n{i}]\ncall = "misbehave:noop"\n' for i in range(300))
    spec = write("m.toml", "[pipeline]\nworkers = 4\nmax_tasks_per_worker = 1\n" + tasks)
    r = cli("run", str(spec), "--json", timeout=120)  # hung forever before the fix
    assert r.code == 0, r.stderr
    assert all(t["state"] == "completed" for t in r.json["tasks"].values())


def test_a_task_that_forks_and_returns_twice(cli, write):
    spec = write("f.toml", """
        [pipeline]
        workers = 1
        [tasks.fork]
        call = "misbehave:fork_and_return"
        [tasks.after]
        call = "basic:const"
        kwargs = { value = 1 }
    """)
    r = cli("run", str(spec), "--json")
    assert r.code == 0, r.stderr
    assert r.json["tasks"]["fork"]["output"] == "parent"
    assert r.json["tasks"]["after"]["output"] == 1
    assert "Traceback" not in r.stderr or "IndexError" not in r.stderr


@pytest.mark.parametrize("depth", [250, 252, 254, 400])
def test_deeply_nested_output_is_the_tasks_failure(cli, write, depth):
    spec = write("n.toml", f'[tasks.n]\ncall = "misbehave:nested"\nkwargs = {{ depth = {depth} }}\n'
                 '[tasks.down]\ncall = "basic:const"\ndeps = ["n"]\ninputs = { value = "n" }\n')
    r = cli("run", str(spec), "--json")
    assert r.code in (0, 1), r.stderr
    assert "Traceback" not in r.stderr
    n = r.json["tasks"]["n"]
    if n["state"] == "completed":
        assert r.json["tasks"]["down"]["state"] == "completed"
    else:
        assert "NotSerializable" in n["error"]


@pytest.mark.parametrize(("call", "expected"), [
    ("misbehave:bad_message", "_BadStr: <_BadStr whose message could not be shown>"),
    ("misbehave:surrogate_message", "ValueError: bad \\ud800 char"),
])
def test_exceptions_that_resist_being_printed(cli, write, call, expected):
    r = cli("run", str(write("e.toml", f'[tasks.e]\ncall = "{call}"\n')), "--json")
    assert r.code == 1
    assert r.json["tasks"]["e"]["error"] == expected
