"""Waits of ~24.8 days or more (epoll's limit in milliseconds) never crash dagrun:
every internal wait is clamped, and the loop re-checks its timers when it wakes.
Each wait here outlasts the journal's 1 s sync timer, which would otherwise cut it."""

from __future__ import annotations

import signal
import time

from proc import start


def test_a_long_task_timeout_and_run_deadline(cli, write):
    spec = write("p.toml", """
        [pipeline]
        deadline = "30d"
        [tasks.t]
        call = "basic:sleep"
        kwargs = { seconds = 2.5, value = 1 }  # past the 1 s journal sync
        timeout = "25d"
        timeout_grace = "30d"
    """)
    r = cli("run", str(spec), "--json", timeout=60)
    assert r.code == 0, r.stderr
    assert r.json["tasks"]["t"]["output"] == 1


def _still_waiting_after(spec, seconds: float) -> None:
    """Run `spec`; after `seconds` dagrun must still be waiting, and a SIGTERM
    ends it as a cancellation, without a traceback."""
    proc = start("run", str(spec))
    try:
        time.sleep(seconds)
        assert proc.poll() is None, proc.communicate()[1].decode()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)  # generous: a busy shared machine
    finally:
        proc.kill()
    assert proc.returncode == 130, err.decode()
    assert b"Traceback" not in err


def test_a_long_retry_delay(write):
    spec = write("p.toml", """
        [tasks.t]
        call = "basic:fail"
        retries = 1
        retry_delay = "60d"
        retry_max_delay = "60d"
        retry_jitter = false
    """)
    _still_waiting_after(spec, 3.0)


def test_a_long_breaker_cooldown_also_after_it_was_saved(write):
    spec = write("p.toml", """
        [breakers.b]
        failure_threshold = 1
        cooldown = "30d"
        [pipeline]
        workers = 1
        [tasks.a]
        call = "basic:fail"
        breaker = "b"
        priority = 9
        [tasks.held]
        call = "basic:const"
        breaker = "b"
    """)
    _still_waiting_after(spec, 3.0)
    _still_waiting_after(spec, 2.0)  # starts with the open breaker the first run saved
