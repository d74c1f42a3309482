"""Length-prefixed orjson frames over pipes between the parent and workers.

A frame is a 12-byte header (magic, message id, body length) and an orjson
body. A task inherits its worker's result pipe and can write to it (a stray
os.write on a number it thinks is its own file, or on purpose): the parent
therefore checks each header as soon as it has one, before waiting for the
body, so that bytes dagrun did not write are a protocol error at once and
never a wait for a body that will not come.
"""

from __future__ import annotations

import os
import struct
from typing import Any

import orjson

HEADER = struct.Struct(">4sII")  # magic, message id, body length
MAGIC = b"drn\x01"
# One frame carries one task's output, which dagrun also holds in memory, writes
# to the journal and hands to dependents: outputs near this size belong in files.
# The cap bounds what a forged length can make the parent buffer (up to 4 GiB).
MAX_FRAME = 1 << 30


class FrameError(Exception):
    """Bytes on a pipe that are not the frame dagrun expects there."""


def encode(obj: Any, msg_id: int) -> bytes:
    return encode_raw(orjson.dumps(obj, option=orjson.OPT_NON_STR_KEYS), msg_id)


def encode_raw(body: bytes, msg_id: int) -> bytes:
    return HEADER.pack(MAGIC, msg_id, len(body)) + body


def check_header(magic: bytes, msg_id: int, size: int, expected: int | None) -> None:
    if magic != MAGIC:
        raise FrameError("bytes that are not a dagrun frame")
    if expected is None:
        raise FrameError(f"a frame (id {msg_id}) while no task was running")
    if msg_id != expected:
        raise FrameError(f"a frame with id {msg_id} where {expected} was expected")
    if size > MAX_FRAME:
        raise FrameError(f"a frame of {size} bytes, over the {MAX_FRAME >> 20} MiB cap")


def take_frame(buf: bytearray, expected: int | None) -> bytes | None:
    """Remove and return the body of the frame at the start of `buf`, which must
    be message `expected`; None while it is incomplete. FrameError as soon as
    the header (or the part of it received) cannot be one dagrun wrote."""
    if not buf:
        return None
    if len(buf) < HEADER.size:
        if not MAGIC.startswith(bytes(buf[:len(MAGIC)])):
            raise FrameError("bytes that are not a dagrun frame")
        return None
    magic, msg_id, size = HEADER.unpack_from(buf)
    if magic != MAGIC or msg_id != expected or size > MAX_FRAME:
        check_header(magic, msg_id, size, expected)  # says what is wrong
    end = HEADER.size + size
    if len(buf) < end:
        return None
    body = bytes(buf[HEADER.size:end])
    del buf[:end]
    return body


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def read_available(fd: int, buf: bytearray) -> bool:
    """Append what the non-blocking `fd` holds now to `buf`; True at EOF."""
    while True:
        try:
            chunk = os.read(fd, 1 << 16)
        except BlockingIOError:
            return False
        except InterruptedError:
            continue
        if not chunk:
            return True
        buf += chunk
        if len(chunk) < 1 << 16:
            return False  # drained (a read more would be EAGAIN); the selector says if not


def read_exact(fd: int, size: int) -> bytes | None:
    """Blocking read of exactly `size` bytes; None at end of file."""
    chunks = []
    while size:
        chunk = os.read(fd, size)
        if not chunk:
            return None
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def result_message(body: bytes) -> dict | list:
    """A worker's result, its fields of the types the parent reads: a dict, or
    for a plain success (no error, state, condition or loop stop: most results)
    the list [started, ended, log start, log end, output] (log null without a
    log), which is cheaper to send and to check. (Exact type checks first:
    orjson makes exactly these types, and this runs for every result; the
    slower general checks decide the rest.)"""
    try:
        msg = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise FrameError("a frame whose body is not JSON") from None
    if type(msg) is list:
        if len(msg) != 5 or type(msg[0]) is not float or type(msg[1]) is not float:
            raise FrameError("a frame whose body is a JSON list that is not a result")
        start, end = msg[2], msg[3]
        if start is None and end is None or (type(start) is int and type(end) is int
                                             and 0 <= start <= end):
            return msg
        raise FrameError("a result whose log is not a byte range")
    if type(msg) is not dict:
        raise FrameError(f"a frame whose body is a JSON {type(msg).__name__}, not an object")
    get = msg.get
    if type(get("started")) is not float or type(get("ended")) is not float:
        for key in ("started", "ended"):
            if not isinstance(get(key), (int, float)) or isinstance(msg[key], bool):
                raise FrameError(f"a result whose {key!r} is not a number")
    error = get("error")
    if error is not None and not (
            isinstance(error, dict) and all(isinstance(error.get(k, ""), str)
                                            for k in ("type", "message", "traceback"))
            and isinstance(error.get("types", []), list)):
        raise FrameError("a result whose 'error' is not an error")
    log = get("log")
    if log is not None:
        if type(log) is not list or len(log) != 2:
            raise FrameError("a result whose 'log' is not a byte range")
        start, end = log
        if type(start) is not int or type(end) is not int or not 0 <= start <= end:
            raise FrameError("a result whose 'log' is not a byte range")
    if "state" in msg and type(msg["state"]) is not dict:
        raise FrameError("a result whose 'state' is not an object")
    return msg
