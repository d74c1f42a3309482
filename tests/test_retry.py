"""Retry policy: pure functions with an injected random source, and through the
CLI: retry_on / no_retry_on, and a task waiting out its delay holds no worker."""

from __future__ import annotations

import random

import pytest

from dagrun.retry import retry_delay, should_retry
from dagrun.spec import RetryPolicy


class FixedRng(random.Random):
    """uniform(a, b) returns a + fraction * (b - a)."""

    def __init__(self, fraction: float) -> None:
        super().__init__(0)
        self.fraction = fraction

    def uniform(self, a: float, b: float) -> float:
        return a + self.fraction * (b - a)


@pytest.mark.parametrize("backoff,expected", [
    ("fixed", [2, 2, 2, 2]),
    ("linear", [2, 4, 6, 8]),
    ("exponential", [2, 4, 8, 16]),
])
def test_backoff_without_jitter(backoff, expected):
    p = RetryPolicy(retries=9, delay=2, backoff=backoff, max_delay=100, jitter=False)
    assert [retry_delay(p, n, FixedRng(0.5)) for n in (1, 2, 3, 4)] == expected


def test_max_delay_caps_and_huge_failure_counts_do_not_overflow():
    p = RetryPolicy(retries=9, delay=1, backoff="exponential", max_delay=60, jitter=False)
    assert retry_delay(p, 7, FixedRng(0)) == 60
    assert retry_delay(p, 10_000, FixedRng(0)) == 60


def test_jitter_stays_between_half_and_full_delay():
    p = RetryPolicy(retries=9, delay=4, backoff="fixed", max_delay=60, jitter=True)
    assert retry_delay(p, 1, FixedRng(0.0)) == 2
    assert retry_delay(p, 1, FixedRng(1.0)) == 4
    rng = random.Random(42)
    assert all(2 <= retry_delay(p, 1, rng) <= 4 for _ in range(1000))


def test_zero_delay_is_allowed():
    assert retry_delay(RetryPolicy(retries=1, delay=0), 1, FixedRng(0.5)) == 0


def test_defaults_are_one_second_exponential_capped_at_a_minute_with_jitter():
    p = RetryPolicy()
    assert (p.delay, p.backoff, p.max_delay, p.jitter) == (1.0, "exponential", 60.0, True)


def test_should_retry_counts_attempts():
    p = RetryPolicy(retries=2)
    assert should_retry(p, ("ValueError",), 1)
    assert should_retry(p, ("ValueError",), 2)
    assert not should_retry(p, ("ValueError",), 3)
    assert not should_retry(RetryPolicy(), ("ValueError",), 1)


def test_retry_on_and_no_retry_on_match_base_classes():
    types = ("ConnectionRefusedError", "ConnectionError", "OSError", "Exception",
             "BaseException")
    assert should_retry(RetryPolicy(retries=3, retry_on=("OSError",)), types, 1)
    assert not should_retry(RetryPolicy(retries=3, retry_on=("ValueError",)), types, 1)
    assert not should_retry(RetryPolicy(retries=3, no_retry_on=("ConnectionError",)), types, 1)
    # no_retry_on wins over retry_on
    both = RetryPolicy(retries=3, retry_on=("OSError",), no_retry_on=("ConnectionRefusedError",))
    assert not should_retry(both, types, 1)


def test_timeouts_and_crashes_can_be_named():
    assert should_retry(RetryPolicy(retries=1, retry_on=("TaskTimeout",)), ("TaskTimeout",), 1)
    assert not should_retry(RetryPolicy(retries=1, retry_on=("TaskTimeout",)),
                            ("WorkerCrashed",), 1)
    assert not should_retry(RetryPolicy(retries=1, no_retry_on=("WorkerCrashed",)),
                            ("WorkerCrashed",), 1)


def test_retry_on_through_the_cli(cli, write, tmp_path):
    write("p.toml", """
        [defaults]
        retries = 2
        retry_delay = 0.01
        [tasks.value]
        call = "misbehave:fail_always"
        kwargs = { kind = "ValueError" }
        retry_on = ["ConnectionError"]
        [tasks.conn]
        call = "misbehave:fail_always"
        kwargs = { kind = "ConnectionError" }
        retry_on = ["OSError"]
        [tasks.key]
        call = "misbehave:fail_always"
        kwargs = { kind = "KeyError" }
        no_retry_on = ["LookupError"]
        [tasks.timeout]
        call = "misbehave:hang_sleep"
        timeout = 0.1
        timeout_grace = 0
        retry_on = ["TaskTimeout"]
    """)
    r = cli("run", "p.toml", "--json")
    assert r.code == 1
    attempts = {t: v["attempts"] for t, v in r.json["tasks"].items()}
    assert attempts == {"value": 1, "conn": 3, "key": 1, "timeout": 3}


def test_task_waiting_out_its_delay_holds_no_worker(cli, write, tmp_path):
    """One worker; a task fails and waits 1 s before its retry; meanwhile the
    other task runs on the only worker, inside that delay."""
    fails, log = tmp_path / "fails", tmp_path / "log"
    write("p.toml", f"""
        [pipeline]
        workers = 1
        [tasks.flaky]
        call = "misbehave:fail_always"
        kwargs = {{ log = "{fails}" }}
        retries = 1
        retry_delay = 1
        retry_jitter = false
        priority = 10
        [tasks.other]
        call = "misbehave:timed"
        kwargs = {{ log = "{log}", name = "other", seconds = 0.2 }}
    """)
    r = cli("run", "p.toml", "--json")
    assert r.code == 1
    assert r.json["tasks"]["flaky"]["attempts"] == 2
    first, second = (float(x) for x in fails.read_text().split())
    _, start, end, _pid = log.read_text().split()
    assert first < float(start) and float(end) < second  # ran inside the delay
    assert second - first >= 1.0 - 0.05
