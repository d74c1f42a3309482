"""Checksummed framing for every piece of state dagrun writes.

A frame is one line: the SHA-256 hex digest of the body, a space, the body
(orjson bytes, which never contain a newline), a newline. A frame whose digest
does not match, or that is torn (no newline), is rejected on read, so a torn
or corrupted record is detected and treated as absent.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

FORMAT_VERSION = 1
_DIGEST_LEN = 64


def frame(obj: Any) -> bytes:
    body = orjson.dumps(obj, option=orjson.OPT_NON_STR_KEYS)
    return hashlib.sha256(body).hexdigest().encode("ascii") + b" " + body + b"\n"


def unframe(line: bytes) -> Any:
    """The object in a complete frame (with or without its newline); ValueError if bad."""
    if line.endswith(b"\n"):
        line = line[:-1]
    if len(line) < _DIGEST_LEN + 2 or line[_DIGEST_LEN] != 0x20:
        raise ValueError("not a dagrun record")
    body = line[_DIGEST_LEN + 1:]
    if hashlib.sha256(body).hexdigest().encode("ascii") != line[:_DIGEST_LEN]:
        raise ValueError("checksum mismatch")
    return orjson.loads(body)
