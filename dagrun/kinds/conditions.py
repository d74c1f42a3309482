"""Conditions (`when = "mod:predicate"`): the predicate runs in the worker,
before the task's callable, with those of the task's inputs and kwargs whose
names it declares. False: the task is skipped ("condition false") and the
attempt is not counted; an exception is the attempt's failure."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

from dagrun.errors import SpecError
from dagrun.spec.model import CALL


def parse_when(tdoc: Mapping[str, Any], ctx: str) -> str | None:
    value = tdoc.get("when")
    if value is None:
        return None
    if not isinstance(value, str) or not CALL.fullmatch(value):
        raise SpecError(f"{ctx}: 'when' must name a predicate like \"package.module:function\", "
                        f"got {value!r}")
    return value


def _wanted(fn: Callable[..., Any]) -> tuple[str, ...] | None:
    """The argument names the predicate declares; None: it takes **kwargs (all)."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return ()
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return None
    return tuple(n for n, p in params.items()
                 if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))


def holds(when: str, kwargs: Mapping[str, Any], cache: dict[str, Any],
          resolve: Callable[[str], Callable[..., Any]]) -> bool:
    """Worker side: call the predicate; its exceptions propagate (a failure)."""
    key = "when:" + when
    entry = cache.get(key)
    if entry is None:
        fn = resolve(when)
        entry = cache[key] = (fn, _wanted(fn))
    fn, names = entry
    args = dict(kwargs) if names is None else {n: kwargs[n] for n in names if n in kwargs}
    return bool(fn(**args))


def check(tasks: Any, where: str, resolve: Callable[[str], Callable[..., Any]]) -> None:
    """validate: every predicate imports and asks only for what its task has."""
    for t in tasks:
        if t.when is None:
            continue
        ctx = f"{where}: task {t.id!r}: 'when'"
        try:
            fn = resolve(t.when)
        except ModuleNotFoundError as exc:
            raise SpecError(f"{ctx}: cannot import {t.when!r}: no module named "
                            f"{exc.name!r}") from None
        except AttributeError:
            mod, _, attr = t.when.partition(":")
            raise SpecError(f"{ctx}: module {mod!r} has no attribute {attr!r}") from None
        except (Exception, SystemExit) as exc:
            raise SpecError(f"{ctx}: importing {t.when!r} failed: "
                            f"{type(exc).__name__}: {exc}") from None
        try:
            params = inspect.signature(fn).parameters
        except (TypeError, ValueError):
            continue
        have = {*t.inputs, *t.kwargs}
        for name, p in params.items():
            if p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL) or p.default is not p.empty:
                continue
            if p.kind is p.POSITIONAL_ONLY or name not in have:
                given = ", ".join(sorted(have)) or "none"
                raise SpecError(f"{ctx}: predicate {t.when} has parameter {name!r}, which "
                                f"the task does not have (its inputs and kwargs: {given})")
