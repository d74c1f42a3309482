"""Tasks that print, for the per-task log tests (test_task_logs.py)."""

import os
import subprocess
import sys
import time
from pathlib import Path


def talk(fail_before=0):
    """Prints on stdout, stderr and from a child process; fails while its
    attempt number is below `fail_before`."""
    n = os.environ["DAGRUN_ATTEMPT"]
    print(f"stdout of attempt {n}")
    print(f"stderr of attempt {n}", file=sys.stderr)
    subprocess.run(["echo", f"child of attempt {n}"], check=True)
    if int(n) < fail_before:
        raise RuntimeError(f"attempt {n} fails")
    return int(n)


def talk_and_wait(marker, go, limit=60.0):
    """Prints a line, says so with the file `marker`, then waits for the file
    `go` (at most `limit` seconds) and prints another."""
    print("before the wait")
    subprocess.run(["echo", "child before the wait"], check=True)
    Path(marker).write_text("printed")
    end = time.monotonic() + limit
    while not os.path.exists(go) and time.monotonic() < end:
        time.sleep(0.01)
    print("after the wait")
    return "done"


def talk_then_die():
    print("last words", flush=True)
    os.kill(os.getpid(), 9)
