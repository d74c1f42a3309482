"""The code a forked worker process runs: read a task, run it, send its result.

Set-up (once per worker): own process group, SIGKILL on parent death (armed
after its first result), every inherited fd closed but its pipes, fds 1 and 2
on the worker's log file (RUN/logs/worker-PID.log, opened once: a task's
prints and its subprocesses' output land there; without a log folder, stdout
goes to stderr). The parent also forks a *sentinel* into the worker's group
that blocks on the lifeline pipe and SIGKILLs the whole group when the dagrun
process dies, however it died: PR_SET_PDEATHSIG alone would kill the worker
but not the processes its task started.
"""

from __future__ import annotations

import io
import os
import signal
import sys
import time
import traceback
from typing import Any, NoReturn

import orjson

from dagrun.executor import wire
from dagrun.kinds import events, state

_PR_SET_PDEATHSIG = 1


def _close_fds_except(keep: set[int]) -> None:
    top = os.sysconf("SC_OPEN_MAX") if hasattr(os, "sysconf") else 1024
    low = 3
    for fd in sorted(keep | {top}):
        if fd >= low:
            os.closerange(low, fd)
            low = fd + 1


def worker_main(req_fd: int, res_fd: int, lifeline_fd: int, parent_pid: int,
                base_dir: str | None, log_dir: str | None = None) -> NoReturn:
    code = 0
    try:
        _setup(req_fd, res_fd, lifeline_fd, parent_pid, base_dir, log_dir)
        _serve(req_fd, res_fd, parent_pid)
    except BaseException:  # never let a worker return into the parent's code
        code = 70
    finally:
        os._exit(code)


def _setup(req_fd: int, res_fd: int, lifeline_fd: int, parent_pid: int,
           base_dir: str | None, log_dir: str | None) -> None:
    try:
        os.setpgid(0, 0)
    except OSError:
        pass
    if os.getppid() != parent_pid:  # the parent died while forking us
        os._exit(0)
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    _close_fds_except({req_fd, res_fd, lifeline_fd})
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    try:
        if not log_dir:
            raise OSError
        _open_log(log_dir)
    except OSError:  # no log folder (or it cannot be written): the task prints to stderr
        os.dup2(2, 1)  # a task's prints must never reach dagrun's stdout
    os.close(lifeline_fd)
    if base_dir and base_dir not in sys.path:
        sys.path.insert(0, base_dir)


# The worker's index of attempts (worker-PID.idx): one line per attempt, written
# before it runs, so that `dagrun logs` finds an attempt whose result never
# reached the journal (dagrun SIGKILLed, the worker crashed). -1: no logs.
_idx_fd = -1


def _open_log(log_dir: str) -> None:
    global _idx_fd
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_NOFOLLOW", 0)
    base = os.path.join(log_dir, f"worker-{os.getpid()}")
    fd = os.open(base + ".log", flags, 0o600)
    os.dup2(fd, 1)  # stdout and stderr share one offset: their lines stay in order
    os.dup2(fd, 2)
    os.close(fd)
    _idx_fd = os.open(base + ".idx", flags | os.O_CLOEXEC, 0o600)
    # Block-buffered on a file: a print would reach the log (and `--follow`,
    # and the echo) only when the task ends.
    if isinstance(sys.stdout, io.TextIOWrapper):
        try:
            sys.stdout.reconfigure(line_buffering=True)
        except ValueError:
            pass


def _log_start(msg: dict[str, Any]) -> int | None:
    """The log offset where this attempt's output begins, indexed; None: no logs."""
    if _idx_fd < 0:
        return None
    try:
        start = os.lseek(1, 0, os.SEEK_END)
        os.write(_idx_fd, orjson.dumps({"task": msg["task"], "attempt": msg["attempt"],
                                        "start": start}) + b"\n")
    except OSError:  # an earlier task closed fd 1, a full disk: the attempt runs unlogged
        return None
    return start


def _log_range(start: int | None) -> tuple[int, int] | tuple[None, None]:
    """(start, end) of the attempt's output in the log; (None, None): none."""
    if start is not None:
        try:
            return start, os.lseek(1, 0, os.SEEK_END)
        except OSError:  # the task closed or replaced fd 1: no range, the index remains
            pass
    return None, None


def _log_end(head: dict[str, Any], start: int | None) -> None:
    first, last = _log_range(start)
    if first is not None:
        head["log"] = [first, last]


def sentinel_main(lifeline_fd: int, pgid: int) -> NoReturn:
    """Forked by the parent into the worker's process group: waits for the
    dagrun process to die (EOF on the lifeline), then SIGKILLs the group."""
    try:
        try:
            os.setpgid(0, pgid)
        except OSError:
            pass
        signal.set_wakeup_fd(-1)
        # It shares the task's process group, so a task stopping "its helpers"
        # with os.killpg(0, SIGTERM) (or a HUP to the group) signals it too: it
        # must outlive everything but SIGKILL, which only dagrun's cleanup sends.
        for sig in signal.valid_signals():
            if sig not in (signal.SIGKILL, signal.SIGSTOP):
                try:
                    signal.signal(sig, signal.SIG_IGN)
                except (OSError, ValueError):
                    pass  # e.g. the realtime signals Python cannot name
        _close_fds_except({lifeline_fd})
        while True:
            try:
                if not os.read(lifeline_fd, 1):
                    break
            except InterruptedError:
                continue
        os.killpg(pgid, signal.SIGKILL)
    finally:
        os._exit(0)


def _arm_pdeathsig(parent_pid: int) -> None:
    """SIGKILL on the parent's death (PR_SET_PDEATHSIG). Called after the first
    result, not at start: importing ctypes takes ~2 ms, which would delay every
    run's first task (the sentinel covers the parent's death meanwhile)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # not Linux: the sentinel still covers parent death
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(0)


def _serve(req_fd: int, res_fd: int, parent_pid: int) -> None:
    from dagrun.callables import resolve

    functions: dict[str, Any] = {}
    me = os.getpid()
    armed = False
    events.bind_pipe(res_fd)  # dagrun.emit() from a task
    while True:
        header = wire.read_exact(req_fd, wire.HEADER.size)
        if header is None:
            return  # the parent closed our pipe: retire
        _, msg_id, size = wire.HEADER.unpack(header)
        body = wire.read_exact(req_fd, size)
        if body is None:
            return
        msg = orjson.loads(body)
        result, retire = _run_one(msg, functions, resolve)
        if os.getpid() != me:
            os._exit(0)  # a child the task forked came back here: it must not answer
        wire.write_all(res_fd, wire.encode_raw(result, msg_id))
        if retire:
            return  # whatever the task leaked goes with this process; the parent forks anew
        if not armed:
            _arm_pdeathsig(parent_pid)
            armed = True


# DAGRUN_MAP_INDEX was set for an earlier task of this worker (a map element).
_map_index_set = "DAGRUN_MAP_INDEX" in os.environ


def _run_one(msg: dict[str, Any], functions: dict[str, Any],
             resolve: Any) -> tuple[bytes, bool]:
    """Run one task; (the result message, whether this worker should retire)."""
    global _map_index_set
    env = os.environ
    env["DAGRUN_RUN_ID"] = msg["run_id"]
    env["DAGRUN_TASK_ID"] = msg["task"]
    env["DAGRUN_ATTEMPT"] = str(msg["attempt"])
    if msg.get("map_index") is not None:  # an element of a map task (kinds/fanout.py)
        env["DAGRUN_MAP_INDEX"] = str(msg["map_index"])
        _map_index_set = True
    elif _map_index_set:  # (a pop of an absent name costs a KeyError: not per task)
        env.pop("DAGRUN_MAP_INDEX", None)
        _map_index_set = False
    limit = msg.get("memory_limit")
    saved = _limit_memory(limit) if limit else None
    log_start = _log_start(msg)
    started = time.time()
    head: dict[str, Any] = {"id": msg["id"], "started": started}
    try:
        if msg.get("when") is not None and not _condition(msg, functions, resolve):
            _flush_std()
            head["ended"] = time.time()
            head["condition"] = False  # skipped: the callable does not run
            return orjson.dumps(head), False
        fn = functions.get(msg["call"])
        if fn is None:
            fn = functions[msg["call"]] = resolve(msg["call"])
        kwargs, carried = state.task_kwargs(msg)
        with events.in_task(msg["id"]):
            if msg.get("loop") is None:
                value = fn(**kwargs)
            else:
                from dagrun.kinds.loop import run_iteration

                value, head["stop"] = run_iteration(fn, kwargs, msg["loop"], resolve)
        if carried is not None:
            head["state"] = state.checked(carried)
        try:
            # Serialised three levels deep, as the journal record and a downstream
            # request will hold it, so that a too-deeply nested output fails here,
            # as this task's error, and not later in dagrun itself.
            payload = orjson.dumps([[[value]]], option=orjson.OPT_NON_STR_KEYS)[3:-3]
        except TypeError as exc:
            raise _NotSerializable(
                f"the task returned a {type(value).__name__}, which is not JSON-serialisable: "
                f"{exc}; return plain data (dict, list, str, number, bool, None)") from None
        # orjson writes NaN and infinities as null: a silent change of value.
        # Only outputs containing a null can hide one, so only those are scanned.
        if value is not None and b"null" in payload and _has_non_finite(value):
            raise _NotSerializable(
                "the task returned NaN or infinity, which JSON cannot represent; return "
                "None or a string instead")
    except BaseException as exc:  # a task's failure is data, whatever it raised
        if saved is not None:
            _restore_memory(saved)  # first: formatting the error needs memory too
        _flush_std()
        head["ended"] = time.time()
        _log_end(head, log_start)
        types = [c.__name__ for c in type(exc).__mro__[:-1]]
        if limit and isinstance(exc, MemoryError):
            head["error"] = {"type": "MemoryLimitExceeded",
                             "message": f"exceeded memory_limit {format_size(limit)}",
                             "traceback": traceback.format_exc(),
                             "types": ["MemoryLimitExceeded", *types]}
            head["retire"] = True  # tells the parent to send nothing more here
            return orjson.dumps(head), True
        head["error"] = {"type": type(exc).__name__, "message": _safe(_message, exc),
                         "traceback": _safe(lambda _e: traceback.format_exc(), exc),
                         "types": types}
        try:
            return orjson.dumps(head), False
        except TypeError:  # text orjson refuses (lone surrogates): keep it readable
            head["error"] = {k: (v.encode("utf-8", "backslashreplace").decode("utf-8")
                                 if isinstance(v, str) else v)
                             for k, v in head["error"].items()}
            return orjson.dumps(head), False
    finally:
        if saved is not None:
            _restore_memory(saved)
    _flush_std()
    ended = time.time()
    if len(head) == 2:  # id and started only: a plain success, sent positional
        # [started, ended, log start, log end, output] (wire.result_message).
        return (orjson.dumps((started, ended, *_log_range(log_start)))[:-1] + b","
                + payload + b"]"), False
    head["ended"] = ended
    _log_end(head, log_start)
    return orjson.dumps(head)[:-1] + b',"output":' + payload + b"}", False


def _condition(msg: dict[str, Any], functions: dict[str, Any], resolve: Any) -> bool:
    from dagrun.kinds.conditions import holds

    return holds(msg["when"], msg["kwargs"], functions, resolve)


def _limit_memory(limit: int) -> tuple[int, int] | None:
    """Cap the address space at its current size + `limit` for the task's duration.

    RLIMIT_AS makes an allocation past the cap fail with MemoryError inside the
    task, at once, with no polling. It counts address space, not resident pages,
    so it is a limit on what the task *adds* (the worker's baseline is excluded);
    each thread the task starts reserves stack and malloc-arena space that counts.
    Processes the task starts inherit the cap. Linux only (elsewhere: no limit).
    """
    try:
        import resource

        with open("/proc/self/statm", "rb") as fh:
            size = int(fh.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        cap = size + limit
        if hard != resource.RLIM_INFINITY:
            cap = min(cap, hard)
        resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
        return soft, hard
    except (OSError, ValueError, ImportError):
        return None


def _restore_memory(saved: tuple[int, int]) -> None:
    import resource

    try:
        resource.setrlimit(resource.RLIMIT_AS, saved)
    except (OSError, ValueError):
        pass


def format_size(n: int) -> str:
    """512000000 -> "512MB", 536870912 -> "512MiB": the unit the user most likely wrote."""
    for base, units in ((1000, ("KB", "MB", "GB", "TB")), (1024, ("KiB", "MiB", "GiB", "TiB"))):
        for power in range(4, 0, -1):
            if n % base ** power == 0:
                return f"{n // base ** power}{units[power - 1]}"
    return f"{n}B"


def _has_non_finite(value: Any) -> bool:
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, float):
            if v != v or v in (float("inf"), float("-inf")):
                return True
        elif isinstance(v, dict):
            stack.extend(v.values())
        elif isinstance(v, (list, tuple)):
            stack.extend(v)
    return False


class _NotSerializable(TypeError):
    pass


_NotSerializable.__name__ = "NotSerializable"


def _safe(describe: Any, exc: BaseException) -> str:
    """A description of the exception that cannot itself raise."""
    try:
        return str(describe(exc))
    except BaseException:  # a broken __str__ must not take the worker down
        try:
            return f"<{type(exc).__name__} whose message could not be shown>"
        except BaseException:
            return "<unprintable exception>"


def _message(exc: BaseException) -> str:
    if isinstance(exc, SystemExit):
        return f"the task called sys.exit({exc.code!r})"
    return str(exc)


def _flush_std() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
