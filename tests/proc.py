"""Helpers for tests that drive a real dagrun process in the background."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable


def start(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "dagrun", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)


def wait_for(predicate: Callable[[], object], timeout: float = 20.0) -> None:
    # Generous: CI machines are shared and slow to fork workers.
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "timed out waiting"
        time.sleep(0.02)
