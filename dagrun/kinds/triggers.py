"""Trigger rules: whether a task whose upstreams are all final runs or is skipped.

Airflow's meanings, evaluated once every upstream is final (completed,
dead_lettered or skipped), never earlier:

    all_success  every upstream completed (the default)
    all_done     always runs
    one_failed   some upstream failed: dead-lettered, or skipped because of one
    none_failed  no upstream failed (completed or skipped by a condition/rule)
    one_success  some upstream completed

A skip records its cause. Caused by a failure (`benign` False): its reason is
the id of the dead-lettered task at the root, as skips always recorded, and
the run fails. Benign (a condition false, a rule that did not fire on a clean
run, downstream of either): its reason is a sentence, and the run can still
succeed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dagrun.errors import SpecError
from dagrun.model import TaskState, TaskStatus

ALL_SUCCESS, ALL_DONE, ONE_FAILED, NONE_FAILED, ONE_SUCCESS = (
    "all_success", "all_done", "one_failed", "none_failed", "one_success")
TRIGGERS = (ALL_SUCCESS, ALL_DONE, ONE_FAILED, NONE_FAILED, ONE_SUCCESS)
DEFAULT = ALL_SUCCESS
CONDITION_FALSE = "condition false"


def parse_trigger(merged: Mapping[str, Any], ctx: str) -> str:
    value = merged.get("trigger", DEFAULT)
    if value not in TRIGGERS:
        raise SpecError(f"{ctx}: 'trigger' must be one of {', '.join(TRIGGERS)}, "
                        f"got {value!r}")
    return value


def failed(st: TaskStatus) -> bool:
    """Dead-lettered, or skipped because of a dead letter."""
    return st.state == TaskState.DEAD_LETTERED or (
        st.state == TaskState.SKIPPED and not st.benign)


def decide(trigger: str, deps: tuple[str, ...],
           status: Mapping[str, TaskStatus]) -> tuple[bool, str | None, bool]:
    """(runs, reason if skipped, whether that skip is benign), all upstreams final."""
    if not deps:
        return True, None, True
    completed = 0
    cause = None  # the dead-lettered task at the root of the first failure
    quiet = None  # the first upstream skipped benignly
    for d in deps:
        st = status[d]
        if st.state == TaskState.COMPLETED:
            completed += 1
        elif failed(st):
            if cause is None:
                cause = d if st.state == TaskState.DEAD_LETTERED else (st.reason or d)
        elif quiet is None:
            quiet = d
    if trigger == ALL_DONE:
        return True, None, True
    if trigger == ONE_FAILED:
        if cause is not None:
            return True, None, True
        return False, "trigger one_failed: no upstream failed", True
    if cause is not None and not (trigger == ONE_SUCCESS and completed):
        return False, cause, False
    if trigger == ALL_SUCCESS and quiet is not None:
        return False, f"upstream {quiet!r} was skipped", True
    if trigger == ONE_SUCCESS and not completed:
        return False, "trigger one_success: no upstream completed", True
    return True, None, True


def skip_text(reason: str | None, benign: bool) -> str:
    """What `--json` and the summary say about a skipped task."""
    if benign:
        return f"skipped: {reason}"
    return f"skipped: upstream task {reason!r} failed"


def describe(reason: str | None) -> str:
    """The progress line's note for a skip (events carry the reason only; a
    failure's reason is a task id, which has no spaces)."""
    if reason and " " in reason:
        return reason
    return f"upstream {reason} failed"
