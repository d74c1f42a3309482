"""Every malformed spec, unknown callable, bad id, cycle or bad option: exit 2,
one clear line on stderr saying what and where, no traceback, no run folder."""

from __future__ import annotations

from pathlib import Path

import pytest

GOOD_TASK = '[tasks.a]\ncall = "basic:const"\n'

BAD_SPECS = [
    ("broken.toml", "[tasks.a\ncall = 1", "invalid TOML"),
    ("broken.yaml", "tasks:\n  a: [unclosed\n", "invalid YAML"),
    ("dup.yaml", "tasks:\n  a: {call: 'basic:const'}\n  a: {call: 'basic:const'}\n",
     "duplicate key 'a'"),
    ("dup.toml", GOOD_TASK + GOOD_TASK, "duplicate key or task id"),
    ("notasks.toml", '[pipeline]\nname = "x"\n', "no 'tasks' section"),
    ("typo_top.toml", '[task.a]\ncall = "basic:const"\n', "unknown top-level key 'task' "
     "(did you mean 'tasks'?)"),
    ("typo_key.toml", GOOD_TASK + 'dep = ["a"]\n', "task 'a': unknown key 'dep' "
     "(did you mean 'deps'?)"),
    ("nocall.toml", "[tasks.a]\nretries = 1\n", "task 'a': missing 'call'"),
    ("badcall.toml", '[tasks.a]\ncall = "basic.const"\n', "'call' must look like"),
    ("negtimeout.toml", GOOD_TASK + "timeout = -5\n",
     "task 'a': 'timeout' must be a positive number of seconds"),
    ("badduration.toml", GOOD_TASK + 'timeout = "5 minutes"\n', "'timeout' must be a positive"),
    ("negretries.toml", GOOD_TASK + "retries = -1\n", "'retries' must be an integer >= 0"),
    ("missingdep.toml", GOOD_TASK + '[tasks.b]\ncall = "basic:const"\ndeps = ["aa"]\n',
     "task 'b': dependency 'aa' is not a task (did you mean 'a'?)"),
    ("selfdep.toml", GOOD_TASK + 'deps = ["a"]\n', "task 'a' depends on itself"),
    ("cycle.toml", '[tasks.a]\ncall = "basic:const"\ndeps = ["c"]\n'
     '[tasks.b]\ncall = "basic:const"\ndeps = ["a"]\n'
     '[tasks.c]\ncall = "basic:const"\ndeps = ["b"]\n', "cycle: "),
    ("inputnotdep.toml", GOOD_TASK + '[tasks.b]\ncall = "basic:total"\ninputs = {xs = "a"}\n',
     "input 'xs' takes the output of 'a', which is not in its 'deps'"),
    ("badid.toml", '[tasks."bad id!"]\ncall = "basic:const"\n', "task id 'bad id!' is invalid"),
    ("nomodule.toml", '[tasks.a]\ncall = "no_such_module:f"\n', "no module named 'no_such_module'"),
    ("nofunc.toml", '[tasks.a]\ncall = "basic:no_such_function"\n', "has no attribute"),
    ("badkwargs.toml", GOOD_TASK + "kwargs = { nope = 1 }\n", "arguments do not fit"),
    ("zeroworkers.toml", "[pipeline]\nworkers = 0\n" + GOOD_TASK,
     "'workers' must be a positive integer"),
    ("badbreaker.toml", GOOD_TASK + 'breaker = "api"\n', "not defined in [breakers]"),
    ("badpriority.toml", GOOD_TASK + 'priority = "high"\n', "'priority' must be an integer"),
    ("badbackoff.toml", GOOD_TASK + 'retry_backoff = "random"\n', "'retry_backoff' must be one of"),
    ("badkwargs_type.toml", GOOD_TASK + 'kwargs = "x"\n', "'kwargs' must be a table"),
    ("spec.json", "{}", "unknown spec format '.json'"),
    ("list.yaml", "- a\n- b\n", "must be a table/mapping"),
]


@pytest.mark.parametrize(("name", "text", "message"), BAD_SPECS, ids=[b[0] for b in BAD_SPECS])
@pytest.mark.parametrize("command", ["run", "validate"])
def test_bad_spec_exits_2_with_one_line(cli, write, tmp_path: Path, name, text, message,
                                        command):
    spec = write(name, text)
    r = cli(command, str(spec))
    assert r.code == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert message in lines[0]
    assert name in lines[0]  # says where
    assert "Traceback" not in r.stderr
    assert r.stdout == ""
    assert not (tmp_path / "state" / "runs").exists() or not any(
        (tmp_path / "state" / "runs").iterdir())


def test_cycle_names_its_tasks_in_order(cli, write):
    spec = write("cycle.toml", '[tasks.extract]\ncall = "basic:const"\ndeps = ["load"]\n'
                 '[tasks.load]\ncall = "basic:const"\ndeps = ["extract"]\n')
    r = cli("validate", str(spec))
    assert r.code == 2
    assert ("cycle: extract -> load -> extract" in r.stderr
            or "cycle: load -> extract -> load" in r.stderr)


def test_missing_file(cli):
    r = cli("run", "nope.toml")
    assert r.code == 2 and "nope.toml: no such file" in r.stderr


@pytest.mark.parametrize(("args", "message"), [
    (["--workers", "0"], "--workers"),
    (["--run-id", "../escape"], "invalid run id"),
    (["--run-id", "a/b"], "invalid run id"),
    (["--deadline", "soon"], "--deadline"),
    (["--durability", "maybe"], "--durability"),
])
def test_bad_options_exit_2(cli, write, tmp_path, args, message):
    spec = write("ok.toml", GOOD_TASK)
    r = cli("run", str(spec), *args)
    assert r.code == 2, r.stderr
    assert message in r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "escape").exists()


def test_existing_run_id_is_refused(cli, write):
    spec = write("ok.toml", GOOD_TASK)
    assert cli("run", str(spec), "--run-id", "r1").code == 0
    r = cli("run", str(spec), "--run-id", "r1")
    assert r.code == 2 and "already exists" in r.stderr


def test_durations_and_dates(write):
    from dagrun.spec import load_spec

    spec = load_spec(write("d.toml", """
        [defaults]
        timeout = "5m"
        retry_delay = 0.5
        [tasks.a]
        call = "basic:const"
        kwargs = { value = 2026-11-27, at = 2026-11-27T10:00:00Z }
        timeout = "30s"
        [tasks.b]
        call = "basic:const"
    """))
    assert spec.tasks["a"].timeout == 30
    assert spec.tasks["b"].timeout == 300
    assert spec.tasks["b"].retry.delay == 0.5
    assert spec.tasks["a"].kwargs == {"value": "2026-11-27", "at": "2026-11-27T10:00:00+00:00"}


def test_a_breaker_cooldown_of_null_is_refused(cli, write):
    """null would mean "never reopens": validate refuses it instead of every run
    that trips the breaker crashing on it."""
    spec = write("bn.yaml", "pipeline: {name: bn}\n"
                 "breakers: {wh: {failure_threshold: 1, cooldown: null}}\n"
                 "tasks: {f: {call: 'basic:const', breaker: wh}}\n")
    for command in ("validate", "run"):
        r = cli(command, str(spec))
        assert r.code == 2, r.stderr
        assert "'cooldown'" in r.stderr and "breaker 'wh'" in r.stderr
        assert "Traceback" not in r.stderr
