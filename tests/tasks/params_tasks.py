"""Tasks for tests/test_params.py and the Python API helpers' tests."""

import os
import time
from pathlib import Path


def show(**kwargs):
    return kwargs


def use_secret(token, out, day, gate=None):
    """Writes what it received outside the state dir; returns nothing secret.
    With `gate`: waits (up to 60 s) for that file, so a test can kill dagrun meanwhile."""
    Path(out).write_text(f"{token} {day}")
    if gate:
        Path(gate + ".started").write_text(str(os.getpid()))
        end = time.monotonic() + 60
        while not Path(gate).exists() and time.monotonic() < end:
            time.sleep(0.02)
    return len(token)


def square(index, data=None):
    return index * index + (data or 0)


def collect(results):
    return {"results": results, "total": sum(results)}


def seed():
    return 10


def inc(x):
    return x + 1


def reference_text():
    """An output that looks like a param reference (it must never be substituted)."""
    return "${params.token}"
