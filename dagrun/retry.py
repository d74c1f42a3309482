"""Retry policy: pure functions; the random source is injected."""

from __future__ import annotations

import random

from dagrun.spec.model import RetryPolicy  # the module, not the package: no import cycle


def should_retry(policy: RetryPolicy, error_types: tuple[str, ...] | list[str],
                 attempts_used: int) -> bool:
    """Whether a failed task gets another attempt.

    `error_types` are the exception's class name and its base classes' names, so
    retry_on = ["OSError"] also matches ConnectionRefusedError.
    """
    if attempts_used > policy.retries:
        return False
    if policy.no_retry_on and any(t in policy.no_retry_on for t in error_types):
        return False
    if policy.retry_on and not any(t in policy.retry_on for t in error_types):
        return False
    return True


def retry_delay(policy: RetryPolicy, failures: int, rng: random.Random) -> float:
    """Seconds to wait before the attempt after the `failures`-th failure (1-based).

    fixed: delay; linear: delay * n; exponential: delay * 2**(n-1); capped at
    max_delay. Jitter ("equal jitter") picks uniformly in [d/2, d], so retries of
    many tasks that failed together spread out but never wait less than half.
    """
    n = max(1, failures)
    if policy.backoff == "fixed":
        d = policy.delay
    elif policy.backoff == "linear":
        d = policy.delay * n
    else:
        d = policy.delay * (2 ** min(n - 1, 62))
    d = min(d, policy.max_delay)
    if policy.jitter and d > 0:
        d = d / 2 + rng.uniform(0, d / 2)
    return d
