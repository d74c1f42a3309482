"""Spec edges: durations (bounded, compound), ids matched in full, YAML merge
keys / x- keys / complex keys / alias bombs / deep nesting, messages that name
the right place, python_path. Every bad input: exit 2 and one line."""

from __future__ import annotations

import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dagrun.spec import load_spec

GOOD_TASK = '[tasks.a]\ncall = "basic:const"\n'


def one_line_error(r, *parts: str) -> None:
    assert r.code == 2, (r.code, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    for part in parts:
        assert part in lines[0], lines[0]
    assert r.stdout == ""


# ---------------------------------------------------------------- durations

ABSURD = [
    ("timeout = inf", "'timeout'"),
    ('timeout = "200000d"', "'timeout'"),
    ("timeout_grace = inf", "'timeout_grace'"),
    ("retry_delay = 1e300", "'retry_delay'"),
    ('retry_max_delay = "4000d"', "'retry_max_delay'"),
    ("timeout = 999999999999999999999999", "'timeout'"),
]


@pytest.mark.parametrize(("line", "key"), ABSURD, ids=[a[0] for a in ABSURD])
def test_absurd_task_durations_are_refused(cli, write, line, key):
    r = cli("validate", str(write("d.toml", GOOD_TASK + line + "\n")))
    one_line_error(r, "task 'a'", key)


@pytest.mark.parametrize("text", [
    '[pipeline]\ndeadline = inf\n' + GOOD_TASK,
    '[pipeline]\ndeadline = "200000d"\n' + GOOD_TASK,
    '[breakers.api]\ncooldown = inf\n' + GOOD_TASK,
    '[breakers.api]\nmax_wait = "200000d"\n' + GOOD_TASK,
    '[defaults]\nretry_delay = inf\n' + GOOD_TASK,
])
def test_absurd_durations_everywhere_are_refused(cli, write, text):
    r = cli("validate", str(write("d.toml", text)))
    one_line_error(r, "10 years")


def test_compound_and_millisecond_durations(write):
    spec = load_spec(write("d.toml", GOOD_TASK + 'timeout = "1h30m"\nretry_delay = "500ms"\n'
                           'timeout_grace = "1m 2.5s"\n'))
    a = spec.tasks["a"]
    assert (a.timeout, a.retry.delay, a.timeout_grace) == (5400.0, 0.5, 62.5)


def test_units_out_of_order_are_refused(cli, write):
    r = cli("validate", str(write("d.toml", GOOD_TASK + 'timeout = "30s5m"\n')))
    one_line_error(r, "'timeout'", "decreasing order")


def test_none_is_not_zero_for_duration_options(cli, write):
    spec = str(write("ok.toml", GOOD_TASK))
    r = cli("dlq", "purge", "--older-than", "none")
    one_line_error(r, "--older-than")
    r = cli("run", spec, "--if-running", "wait", "--wait-timeout", "none")
    one_line_error(r, "--wait-timeout")
    r = cli("run", spec, "--deadline", "200000d")
    one_line_error(r, "--deadline", "10 years")
    # Where README documents it, `none` still means "no deadline".
    assert cli("run", spec, "--deadline", "none").code == 0
    assert cli("run", spec, "--deadline", "1h30m").code == 0


# ---------------------------------------------------------------- ids


def test_run_id_with_trailing_newline_is_refused(cli, write, tmp_path):
    r = cli("run", str(write("ok.toml", GOOD_TASK)), "--run-id", "evil\n")
    assert r.code == 2 and "invalid run id" in r.stderr
    assert not (tmp_path / "state" / "runs").exists() or not any(
        (tmp_path / "state" / "runs").iterdir())


@pytest.mark.parametrize(("text", "message"), [
    ('tasks:\n  "bad\\n": {call: "basic:const"}\n', "task id 'bad\\n' is invalid"),
    ('pipeline: {name: "x\\n"}\ntasks:\n  a: {call: "basic:const"}\n', "'name' must match"),
    ('tasks:\n  a: {call: "basic:const\\n"}\n', "'call' must look like"),
    ('breakers: {"b\\n": {}}\ntasks:\n  a: {call: "basic:const"}\n', "breaker name"),
])
def test_ids_with_trailing_newline_are_refused(cli, write, text, message):
    one_line_error(cli("validate", str(write("ids.yaml", text))), message)


# ---------------------------------------------------------------- YAML


MERGE = """
x-base: &base
  call: basic:const
  retries: 2
  timeout: 1h30m
x-more: &more {retries: 5, priority: 3}
tasks:
  a:
    <<: *base
    retries: 1
  b:
    <<: [*more, *base]
  c: {<<: *base, call: "basic:add", kwargs: {x: 1}}
"""


def test_yaml_merge_keys_and_x_keys(cli, write):
    path = write("merge.yaml", MERGE)
    spec = load_spec(path)
    got = {t.id: (t.call, t.retry.retries, t.priority, t.timeout) for t in spec.tasks.values()}
    assert got == {"a": ("basic:const", 1, 0, 5400.0),   # explicit key overrides
                   "b": ("basic:const", 5, 3, 5400.0),   # first merged mapping wins
                   "c": ("basic:add", 2, 0, 5400.0)}
    r = cli("run", str(path), "--json")
    assert r.code == 0, r.stderr
    assert r.json["tasks"]["c"]["output"] == 1


def test_yaml_real_duplicates_stay_errors(cli, write):
    text = "x-base: &base {call: basic:const}\ntasks:\n  a:\n    <<: *base\n" \
           "    retries: 1\n    retries: 2\n"
    one_line_error(cli("validate", str(write("dup.yaml", text))), "duplicate key 'retries'")


def test_toml_x_keys_are_ignored_but_other_unknown_keys_are_not(cli, write):
    assert cli("validate", str(write("x.toml", 'x-note = "hi"\n' + GOOD_TASK))).code == 0
    one_line_error(cli("validate", str(write("y.toml", 'y-note = "hi"\n' + GOOD_TASK))),
                   "unknown top-level key 'y-note'")


@pytest.mark.parametrize(("name", "text", "message"), [
    ("complex.yaml", 'tasks:\n  ? [a, b]\n  : {call: "basic:const"}\n', "mapping key"),
    ("complex2.yaml", 'tasks:\n  a: {call: "basic:const", kwargs: {? {x: 1} : 2}}\n',
     "mapping key"),
    ("recursive.yaml", 'tasks: {a: {call: "basic:const", kwargs: {value: &r [*r]}}}\n',
     "recursive alias"),
    ("badmerge.yaml", 'tasks:\n  a: {<<: 3, call: "basic:const"}\n', "'<<' must merge"),
    ("deep.yaml", 'tasks: {a: {call: "basic:const", kwargs: {v: ' + "[" * 300 + "]" * 300
     + "}}}\n", "nested more than"),
    ("deep.toml", GOOD_TASK + "kwargs = {v = " + "[" * 250 + "]" * 250 + "}\n",
     "nested more than"),
    ("deeper.toml", GOOD_TASK + "kwargs = {v = " + "[" * 3000 + "]" * 3000 + "}\n",
     "nested too deeply"),
    ("deeptables.toml", GOOD_TASK + "[tasks.a.kwargs" + ".x" * 260 + "]\n",
     "nested more than"),
    ("breakerlist.toml", GOOD_TASK + 'breaker = ["x"]\n', "'breaker' must name"),
    ("escape.yaml", 'tasks: "\\UFFFFFFFF"\n', "invalid YAML"),
    ("baddate.yaml", 'tasks: {a: {call: "basic:const", kwargs: {value: 2026-02-30}}}\n',
     "invalid YAML"),
    ("hugeint.toml", GOOD_TASK + "kwargs = {value = " + "9" * 5000 + "}\n", "invalid TOML"),
    ("hugeretries.toml", GOOD_TASK + "retries = " + "9" * 30 + "\n", "'retries'"),
])
@pytest.mark.parametrize("command", ["validate", "run"])
def test_malformed_structures_exit_2(cli, write, name, text, message, command):
    one_line_error(cli(command, str(write(name, text))), name, message)


def alias_bomb(indent: str, prefix: str) -> str:
    """Nine levels of ten aliases each: ~600 bytes expanding to 10^9 strings."""
    lines = [f'{indent}{prefix}a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"{indent}{prefix}{c}: &{c} [" + ",".join([f"*{p}"] * 10) + "]"
              for p, c in zip("abcdefgh", "bcdefghi", strict=True)]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("where", ["kwargs", "x-keys"])
def test_yaml_alias_bomb_fails_fast_and_small(write, where):
    if where == "kwargs":
        text = 'tasks:\n  t:\n    call: "basic:const"\n    kwargs:\n' + alias_bomb(" " * 6, "k_")
    else:
        text = alias_bomb("", "x-") + 'tasks:\n  t: {call: "basic:const"}\n'
    path = write("bomb.yaml", text)
    assert len(path.read_bytes()) < 1000

    def limit_memory() -> None:  # 1.5 GB: the unbounded expansion needed more
        resource.setrlimit(resource.RLIMIT_AS, (1_500_000_000, 1_500_000_000))

    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "dagrun", "validate", str(path)],
                          capture_output=True, text=True, timeout=60, preexec_fn=limit_memory)
    # Generous (2 shared cores under load): it takes ~0.1 s; unbounded it took 90 s+.
    assert time.monotonic() - started < 20
    assert proc.returncode == 2, proc.stderr
    assert "expands (through its aliases)" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_many_merges_of_a_large_spec_are_fine(write):
    """The expansion bound leaves room for `<<: *defaults` on every task."""
    tasks = "".join(f"  t{i}: {{<<: *d, kwargs: {{value: {i}}}}}\n" for i in range(3000))
    spec = load_spec(write("many.yaml", "x-d: &d {call: basic:const, retries: 1}\ntasks:\n"
                           + tasks))
    assert len(spec.tasks) == 3000 and spec.tasks["t2999"].retry.retries == 1


# ---------------------------------------------------------------- messages


def test_bad_defaults_are_blamed_on_defaults(cli, write):
    r = cli("validate", str(write("d.toml", '[defaults]\ntimeout = "soon"\n'
                                   '[tasks.extract]\ncall = "basic:const"\n')))
    one_line_error(r, "[defaults]", "'timeout'")
    assert "extract" not in r.stderr


def test_misspelt_kwarg_gets_a_did_you_mean(cli, write):
    r = cli("validate", str(write("k.toml", '[tasks.a]\ncall = "basic:total"\n'
                                   "kwargs = {x = [5]}\n")))
    one_line_error(r, "task 'a'", "(did you mean 'xs' for 'x'?)")
    r = cli("validate", str(write("k2.toml", '[tasks.a]\ncall = "basic:sleep"\n'
                                   "kwargs = {secnds = 5}\n")))
    one_line_error(r, "(did you mean 'seconds' for 'secnds'?)")


# ---------------------------------------------------------------- python_path

PKG_TASK = """
import os

def f(flag=None):
    if flag and not os.path.exists(flag):
        raise ConnectionError("not yet")
    return "from mypkg"
"""


def make_project(root: Path, python_path: str | None) -> Path:
    (root / "src" / "mypkg").mkdir(parents=True)
    (root / "src" / "mypkg" / "__init__.py").write_text("")
    (root / "src" / "mypkg" / "tasks.py").write_text(PKG_TASK)
    (root / "pipelines").mkdir()
    spec = root / "pipelines" / "p.toml"
    pp = f"[pipeline]\npython_path = {python_path}\n" if python_path else ""
    spec.write_text(pp + f'[tasks.a]\ncall = "mypkg.tasks:f"\nkwargs = {{flag = '
                    f'"{root / "flag"}"}}\n')
    return spec


def test_python_path_makes_project_packages_importable(cli, tmp_path):
    # cwd elsewhere: `python -m` would put the current folder on sys.path.
    spec = make_project(tmp_path / "proj", '["../src"]')
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    r = cli("validate", str(spec), cwd=elsewhere)
    assert r.code == 0, r.stderr
    r = cli("run", str(spec), "--json", "--run-id", "pp", cwd=elsewhere)
    assert r.code == 1, r.stderr  # the task ran in a worker and failed: no flag yet
    assert "not yet" in r.json["tasks"]["a"]["error"]
    (tmp_path / "proj" / "flag").write_text("")
    # A new dagrun process: the worker imports through the run's snapshot.
    r = cli("dlq", "retry", "pp", "--json", cwd=elsewhere)
    assert r.code == 0, r.stderr
    assert r.json["tasks"]["a"]["output"] == "from mypkg"


def test_import_error_names_the_folders_searched(cli, tmp_path):
    spec = make_project(tmp_path / "proj", None)
    r = cli("validate", str(spec), cwd=tmp_path)
    one_line_error(r, "no module named 'mypkg'", str(tmp_path / "proj" / "pipelines"),
                   "python_path")
    spec.write_text('[pipeline]\npython_path = ["..", "lib"]\n' + spec.read_text())
    r = cli("validate", str(spec), cwd=tmp_path)
    one_line_error(r, "no module named 'mypkg'", str(tmp_path / "proj" / "pipelines" / "lib"))
