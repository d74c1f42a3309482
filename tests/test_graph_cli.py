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


def _chain(write, n: int, call: str = "basic:const", cycle: bool = False) -> Path:
    """A chain t0 <- t1 <- ... (the W2 benchmark's shape), as deep as the graph gets;
    with `cycle`, t0 depends on the last task."""
    out = ['[pipeline]\nname = "chain"\nworkers = 2\n']
    for i in range(n):
        dep = f"t{i - 1}" if i else (f"t{n - 1}" if cycle else "")
        out.append(f'\n[tasks.t{i}]\ncall = "{call}"\n' + (f'deps = ["{dep}"]\n' if dep else ""))
    return write("chain.toml", "".join(out))


def test_every_command_handles_a_3000_task_chain(cli, write):
    # The tree drawing recursed once per level and died with RecursionError at ~1,000.
    spec = str(_chain(write, 3000))
    for fmt in ("tree", "dot", "mermaid"):
        r = cli("graph", spec, "--format", fmt)
        assert r.code == 0, (fmt, r.stderr[-500:])
        assert "t2999" in r.stdout and "Traceback" not in r.stderr
    assert cli("validate", spec).code == 0
    r = cli("run", spec, "--json")
    assert r.code == 0 and r.json["status"] == "succeeded", r.stderr[-500:]
    assert len(r.json["tasks"]) == 3000


def test_deep_tree_is_cut_into_sections_not_indented_forever(cli, write):
    from dagrun.graph import TREE_MAX_DEPTH

    r = cli("graph", str(_chain(write, 3000)))
    lines = r.stdout.splitlines()
    # Every task drawn exactly once, in chain order, and no line wider than the cut-off.
    drawn = [ln.split("── ")[1].split()[0] for ln in lines if "── " in ln]
    assert drawn == [f"t{i}" for i in range(3000)]
    assert max(map(len, lines)) <= 4 * TREE_MAX_DEPTH + 40
    cut = f"t{TREE_MAX_DEPTH - 1}"
    first_cut = next(ln for ln in lines if "continued below" in ln)
    assert first_cut.strip() == f"└── {cut}  (continued below)"
    assert lines[lines.index(f"{cut}  (continued)") + 1] == f"└── t{TREE_MAX_DEPTH}"


def test_a_3000_task_cycle_is_named(cli, write):
    r = cli("validate", str(_chain(write, 3000, cycle=True)))
    assert r.code == 2 and "cycle: " in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
