"""File-system helpers for everything under the state directory.

Every state file is opened with O_NOFOLLOW and must be a regular file: a
journal or letter replaced by a symlink (or a FIFO, a device) is refused with
exit 2 naming it, so dagrun never truncates, appends to or blocks on a file
outside the state directory. Writes go through write_atomic (temp file +
rename), which replaces a symlink at the target rather than writing through it.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from dagrun.errors import StateIOError, UnsafeStateFile

# O_NONBLOCK: opening a FIFO planted in place of a state file must not hang;
# it changes nothing for the regular files we accept.
_SAFE = os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


def describe_os_error(exc: OSError) -> str:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "no space left on device"
    if exc.errno == errno.EFBIG:
        return "file too large (file size limit reached)"
    return exc.strerror or str(exc)


def _refuse(path: Path, what: str) -> UnsafeStateFile:
    return UnsafeStateFile(f"refusing to use {path}: it is {what}, not a regular file "
                           "(state files are never followed outside the state directory; "
                           "move it away and retry)")


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a device or special file"


def open_state_file(path: Path, flags: int, mode: int = 0o600) -> int:
    """os.open(path, flags) without following a symlink at `path`, refusing
    anything but a regular file (UnsafeStateFile, exit 2). OSError otherwise."""
    try:
        fd = os.open(path, flags | _SAFE, mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _refuse(path, "a symbolic link") from None
        if exc.errno in (errno.ENXIO, errno.EISDIR):  # a FIFO with no reader, a folder
            try:
                kind = _kind(os.lstat(path).st_mode)
            except OSError:
                raise exc from None
            raise _refuse(path, kind) from None
        raise
    try:
        st = os.fstat(fd)
    except OSError:
        os.close(fd)
        raise
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise _refuse(path, _kind(st.st_mode))
    return fd


def read_state_file(path: Path) -> bytes:
    """The whole file (FileNotFoundError if missing; UnsafeStateFile if not a
    regular file; other OSErrors as they are)."""
    fd = open_state_file(path, os.O_RDONLY)
    try:
        chunks: list[bytes] = []
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_private_dir(path: Path) -> None:
    """Create `path` and any missing parents 0700 (mkdir(parents=True) would
    give the parents the umask's mode)."""
    try:
        if not path.parent.exists():
            make_private_dir(path.parent)
        os.mkdir(path, 0o700)
    except FileExistsError:
        # Not mkdir(exist_ok=True): its is_dir() re-check fails when a
        # concurrent rmdir (`dlq purge`) removed the folder meanwhile; the
        # caller's write then fails with ENOENT, which callers may retry.
        pass
    except OSError as exc:
        raise StateIOError(f"cannot create {path}: {describe_os_error(exc)}") from None


def write_atomic_raw(path: Path, data: bytes, *, durable: bool = True) -> None:
    """write_atomic raising the OSError itself (callers that retry on ENOENT)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        # O_EXCL after an unlink: a symlink planted at the temp name is never
        # written through (a leftover of our own pid is simply replaced).
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)  # replaces a symlink at `path`, never its target
        if durable:
            fsync_dir(path.parent)
    except OSError:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise


def write_atomic(path: Path, data: bytes, *, durable: bool = True) -> None:
    """Temp file + fsync + rename (+ fsync of the folder): all or nothing."""
    try:
        write_atomic_raw(path, data, durable=durable)
    except OSError as exc:
        raise StateIOError(f"cannot write {path}: {describe_os_error(exc)}") from None


def file_identity(path: Path) -> tuple[int, int, int] | None:
    """Changes when the file is replaced or rewritten (None: it does not exist)."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


def pid_alive(pid: int) -> bool:
    """False only if no process has this pid (a reused pid reads as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # EPERM: someone else's process
    return True
