"""Second review of task caching (issue 13), through the CLI: tasks whose key
would be new every run, --refresh outside a partial run, ttl, logs of a hit."""

from __future__ import annotations

import time

import pytest
from tasks.sidefx import runs_of

# t: ${run.id} inside a longer string; p: a param whose default is ${run.id};
# s: cached like the others, but its key is the same every run.
RUN_ID_SPEC = """
[params]
tag = "${{run.id}}"

[defaults]
cache = true

[tasks.t]
call = "tagged:work"
kwargs = {{ log = "{log}", name = "t", tag = "out-${{run.id}}.csv", flag = "{flag}" }}

[tasks.p]
call = "tagged:work"
kwargs = {{ log = "{log}", name = "p", tag = "${{params.tag}}", flag = "" }}

[tasks.s]
call = "tagged:work"
kwargs = {{ log = "{log}", name = "s", tag = "same", flag = "" }}
"""

TAGGED = """
import os
from sidefx import _log

def work(log, name, tag, flag):
    _log(log, name)
    if flag and os.path.exists(flag):
        raise RuntimeError("flag is set")
    return tag[:4]
"""


def run_id_pipeline(write, tmp_path):
    log, flag = tmp_path / "log", tmp_path / "FLAG"
    write("tagged.py", TAGGED)
    return write("p.toml", RUN_ID_SPEC.format(log=log, flag=flag)), log, flag


def test_a_task_using_run_id_is_never_cached_and_stores_no_entry(cli, write, tmp_path):
    spec, log, _ = run_id_pipeline(write, tmp_path)
    assert cli("validate", str(spec)).code == 0
    first = cli("run", str(spec), "--json")
    assert first.code == 0, first.stderr
    second = cli("run", str(spec), "--json")
    assert second.code == 0, second.stderr
    assert runs_of(log) == {"t": 2, "p": 2, "s": 1}
    tasks = second.json["tasks"]
    assert "cached" not in tasks["t"] and "cached" not in tasks["p"]
    assert tasks["s"]["cached_from"] == first.json["run_id"]  # the others still hit
    assert "not cached: t, p" in second.stderr and "${run.id}" in second.stderr
    listed = cli("cache", "list", "p", "--json")
    assert [e["task"] for e in listed.json] == ["s"]
    dry = cli("run", str(spec), "--dry-run", "--json")
    assert dry.code == 0
    verdicts = dry.json["tasks"]
    assert verdicts["t"] == {"run": True, "reason": "uses ${run.id}: never cached"}
    assert verdicts["p"]["run"] is True
    assert verdicts["p"]["reason"].startswith("uses ${params.tag}")
    assert "never cached" in verdicts["p"]["reason"]
    assert verdicts["s"]["run"] is False
    assert [e["task"] for e in cli("cache", "list", "p", "--json").json] == ["s"]


def test_a_task_using_run_id_stores_no_entry_when_it_completes_on_resume(cli, write,
                                                                         tmp_path):
    # The resumed run's spec comes from its snapshot, whose kwargs are resolved.
    spec, log, flag = run_id_pipeline(write, tmp_path)
    flag.write_text("")
    first = cli("run", str(spec), "--json")
    assert first.code == 1 and first.json["tasks"]["t"]["state"] == "dead_lettered"
    flag.unlink()
    again = cli("dlq", "retry", first.json["run_id"], "t", "--json")
    assert again.code == 0, again.stderr
    assert again.json["tasks"]["t"]["state"] == "completed"
    assert runs_of(log)["t"] == 2
    assert sorted(e["task"] for e in cli("cache", "list", "p", "--json").json) == ["s"]


def test_a_param_given_on_the_command_line_keeps_its_task_cached(cli, write, tmp_path):
    spec, log, _ = run_id_pipeline(write, tmp_path)
    for _ in range(2):
        r = cli("run", str(spec), "--json", "--param", "tag=fixed")
        assert r.code == 0, r.stderr
    assert r.json["tasks"]["p"]["cached"] is True
    assert runs_of(log)["p"] == 1


# ---------------------------------------------------------------- --refresh in a partial run

CHAIN = """
[defaults]
cache = true
[tasks.a]
call = "sidefx:step"
kwargs = {{ log = "{log}", name = "a", k = 1 }}
[tasks.b]
call = "sidefx:step"
deps = ["a"]
inputs = {{ x = "a" }}
kwargs = {{ log = "{log}", name = "b", k = 10 }}
[tasks.c]
call = "sidefx:step"
kwargs = {{ log = "{log}", name = "c", k = 100 }}
"""


@pytest.mark.parametrize("dry", [(), ("--dry-run",)])
def test_refresh_of_a_task_outside_the_partial_run_is_a_usage_error(cli, write, tmp_path,
                                                                    dry):
    log = tmp_path / "log"
    spec = write("p.toml", CHAIN.format(log=log))
    assert cli("run", str(spec)).code == 0
    before = runs_of(log)
    for refresh in ("a", "c"):  # an outside upstream, an unrelated task
        r = cli("run", str(spec), *dry, "--json", "--only", "b", "--refresh", refresh)
        assert r.code == 2, r.stderr
        assert r.stdout == ""
        line = r.stderr.strip()
        assert "\n" not in line and "Traceback" not in line
        assert f"--refresh {refresh}" in line and "not part of this partial run" in line
        assert f"--only {refresh}" in line and f"--from {refresh}" in line
    assert runs_of(log) == before
    assert len(cli("runs", "--json").json) == 1  # no run was created
    # The ways out it names work; a refresh of a selected task is fine.
    r = cli("run", str(spec), *dry, "--json", "--only", "b", "--only", "a", "--refresh", "a")
    assert r.code == 0, r.stderr
    r = cli("run", str(spec), *dry, "--json", "--from", "a", "--refresh", "a")
    assert r.code == 0, r.stderr
    r = cli("run", str(spec), *dry, "--json", "--only", "b", "--refresh", "b")
    assert r.code == 0, r.stderr


def test_refresh_of_an_upstream_that_joins_the_partial_run_is_honoured(cli, write, tmp_path):
    # No earlier run: a has no output to take, so it runs too and --refresh a applies.
    log = tmp_path / "log"
    spec = write("p.toml", CHAIN.format(log=log))
    r = cli("run", str(spec), "--json", "--only", "b", "--refresh", "a")
    assert r.code == 0, r.stderr
    assert sorted(r.json["tasks"]) == ["a", "b"] and runs_of(log) == {"a": 1, "b": 1}


# ---------------------------------------------------------------- ttl: gc and lookup agree

TTL = """
[tasks.t]
call = "sidefx:step"
kwargs = {{ log = "{log}", name = "t" }}
cache = {cache}
"""


@pytest.mark.parametrize("now", ['{ ttl = "1h" }', "true"])
def test_an_entry_gc_would_drop_is_never_a_hit_after_the_ttl_grew(cli, write, tmp_path,
                                                                    now):
    # Stored with a 1 s ttl; the spec now says 1 h (or no expiry). gc drops
    # the entry by the ttl it was stored with: a run must not use it either,
    # or whether the task runs would depend on when gc last ran.
    log = tmp_path / "log"
    spec = write("p.toml", TTL.format(log=log, cache='{ ttl = "1s" }'))
    first = cli("run", str(spec), "--json")
    assert first.code == 0, first.stderr
    spec.write_text(TTL.format(log=log, cache=now))
    time.sleep(1.5)  # past the stored 1 s ttl, well within the new one
    gc = cli("gc", "--keep", "100", "--dry-run")
    assert gc.code == 0 and "would drop 1 expired cache entry" in gc.stderr
    dry = cli("run", str(spec), "--dry-run", "--json")
    assert dry.json["tasks"]["t"] == {"run": True, "reason": "expired"}
    r = cli("run", str(spec), "--json")
    assert r.code == 0 and "cached" not in r.json["tasks"]["t"]
    assert runs_of(log) == {"t": 2}
    # The new entry carries the spec's ttl now: gc keeps it, the next run hits it.
    assert "expired" not in cli("gc", "--keep", "100").stderr
    assert cli("run", str(spec), "--json").json["tasks"]["t"]["cached_from"] == r.json["run_id"]


def test_a_shorter_ttl_in_the_spec_applies_to_older_entries(cli, write, tmp_path):
    log = tmp_path / "log"
    spec = write("p.toml", TTL.format(log=log, cache='{ ttl = "1h" }'))
    assert cli("run", str(spec)).code == 0
    spec.write_text(TTL.format(log=log, cache='{ ttl = "1s" }'))
    time.sleep(1.5)  # past the new 1 s ttl
    r = cli("run", str(spec), "--json")
    assert r.code == 0 and "cached" not in r.json["tasks"]["t"]
    assert runs_of(log) == {"t": 2}


# ---------------------------------------------------------------- logs of a hit


def test_logs_of_a_hit_whose_run_was_deleted_by_gc_is_one_line_exit_2(cli, write, tmp_path):
    log = tmp_path / "log"
    spec = write("p.toml", TTL.format(log=log, cache="true"))
    made = cli("run", str(spec), "--json").json["run_id"]
    hit = cli("run", str(spec), "--json")
    assert hit.json["tasks"]["t"]["cached_from"] == made
    before = cli("logs", hit.json["run_id"], "t")
    assert before.code == 2 and before.stdout == ""
    assert f"made by run {made}" in before.stderr and f"dagrun logs {made} t" in before.stderr
    assert cli("gc", "--keep", "1").code == 0  # deletes `made`, keeps the entry
    assert [e["run_id"] for e in cli("cache", "list", "--json").json] == [made]
    after = cli("logs", hit.json["run_id"], "t")
    assert after.code == 2 and after.stdout == ""
    line = after.stderr.strip()
    assert "\n" not in line and "Traceback" not in line
    assert f"made by run {made}, since deleted" in line and "dagrun logs" not in line
