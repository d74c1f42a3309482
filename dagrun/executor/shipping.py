"""Code shipping: the pipeline's own modules, zipped for a cluster's workers.

Workers of a cluster have dagrun and the tasks' third-party libraries
installed, but not the pipeline's own code. The modules the spec names (task
`call`s, `when` and `repeat.until` predicates), the modules those import in
turn, each with its whole top-level package, are zipped when they are found in
the spec's folder or a `python_path` folder, with paths relative to that
folder, so that a zip on a worker's sys.path (Dask's `Client.upload_file`)
imports them as here. Nothing installed is shipped: a file under a
virtualenv, site-packages, sys.prefix or the state dir never is, nor dagrun.
"""

from __future__ import annotations

import ast
import hashlib
import os
import site
import sys
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

# Never shipped: the workers have their own dagrun, which a copy would shadow.
NEVER = frozenset({"dagrun", "__future__"})
_SKIP_DIRS = frozenset({"__pycache__", ".git", ".hg", ".svn", "node_modules"})


def named_modules(spec: Any) -> list[str]:
    """The modules of every callable the spec names, in task order."""
    found: dict[str, None] = {}
    for t in spec.tasks.values():
        for call in (t.call, t.when, t.repeat.until if t.repeat is not None else None):
            if call:
                found[call.partition(":")[0]] = None
    return list(found)


def installed_roots() -> list[Path]:
    """Where installed code lives: never shipped from there."""
    roots = {sys.prefix, sys.base_prefix, sys.exec_prefix, *site.getsitepackages()}
    user = site.getusersitepackages() if site.ENABLE_USER_SITE else None
    if user:
        roots.add(user)
    return [Path(r).resolve() for r in roots if r]


def _forbidden(path: Path, excluded: list[Path]) -> bool:
    if any(part in ("site-packages", "dist-packages") for part in path.parts):
        return True
    if any(path == root or root in path.parents for root in excluded):
        return True
    # A virtualenv's root holds pyvenv.cfg; anything inside one is installed code.
    return any((parent / "pyvenv.cfg").is_file() for parent in path.parents)


def select(spec: Any, exclude: Iterable[str | os.PathLike[str]] = ()) -> dict[str, Path]:
    """Archive name -> file, for every file to ship (empty: nothing to ship)."""
    excluded = [Path(e).resolve() for e in exclude] + installed_roots()
    # The folders the spec makes importable (callables.import_dirs), in order.
    roots = [Path(d).resolve() for d in (spec.base_dir, *spec.python_path) if d]
    roots = [r for r in dict.fromkeys(roots) if r.is_dir() and not _forbidden(r, excluded)]
    files: dict[str, Path] = {}
    seen: set[str] = set()
    todo = [m.split(".")[0] for m in named_modules(spec)]
    while todo:
        top = todo.pop()
        if top in seen or top in NEVER:
            continue
        seen.add(top)
        found = _locate(top, roots)
        if found is None or _forbidden(found[1].resolve(), excluded):
            continue  # installed, stdlib or built in: the workers have it
        root, path = found
        for file in _files(path, excluded):
            arcname = file.relative_to(root).as_posix()
            files.setdefault(arcname, file)
            if file.suffix == ".py":
                todo.extend(_imports(file))
    return files


def _locate(top: str, roots: list[Path]) -> tuple[Path, Path] | None:
    """The first root (in import order) holding module or package `top`."""
    for root in roots:
        for candidate in (root / top, root / f"{top}.py"):
            if (candidate.is_dir() and any(candidate.glob("*.py"))) or candidate.is_file():
                return root, candidate
    return None


def _files(path: Path, excluded: list[Path]) -> Iterator[Path]:
    if path.is_file():
        yield path
        return
    for dirpath, dirnames, filenames in os.walk(path):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS
                             and not d.startswith(".")
                             and not _forbidden((here / d).resolve(), excluded)
                             and not (here / d / "pyvenv.cfg").exists())
        for name in sorted(filenames):
            file = here / name
            if name.endswith((".pyc", ".pyo")) or name.startswith(".") or not file.is_file():
                continue
            yield file


def _imports(file: Path) -> list[str]:
    """Top-level names of the absolute imports in a module (relative ones stay
    inside its package, which is shipped whole)."""
    try:
        tree = ast.parse(file.read_bytes(), str(file))
    except (SyntaxError, ValueError, OSError):
        return []
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module.split(".")[0])
    return names


def build_zip(spec: Any, folder: str | os.PathLike[str],
              exclude: Iterable[str | os.PathLike[str]] = ()) -> str | None:
    """Zip the selected files into `folder`; the zip's path, or None when there
    is nothing to ship. The name carries a hash of the contents, so that workers
    that keep uploaded files see new code under a new name."""
    files = select(spec, exclude)
    if not files:
        return None
    digest = hashlib.sha256()
    for arcname, file in sorted(files.items()):
        digest.update(arcname.encode() + b"\0" + file.read_bytes() + b"\0")
    target = Path(folder) / f"dagrun-code-{digest.hexdigest()[:16]}.zip"
    if target.exists():
        return str(target)
    tmp = target.with_suffix(f".{os.getpid()}.tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for arcname, file in sorted(files.items()):
            zf.write(file, arcname)
    os.replace(tmp, target)
    return str(target)
