"""Run parameters: `[params]` defaults, `--param`, `DAGRUN_PARAM_<name>`, and the
`${...}` substitution in task kwargs.

Nothing is evaluated: a `${...}` names a parameter or a built-in, nothing else.
Substitution happens once, when a run is created; the run's snapshot holds the
resolved kwargs. A task whose kwargs name a secret param keeps its template
instead (TaskSpec.template) and is resolved again each time the run is driven,
with the secret read from --param or the environment: its value is never
written to the state dir.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping
from operator import attrgetter
from typing import Any

import orjson

from dagrun.errors import SpecError, UsageError

PARAM_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
BUILTINS = ("run.id", "run.date", "pipeline.name")
ENV_PREFIX = "DAGRUN_PARAM_"
# `$${` is a literal `${` (for a shell snippet in kwargs); otherwise every
# `${...}` must be a known reference.
_REF = re.compile(r"\$\$\{|\$\{([^}]*)\}")


def references(value: Any) -> Iterable[str]:
    """Every `${...}` reference in a kwargs value, at any depth."""
    if isinstance(value, str):
        if "${" in value:
            for m in _REF.finditer(value):
                if m.group(1) is not None:
                    yield m.group(1)
    elif isinstance(value, dict):
        for v in value.values():
            yield from references(v)
    elif isinstance(value, list):
        for v in value:
            yield from references(v)


def _templated(value: Any) -> bool:
    """Whether substitute() changes anything: a `${...}` or an escaped `$${`."""
    if isinstance(value, str):
        return "${" in value
    if isinstance(value, Mapping):
        return any(_templated(v) for v in value.values())
    if isinstance(value, list):
        return any(_templated(v) for v in value)
    return False


def check_reference(ref: str, declared: Iterable[str], ctx: str, *,
                    builtins_only: bool = False) -> str | None:
    """The param name a reference reads (None for a built-in); SpecError if unknown."""
    import difflib

    if ref in BUILTINS:
        return None
    names = list(declared)
    if ref.startswith("params.") and not builtins_only:
        name = ref[len("params."):]
        if name in names:
            return name
        close = difflib.get_close_matches(name, names, n=1)
        hint = f" (did you mean 'params.{close[0]}'?)" if close else ""
        raise SpecError(f"{ctx}: unknown parameter {name!r} in '${{{ref}}}'{hint}; declare it "
                        "in [params]")
    known = BUILTINS if builtins_only else (*BUILTINS, *(f"params.{n}" for n in names))
    close = difflib.get_close_matches(ref, list(known), n=1)
    hint = f" (did you mean '${{{close[0]}}}'?)" if close else ""
    allowed = "run.id, run.date, pipeline.name" + ("" if builtins_only else ", params.NAME")
    raise SpecError(f"{ctx}: unknown reference '${{{ref}}}'{hint}: only {allowed} can be "
                    "substituted (write $${ for a literal ${)")


def parse_value(text: str) -> Any:
    """A --param or DAGRUN_PARAM_ value: JSON when it parses as JSON, else the string."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return text


def parse_cli(items: Iterable[str]) -> dict[str, Any]:
    """`--param KEY=VALUE` options (repeatable; a later one wins) -> {key: value}."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not PARAM_NAME.fullmatch(key):
            raise UsageError(f"--param {item!r}: expected KEY=VALUE, KEY a parameter name")
        out[key] = parse_value(text)
    return out


def resolve(spec: Any, given: Mapping[str, Any] | None, env: Mapping[str, str], *,
            stored: Mapping[str, Any] | None = None, run_date: str = "",
            run_id: str = "", require_secrets: bool = True,
            ctx: str | None = None) -> dict[str, Any]:
    """Every declared param's value: `given` (--param) > `stored` (a resumed run's)
    > environment > [params] default. A given name not declared is an error; a
    secret without a value is an error when `require_secrets`."""
    where = ctx or spec.source or f"<pipeline {spec.name}>"
    declared = {**spec.params, **{n: _MISSING for n in spec.secret_params}}
    import difflib

    for name in given or {}:
        if name not in declared:
            close = difflib.get_close_matches(name, list(declared), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise SpecError(f"{where}: --param {name!r} is not declared in [params]{hint}")
    values: dict[str, Any] = {}
    for name, default in declared.items():
        if given and name in given:
            value = given[name]
        elif stored is not None and name in stored:
            value = stored[name]
        elif ENV_PREFIX + name in env:
            value = parse_value(env[ENV_PREFIX + name])
        elif default is _MISSING:
            if require_secrets:
                raise UsageError(f"{where}: secret param {name!r} has no value: pass --param "
                                 f"{name}=... or set {ENV_PREFIX}{name} (it is never stored "
                                 "with the run)")
            continue
        else:
            # A default may name the built-ins (day = "${run.date}").
            value = substitute(default, {}, _builtins(spec, run_id, run_date))
        values[name] = _plain(value, f"{where}: param {name!r}")
    return values


def _plain(value: Any, ctx: str) -> Any:
    """A value as the run's snapshot can hold it: JSON data, not nested too deep."""
    if _depth(value) > MAX_DEPTH:
        raise UsageError(f"{ctx}: nested more than {MAX_DEPTH} levels deep")
    try:
        return orjson.loads(orjson.dumps(value))
    except (TypeError, orjson.JSONEncodeError) as exc:
        raise UsageError(f"{ctx}: not a JSON value: {exc}") from None


def _depth(value: Any, level: int = 1) -> int:
    if level > MAX_DEPTH:
        return level
    if isinstance(value, dict):
        return max((_depth(v, level + 1) for v in value.values()), default=level)
    if isinstance(value, (list, tuple)):
        return max((_depth(v, level + 1) for v in value), default=level)
    return level


MAX_DEPTH = 100  # as kwargs in a spec (spec/checks.py MAX_KWARGS_DEPTH)


def _builtins(spec: Any, run_id: str, run_date: str) -> dict[str, Any]:
    return {"run.id": run_id, "run.date": run_date, "pipeline.name": spec.name}


def substitute(value: Any, params: Mapping[str, Any], builtins: Mapping[str, Any]) -> Any:
    """`value` with its references replaced: a string that is exactly one
    reference becomes the value itself (any JSON type); inside a longer string
    the value is interpolated (a string as is, anything else as JSON)."""
    if isinstance(value, str):
        if "${" not in value:
            return value
        m = _REF.fullmatch(value)
        if m is not None and m.group(1) is not None:
            return _lookup(m.group(1), params, builtins)
        return _REF.sub(lambda mm: _text(mm, params, builtins), value)
    if isinstance(value, dict):
        return {k: substitute(v, params, builtins) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute(v, params, builtins) for v in value]
    return value


def _lookup(ref: str, params: Mapping[str, Any], builtins: Mapping[str, Any]) -> Any:
    if ref in builtins:
        return builtins[ref]
    return params[ref[len("params."):]]


def _text(m: re.Match[str], params: Mapping[str, Any], builtins: Mapping[str, Any]) -> str:
    if m.group(1) is None:
        return "${"
    value = _lookup(m.group(1), params, builtins)
    return value if isinstance(value, str) else orjson.dumps(value).decode()


def uses_secret(kwargs: Mapping[str, Any], secrets: Iterable[str]) -> bool:
    names = {f"params.{s}" for s in secrets}
    return any(ref in names for ref in references(dict(kwargs)))


def bind(spec: Any, values: Mapping[str, Any], *, run_id: str, run_date: str,
         fresh: bool) -> Any:
    """The spec with its tasks' kwargs resolved: all of them for a `fresh` spec
    (a new run's), else only those kept as templates (a snapshot's). Tasks that
    read a secret keep their template (the snapshot stores it instead)."""
    all_tasks = spec.tasks.values()
    if not any(map(attrgetter("kwargs"), all_tasks)) and not any(
            map(attrgetter("template"), all_tasks)):
        return spec  # no task has kwargs: nothing to bind (C-level scans: per task)
    builtins = _builtins(spec, run_id, run_date)
    per_run = _per_run(spec, values, builtins)
    tasks = {}
    for tid, t in spec.tasks.items():
        if t.template is not None:
            template = t.template
        elif fresh and t.kwargs and _templated(t.kwargs):
            template = t.kwargs
        else:
            tasks[tid] = t
            continue
        kwargs = substitute(dict(template), values, builtins)
        keep = dict(template) if uses_secret(template, spec.secret_params) else None
        t = dataclasses.replace(t, kwargs=kwargs, template=keep)
        if t.cache is not None:
            ref = next((r for r in references(dict(template)) if r in per_run), None)
            if ref is not None:
                t = dataclasses.replace(t, cache=dataclasses.replace(
                    t.cache, never=f"uses {per_run[ref]}: never cached"))
        tasks[tid] = t
    return dataclasses.replace(spec, tasks=tasks)


def _per_run(spec: Any, values: Mapping[str, Any],
             builtins: Mapping[str, Any]) -> dict[str, str]:
    """The references whose value is new every run, and how to name them: a
    task using one would get a new cache key every run (cache/plug.cacheable).
    Decided on the templates, not the values: a run id is any string."""
    out = {"run.id": "${run.id}"}
    for name, default in spec.params.items():
        if "run.id" in set(references(default)) and name in values and \
                values[name] == substitute(default, {}, builtins):
            out[f"params.{name}"] = f"${{params.{name}}} (its default is ${{run.id}})"
    return out


def for_resume(spec: Any, settings: Mapping[str, Any], given: Mapping[str, Any] | None,
               env: Mapping[str, str], run_id: str, *, fresh: bool) -> tuple[Any, dict[str, Any]]:
    """A resumed run's spec bound again (the secrets from --param or the
    environment, the rest as stored), and its params settings. `fresh`: an
    edited spec (resume --spec), whose kwargs are all templates."""
    stored = settings.get("params") or {}
    for name in given or {}:
        if name not in spec.secret_params and name in spec.params:
            raise UsageError(f"--param {name!r}: run {run_id!r} keeps the value it was started "
                             f"with ({name}={orjson.dumps(stored.get(name)).decode()}); only "
                             "secret params are given again on resume (start a new run for "
                             "another value)")
    run_date = settings.get("run_date") or ""
    values = resolve(spec, given, env, stored=stored, run_id=run_id, run_date=run_date,
                     ctx=f"run {run_id!r}")
    bound = bind(spec, values, run_id=run_id, run_date=run_date, fresh=fresh)
    return bound, settings_for(spec, values, run_date)


def settings_for(spec: Any, values: Mapping[str, Any], run_date: str) -> dict[str, Any]:
    """What run.json stores: every value but the secrets', and the run's date."""
    return {"params": {k: v for k, v in values.items() if k not in spec.secret_params},
            "run_date": run_date}


_MISSING: Any = object()
