from __future__ import annotations

from pathlib import Path

ETL = str(Path(__file__).resolve().parent.parent / "pipelines" / "etl.toml")


def test_tree(cli):
    r = cli("graph", ETL)
    assert r.code == 0
    assert r.stdout.splitlines()[0] == "nightly-etl"
    assert "└── extract" in r.stdout and "publish" in r.stdout


def test_dot_and_mermaid(cli):
    dot = cli("graph", ETL, "--format", "dot")
    assert dot.code == 0 and '"extract" -> "clean";' in dot.stdout
    mer = cli("graph", ETL, "--format", "mermaid")
    assert mer.code == 0 and mer.stdout.startswith("graph LR") and "-->" in mer.stdout


def test_validate_ok(cli):
    r = cli("validate", ETL, "--json")
    assert r.code == 0 and r.json == {"valid": True, "pipeline": "nightly-etl", "tasks": 10}
