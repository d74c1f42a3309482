"""Conditions (`when`) and trigger rules through the real CLI and real workers:
`dagrun run --json`, `validate`, `graph`, and resume after SIGKILL."""

from __future__ import annotations

import signal
from pathlib import Path

from proc import start, wait_for
from shapes import core

from dagrun.store.journal import read_journal

HEAD = """
[pipeline]
name = "{name}"
workers = 2
"""


def lines(log: Path) -> list[str]:
    return log.read_text().split() if log.exists() else []


def test_conditions_true_false_and_only_declared_arguments(cli, write, tmp_path):
    log = tmp_path / "log"
    spec = write("c.toml", HEAD.format(name="conds") + """
[tasks.one]
call = "conds:value"
kwargs = { v = 1 }
[tasks.zero]
call = "conds:value"
kwargs = { v = 0 }
[tasks.yes]
call = "conds:echo"
inputs = { v = "one" }
deps = ["one"]
when = "conds:truthy"
[tasks.no]
call = "conds:echo"
inputs = { v = "zero" }
deps = ["zero"]
when = "conds:truthy"
[tasks.below_no]
call = "conds:echo"
deps = ["no"]
[tasks.some]
call = "conds:echo"
inputs = { a = "one", b = "zero" }
deps = ["one", "zero"]
kwargs = { k = "x" }
when = "conds:only_a"
""")
    r = cli("run", str(spec), "--json", env={"CONDS_LOG": str(log)})
    assert r.code == 0, r.stderr
    t = r.json["tasks"]
    assert t["yes"]["state"] == "completed" and t["yes"]["output"] == {"v": 1}
    assert t["no"]["state"] == "skipped" and t["no"]["attempts"] == 0
    assert t["no"]["error"] == "skipped: condition false"
    assert t["no"]["reason"] == "condition false"
    assert t["below_no"]["state"] == "skipped"
    assert t["some"]["output"] == {"a": 1, "b": 0, "k": "x"}
    calls = lines(log)
    assert "pred:some:1" in calls  # got `a` only; a second argument would be a TypeError
    assert "no" not in calls and "below_no" not in calls  # the callables never ran
    assert r.json["status"] == "succeeded"


def test_a_raising_predicate_is_a_failure_retried_like_one(cli, write, tmp_path):
    log = tmp_path / "log"
    spec = write("c.toml", HEAD.format(name="flaky") + f"""
[tasks.t]
call = "conds:echo"
kwargs = {{ marker = "{tmp_path / 'm'}" }}
when = "conds:flaky"
retries = 1
retry_delay = 0
[tasks.u]
call = "conds:echo"
when = "conds:never"
""")
    r = cli("run", str(spec), "--json", env={"CONDS_LOG": str(log)})
    assert r.code == 0, r.stderr
    assert r.json["tasks"]["t"]["state"] == "completed" and r.json["tasks"]["t"]["attempts"] == 2
    assert lines(log).count("pred:t") == 2

    spec = write("d.toml", HEAD.format(name="flaky2") + f"""
[tasks.t]
call = "conds:echo"
kwargs = {{ marker = "{tmp_path / 'm2'}" }}
when = "conds:flaky"
""")
    r = cli("run", str(spec), "--json")
    assert r.code == 1
    assert r.json["tasks"]["t"]["state"] == "dead_lettered"
    assert "ConnectionError: not yet" in r.json["tasks"]["t"]["error"]


ALERT = HEAD + """
[tasks.work]
call = "conds:{work}"
[tasks.alert]
call = "conds:echo"
inputs = {{ result = "work" }}
deps = ["work"]
trigger = "one_failed"
[tasks.cleanup]
call = "conds:echo"
inputs = {{ result = "work" }}
deps = ["work"]
trigger = "all_done"
"""


def test_one_failed_alert_on_a_clean_and_a_failing_run(cli, write, tmp_path):
    clean = cli("run", str(write("a.toml", ALERT.format(name="clean", work="value"))),
                "--json")
    assert clean.code == 0, clean.stderr
    t = clean.json["tasks"]
    assert t["alert"]["state"] == "skipped" and clean.json["status"] == "succeeded"
    assert t["cleanup"]["state"] == "completed"

    bad = cli("run", str(write("b.toml", ALERT.format(name="bad", work="boom"))), "--json")
    assert bad.code == 1
    t = bad.json["tasks"]
    assert t["work"]["state"] == "dead_lettered"
    # Both ran, each receiving null for the upstream that did not complete.
    assert core(t["alert"]) == {"state": "completed", "attempts": 1, "output": {"result": None},
                          "error": None}
    assert t["cleanup"]["output"] == {"result": None}
    assert bad.json["status"] == "failed"


def test_trigger_under_defaults_and_in_graph(cli, write):
    spec = write("g.toml", """
[defaults]
trigger = "all_done"
[tasks.a]
call = "conds:boom"
[tasks.b]
call = "conds:value"
deps = ["a"]
[tasks.c]
call = "conds:value"
deps = ["b"]
trigger = "all_success"
when = "conds:never"
""")
    r = cli("run", str(spec), "--json")
    assert r.code == 1 and r.json["tasks"]["b"]["state"] == "completed"
    assert r.json["tasks"]["c"]["error"] == "skipped: condition false"
    tree = cli("graph", str(spec))
    assert "b  (trigger all_done)" in tree.stdout and "when conds:never" in tree.stdout
    assert "trigger all_success" not in tree.stdout
    dot = cli("graph", str(spec), "--format", "dot").stdout
    assert '"b" [label="b (trigger all_done)"]' in dot
    mermaid = cli("graph", str(spec), "--format", "mermaid").stdout
    assert "c (when conds:never)" in mermaid


def test_validate_errors_are_one_line_exit_2(cli, write):
    cases = {
        'when = "nosuchmod:pred"': "task 't': 'when': cannot import 'nosuchmod:pred'",
        'when = "conds:nosuch"': "task 't': 'when': module 'conds' has no attribute 'nosuch'",
        'when = "conds:extra"': "predicate conds:extra has parameter 'missing', which the "
                                "task does not have (its inputs and kwargs: v)",
        'trigger = "sometimes"': "task 't': 'trigger' must be one of all_success, all_done, "
                                 "one_failed, none_failed, one_success, got 'sometimes'",
        'when = "not a call"': "task 't': 'when' must name a predicate",
    }
    for i, (line, message) in enumerate(cases.items()):
        spec = write(f"v{i}.toml", f"""
[tasks.t]
call = "conds:value"
kwargs = {{ v = 1 }}
{line}
""")
        r = cli("validate", str(spec))
        assert r.code == 2, (line, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1 and message in r.stderr, r.stderr
        assert str(spec) in r.stderr
    bad_default = write("d.toml", """
[defaults]
trigger = "never"
[tasks.t]
call = "conds:value"
""")
    r = cli("validate", str(bad_default))
    assert r.code == 2 and "[defaults]: 'trigger'" in r.stderr
    no_when_default = write("w.toml", """
[defaults]
when = "conds:never"
[tasks.t]
call = "conds:value"
""")
    r = cli("validate", str(no_when_default))
    assert r.code == 2 and "unknown key 'when'" in r.stderr


def test_sigkill_then_resume_with_conditions_and_triggers(cli, write, tmp_path):
    log = tmp_path / "log"
    spec = write("k.toml", HEAD.format(name="killed") + f"""
[tasks.bad]
call = "conds:boom"
[tasks.alert]
call = "conds:echo"
deps = ["bad"]
trigger = "one_failed"
[tasks.cond]
call = "conds:value"
when = "conds:never"
[tasks.after_cond]
call = "conds:value"
deps = ["cond"]
[tasks.slow]
call = "conds:slow_once"
kwargs = {{ marker = "{tmp_path / 'slow'}" }}
[tasks.cleanup]
call = "conds:echo"
inputs = {{ s = "slow", b = "bad" }}
deps = ["slow", "bad"]
trigger = "all_done"
[tasks.quiet]
call = "conds:value"
deps = ["slow"]
trigger = "one_failed"
""")
    import os
    os.environ["CONDS_LOG"] = str(log)  # inherited by the background run (the fixture resets env)
    try:
        proc = start("run", str(spec), "--run-id", "k1")
        journal = tmp_path / "state" / "runs" / "k1" / "journal"

        def recorded() -> set[str]:  # the finals on disk: a kill after them keeps them
            return {r["task"] for r in read_journal(journal).records
                    if r.get("state") in ("completed", "skipped")}

        # Generous: forks are slow on a loaded machine.
        wait_for(lambda: "slow" in lines(log) and journal.exists()
                 and {"alert", "cond", "after_cond"} <= recorded(), timeout=60)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
        r = cli("resume", "k1", "--json")
    finally:
        del os.environ["CONDS_LOG"]
    assert r.code == 1, r.stderr
    t = r.json["tasks"]
    assert {k: v["state"] for k, v in t.items()} == {
        "bad": "dead_lettered", "alert": "completed", "cond": "skipped",
        "after_cond": "skipped", "slow": "completed", "cleanup": "completed",
        "quiet": "skipped"}
    assert t["cleanup"]["output"] == {"s": "slow", "b": None}
    calls = lines(log)
    # Finished before the kill: not run (nor their predicates asked) again.
    assert calls.count("alert") == 1 and calls.count("pred:cond") == 1
    assert calls.count("bad") == 1 and calls.count("slow") == 2
