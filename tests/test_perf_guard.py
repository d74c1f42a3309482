"""Timing regression guard: dagrun's run phase against the bare-pool floor.

W1 at 2,000 independent no-op tasks through the Python API (no interpreter
start), against bench/floor.py's ProcessPoolExecutor loop measured in the same
test on the same spec. The bound is deliberately loose (4x, where dagrun
measures about 1x here) so that a loaded CI machine cannot make it flaky; it
still catches a return of per-event O(n) work, which costs 10x and more at
this size. Best of three for each, alternated, so a burst of noise hits both.
"""

from __future__ import annotations

import sys
import time
import tomllib
from pathlib import Path

import dagrun
from dagrun.api import load

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import floor  # noqa: E402
from bench.workloads import WORKERS, independent, write_module  # noqa: E402

TASKS = 2000
LIMIT = 4.0


def test_dagrun_run_phase_stays_near_the_floor(tmp_path: Path) -> None:
    write_module(tmp_path)
    w = independent(tmp_path, TASKS)
    sys.path.insert(0, str(tmp_path))
    try:
        graph = floor.graph_from_doc(tomllib.loads(w.path.read_text()))
        spec = load(w.path)
        floors, runs = [], []
        for i in range(3):
            t0 = time.perf_counter()
            floor.run(graph, WORKERS)
            floors.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            result = dagrun.run(spec, state_dir=tmp_path / f"state{i}", workers=WORKERS)
            runs.append(time.perf_counter() - t0)
            assert result.status == "succeeded"
    finally:
        sys.path.remove(str(tmp_path))
    ratio = min(runs) / min(floors)
    assert ratio <= LIMIT, (f"dagrun took {min(runs):.3f}s for {TASKS} no-op tasks, "
                            f"{ratio:.1f}x the bare pool's {min(floors):.3f}s (limit {LIMIT}x)")
