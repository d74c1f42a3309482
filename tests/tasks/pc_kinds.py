"""Callables for the sensor and loop tests (tests/test_sensors_loops.py)."""

import os
import time


def _log(log, line):
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, f"{line}\n".encode())
    finally:
        os.close(fd)


def at_least(value, n=3):
    return value >= n


def never(_value):
    return False


def counter(log, iteration, previous, sleep=0.0):
    """Logs its iteration, then returns previous + 1 (0 first)."""
    _log(log, f"iter {iteration} {previous}")
    if sleep:
        time.sleep(sleep)
    return 0 if previous is None else previous + 1


def work(log, name, sleep=0.0, touch=None):
    """Sleeps, logs, then creates the file `touch` (what a sensor waits for)."""
    if sleep:
        time.sleep(sleep)
    _log(log, f"done {name}")
    if touch:
        open(touch, "w").close()
    return name


def poll_file(log, path):
    _log(log, "poll")
    return path if os.path.exists(path) else None


def needs_two(a, b):
    return a and b


def identity(value):
    return value
