"""Loops: `repeat = { until = "mod:predicate", max_iterations = N, delay = "0s",
fail_on_max = false }` re-runs a task.

Each iteration is an attempt on a worker. The worker passes `iteration`
(0-based) and `previous` (the last iteration's output, or None) to the callable
if it declares them, then calls the predicate on the output right there (never
in the parent) and sends its verdict back with the output. Every finished
iteration is a journal record carrying `iterations` and its output, so a
resume goes on from the last finished iteration. A finished iteration gives the
next one a fresh retry budget; a failed one is retried per `retries`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dagrun.durations import parse_duration
from dagrun.errors import SpecError
from dagrun.model import AttemptResult, TaskError, TaskState, TaskStatus
from dagrun.spec.model import CALL

if TYPE_CHECKING:
    from dagrun.scheduler import Scheduler
    from dagrun.spec.model import TaskSpec

KEYS = ("until", "max_iterations", "delay", "fail_on_max")
SUPPLIED = ("iteration", "previous")  # given by dagrun, not by the spec
MAX_ITERATIONS = 10**9


@dataclass(frozen=True, slots=True)
class RepeatSpec:
    max_iterations: int
    until: str | None = None
    delay: float = 0.0
    fail_on_max: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"max_iterations": self.max_iterations, "until": self.until,
                "delay": self.delay, "fail_on_max": self.fail_on_max}


def from_dict(d: dict[str, Any] | None) -> RepeatSpec | None:
    return None if d is None else RepeatSpec(**d)


def parse(value: Any, ctx: str) -> RepeatSpec | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise SpecError(f"{ctx}: 'repeat' must be a table like {{ until = \"mod:predicate\", "
                        f"max_iterations = 10 }}, got {value!r}")
    for key in value:
        if key not in KEYS:
            raise SpecError(f"{ctx}: 'repeat.{key}' is not a repeat key (use "
                            f"{', '.join(KEYS)})")
    cap = value.get("max_iterations")
    if cap is None:
        raise SpecError(f"{ctx}: 'repeat.max_iterations' is missing: a loop needs a cap")
    if isinstance(cap, bool) or not isinstance(cap, int) or not 1 <= cap <= MAX_ITERATIONS:
        raise SpecError(f"{ctx}: 'repeat.max_iterations' must be a positive integer, "
                        f"got {cap!r}")
    until = value.get("until")
    if until is not None and (not isinstance(until, str) or not CALL.fullmatch(until)):
        raise SpecError(f"{ctx}: 'repeat.until' must look like \"package.module:function\", "
                        f"got {until!r}")
    delay = 0.0
    if "delay" in value:
        try:
            delay = parse_duration(value["delay"])
        except ValueError:
            delay = -1.0
        if delay < 0:
            raise SpecError(f"{ctx}: 'repeat.delay' must be a non-negative duration (like "
                            f"\"10s\"), got {value['delay']!r}")
    fail_on_max = value.get("fail_on_max", False)
    if not isinstance(fail_on_max, bool):
        raise SpecError(f"{ctx}: 'repeat.fail_on_max' must be true or false, "
                        f"got {fail_on_max!r}")
    return RepeatSpec(cap, until, delay, fail_on_max)


# ------------------------------------------------------------ validate


def supplied(t: TaskSpec, sig: inspect.Signature) -> list[str]:
    """The names dagrun passes a loop task itself, as far as it declares them."""
    if t.repeat is None:
        return []
    return [n for n in SUPPLIED if n in sig.parameters and n not in t.kwargs
            and n not in t.inputs]


def check_predicate(t: TaskSpec, where: str, resolve: Callable[[str], Any]) -> None:
    """`validate`: the predicate imports and takes one positional argument."""
    if t.repeat is None or t.repeat.until is None:
        return
    until = t.repeat.until
    ctx = f"{where}: task {t.id!r}: 'repeat.until'"
    try:
        fn = resolve(until)
    except ModuleNotFoundError as exc:
        raise SpecError(f"{ctx}: cannot import {until!r}: no module named "
                        f"{exc.name!r}") from None
    except AttributeError:
        mod, _, attr = until.partition(":")
        raise SpecError(f"{ctx}: module {mod!r} has no attribute {attr!r}") from None
    except (Exception, SystemExit) as exc:
        raise SpecError(f"{ctx}: importing {until!r} failed: {type(exc).__name__}: "
                        f"{exc}") from None
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return
    try:
        sig.bind(None)
    except TypeError as exc:
        raise SpecError(f"{ctx}: {until}{sig} cannot take the output as its one "
                        f"positional argument: {exc}") from None


# ------------------------------------------------------------ worker side


def run_iteration(fn: Callable[..., Any], kwargs: dict[str, Any], loop: dict[str, Any],
                  resolve: Callable[[str], Any]) -> tuple[Any, bool]:
    """In the worker: one iteration, then the predicate on its output."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        params = {}  # type: ignore[assignment]
    for name in SUPPLIED:
        if name in params and name not in kwargs:
            kwargs[name] = loop[name]
    value = fn(**kwargs)
    until = loop.get("until")
    return value, bool(resolve(until)(value)) if until else False


# ------------------------------------------------------------ scheduler side


def before_dispatch(st: TaskStatus, rep: RepeatSpec) -> dict[str, Any]:
    """The loop part of the next attempt; a finished loop run again (a retry
    after fail_on_max, `dlq retry`) starts from iteration 0."""
    if st.stopped_by is not None:
        st.iterations, st.output, st.stopped_by = 0, None, None
    return {"iteration": st.iterations, "previous": st.output, "until": rep.until}


def on_result(sched: Scheduler, t: TaskSpec, st: TaskStatus, r: AttemptResult,
              requeue: list[str]) -> AttemptResult | None:
    """None: the iteration finished and the next one is on its way; otherwise
    the result for the default decision (a failure, or the loop's end)."""
    rep = t.repeat
    assert rep is not None
    if r.error is not None:
        return r  # this iteration is retried (or the task dead-lettered)
    st.iterations += 1
    if r.stop:
        st.stopped_by = "predicate"
        return r
    if st.iterations >= rep.max_iterations:
        st.stopped_by = "max_iterations"
        if rep.fail_on_max:
            return r._replace(output=None, error=TaskError(
                "LoopMaxIterations", f"'repeat.until' still false after "
                f"{rep.max_iterations} iterations (fail_on_max)", types=("LoopMaxIterations",)))
        return r
    entry = {"attempt": r.number, "started": r.started, "ended": r.ended, "error": None}
    st.history.append(entry)
    if rep.delay > 0:
        sched._transition(t.id, TaskState.RETRYING, attempt=entry, output=r.output,
                          attempts=0, error=None, retry_at=sched.wall() + rep.delay)
        sched._timer(t.id, rep.delay)
    else:
        sched._transition(t.id, TaskState.PENDING, attempt=entry, output=r.output,
                          attempts=0, error=None)
        requeue.append(t.id)
    return None


def record_fields(st: TaskStatus, rec: dict[str, Any]) -> None:
    if st.iterations or st.stopped_by is not None:
        rec["iterations"] = st.iterations
        rec["stopped_by"] = st.stopped_by
        if "output" not in rec:  # `previous` for the next iteration, after a resume
            rec["output"] = st.output


def restore(st: TaskStatus, rec: dict[str, Any]) -> None:
    if "iterations" in rec:
        st.iterations = rec["iterations"]
        st.stopped_by = rec.get("stopped_by")
        st.output = rec.get("output")


def well_formed(rec: dict[str, Any], count: Any) -> bool:
    if "iterations" not in rec:
        return True
    return count(rec["iterations"]) and rec.get("stopped_by") in (
        None, "predicate", "max_iterations")


def extras(st: TaskStatus) -> dict[str, Any]:
    if not st.iterations and st.stopped_by is None:
        return {}
    return {"iterations": st.iterations, "stopped_by": st.stopped_by}
