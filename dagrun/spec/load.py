"""Pipeline spec: TOML or YAML file (or a plain dict) -> frozen PipelineSpec.

All validation of the document happens here, once; every error names the file,
the task and the key at fault. Graph checks (missing deps, cycles) live in
graph.py, callable checks in callables.py. Each task's own table is parsed
by task_fields.py.
"""

from __future__ import annotations

import gc
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dagrun.errors import SpecError
from dagrun.params import PARAM_NAME, check_reference, references
from dagrun.spec.checks import (
    check_keys,
    expect_mapping,
    opt_duration,
    opt_int,
    plain,
    required_duration,
)
from dagrun.spec.model import DURABILITY_MODES, TASK_ID, BreakerSpec, PipelineSpec, TaskSpec
from dagrun.spec.task_fields import POLICY_KEYS, parse_policy, parse_task

TOP_KEYS = ("pipeline", "defaults", "tasks", "breakers", "params")
PIPELINE_KEYS = ("name", "description", "workers", "deadline", "durability",
                 "max_tasks_per_worker", "python_path", "secret_params", "executor")
BREAKER_KEYS = ("failure_threshold", "cooldown", "success_threshold", "max_wait")


def load_spec(path: str | os.PathLike[str]) -> PipelineSpec:
    """Read and validate a TOML or YAML spec file (graph checks not included)."""
    p = Path(path)
    label = str(path)
    suffix = p.suffix.lower()
    if suffix not in (".toml", ".yaml", ".yml"):
        raise SpecError(f"{label}: unknown spec format {suffix or '(no suffix)'!r}; "
                        "use a .toml, .yaml or .yml file")
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise SpecError(f"{label}: no such file") from None
    except IsADirectoryError:
        raise SpecError(f"{label}: is a directory, not a spec file") from None
    except OSError as exc:
        raise SpecError(f"{label}: cannot read: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise SpecError(f"{label}: not UTF-8 text") from None
    # The cyclic GC finds nothing to free in a parsed document (no cycles) but,
    # triggered by every ~700 new containers, rescans all of them: pausing it
    # makes loading a 100k-task spec ~1.5x faster.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        doc = _parse_toml(text, label) if suffix == ".toml" else _parse_yaml(text, label)
        return parse_document(doc, source=label, default_name=_name_from_stem(p.stem),
                              base_dir=str(p.resolve().parent))
    finally:
        if gc_was_enabled:
            gc.enable()


def _parse_toml(text: str, label: str) -> Any:
    import tomllib

    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        msg = str(exc)
        if "twice" in msg or "overwrite a value" in msg:
            msg += " (a duplicate key or task id?)"
        raise SpecError(f"{label}: invalid TOML: {msg}") from None
    except RecursionError:  # tomllib parses nested arrays and inline tables recursively
        raise SpecError(f"{label}: invalid TOML: nested too deeply") from None
    except ValueError as exc:  # e.g. an integer of more than 4300 digits
        raise SpecError(f"{label}: invalid TOML: {exc}") from None


def _parse_yaml(text: str, label: str) -> Any:
    import yaml

    from dagrun.spec.yaml_doc import load_yaml

    try:
        return load_yaml(text, label)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SpecError(f"{label}: invalid YAML: {where}{problem}") from None
    except (ValueError, OverflowError) as exc:  # "\UFFFFFFFF", a date like 2026-02-30
        raise SpecError(f"{label}: invalid YAML: {exc}") from None



def _name_from_stem(stem: str) -> str:
    """A valid pipeline name from a file name ("my etl" -> "my-etl")."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", stem).lstrip(".-")[:128]
    return name or "pipeline"


def parse_document(doc: Any, *, source: str = "<pipeline>", default_name: str = "pipeline",
                   base_dir: str | None = None) -> PipelineSpec:
    """Validate a loaded document (TOML/YAML/dict) into a PipelineSpec."""
    where = source
    if not isinstance(doc, Mapping):
        raise SpecError(f"{where}: the document must be a table/mapping with a 'tasks' section")
    # Top-level `x-...` keys are ignored, as in Docker Compose: a place for YAML anchors.
    check_keys({k: v for k, v in doc.items() if not (isinstance(k, str) and k.startswith("x-"))},
                TOP_KEYS, where, "top-level key")

    pipe = doc.get("pipeline", {})
    expect_mapping(pipe, f"{where}: 'pipeline'")
    check_keys(pipe, PIPELINE_KEYS, f"{where}: [pipeline]", "key")
    pctx = f"{where}: [pipeline]"
    name = pipe.get("name", default_name)
    if not isinstance(name, str) or not TASK_ID.fullmatch(name):
        raise SpecError(f"{pctx}: 'name' must match {TASK_ID.pattern}, got {name!r}")
    workers = opt_int(pipe, "workers", pctx, minimum=1)
    deadline = opt_duration(pipe, "deadline", pctx, positive=True)
    durability = pipe.get("durability")
    if durability is not None and durability not in DURABILITY_MODES:
        raise SpecError(f"{pctx}: 'durability' must be one of {', '.join(DURABILITY_MODES)}, "
                        f"got {durability!r}")
    max_tasks = opt_int(pipe, "max_tasks_per_worker", pctx, minimum=1)
    description = pipe.get("description", "")
    if not isinstance(description, str):
        raise SpecError(f"{pctx}: 'description' must be a string")
    python_path = _python_path(pipe, pctx, base_dir)
    executor = _executor(pipe, pctx)
    params, secret_params = _parse_params(doc.get("params", {}), pipe, where)

    breakers_doc = doc.get("breakers", {})
    expect_mapping(breakers_doc, f"{where}: 'breakers'")
    breakers = {}
    for bname, bdoc in breakers_doc.items():
        bctx = f"{where}: breaker {bname!r}"
        if not isinstance(bname, str) or not TASK_ID.fullmatch(bname):
            raise SpecError(f"{where}: breaker name {bname!r} must match {TASK_ID.pattern}")
        expect_mapping(bdoc, bctx)
        check_keys(bdoc, BREAKER_KEYS, bctx, "key")
        breakers[bname] = BreakerSpec(
            name=bname,
            failure_threshold=opt_int(bdoc, "failure_threshold", bctx, minimum=1) or 5,
            cooldown=required_duration(bdoc, "cooldown", bctx, _BREAKER_DEFAULTS.cooldown),
            success_threshold=opt_int(bdoc, "success_threshold", bctx, minimum=1) or 1,
            max_wait=opt_duration(bdoc, "max_wait", bctx),
        )

    defaults = doc.get("defaults", {})
    expect_mapping(defaults, f"{where}: 'defaults'")
    check_keys(defaults, POLICY_KEYS, f"{where}: [defaults]", "key")

    tasks_doc = doc.get("tasks")
    if tasks_doc is None:
        raise SpecError(f"{where}: no 'tasks' section: a pipeline needs at least one task")
    expect_mapping(tasks_doc, f"{where}: 'tasks'")
    if not tasks_doc:
        raise SpecError(f"{where}: 'tasks' is empty: a pipeline needs at least one task")
    tasks: dict[str, TaskSpec] = {}
    # The policy of tasks that set none of their own, parsed here so that a bad
    # value in [defaults] is reported as such, not as the first task's.
    shared = {"policy": parse_policy(defaults, breakers, f"{where}: [defaults]"),
              "params": (*params, *secret_params)}
    for tid, tdoc in tasks_doc.items():
        if not isinstance(tid, str) or not TASK_ID.fullmatch(tid):
            raise SpecError(f"{where}: task id {tid!r} is invalid: ids are 1-128 characters "
                            "of letters, digits, '_', '.', '-' and do not start with '.' or '-'")
        tasks[tid] = parse_task(tid, tdoc, defaults, breakers, where, shared)

    return PipelineSpec(
        name=name, tasks=tasks, workers=workers, description=description, deadline=deadline,
        durability=durability, max_tasks_per_worker=max_tasks, breakers=breakers,
        source=source, base_dir=base_dir, python_path=python_path,
        params=params, secret_params=secret_params, executor=executor,
    )


def _parse_params(doc: Any, pipe: Mapping[str, Any],
                  where: str) -> tuple[dict[str, Any], tuple[str, ...]]:
    expect_mapping(doc, f"{where}: 'params'")
    params = {}
    for name, value in doc.items():
        ctx = f"{where}: [params] {name!r}"
        if not isinstance(name, str) or not PARAM_NAME.fullmatch(name):
            raise SpecError(f"{where}: [params] name {name!r} must be a name of letters, "
                            "digits and '_' (not starting with a digit)")
        params[name] = plain(value, ctx, 1)
        for ref in references(params[name]):
            check_reference(ref, (), ctx, builtins_only=True)
    secrets = pipe.get("secret_params", [])
    ctx = f"{where}: [pipeline] 'secret_params'"
    if not isinstance(secrets, list) or not all(
            isinstance(s, str) and PARAM_NAME.fullmatch(s) for s in secrets):
        raise SpecError(f"{ctx} must be a list of parameter names, got {secrets!r}")
    for s in secrets:
        if s in params:
            raise SpecError(f"{ctx}: {s!r} has a default in [params]; a secret param takes "
                            f"its value only from --param or DAGRUN_PARAM_{s}")
    return params, tuple(dict.fromkeys(secrets))


def _executor(pipe: Mapping[str, Any], ctx: str) -> str | None:
    from dagrun.executor import choice

    value = pipe.get("executor")
    if value is None:
        return None
    parsed = choice.parse(value)
    if parsed is None:
        raise SpecError(f"{ctx}: 'executor' must be {choice.FORMS}, got {value!r}")
    return parsed


def _python_path(pipe: Mapping[str, Any], ctx: str, base_dir: str | None) -> tuple[str, ...]:
    """Folders relative to the spec's folder (or, without a file, the current one)."""
    value = pipe.get("python_path", [])
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise SpecError(f"{ctx}: 'python_path' must be a list of folders, got {value!r}")
    base = base_dir or os.getcwd()
    try:
        return tuple(os.path.normpath(os.path.join(base, v)) for v in value)
    except ValueError as exc:  # e.g. a NUL byte
        raise SpecError(f"{ctx}: 'python_path': {exc}") from None



# Slotted dataclasses keep no class-level defaults: read them off an instance.
_BREAKER_DEFAULTS = BreakerSpec(name="defaults")
