"""One measurement, run in its own process so that its whole process tree can
be watched and nothing is shared between measurements. Prints one JSON object.

    python -m bench.child floor SPEC            -> {"parse": s, "run": s}
    python -m bench.child raw SPEC              -> {"parse": s, "run": s}  (bench/rawfloor.py)
    python -m bench.child api SPEC STATE MODE   -> {"run": s, "status": ...}
                                                 (MODE: fast|atomic|durable|default)
    python -m bench.child dask SPEC STATE       -> {"raw": s, "run": s, "status": ...}
        one LocalCluster (WORKERS single-threaded worker processes, allowed-failures 0
        as dagrun's own): the spec's calls through raw client.submit + gather, then
        through dagrun (the API, executor dask, run phase) on the same cluster
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


def dask(spec: str, state: str) -> dict:
    import tomllib

    import dask as dask_config
    from distributed import Client, LocalCluster

    from bench.workloads import WORKERS
    from dagrun.api import load
    from dagrun.callables import resolve
    from dagrun.driver import drive
    from dagrun.spec import DEFAULT_DURABILITY
    from dagrun.store.runs import StateDir, new_run_id

    sys.path.insert(0, str(Path(spec).parent))
    doc = tomllib.loads(Path(spec).read_text())
    calls = [(resolve(t["call"]), t.get("kwargs", {})) for t in doc["tasks"].values()]
    with dask_config.config.set({"distributed.scheduler.allowed-failures": 0}):
        cluster = LocalCluster(n_workers=WORKERS, threads_per_worker=1, processes=True,
                               host="127.0.0.1", dashboard_address=None, memory_limit=0,
                               local_directory=state + "-dask")
    client = Client(cluster, set_as_default=False)
    client.gather([client.submit(fn, **kw, pure=False) for fn, kw in calls[:50]])  # warm
    t0 = time.perf_counter()
    client.gather([client.submit(fn, **kw, pure=False) for fn, kw in calls])
    raw_wall = time.perf_counter() - t0
    pipeline = load(spec)
    settings = {"workers": WORKERS, "durability": DEFAULT_DURABILITY, "deadline": None,
                "executor": "dask", "address": cluster.scheduler_address}
    t0 = time.perf_counter()
    info = StateDir(state).create_run(new_run_id(), pipeline, settings)
    result = drive(info, pipeline, None, settings)
    run_wall = time.perf_counter() - t0
    client.close()
    cluster.close()
    return {"raw": raw_wall, "run": run_wall, "status": result.status}


def main() -> None:
    kind, *args = sys.argv[1:]
    out = {"floor": floor, "raw": raw, "api": api, "dask": dask}[kind](*args)
    sys.stdout.buffer.write(orjson.dumps(out) + b"\n")


if __name__ == "__main__":
    main()
