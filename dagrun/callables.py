"""Resolving "package.module:function" to a function, with the spec's folder
importable, and checking that a task's kwargs and inputs fit its signature."""

from __future__ import annotations

import difflib
import importlib
import inspect
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from dagrun.errors import SpecError
from dagrun.kinds import loop as loop_kind
from dagrun.spec import PipelineSpec, TaskSpec

# Arguments dagrun itself passes when the callable declares them (kinds/state.py).
SUPPLIED = ("state",)


def add_import_path(base_dir: str | None) -> None:
    if base_dir and base_dir not in sys.path:
        sys.path.insert(0, base_dir)


def import_dirs(spec: PipelineSpec) -> list[str]:
    """The folders a spec makes importable, first searched first."""
    return [d for d in (spec.base_dir, *spec.python_path) if d]


def add_import_paths(spec: PipelineSpec) -> None:
    """Put the spec's folder and its python_path in front of sys.path; forked
    workers inherit it."""
    for d in reversed(import_dirs(spec)):
        add_import_path(d)


def resolve(call: str) -> Callable[..., Any]:
    """Import the callable; raises ImportError/AttributeError/TypeError for the caller."""
    module_name, _, attr_path = call.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in attr_path.split("."):
        obj = getattr(obj, part)
    if not callable(obj):
        raise TypeError(f"{call} is not callable")
    return obj


def check_callables(spec: PipelineSpec) -> None:
    """Import every task's callable and check its signature; run nothing."""
    with _stdout_to_stderr():
        _check_callables(spec)


@contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """A user module that prints while imported must not pollute dagrun's stdout
    (it carries only --json output)."""
    try:
        if sys.stdout is not None:  # None: started with stdout closed (`>&-`)
            sys.stdout.flush()
        saved = os.dup(1)
    except (OSError, ValueError):
        yield
        return
    try:
        os.dup2(2, 1)
        yield
    finally:
        try:
            if sys.stdout is not None:
                sys.stdout.flush()
        except (OSError, ValueError):
            pass
        os.dup2(saved, 1)
        os.close(saved)


def _check_callables(spec: PipelineSpec) -> None:
    add_import_paths(spec)
    where = spec.source or "<pipeline>"
    cache: dict[str, Callable[..., Any]] = {}
    checked: set[tuple[str, tuple[str, ...], tuple[str, ...], bool]] = set()
    for t in spec.tasks.values():
        key = (t.call, tuple(t.kwargs), tuple(t.inputs), t.repeat is not None)
        if key in checked:  # same callable, same argument names: same verdict
            continue
        checked.add(key)
        fn = cache.get(t.call)
        if fn is None:
            try:
                fn = cache[t.call] = resolve(t.call)
            except ModuleNotFoundError as exc:
                raise SpecError(f"{where}: task {t.id!r}: cannot import {t.call!r}: "
                                f"no module named {exc.name!r}{_searched(spec)}") from None
            except AttributeError:
                mod, _, attr = t.call.partition(":")
                raise SpecError(f"{where}: task {t.id!r}: module {mod!r} has no "
                                f"attribute {attr!r}") from None
            except (Exception, SystemExit) as exc:  # the user's module failed to import
                raise SpecError(f"{where}: task {t.id!r}: importing {t.call!r} failed: "
                                f"{type(exc).__name__}: {exc}") from None
        _check_signature(t, fn, where)
    from dagrun.kinds import conditions  # after the calls: their errors come first

    conditions.check(spec.tasks.values(), where, resolve)
    for t in spec.tasks.values():
        if t.repeat is not None:
            loop_kind.check_predicate(t, where, resolve)


def _check_signature(t: TaskSpec, fn: Callable[..., Any], where: str) -> None:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return  # builtins without a signature: nothing to check
    names = [*t.kwargs, *t.inputs, *loop_kind.supplied(t, sig)]
    supplied = [n for n in SUPPLIED if n in sig.parameters and n not in names]
    try:
        sig.bind(**{n: None for n in [*names, *supplied]})
    except TypeError as exc:
        raise SpecError(f"{where}: task {t.id!r}: arguments do not fit {t.call}{sig}: "
                        f"{exc}{_closest_parameter(names, sig)}") from None


def _closest_parameter(names: list[str], sig: inspect.Signature) -> str:
    """A did-you-mean for the first argument the function has no parameter for."""
    params = sig.parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return ""
    free = [n for n, p in params.items() if n not in names
            and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    for name in names:
        if name not in params:
            close = difflib.get_close_matches(name, free, n=1)
            return f" (did you mean {close[0]!r} for {name!r}?)" if close else ""
    return ""


def _searched(spec: PipelineSpec) -> str:
    dirs = import_dirs(spec)
    where = f"the folders {', '.join(dirs)} and " if dirs else ""
    hint = "" if spec.python_path else "; add folders with python_path under [pipeline]"
    return f" (searched {where}the installed packages{hint})"
