"""Checksummed framing for every piece of state dagrun writes.

A frame is one line: the SHA-256 hex digest of the body, a space, the body
(orjson bytes, which never contain a newline), a newline. A frame whose digest
does not match, or that is torn (no newline), is rejected on read, so a torn
or corrupted record is detected and treated as absent.

A checksum only proves a line is whole, not that it belongs where it is: a
line copied from another run's journal, or one replayed, checksums just as
well. So every journal record is also bound to its run and chained per task
(`Chain`, below; the rules that read the chain are in repair.py).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

FORMAT_VERSION = 1  # dead letters and breaker files
# run.json and journal records: 2 added the run binding (run id + nonce) and
# the per-task chain. Runs written in format 1 are refused with one line.
RUN_FORMAT = 2
_DIGEST_LEN = 64
SHORT_DIGEST = 16  # hex characters of a frame's digest that name it in a chain


_dumps, _NON_STR_KEYS, _sha256 = orjson.dumps, orjson.OPT_NON_STR_KEYS, hashlib.sha256


def frame(obj: Any) -> bytes:
    body = orjson.dumps(obj, option=orjson.OPT_NON_STR_KEYS)
    return hashlib.sha256(body).hexdigest().encode("ascii") + b" " + body + b"\n"


def short_digest(framed: bytes) -> str:
    """The name of a framed record in its task's chain."""
    return framed[:SHORT_DIGEST].decode("ascii")


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


def new_nonce() -> str:
    return os.urandom(8).hex()  # secrets.token_hex(8), without importing secrets (~1 ms)


@dataclass
class Chain:
    """What the writer of a run's journal stamps on each record: the run id and
    the run's nonce (from run.json), and for a task record `prev`, the short
    digest of that task's previous record (its head; None for the first)."""

    run_id: str
    nonce: str
    heads: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # The run id and nonce end every record: encoded once, not per record.
        self._stamp = (b',"run":' + _dumps(self.run_id) + b',"nonce":' + _dumps(self.nonce)
                       + b',"prev":')

    def seal(self, rec: dict[str, Any]) -> bytes:
        return self.seal_all((rec,))

    def seal_all(self, records: Iterable[dict[str, Any]]) -> bytes:
        """The records sealed and joined, in order (a journal append's batch)."""
        out = []
        heads, stamp = self.heads, self._stamp
        for rec in records:
            tid = rec.get("task")
            if tid is None or "run" in rec:  # not a task's, or sealed before: the general way
                out.append(self._seal_dict(rec, tid))
                continue
            # The same bytes as _seal_dict (rec's fields, then run, nonce, prev), with
            # the constant tail spliced in and frame()/short_digest() inlined: this
            # runs for every task record.
            prev = heads.get(tid)
            body = (_dumps(rec, option=_NON_STR_KEYS)[:-1] + stamp
                    + (b"null}" if prev is None else b'"' + prev.encode("ascii") + b'"}'))
            digest = _sha256(body).hexdigest()
            heads[tid] = digest[:SHORT_DIGEST]
            out.append(digest.encode("ascii") + b" " + body + b"\n")
        return b"".join(out)

    def _seal_dict(self, rec: dict[str, Any], tid: str | None) -> bytes:
        rec["run"] = self.run_id
        rec["nonce"] = self.nonce
        if tid is None:
            return frame(rec)
        rec["prev"] = self.heads.get(tid)
        framed = frame(rec)
        self.heads[tid] = short_digest(framed)
        return framed
