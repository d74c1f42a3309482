"""Building a pipeline in Python instead of a spec file.

    from dagrun import Pipeline
    p = Pipeline("nightly", workers=4, base_dir="pipelines")  # where etl.py lives
    p.task("extract", "etl:extract", kwargs={"day": "2026-11-27"})
    p.task("clean", "etl:clean", inputs={"raw": "extract"})  # an input implies the dep
    result = p.run(state_dir=".dagrun")
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from dagrun.errors import SpecError
from dagrun.model import RunResult
from dagrun.spec import PipelineSpec, parse_document


class Pipeline:
    def __init__(self, name: str = "pipeline", *, workers: int | None = None,
                 defaults: Mapping[str, Any] | None = None, base_dir: str | None = None,
                 **pipeline_keys: Any) -> None:
        self.name = name
        self._pipeline: dict[str, Any] = {"name": name, **pipeline_keys}
        if workers is not None:
            self._pipeline["workers"] = workers
        self._defaults = dict(defaults or {})
        self._tasks: dict[str, dict[str, Any]] = {}
        self._breakers: dict[str, dict[str, Any]] = {}
        self.base_dir = base_dir

    def task(self, task_id: str, call: str | Callable[..., Any], *,
             deps: Iterable[str] = (), inputs: Mapping[str, str] | None = None,
             kwargs: Mapping[str, Any] | None = None, **options: Any) -> Pipeline:
        """Add a task; `call` is "module:function" or an importable function."""
        if task_id in self._tasks:
            raise SpecError(f"<pipeline {self.name}>: duplicate task id {task_id!r}")
        doc: dict[str, Any] = {"call": _call_name(call), **options}
        inputs = dict(inputs or {})
        deps = list(deps)
        for up in inputs.values():  # an input implies the dependency
            if up not in deps:
                deps.append(up)
        if deps:
            doc["deps"] = deps
        if inputs:
            doc["inputs"] = inputs
        if kwargs:
            doc["kwargs"] = dict(kwargs)
        self._tasks[task_id] = doc
        return self

    def breaker(self, name: str, **options: Any) -> Pipeline:
        self._breakers[name] = options
        return self

    def to_spec(self) -> PipelineSpec:
        doc: dict[str, Any] = {"pipeline": self._pipeline, "tasks": self._tasks}
        if self._defaults:
            doc["defaults"] = self._defaults
        if self._breakers:
            doc["breakers"] = self._breakers
        return parse_document(doc, source=f"<pipeline {self.name}>", default_name=self.name,
                              base_dir=self.base_dir)

    def run(self, **kwargs: Any) -> RunResult:
        from dagrun.api import run

        return run(self, **kwargs)


def _call_name(call: str | Callable[..., Any]) -> str:
    if isinstance(call, str):
        return call
    module = getattr(call, "__module__", None)
    qualname = getattr(call, "__qualname__", None)
    if not module or not qualname or "<locals>" in qualname or "<lambda>" in qualname:
        raise SpecError(f"{call!r} is not importable by name: pass a module-level function "
                        "or a \"module:function\" string")
    return f"{module}:{qualname}"
