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


def items(log, name, n):
    _log(log, name)
    return list(range(n))


def elem(log, name, x, sleep=0.02):
    """One element of a map: logged as NAME[x]."""
    _log(log, f"{name}[{x}]")
    time.sleep(sleep)
    return x * 10


def total(log, name, xs):
    _log(log, name)
    return sum(xs)


def never(**_):
    return False


def count(log, name, iteration):
    _log(log, f"{name}#{iteration}")
    time.sleep(0.02)
    return iteration


def at_least_2(output):
    return output >= 2


def emitter(log, name):
    import dagrun

    _log(log, name)
    dagrun.emit("go")
    time.sleep(0.02)
    return 1


def counted(log, name, state):
    """State across runs: how many times this task has completed in any run."""
    _log(log, name)
    state["n"] = state.get("n", 0) + 1
    return state["n"]
