"""Paired A/B of two source trees of dagrun on W1's or W3's run phase.

    python -m bench.ab TREE_A TREE_B [--workload W1|W3] [--tasks 10000] [--rounds 41]

Each round runs `dagrun.run()` on the workload's spec (W1: --tasks independent
no-op tasks; W3: 20 layers x 100 tasks, 2 deps each; loaded before the clock
starts, 2 workers) once with TREE_A's dagrun, then once with
TREE_B's (PYTHONPATH=TREE, this interpreter, each in a fresh process), and
records the parent's CPU time (user + system) and wall time of the run phase.
It prints the medians and the median of the per-round ratios B/A: the two
runs of a round are back to back, so the slow drift of a shared machine (the
same tree varies by ±25% from one minute to the next here) cancels in the
ratio, where it does not in a ratio of medians. The issue 9 check: TREE_A a
checkout of c12b1ca, TREE_B this tree.
"""

from __future__ import annotations

import argparse
import compileall
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.workloads import WORKERS, independent, layered, write_module

CHILD = """
import resource, shutil, sys, tempfile, time
sys.path.insert(0, sys.argv[1].rsplit("/", 1)[0])
import dagrun
from dagrun.api import load
pipeline = load(sys.argv[1])
state = tempfile.mkdtemp(prefix="dagrun-ab-")
before, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
result = dagrun.run(pipeline, state_dir=state, workers=int(sys.argv[2]))
wall, after = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF)
shutil.rmtree(state)
assert result.status == "succeeded", result.status
cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
print(cpu, wall)
"""


def measure(tree: Path, spec: Path) -> tuple[float, float]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    env.pop("DAGRUN_STATE_DIR", None)
    out = subprocess.run([sys.executable, "-c", CHILD, str(spec), str(WORKERS)], env=env,
                         capture_output=True, check=True, cwd=tempfile.gettempdir())
    cpu, wall = out.stdout.split()
    return float(cpu), float(wall)


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__.split("\n")[0])
    ap.add_argument("tree_a", type=Path)
    ap.add_argument("tree_b", type=Path)
    ap.add_argument("--workload", choices=("W1", "W3"), default="W1")
    ap.add_argument("--tasks", type=int, default=10_000, help="W1's size")
    ap.add_argument("--rounds", type=int, default=41)
    args = ap.parse_args()
    for tree in (args.tree_a, args.tree_b):
        if not (tree / "dagrun" / "__init__.py").exists():
            raise SystemExit(f"bench.ab: {tree} is not a dagrun source tree")
        # Where PYTHONDONTWRITEBYTECODE is set, every run would compile the
        # modules a run imports lazily inside the measured phase.
        compileall.compile_dir(str(tree / "dagrun"), quiet=1)
    with tempfile.TemporaryDirectory(prefix="dagrun-ab-") as folder:
        write_module(Path(folder))
        work = (independent(Path(folder), args.tasks) if args.workload == "W1"
                else layered(Path(folder), 20, 100))
        spec = work.path
        rows = []
        for i in range(args.rounds):
            rows.append((*measure(args.tree_a, spec), *measure(args.tree_b, spec)))
            print(f"round {i + 1}: cpu {rows[-1][0]:.3f} {rows[-1][2]:.3f}  "
                  f"wall {rows[-1][1]:.3f} {rows[-1][3]:.3f}", file=sys.stderr, flush=True)
    for name, a, b in (("cpu", 0, 2), ("wall", 1, 3)):
        med_a = statistics.median(r[a] for r in rows)
        med_b = statistics.median(r[b] for r in rows)
        pair = statistics.median(r[b] / r[a] for r in rows)
        print(f"{name:4s}: A {med_a:.3f} s, B {med_b:.3f} s; median of per-round B/A "
              f"{pair:.3f} (ratio of medians {med_b / med_a:.3f}); {args.rounds} rounds, "
              f"{work.key}, {work.tasks:,} tasks")


if __name__ == "__main__":
    main()
