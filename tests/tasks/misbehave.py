"""Task callables that misbehave on purpose: hang, crash, leak, ignore signals.

Tasks that start processes or need to be observed write marker files (paths
are passed in kwargs) so tests check real processes, not timings.
"""

import ctypes
import os
import re
import signal
import struct
import subprocess
import time


def hang_python():
    while True:  # pure-Python busy loop: only a signal stops it
        pass


def hang_regex():
    # Catastrophic backtracking: one call into C that never returns to the eval loop.
    return bool(re.match(r"(a+)+$", "a" * 40 + "b"))


def hang_sleep(seconds=300):
    time.sleep(seconds)


def ignore_sigterm(marker=None):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if marker:
        _write(marker, str(os.getpid()))
    while True:
        time.sleep(0.05)


def grandchild(pidfile):
    proc = subprocess.Popen(["sleep", "300"])
    _write(pidfile, str(proc.pid))
    time.sleep(300)


def grandchild_then_return(pidfile):
    """Leaves a child behind and returns: the group kill on retirement must get it."""
    proc = subprocess.Popen(["sleep", "300"])
    _write(pidfile, str(proc.pid))
    return proc.pid


def exit_hard(code=3):
    os._exit(code)


def segfault():
    ctypes.string_at(0)


def kill_self():
    os.kill(os.getpid(), signal.SIGKILL)


def pid(tag=None):
    return os.getpid()


def _bump(counter) -> int:
    """Add one to the number in the file `counter`; the new value."""
    try:
        with open(counter) as fh:
            n = int(fh.read() or 0)
    except FileNotFoundError:
        n = 0
    n += 1
    _write(counter, str(n))
    return n


def flaky(counter, succeed_on=3):
    """Fails until its attempt counter (a file) reaches `succeed_on`."""
    n = _bump(counter)
    if n < succeed_on:
        raise ConnectionError(f"attempt {n} failed on purpose")
    return {"attempts": n}


def leak(step_mb=16, total_mb=4096):
    hoard = []
    for _ in range(total_mb // step_mb):
        hoard.append(bytearray(step_mb * 1024 * 1024))  # zero-filled: really touched
    return len(hoard)


def allocate(mb=32):
    block = bytearray(mb * 1024 * 1024)
    return len(block) // (1024 * 1024)


def timed(log, name, seconds=0.0):
    """Appends 'name start end' (wall clock) to `log`: for ordering/overlap checks."""
    start = time.time()
    time.sleep(seconds)
    with open(log, "a") as fh:
        fh.write(f"{name} {start} {time.time()} {os.getpid()}\n")
    return name


def fail_always(log=None, kind="ConnectionError"):
    if log:
        with open(log, "a") as fh:
            fh.write(f"{time.time()}\n")
    exc = {"ConnectionError": ConnectionError, "ValueError": ValueError,
           "KeyError": KeyError}[kind]
    raise exc("failing on purpose")


def fail_if_exists(flag, log=None):
    """Fails while the flag file exists: a 'service' a test can bring back up."""
    if log:
        with open(log, "a") as fh:
            fh.write(f"{time.time()}\n")
    if os.path.exists(flag):
        raise ConnectionError("service down")
    return "ok"


def _write(path, text):
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


def service(counter, log, name, down_calls=2, seconds=0.05):
    """A flaky 'service': its first `down_calls` calls (a shared counter file) fail."""
    start = time.time()
    time.sleep(seconds)  # long enough that the pool does not prefetch behind it
    n = _bump(counter)
    ok = n > down_calls
    with open(log, "a") as fh:
        fh.write(f"{name} {start} {time.time()} {'ok' if ok else 'fail'}\n")
    if not ok:
        raise ConnectionError(f"service down (call {n})")
    return n


def fork_then_die(pidfile):
    """os.fork()s a child (which inherits the worker's pipes, as multiprocessing's
    fork does), then the worker dies: its death must be seen all the same."""
    child = os.fork()
    if child == 0:
        time.sleep(300)
        os._exit(0)
    _write(pidfile, str(child))
    os.kill(os.getpid(), signal.SIGKILL)


def fork_and_return():
    """The child returns too, into the worker's loop."""
    pid = os.fork()
    return "child" if pid == 0 else "parent"


def nested(depth):
    v = 1
    for _ in range(depth):
        v = [v]
    return v


class _BadStr(Exception):
    def __str__(self):
        raise RuntimeError("no message for you")


def bad_message():
    raise _BadStr()


def surrogate_message():
    raise ValueError("bad \ud800 char")


def noop():
    return None


def _inherited_pipes_for_writing():
    """The pipe fds (beyond stdio) this process may write to: its worker's result pipe."""
    import fcntl

    fds = []
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        try:
            is_pipe = fd > 2 and os.readlink(f"/proc/self/fd/{name}").startswith("pipe:")
            writable = fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_WRONLY
        except OSError:
            continue
        if is_pipe and writable:
            fds.append(fd)
    return fds


_FRAMES = {
    # The frame layout dagrun used to trust: a 4-byte length, then the body.
    "not_json": lambda: struct.pack(">I", 9) + b"not json!",
    "not_dict": lambda: struct.pack(">I", 6) + b"[1, 2]",
    "huge_length": lambda: struct.pack(">I", 0xFFFFFFF0) + b"{",
    "text": lambda: b"progress: 50%\n",
}


def write_to_worker_pipe(kind, counter=None, until=None):
    """Writes a frame of `kind` to the worker's pipe, then returns 'ok'. With
    `counter`/`until`: only while its attempt counter is below `until`."""
    if counter is None or _bump(counter) < until:
        for fd in _inherited_pipes_for_writing():
            os.write(fd, _FRAMES[kind]())
    return "ok"


def killpg_own_group(pidfile):
    """Stops "its helpers" with a SIGTERM to its whole process group, as shell
    scripts do, after starting a child that ignores SIGTERM; then keeps running."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    proc = subprocess.Popen(["sleep", "45"])  # inherits the ignored SIGTERM
    os.killpg(0, signal.SIGTERM)
    _write(pidfile, str(proc.pid))
    time.sleep(300)
