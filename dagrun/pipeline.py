"""Building a pipeline in Python instead of a spec file.

    from dagrun import Pipeline
    p = Pipeline("nightly", workers=4, base_dir="pipelines")  # where etl.py lives
    p.task("extract", "etl:extract", kwargs={"day": "2026-11-27"})
    p.task("clean", "etl:clean", inputs={"raw": "extract"})  # an input implies the dep
    result = p.run(state_dir=".dagrun")

Helpers after the seed's (dag-executor's `fan_out_in` and `pipeline`):
`fan_out_in` adds N parallel workers and one aggregator of their outputs;
`chain` adds stages that each depend on the previous.
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
                 params: Mapping[str, Any] | None = None, **pipeline_keys: Any) -> None:
        self.name = name
        self._pipeline: dict[str, Any] = {"name": name, **pipeline_keys}
        if workers is not None:
            self._pipeline["workers"] = workers
        self._defaults = dict(defaults or {})
        self._tasks: dict[str, dict[str, Any]] = {}
        self._breakers: dict[str, dict[str, Any]] = {}
        self._params = dict(params or {})  # [params]: name -> default
        self.base_dir = base_dir

    def task(self, task_id: str, call: str | Callable[..., Any], *,
             deps: Iterable[str] = (), inputs: Mapping[str, str | list[str]] | None = None,
             kwargs: Mapping[str, Any] | None = None, **options: Any) -> Pipeline:
        """Add a task; `call` is "module:function" or an importable function."""
        if task_id in self._tasks:
            raise SpecError(f"<pipeline {self.name}>: duplicate task id {task_id!r}")
        doc: dict[str, Any] = {"call": _call_name(call), **options}
        inputs = dict(inputs or {})
        deps = list(deps)
        for ups in inputs.values():  # an input implies the dependency
            for up in [ups] if isinstance(ups, str) else ups:
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

    def fan_out_in(self, prefix: str, count: int, worker: str | Callable[..., Any],
                   aggregator: str | Callable[..., Any], upstream: str | None = None, *,
                   index_param: str = "index", input_param: str = "data",
                   results_param: str = "results", **options: Any) -> Pipeline:
        """Tasks PREFIX_0 .. PREFIX_{count-1} calling `worker`, each with its
        index as kwarg `index_param` (and, given `upstream`, that task's output
        as input `input_param`), and PREFIX_aggregate calling `aggregator` with
        the workers' outputs, in index order, as one list: `results_param`.
        `options` (retries, timeout, ...) apply to the workers."""
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise SpecError(f"<pipeline {self.name}>: fan_out_in({prefix!r}): count must be "
                            f"an integer >= 0, got {count!r}")
        shared = dict(options.pop("kwargs", None) or {})
        workers = [f"{prefix}_{i}" for i in range(count)]
        for i, tid in enumerate(workers):
            self.task(tid, worker, inputs={input_param: upstream} if upstream else None,
                      kwargs={**shared, index_param: i}, **options)
        # A list of upstream tasks as one input: their outputs, in that order.
        return self.task(f"{prefix}_aggregate", aggregator, inputs={results_param: workers})

    def chain(self, *stages: tuple[str, str | Callable[..., Any]] | Mapping[str, Any]
              ) -> Pipeline:
        """Tasks that each depend on the previous one. A stage is (task_id, call)
        or a dict of task() arguments with "id" and "call" (e.g. {"id": "load",
        "call": "etl:load", "inputs": {"rows": "clean"}, "retries": 2})."""
        previous: str | None = None
        for stage in stages:
            if isinstance(stage, Mapping):
                opts = dict(stage)
                if "id" not in opts or "call" not in opts:
                    raise SpecError(f"<pipeline {self.name}>: chain stage {stage!r} needs "
                                    "'id' and 'call'")
                tid, call = opts.pop("id"), opts.pop("call")
            else:
                try:
                    tid, call = stage
                except (TypeError, ValueError):
                    raise SpecError(f"<pipeline {self.name}>: chain stage {stage!r}: expected "
                                    "(task_id, call) or a dict of task options") from None
                opts = {}
            deps = list(opts.pop("deps", ()))
            if previous is not None and previous not in deps:
                deps.append(previous)
            self.task(tid, call, deps=deps, **opts)
            previous = tid
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
        if self._params:
            doc["params"] = self._params
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
