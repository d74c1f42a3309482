"""The pipeline model: frozen PipelineSpec / TaskSpec / RetryPolicy / BreakerSpec.

Defaults live here, on the dataclass fields; load.py builds these from a
document, snapshot.py turns them into the run's JSON snapshot and back.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dagrun.kinds.loop import RepeatSpec
    from dagrun.kinds.sensor import SensorSpec

TASK_ID = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_DOTTED = r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*"
CALL = re.compile(rf"^{_DOTTED}:{_DOTTED}$")
DURABILITY_MODES = ("fast", "atomic", "durable")
BACKOFFS = ("fixed", "linear", "exponential")
DEFAULT_DURABILITY = "atomic"  # as cheap as fast, measured: README, Crash safety


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    retries: int = 0
    delay: float = 1.0
    backoff: str = "exponential"
    max_delay: float = 60.0
    jitter: bool = True
    retry_on: tuple[str, ...] = ()
    no_retry_on: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class TaskSpec:
    id: str
    call: str
    deps: tuple[str, ...] = ()
    inputs: Mapping[str, str] = field(default_factory=dict)  # parameter -> upstream task id
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    priority: int = 0
    timeout: float | None = None
    timeout_grace: float = 1.0
    retry: RetryPolicy = RetryPolicy()
    memory_limit: int | None = None
    breaker: str | None = None
    wait_for: tuple[str, ...] = ()  # events (kinds/events.py)
    event_timeout: float | None = None
    trigger: str = "all_success"  # kinds/triggers.py
    when: str | None = None  # a condition's predicate, kinds/conditions.py
    sensor: SensorSpec | None = None
    repeat: RepeatSpec | None = None
    map: str | None = None  # the parameter whose list the task maps over (kinds/fanout.py)
    map_allow_failures: bool = False
    # The kwargs before substitution, kept only for a task that reads a secret
    # param: the snapshot stores this instead of the resolved kwargs (params.py).
    template: Mapping[str, Any] | None = None

    def definition(self) -> dict[str, Any]:
        """What decides the task's output: a change here means the task must re-run."""
        d: dict[str, Any] = {"call": self.call, "kwargs": self.kwargs, "inputs": self.inputs,
             "deps": list(self.deps)}
        if self.when is not None:  # decides whether it has an output at all
            d["when"] = self.when
        if self.repeat is not None:
            d["repeat"] = self.repeat.to_dict()
        if self.map is not None:
            d["map"] = [self.map, self.map_allow_failures]
        return d


@dataclass(frozen=True, slots=True)
class BreakerSpec:
    name: str
    failure_threshold: int = 5
    cooldown: float = 60.0
    success_threshold: int = 1
    max_wait: float | None = None


@dataclass(frozen=True, slots=True)
class PipelineSpec:
    name: str
    tasks: Mapping[str, TaskSpec]
    workers: int | None = None  # None: the CPU count
    description: str = ""
    deadline: float | None = None
    durability: str | None = None  # None: the default mode
    max_tasks_per_worker: int | None = None
    breakers: Mapping[str, BreakerSpec] = field(default_factory=dict)
    source: str | None = None  # the spec file, if any
    base_dir: str | None = None  # made importable for the task callables
    python_path: tuple[str, ...] = ()  # absolute folders, importable after base_dir
    params: Mapping[str, Any] = field(default_factory=dict)  # [params]: name -> default
    secret_params: tuple[str, ...] = ()  # never stored with a run (params.py)
    executor: str | None = None  # executor/choice.py; None: local
