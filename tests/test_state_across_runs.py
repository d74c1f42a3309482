"""State across runs: a task declaring `state` gets what its last completion
left, per (pipeline, task); through the CLI with real workers."""

from __future__ import annotations

import os
from pathlib import Path

import orjson

SPEC = """
[pipeline]
name = "etl"

[tasks.counter]
call = "pdkinds:counter"
"""


def state_file(pipeline: str, task: str) -> Path:
    return Path(os.environ["DAGRUN_STATE_DIR"]) / "state" / pipeline / task


def test_state_is_carried_across_three_runs(cli, write):
    spec = write("p.toml", SPEC)
    assert cli("validate", str(spec)).code == 0  # `state` is not asked of the spec
    outputs = []
    for _ in range(3):
        r = cli("run", str(spec), "--json")
        assert r.code == 0, r.stderr
        outputs.append(r.json["tasks"]["counter"]["output"])
    assert outputs == [1, 2, 3]
    r = cli("state", "show", "etl", "counter")
    assert r.code == 0 and orjson.loads(r.stdout) == {"n": 3}
    r = cli("state", "show", "etl")
    assert orjson.loads(r.stdout) == {"counter": {"n": 3}}
    # The completed record carries it too (same checksum as the record).
    runs = Path(os.environ["DAGRUN_STATE_DIR"]) / "runs"
    journals = b"".join((d / "journal").read_bytes() for d in runs.iterdir())
    assert journals.count(b'"saved_state":{"n":') == 3


def test_a_failed_attempt_changes_are_discarded(cli, write):
    spec = write("p.toml", """
        [pipeline]
        name = "etl"

        [tasks.flaky]
        call = "pdkinds:flaky_counter"
        retries = 1
        retry_delay = 0
    """)
    r = cli("run", str(spec), "--json")
    assert r.code == 0, r.stderr
    assert r.json["tasks"]["flaky"]["attempts"] == 2
    assert r.json["tasks"]["flaky"]["output"] is None  # not attempt 1's 999
    assert orjson.loads(cli("state", "show", "etl", "flaky").stdout) == {"n": 1}
    r = cli("run", str(spec), "--json")
    assert r.json["tasks"]["flaky"]["output"] == 1


def test_state_set_and_reset(cli, write):
    spec = write("p.toml", SPEC)
    r = cli("state", "set", "etl", "counter", '{"n": 41}')
    assert r.code == 0, r.stderr
    assert cli("run", str(spec), "--json").json["tasks"]["counter"]["output"] == 42
    assert cli("state", "set", "etl", "counter", "[1]").code == 2
    assert cli("state", "set", "etl", "counter", "{nope").code == 2
    assert cli("state", "reset", "etl", "counter").code == 0
    assert orjson.loads(cli("state", "show", "etl", "counter").stdout) == {}
    assert cli("run", str(spec), "--json").json["tasks"]["counter"]["output"] == 1
    assert cli("state", "reset", "etl").code == 0
    assert orjson.loads(cli("state", "show", "etl").stdout) == {}


def test_resume_repairs_a_state_file_the_crash_did_not_write(cli, write):
    spec = write("p.toml", SPEC)
    r = cli("run", str(spec), "--run-id", "r1", "--json")
    assert r.code == 0, r.stderr
    # As if dagrun died between the completed record and the state file.
    state_file("etl", "counter").unlink()
    r = cli("resume", "r1", "--json")
    assert r.code == 0, r.stderr
    assert orjson.loads(cli("state", "show", "etl", "counter").stdout) == {"n": 1}
    # An older run's record never overwrites a newer completion's state.
    assert cli("run", str(spec), "--json").json["tasks"]["counter"]["output"] == 2
    assert cli("resume", "r1").code == 0
    assert orjson.loads(cli("state", "show", "etl", "counter").stdout) == {"n": 2}


def test_corrupt_state_file_is_one_clear_error(cli, write):
    spec = write("p.toml", SPEC)
    assert cli("run", str(spec)).code == 0
    state_file("etl", "counter").write_bytes(b"garbage\n")
    r = cli("state", "show", "etl", "counter")
    assert r.code == 4
    assert "dagrun state reset etl counter" in r.stderr
