"""The tight floor: the least any process-pool runner can spend per task.

A single-threaded parent, N forked workers, one pipe pair each, length-prefixed
orjson frames, no records, no timeouts, no crash handling: the parent keeps
every worker one request ahead (two in flight) and waits on the result pipes
with a selector. Tasks of a spec run in dependency order, upstream outputs as
arguments, like bench/floor.py; it runs `map` tasks too (one frame per element)
so that W6 has the same floor as W1.
"""

from __future__ import annotations

import importlib
import os
import selectors
import struct
from collections import deque
from collections.abc import Mapping
from typing import Any

import orjson

_LEN = struct.Struct(">I")
IN_FLIGHT = 2  # per worker: one running, one queued behind it


def _read_exact(fd: int, n: int) -> bytes | None:
    buf = b""
    while len(buf) < n:
        chunk = os.read(fd, n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


def _worker(req: int, res: int) -> None:
    functions: dict[str, Any] = {}
    while True:
        head = _read_exact(req, 4)
        if head is None:
            os._exit(0)
        call, kwargs = orjson.loads(_read_exact(req, _LEN.unpack(head)[0]) or b"null")
        fn = functions.get(call)
        if fn is None:
            mod, _, attr = call.partition(":")
            fn = functions[call] = getattr(importlib.import_module(mod), attr)
        body = orjson.dumps(fn(**kwargs))
        os.write(res, _LEN.pack(len(body)) + body)


def run(doc: Mapping[str, Any], workers: int) -> int:
    """Run the spec document's tasks; the number of calls made."""
    tasks = doc["tasks"]
    waiting = {tid: len(t.get("deps", ())) for tid, t in tasks.items()}
    dependents: dict[str, list[str]] = {tid: [] for tid in tasks}
    for tid, t in tasks.items():
        for d in t.get("deps", ()):
            dependents[d].append(tid)
    outputs: dict[str, Any] = {}
    parts: dict[str, list[Any]] = {}  # map task -> element outputs
    left: dict[str, int] = {}
    queue: deque[tuple[str, int | None, bytes]] = deque()
    sel = selectors.DefaultSelector()
    pool = []
    for _ in range(workers):
        req_r, req_w = os.pipe()
        res_r, res_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(req_w)
            os.close(res_r)
            for other in pool:  # else an older worker never sees its pipe close
                os.close(other["req"])
                os.close(other["res"])
            _worker(req_r, res_w)
        os.close(req_r)
        os.close(res_w)
        w = {"pid": pid, "req": req_w, "res": res_r, "inflight": deque(), "buf": b""}
        pool.append(w)
        sel.register(res_r, selectors.EVENT_READ, w)

    def ready(tid: str) -> None:
        t = tasks[tid]
        kwargs = dict(t.get("kwargs", {}))
        for param, up in t.get("inputs", {}).items():
            kwargs[param] = outputs[up]
        param = t.get("map")
        if param is None:
            queue.append((tid, None, orjson.dumps([t["call"], kwargs])))
            return
        items = kwargs[param]
        parts[tid] = [None] * len(items)
        left[tid] = len(items)
        if not items:
            done(tid, [])
        for i, item in enumerate(items):
            kwargs[param] = item
            queue.append((tid, i, orjson.dumps([t["call"], kwargs])))

    def done(tid: str, output: Any) -> None:
        outputs[tid] = output
        for child in dependents[tid]:
            waiting[child] -= 1
            if waiting[child] == 0:
                ready(child)

    for tid, n in list(waiting.items()):
        if n == 0:
            ready(tid)
    calls = 0
    busy = 0
    while queue or busy:
        for w in pool:
            while queue and len(w["inflight"]) < IN_FLIGHT:
                tid, i, body = queue.popleft()
                os.write(w["req"], _LEN.pack(len(body)) + body)
                w["inflight"].append((tid, i))
                busy += 1
        for key, _ in sel.select():
            w = key.data
            w["buf"] += os.read(w["res"], 1 << 16)
            buf = w["buf"]
            while len(buf) >= 4:
                size = _LEN.unpack_from(buf)[0]
                if len(buf) < 4 + size:
                    break
                out = orjson.loads(buf[4:4 + size])
                buf = buf[4 + size:]
                tid, i = w["inflight"].popleft()
                busy -= 1
                calls += 1
                if i is None:
                    done(tid, out)
                else:
                    parts[tid][i] = out
                    left[tid] -= 1
                    if left[tid] == 0:
                        done(tid, parts.pop(tid))
            w["buf"] = buf
    for w in pool:
        os.close(w["req"])
        os.waitpid(w["pid"], 0)
        os.close(w["res"])
    sel.close()
    if len(outputs) != len(tasks):
        raise RuntimeError("raw floor: not every task ran")
    return calls
