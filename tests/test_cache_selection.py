"""Caching and partial runs together (issue 13): a task has one cache key
whatever the selection, --from forces its tasks, and an outside upstream's
output may come from the cache. Through the CLI; what ran is read off the
side-effect log."""

from __future__ import annotations

from tasks.sidefx import runs_of
from test_cache import SPEC, ran, setup


def run(cli, spec, *args):
    r = cli("run", str(spec), "--json", *args)
    assert r.code == 0, r.stderr
    return r.json


def test_only_hits_the_entry_of_a_full_run_and_a_full_run_the_entry_of_a_partial_one(
        cli, write, tmp_path):
    spec, log = setup(write, tmp_path)
    full = run(cli, spec)
    before = runs_of(log)
    only = run(cli, spec, "--only", "b")
    assert ran(log, before) == set()
    assert only["tasks"]["b"] == {**only["tasks"]["b"], "cached": True,
                                  "cached_from": full["run_id"], "output": 11}
    # b edited: a partial run runs it and stores an entry a full run then hits.
    spec.write_text(SPEC.format(log=log, ka=1).replace("k = 10", "k = 20"))
    before = runs_of(log)
    partial = run(cli, spec, "--only", "b")
    assert ran(log, before) == {"b"} and partial["tasks"]["b"]["output"] == 21
    before = runs_of(log)
    again = run(cli, spec)
    assert ran(log, before) == set()
    assert again["tasks"]["b"]["cached_from"] == partial["run_id"]
    assert again["tasks"]["a"]["cached_from"] == full["run_id"]


def test_from_forces_its_tasks_past_the_cache(cli, write, tmp_path):
    spec, log = setup(write, tmp_path)
    run(cli, spec)
    before = runs_of(log)
    r = run(cli, spec, "--from", "a")
    assert ran(log, before) == {"a", "b"}
    assert not any("cached" in t for t in r["tasks"].values())


def test_an_outside_upstream_comes_from_the_cache_for_its_current_key(cli, write, tmp_path):
    spec, log = setup(write, tmp_path)
    first = run(cli, spec)  # a = 1, b = 11
    spec.write_text(SPEC.format(log=log, ka=5))
    run(cli, spec)  # the newest run has a = 5, b = 15
    spec.write_text(SPEC.format(log=log, ka=1))
    before = runs_of(log)
    r = cli("run", str(spec), "--json", "--only", "b")
    assert r.code == 0, r.stderr
    # a's entry for its current key (k = 1) beats the newest run's a = 5; so b
    # has its first key again: a hit.
    assert f"taking a from the cache (run {first['run_id']})" in r.stderr
    assert r.json["tasks"]["b"]["output"] == 11 and r.json["tasks"]["b"]["cached"]
    assert ran(log, before) == set()
    # --no-cache: the newest run's output, as without a cache.
    r = cli("run", str(spec), "--json", "--only", "b", "--no-cache")
    assert r.json["tasks"]["b"]["output"] == 15
