"""Task callables that log every execution to a file, for crash and resume tests."""

import os
import signal
import time


def _log(log, name):
    # One short O_APPEND write per line: lines from concurrent tasks never interleave.
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, f"{name} {os.environ.get('DAGRUN_ATTEMPT')} {os.getpid()}\n".encode())
    finally:
        os.close(fd)


def step(log, name, k=1, sleep=0.0, **inputs):
    """Returns k plus the sum of its inputs' outputs: every output is checkable."""
    _log(log, name)
    if sleep:
        time.sleep(sleep)
    return k + sum(inputs.values())


def fail_if(log, name, flag, k=1):
    """Fails while the file `flag` exists."""
    _log(log, name)
    if os.path.exists(flag):
        raise RuntimeError(f"flag {flag} is set")
    return k


def stubborn(log, name, seconds=30.0):
    """Ignores SIGTERM: only SIGKILL stops it."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _log(log, name)
    time.sleep(seconds)
    return name


def runs_of(log):
    """name -> number of executions, from the log."""
    counts = {}
    try:
        with open(log) as fh:
            for line in fh:
                name = line.split()[0]
                counts[name] = counts.get(name, 0) + 1
    except FileNotFoundError:
        pass
    return counts


def spawner(log, name, pidfile):
    """Starts a child process that would outlive it, records its pid, waits."""
    import subprocess

    child = subprocess.Popen(["sleep", "120"])
    with open(pidfile, "w") as fh:
        fh.write(str(child.pid))
    _log(log, name)
    child.wait()
    return name


def padded(log, name, size=1000, **inputs):
    """A large output: fills the journal fast (full-disk tests)."""
    _log(log, name)
    return name * size
