"""The floor: a bare concurrent.futures.ProcessPoolExecutor dependency loop.

What a user would write by hand with no persistence, no timeouts and no crash
handling: submit every task whose dependencies are done, pass upstream outputs
as arguments, take the next completion, repeat. Completions arrive through a
done-callback queue: `concurrent.futures.wait(FIRST_COMPLETED)` over all
pending futures would cost O(pending) per completion and make the floor
quadratic, flattering dagrun.
"""

from __future__ import annotations

import importlib
import multiprocessing
import queue
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from typing import Any


def graph_from_doc(doc: Mapping[str, Any]) -> list[tuple[str, Any, list[str], dict, dict]]:
    """(id, function, deps, inputs, kwargs) per task, from a parsed spec document."""
    functions: dict[str, Any] = {}
    out = []
    for tid, t in doc["tasks"].items():
        call = t["call"]
        fn = functions.get(call)
        if fn is None:
            mod, _, attr = call.partition(":")
            fn = functions[call] = getattr(importlib.import_module(mod), attr)
        out.append((tid, fn, list(t.get("deps", [])), dict(t.get("inputs", {})),
                    dict(t.get("kwargs", {}))))
    return out


def run(graph: list[tuple[str, Any, list[str], dict, dict]], workers: int) -> dict[str, Any]:
    tasks = {tid: (fn, inputs, kwargs) for tid, fn, _, inputs, kwargs in graph}
    waiting = {tid: len(deps) for tid, _, deps, _, _ in graph}
    dependents: dict[str, list[str]] = {tid: [] for tid in waiting}
    for tid, _, deps, _, _ in graph:
        for d in deps:
            dependents[d].append(tid)
    outputs: dict[str, Any] = {}
    ctx = multiprocessing.get_context("fork")
    done: queue.SimpleQueue = queue.SimpleQueue()
    with ProcessPoolExecutor(workers, mp_context=ctx) as pool:
        pending = 0

        def submit(tid: str) -> None:
            nonlocal pending
            fn, inputs, kwargs = tasks[tid]
            args = dict(kwargs)
            for param, up in inputs.items():
                args[param] = outputs[up]
            fut = pool.submit(fn, **args)
            fut.add_done_callback(lambda f, tid=tid: done.put((tid, f)))
            pending += 1

        for tid, n in waiting.items():
            if n == 0:
                submit(tid)
        while pending:
            tid, fut = done.get()
            pending -= 1
            outputs[tid] = fut.result()
            for child in dependents[tid]:
                waiting[child] -= 1
                if waiting[child] == 0:
                    submit(child)
    if len(outputs) != len(tasks):
        raise RuntimeError("floor: not every task ran")
    return outputs
