"""Ready-made sensor callables, for `sensor = { ... }` tasks.

Each returns a truthy value when ready (it becomes the task's output) and a
falsy one otherwise; the scheduler polls again after the sensor's interval.

    [tasks.wait_file]
    call = "dagrun.sensors:file_exists"
    kwargs = { path = "/data/in/2026-11-27.csv" }
    sensor = { interval = "30s", timeout = "6h" }
"""

from __future__ import annotations

import glob
import os
import urllib.error
import urllib.request


def file_exists(path: str) -> str | None:
    """The path, once a file (or folder) exists there."""
    return path if os.path.exists(path) else None


def glob_count(pattern: str, min_count: int = 1) -> list[str] | None:
    """The sorted matches of `pattern`, once there are at least `min_count`."""
    found = sorted(glob.glob(pattern, recursive=True))
    return found if len(found) >= min_count else None


def http_ok(url: str, timeout: float = 10.0) -> int | None:
    """The status code, once a GET of `url` answers 2xx; a refused or failed
    connection, a timeout or any other status is "not yet"."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - the user's URL
            status = int(resp.status)
    except (urllib.error.URLError, OSError, ValueError):
        return None
    return status if 200 <= status < 300 else None
