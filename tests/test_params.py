"""Parameters ([params], --param, DAGRUN_PARAM_*, ${...}) through the CLI, and
the Python API helpers (fan_out_in, chain) with real workers."""

from __future__ import annotations

import datetime
import os
import signal
from pathlib import Path
from typing import Any

import orjson
from proc import start, wait_for

SPEC = """\
[pipeline]
name = "params-demo"
workers = 2

[params]
day = "2026-11-27"
n = 3
since = "${run.date}"

[tasks.a]
call = "params_tasks:show"

[tasks.a.kwargs]
day = "${params.day}"
n = "${params.n}"
label = "n=${params.n} day=${params.day}"
rid = "${run.id}"
date = "${run.date}"
name = "${pipeline.name}"
since = "${params.since}"
deep = [{ x = "${params.n}" }]
shell = "$${HOME}"
"""


def test_param_values_precedence_json_and_substitution(write: Any, cli: Any) -> None:
    spec = write("p.toml", SPEC)
    # Defaults only; exact references keep the type, longer strings interpolate.
    r = cli("run", str(spec), "--json", "--run-id", "r1")
    assert r.code == 0, r.stderr
    out = r.json["tasks"]["a"]["output"]
    today = datetime.date.today().isoformat()
    assert out == {"day": "2026-11-27", "n": 3, "label": "n=3 day=2026-11-27", "rid": "r1",
                   "date": today, "name": "params-demo", "since": today,
                   "deep": [{"x": 3}], "shell": "${HOME}"}
    # The environment beats the default, --param beats the environment; values
    # are JSON when they parse as JSON, else strings.
    r = cli("run", str(spec), "--json", "--param", "n=[1, 2]", "--param", "day=2027-01-02",
            env={"DAGRUN_PARAM_n": "7", "DAGRUN_PARAM_day": "from-env"})
    out = r.json["tasks"]["a"]["output"]
    assert (out["n"], out["day"], out["label"]) == ([1, 2], "2027-01-02",
                                                     "n=[1,2] day=2027-01-02")
    r = cli("run", str(spec), "--json", "--param", 'day="42"',
            env={"DAGRUN_PARAM_n": "7", "DAGRUN_PARAM_day": "from-env"})
    out = r.json["tasks"]["a"]["output"]
    assert (out["n"], out["day"]) == (7, "42")
    r = cli("run", str(spec), "--json", "--param", "n=true", "--param", 'day={"a": null}')
    out = r.json["tasks"]["a"]["output"]
    assert (out["n"], out["day"], out["label"]) == (True, {"a": None},
                                                     'n=true day={"a":null}')


def test_unknown_params_are_validation_errors(write: Any, cli: Any) -> None:
    spec = write("p.toml", SPEC)
    for command in ("run", "validate"):
        r = cli(command, str(spec), "--param", "dya=1")
        assert r.code == 2
        assert r.stderr.strip().splitlines() == [
            f"dagrun: error: {spec}: --param 'dya' is not declared in [params] "
            "(did you mean 'day'?)"]
    assert cli("validate", str(spec), "--param", "day=1").code == 0
    assert cli("run", str(spec), "--param", "nokey").code == 2
    bad = write("bad.toml", """\
        [params]
        day = "x"
        [tasks.a]
        call = "params_tasks:show"
        kwargs = { where = { d = "on ${params.dya}" } }
    """)
    r = cli("validate", str(bad))
    assert r.code == 2
    line = r.stderr.strip()
    assert "\n" not in line
    assert str(bad) in line and "task 'a'" in line and "kwargs.where" in line
    assert "'dya'" in line and "did you mean 'params.day'" in line
    # Nothing is evaluated: only names are references.
    expr = write("expr.yaml", """\
        tasks:
          a:
            call: params_tasks:show
            kwargs: {x: "${1 + 2}"}
    """)
    r = cli("validate", str(expr))
    assert r.code == 2 and "unknown reference '${1 + 2}'" in r.stderr
    assert str(expr) in r.stderr and "kwargs.x" in r.stderr


SECRET_SPEC = """\
[pipeline]
name = "secretive"
secret_params = ["token"]

[params]
day = "2026-11-27"

[tasks.use]
call = "params_tasks:use_secret"

[tasks.use.kwargs]
token = "Bearer ${{params.token}}"
out = "{out}"
day = "${{params.day}}"
gate = "{gate}"
"""


def _state_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


def test_secret_params_never_stored_and_required_again_on_resume(
        write: Any, cli: Any, tmp_path: Path) -> None:
    out, gate = tmp_path / "received", tmp_path / "gate"
    spec = write("s.toml", SECRET_SPEC.format(out=out, gate=gate))
    secret = "tok-Zq81xWv"
    # A missing secret is a usage error before anything starts.
    r = cli("run", str(spec))
    assert r.code == 2 and "secret param 'token'" in r.stderr
    assert "DAGRUN_PARAM_token" in r.stderr
    proc = start("run", str(spec), "--run-id", "s1", "--param", "day=2030-01-01",
                 "--param", f"token={secret}")
    try:
        wait_for(lambda: Path(str(gate) + ".started").exists())
        assert out.read_text() == f"Bearer {secret} 2030-01-01"
        proc.send_signal(signal.SIGKILL)  # dagrun dies with the task running
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    state = Path(os.environ["DAGRUN_STATE_DIR"])
    # Wait for the orphaned worker to notice its parent died (contract: a few seconds).
    wait_for(lambda: not _alive(int(Path(str(gate) + ".started").read_text())), timeout=30)
    for path in _state_files(state):
        assert secret.encode() not in path.read_bytes(), path
    meta = orjson.loads((state / "runs" / "s1" / "run.json").read_bytes().split(b" ", 1)[1])
    assert meta["settings"]["params"] == {"day": "2030-01-01"}

    # Resume needs the secret again: one line naming it.
    r = cli("resume", "s1")
    assert r.code == 2
    assert r.stderr.strip().splitlines() == [
        "dagrun: error: run 's1': secret param 'token' has no value: pass --param "
        "token=... or set DAGRUN_PARAM_token (it is never stored with the run)"]
    # Non-secret params keep the run's values.
    r = cli("resume", "s1", "--param", "day=2031-01-01", "--param", "token=x")
    assert r.code == 2 and "only secret params" in r.stderr
    gate.write_text("open")
    r = cli("resume", "s1", "--json", env={"DAGRUN_PARAM_token": secret})
    assert r.code == 0, r.stderr
    assert r.json["tasks"]["use"]["output"] == len("Bearer " + secret)
    assert out.read_text() == f"Bearer {secret} 2030-01-01"  # the stored day, not the default
    for path in _state_files(state):
        assert secret.encode() not in path.read_bytes(), path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_secret_not_in_dead_letters(write: Any, cli: Any, tmp_path: Path) -> None:
    spec = write("s.toml", """\
        [pipeline]
        secret_params = ["token"]
        [tasks.boom]
        call = "params_tasks:use_secret"
        kwargs = { token = "${params.token}", out = "/nonexistent-dir/x", day = "d" }
    """)
    secret = "tok-dlq-77Hq"
    r = cli("run", str(spec), "--json", "--run-id", "d1", "--param", f"token={secret}")
    assert r.code == 1 and r.json["tasks"]["boom"]["state"] == "dead_lettered"
    shown = cli("dlq", "show", "d1", "boom")
    assert shown.code == 0 and secret not in shown.stdout + shown.stderr
    for path in _state_files(Path(os.environ["DAGRUN_STATE_DIR"])):
        assert secret.encode() not in path.read_bytes(), path


def test_api_fan_out_in_chain_and_params(tmp_path: Path) -> None:
    import params_tasks as pt

    from dagrun import Pipeline

    p = Pipeline("helpers", workers=2, params={"step": 1})
    p.task("seed", pt.seed)
    p.fan_out_in("sq", 4, pt.square, pt.collect, upstream="seed")
    p.fan_out_in("bare", 3, "params_tasks:square", "params_tasks:collect")
    p.chain(("c0", pt.seed),
            {"id": "c1", "call": pt.inc, "inputs": {"x": "c0"}},
            {"id": "c2", "call": "params_tasks:show", "kwargs": {"step": "${params.step}"}})
    spec = p.to_spec()
    assert spec.tasks["c2"].deps == ("c1",) and spec.tasks["c1"].deps == ("c0",)
    assert spec.tasks["sq_aggregate"].deps == ("sq_0", "sq_1", "sq_2", "sq_3")
    result = p.run(state_dir=str(tmp_path / "st"), params={"step": [2]})
    assert result.exit_code == 0
    tasks = result.to_dict()["tasks"]
    assert [tasks[f"sq_{i}"]["output"] for i in range(4)] == [10, 11, 14, 19]
    assert tasks["sq_aggregate"]["output"] == {"results": [10, 11, 14, 19], "total": 54}
    assert tasks["bare_aggregate"]["output"] == {"results": [0, 1, 4], "total": 5}
    assert tasks["c1"]["output"] == 11 and tasks["c2"]["output"] == {"step": [2]}


def test_spec_inputs_list_fans_in(write: Any, cli: Any) -> None:
    spec = write("f.yaml", """\
        tasks:
          a: {call: "params_tasks:seed"}
          b: {call: "params_tasks:inc", deps: [a], inputs: {x: a}}
          all: {call: "params_tasks:collect", deps: [a, b], inputs: {results: [b, a]}}
    """)
    r = cli("run", str(spec), "--json")
    assert r.code == 0, r.stderr
    assert r.json["tasks"]["all"]["output"] == {"results": [11, 10], "total": 21}


def test_an_escape_alone_is_unescaped_too(write: Any, cli: Any) -> None:
    # `$${` is a literal `${` also in a task whose kwargs hold no reference at all
    # (it used to reach the task as `$${...}`), and at any depth.
    spec = write("esc.toml", """\
[tasks.a]
call = "params_tasks:show"
kwargs = { price = "cost: $${price}", deep = [{ x = "$${x}" }], plain = "no dollars" }
""")
    r = cli("run", str(spec), "--json")
    assert r.code == 0, r.stderr
    assert r.json["tasks"]["a"]["output"] == {"price": "cost: ${price}", "deep": [{"x": "${x}"}],
                                              "plain": "no dollars"}
