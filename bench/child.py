"""One measurement, run in its own process so that its whole process tree can
be watched and nothing is shared between measurements. Prints one JSON object.

    python -m bench.child floor SPEC            -> {"parse": s, "run": s}
    python -m bench.child raw SPEC              -> {"parse": s, "run": s}  (bench/rawfloor.py)
    python -m bench.child api SPEC STATE MODE   -> {"run": s, "status": ...}
                                                 (MODE: fast|atomic|durable|default)
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import orjson


def floor(spec: str) -> dict:
    import tomllib

    from bench import floor as floor_mod
    from bench.workloads import WORKERS

    sys.path.insert(0, str(Path(spec).parent))
    t0 = time.perf_counter()
    doc = tomllib.loads(Path(spec).read_text())
    parse = time.perf_counter() - t0
    graph = floor_mod.graph_from_doc(doc)
    t0 = time.perf_counter()
    floor_mod.run(graph, WORKERS)
    return {"parse": parse, "run": time.perf_counter() - t0}


def raw(spec: str) -> dict:
    import tomllib

    from bench import rawfloor
    from bench.workloads import WORKERS

    sys.path.insert(0, str(Path(spec).parent))
    t0 = time.perf_counter()
    doc = tomllib.loads(Path(spec).read_text())
    parse = time.perf_counter() - t0
    t0 = time.perf_counter()
    rawfloor.run(doc, WORKERS)
    return {"parse": parse, "run": time.perf_counter() - t0}


def api(spec: str, state: str, durability: str) -> dict:
    """The run phase through the Python API: the spec is loaded beforehand (like the
    floor's graph); validation of the graph and callables, run creation, workers,
    scheduling and records are inside the timed call."""
    import dagrun
    from bench.workloads import WORKERS
    from dagrun.api import load

    pipeline = load(spec)
    t0 = time.perf_counter()
    result = dagrun.run(pipeline, state_dir=state, workers=WORKERS,
                        durability=None if durability == "default" else durability)
    return {"run": time.perf_counter() - t0, "status": result.status}


def main() -> None:
    kind, *args = sys.argv[1:]
    out = {"floor": floor, "raw": raw, "api": api}[kind](*args)
    sys.stdout.buffer.write(orjson.dumps(out) + b"\n")


if __name__ == "__main__":
    main()
