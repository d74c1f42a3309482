"""A task's cache key: a digest of its parts, each kept so that a later look
can say which one changed.

    code     the `call` (and `when`) and the source of the callable's module
    kwargs   its resolved kwargs (after ${params...}: a param changes only the
             tasks that use it)
    inputs   the outputs its `inputs` pass it
    files    the content of its `files_in` (globs relative to the spec's folder),
             and the list of its `files_out`
    version  `cache.version`

A module is read and hashed once per run, a file once per run unless its
size, mtime or inode changed since (an upstream may write it during the run).
Only the callable's own module counts, not what it imports: bump `version`
after changing a helper module.
"""

from __future__ import annotations

import glob
import hashlib
import importlib.util
import inspect
import os
import sys
from collections.abc import Iterable, Mapping
from typing import Any

import orjson

PARTS = ("code", "kwargs", "inputs", "files", "version")
# What a dry run or a miss says for the first part that differs.
REASONS = {"code": "code changed", "kwargs": "kwargs changed", "inputs": "input changed",
           "files": "file changed", "version": "version changed"}


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def value_digest(value: Any) -> str:
    """Of a JSON value, independent of key order."""
    data = orjson.dumps(value, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)
    if len(data) > _MEMO_MAX_BYTES:
        return digest(data)
    found = _memo.get(data)
    if found is None:
        if len(_memo) >= _MEMO_ENTRIES:
            _memo.clear()
        found = _memo[data] = digest(data)
    return found


# Small values ({} kwargs, no inputs, a null output) repeat across thousands of
# tasks: their digests are remembered (bounded: 64k entries of <= 256 bytes).
_MEMO_MAX_BYTES = 256
_MEMO_ENTRIES = 65536
_memo: dict[bytes, str] = {}


def key_of(parts: Mapping[str, str]) -> str:
    # Spelled out (the same text as "\n".join(f"{p}={parts[p]}" for p in PARTS)):
    # once per cached task in a run, where a generator costs a tenth of a run.
    g = parts.get
    return digest(f"code={g('code', '')}\nkwargs={g('kwargs', '')}\ninputs={g('inputs', '')}"
                  f"\nfiles={g('files', '')}\nversion={g('version', '')}".encode())


class Hasher:
    """Module and file digests, memoised for the run."""

    def __init__(self, base_dir: str | None) -> None:
        self.base = base_dir or os.getcwd()
        self._modules: dict[str, str] = {}
        self._files: dict[str, tuple[tuple[int, int, int], str]] = {}
        self._code: dict[tuple[str, str | None], str] = {}

    def module(self, name: str) -> str:
        found = self._modules.get(name)
        if found is None:
            found = self._modules[name] = _module_digest(name)
        return found

    def file(self, path: str) -> str | None:
        """The content digest of a file or of a folder's tree; None if missing."""
        try:
            st = os.stat(path)
        except OSError:
            return None
        if os.path.isdir(path):
            return self._tree(path)
        if not os.path.isfile(path):
            return None
        ident = (st.st_ino, st.st_mtime_ns, st.st_size)
        known = self._files.get(path)
        if known is not None and known[0] == ident:
            return known[1]
        h = hashlib.sha256()
        try:
            with open(path, "rb") as fh:
                while chunk := fh.read(1 << 20):
                    h.update(chunk)
        except OSError:
            return None
        self._files[path] = (ident, h.hexdigest())
        return h.hexdigest()

    def _tree(self, top: str) -> str:
        """A folder named in files_in/files_out: what a task reads or writes is
        the files under it, so an edit or a new file anywhere inside counts."""
        found = []
        for root, dirs, names in os.walk(top):
            dirs.sort()
            for name in sorted(names):
                full = os.path.join(root, name)
                found.append((os.path.relpath(full, top), self.file(full)))
        return value_digest(found)

    def expand(self, pattern: str) -> list[str]:
        """Paths (relative to the spec's folder, as written) a glob or path names."""
        if not glob.has_magic(pattern) or os.path.lexists(os.path.join(self.base, pattern)):
            return [pattern]  # a file named like a glob (`report[1].csv`) is itself
        return sorted(glob.glob(pattern, root_dir=self.base, recursive=True))

    def files(self, patterns: Iterable[str]) -> dict[str, str | None]:
        """path -> digest (None: missing) of every file the patterns name."""
        out: dict[str, str | None] = {}
        for pattern in patterns:
            for rel in self.expand(pattern):
                if rel not in out:
                    out[rel] = self.file(os.path.join(self.base, rel))
        return out

    def parts(self, t: Any, inputs: Mapping[str, Any]) -> dict[str, str]:
        code = self._code.get((t.call, t.when))
        if code is None:
            module = t.call.split(":", 1)[0]
            text = f"{t.call}\n{t.when or ''}\n{self.module(module)}"
            defining = _defining_module(t.call)
            if defining is not None and defining != module:
                # `call` names a re-export: the code that runs is in another module.
                text += f"\n{defining}\n{self.module(defining)}"
            code = self._code[t.call, t.when] = digest(text.encode())
        files_part = _NO_FILES
        if t.files_in or t.files_out:
            files = {p: self.files([p]) for p in t.files_in}
            # The declared outputs too: a new one must be made (and checked) once.
            files_part = value_digest([files, list(t.files_out)] if t.files_out else files)
        return {"code": code, "kwargs": value_digest(dict(t.kwargs)),
                "inputs": value_digest(dict(inputs)), "files": files_part,
                "version": t.cache.version if t.cache is not None else ""}


_NO_FILES = value_digest({})


def _defining_module(call: str) -> str | None:
    """The module the callable is written in (its __module__), if the driver
    has imported it (it checks every callable before a run)."""
    module, _, attr_path = call.partition(":")
    obj: Any = sys.modules.get(module)
    try:
        for part in attr_path.split("."):
            obj = getattr(obj, part)
        obj = inspect.unwrap(obj)
    except (AttributeError, ValueError):
        return None
    name = getattr(obj, "__module__", None)
    return name if isinstance(name, str) else None


def _module_digest(name: str) -> str:
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        spec = None
    origin = getattr(spec, "origin", None)
    if origin and os.path.isfile(origin):
        try:
            with open(origin, "rb") as fh:
                return digest(fh.read())
        except OSError:
            pass
    # A built-in or frozen module: its code changes with the interpreter.
    return digest(f"{name}@{sys.version}".encode())


def changed_part(parts: Mapping[str, str], old: Mapping[str, str]) -> str | None:
    """The reason for the first part that differs from an entry's, None if none."""
    for p in PARTS:
        if parts.get(p) != old.get(p):
            return REASONS[p]
    return None
