"""Length-prefixed orjson frames over pipes between the parent and workers."""

from __future__ import annotations

import os
import struct
from typing import Any

import orjson

HEADER = struct.Struct(">I")


def encode(obj: Any) -> bytes:
    body = orjson.dumps(obj, option=orjson.OPT_NON_STR_KEYS)
    return HEADER.pack(len(body)) + body


def encode_raw(body: bytes) -> bytes:
    return HEADER.pack(len(body)) + body


def split_frames(buf: bytearray) -> list[bytes]:
    """Remove and return every complete frame body at the start of `buf`."""
    out = []
    pos = 0
    n = len(buf)
    while n - pos >= 4:
        (size,) = HEADER.unpack_from(buf, pos)
        if n - pos - 4 < size:
            break
        out.append(bytes(buf[pos + 4:pos + 4 + size]))
        pos += 4 + size
    if pos:
        del buf[:pos]
    return out


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


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
