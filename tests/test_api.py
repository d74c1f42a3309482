"""The library API: dagrun.run() returns what the CLI prints; Pipeline builder."""

from __future__ import annotations

from pathlib import Path

import pytest
from shapes import core

import dagrun
from dagrun.errors import SpecError


def test_pipeline_builder_runs(tmp_path: Path):
    p = dagrun.Pipeline("built", workers=2)
    p.task("src", "basic:numbers", kwargs={"n": 3})
    p.task("sum", "basic:total", inputs={"xs": "src"})
    p.task("dbl", "basic:double", inputs={"xs": "src"}, priority=3)
    result = p.run(state_dir=tmp_path / "st")
    assert result.status == "succeeded" and result.exit_code == 0
    assert result.tasks["sum"].output == 6
    assert core(result.to_dict()["tasks"]["dbl"]) == {"state": "completed", "attempts": 1,
                                                "output": [2, 4, 6], "error": None}


def test_result_tasks_is_a_mapping_of_every_task(tmp_path: Path):
    p = dagrun.Pipeline("mapping", workers=2)
    p.task("src", "basic:numbers", kwargs={"n": 2})
    p.task("bad", "basic:fail")
    p.task("after", "basic:total", inputs={"xs": "bad"})
    result = p.run(state_dir=tmp_path / "st")
    tasks = result.tasks
    assert result.status == "failed" and len(tasks) == 3 and list(tasks) == ["src", "bad", "after"]
    assert "src" in tasks and "nope" not in tasks and tasks.get("nope") is None
    with pytest.raises(KeyError):
        tasks["nope"]
    assert tasks["src"] is tasks["src"]  # built once
    assert dict(tasks) == {tid: r for tid, r in tasks.items()} == tasks
    assert [r.state for r in tasks.values()] == ["completed", "dead_lettered", "skipped"]
    assert result.to_dict()["tasks"]["bad"]["state"] == "dead_lettered"
    assert "'src'" in repr(result)


def test_run_leaves_the_collector_as_it_found_it(tmp_path: Path):
    import gc

    from dagrun.report import QuietReporter

    class Watcher(QuietReporter):  # a listener: it sees the parent while the run goes
        frozen_while_running = -1

        def on_event(self, event: object) -> None:
            if type(event).__name__ == "RunStarted":
                self.frozen_while_running = gc.get_freeze_count()

    p = dagrun.Pipeline("gc", workers=1)
    p.task("a", "basic:const", kwargs={"value": 1})
    assert gc.get_freeze_count() == 0
    watcher = Watcher()
    assert dagrun.run(p, state_dir=tmp_path / "st", reporter=watcher).status == "succeeded"
    # What existed at the start is out of the collector's way during the run
    # (driver._frozen_heap: cheaper collections, no copy-on-write in the workers)...
    assert watcher.frozen_while_running > 1000
    assert gc.get_freeze_count() == 0  # ... and only during the run
    gc.freeze()  # the caller's own freeze (a pre-forking server) is kept as it is
    try:
        frozen = gc.get_freeze_count()
        assert p.run(state_dir=tmp_path / "st").status == "succeeded"
        assert gc.get_freeze_count() == frozen
    finally:
        gc.unfreeze()


def test_builder_accepts_functions(tmp_path: Path):
    import basic

    p = dagrun.Pipeline("fn")
    p.task("a", basic.add, kwargs={"x": 1, "y": 2})
    assert dagrun.run(p, state_dir=tmp_path / "st").tasks["a"].output == 3


def test_builder_errors_are_spec_errors():
    p = dagrun.Pipeline("bad")
    p.task("a", "basic:const", deps=["missing"])
    with pytest.raises(SpecError, match="dependency 'missing' is not a task"):
        dagrun.validate(p)


def test_run_from_path_matches_cli(cli, tmp_path: Path):
    spec = Path(__file__).resolve().parent.parent / "pipelines" / "wordcount.yaml"
    api_result = dagrun.run(spec, state_dir=tmp_path / "st").to_dict()
    cli_result = cli("run", str(spec), "--json").json
    assert {t: core(x) for t, x in api_result["tasks"].items()} == {
        t: core(x) for t, x in cli_result["tasks"].items()}
