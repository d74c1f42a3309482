"""Cost of each durability mode: per record, and tasks/s on a real run.

    .venv/bin/python -m bench.durability [--quick] [--dir DIR]
    .venv/bin/python bench/durability.py

1. Per record: Journal.append() of one typical task record per call (the worst
   case: nothing to group), and of batches of 32 (group commit), timed one
   append at a time; the median is reported in µs per record.
2. Throughput: `dagrun.run` of 10,000 independent no-op tasks with 2 workers
   per mode; median tasks/s over the repeats.

Files go to DIR (default: a temporary folder under the current directory, so
that fsync hits the real disk; /tmp may be a tmpfs where fsync is free). The
machine is shared and noisy: read medians, and compare modes within one run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a plain script: make `dagrun` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dagrun import api  # noqa: E402
from dagrun.spec import DURABILITY_MODES, parse_document  # noqa: E402
from dagrun.store.journal import Journal  # noqa: E402

RECORD = {"v": 1, "task": "transform-00042", "state": "completed", "attempts": 1,
          "at": 1795848233.9947314, "output": [1, 2, 3, 4, 5, 6, 7, 8],
          "attempt": {"attempt": 1, "started": 1795848233.99, "ended": 1795848233.994,
                      "error": None}}


def per_record_us(folder: Path, mode: str, appends: int, batch: int) -> float:
    path = folder / f"journal-{mode}-{batch}"
    journal = Journal(path, mode)
    records = [RECORD] * batch
    times = []
    try:
        for _ in range(appends):
            t0 = time.perf_counter()
            journal.append(records)
            times.append(time.perf_counter() - t0)
    finally:
        journal.close()
        path.unlink()
    return statistics.median(times) / batch * 1e6


def tasks_per_second(folder: Path, mode: str, tasks: int, workers: int) -> float:
    # builtins:dict returns {}: a real task (a message to a worker and back, a
    # JSON output, two records) that does no work of its own.
    doc = {"pipeline": {"name": "noop"},
           "tasks": {f"t{i}": {"call": "builtins:dict"} for i in range(tasks)}}
    spec = parse_document(doc, source="bench")
    state = folder / f"state-{mode}"
    t0 = time.perf_counter()
    result = api.run(spec, state_dir=state, workers=workers, durability=mode)
    elapsed = time.perf_counter() - t0
    shutil.rmtree(state)
    if result.status != "succeeded":
        raise SystemExit(f"bench run failed: {result.status}")
    return tasks / elapsed


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer appends and tasks")
    parser.add_argument("--dir", help="where to write (default: a temp folder under .)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    appends = 300 if args.quick else 2000
    tasks = 2000 if args.quick else 10_000
    repeats = 1 if args.quick else args.repeats

    folder = Path(tempfile.mkdtemp(prefix=".bench-durability-", dir=args.dir or os.getcwd()))
    try:
        print(f"durability cost ({appends} appends per figure; {tasks} no-op tasks, "
              f"2 workers, median of {repeats})")
        print(f"{'mode':<8} {'µs/record (1/append)':>21} {'µs/record (32/append)':>22} "
              f"{'tasks/s':>9}")
        # Modes take turns within each repeat, so that a noisy neighbour
        # slows them all alike rather than whichever ran at the time.
        singles: dict[str, list[float]] = {m: [] for m in DURABILITY_MODES}
        grouped: dict[str, list[float]] = {m: [] for m in DURABILITY_MODES}
        rates: dict[str, list[float]] = {m: [] for m in DURABILITY_MODES}
        for _ in range(repeats):
            for mode in DURABILITY_MODES:
                singles[mode].append(per_record_us(folder, mode, appends, 1))
                grouped[mode].append(per_record_us(folder, mode, max(appends // 8, 20), 32))
                rates[mode].append(tasks_per_second(folder, mode, tasks, 2))
        for mode in DURABILITY_MODES:
            print(f"{mode:<8} {statistics.median(singles[mode]):>21.1f} "
                  f"{statistics.median(grouped[mode]):>22.1f} "
                  f"{statistics.median(rates[mode]):>9.0f}", flush=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
