"""Circuit breakers: the state machine and the gate with an injected clock (no
sleeping), persistence across processes, and one CLI run with a real cooldown."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from dagrun.breaker import CLOSED, HALF_OPEN, OPEN, Breaker, BreakerGate, BreakerStore
from dagrun.model import AttemptResult, TaskError
from dagrun.spec import BreakerSpec, PipelineSpec, TaskSpec


class Clock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


SPEC = BreakerSpec("api", failure_threshold=3, cooldown=10.0, success_threshold=2)


def test_opens_after_consecutive_failures_only():
    b = Breaker(SPEC)
    for _ in range(2):
        b.record(False, False, 0)
    b.record(True, False, 0)  # a success resets the count
    assert b.failures == 0 and b.state == CLOSED
    for _ in range(3):
        assert b.can_start(1)
        b.record(False, False, 1)
    assert b.state == OPEN and not b.can_start(1)
    assert b.reopens_at() == 11


def test_half_open_probes_one_at_a_time_and_closes_after_successes():
    b = Breaker(SPEC, state=OPEN, opened_at=0)
    assert not b.can_start(9.99)
    assert b.can_start(10) and b.current(10) == HALF_OPEN
    assert b.start(10) is True  # the probe
    assert not b.can_start(10)  # one at a time
    b.record(True, True, 11)
    assert b.state == HALF_OPEN  # success_threshold = 2
    assert b.can_start(11) and b.start(11)
    b.record(True, True, 12)
    assert b.state == CLOSED and b.can_start(12)
    assert b.start(12) is False  # closed: not a probe


def test_failed_probe_reopens_with_a_new_cooldown():
    b = Breaker(SPEC, state=OPEN, opened_at=0)
    b.start(15)
    b.record(False, True, 16)
    assert b.state == OPEN and b.opened_at == 16
    assert not b.can_start(25) and b.can_start(26)


def test_results_while_open_and_non_probes_do_not_decide():
    b = Breaker(SPEC, state=OPEN, opened_at=0)
    assert b.record(True, False, 1) is False and b.state == OPEN
    b.start(10)  # half-open probe in flight
    b.record(False, False, 10.5)  # started before it opened: ignored
    assert b.state == HALF_OPEN
    b.release(True)  # the probe was cancelled: decided nothing
    assert b.can_start(10.5)


def test_store_round_trip_and_corruption(tmp_path):
    store = BreakerStore(tmp_path)
    b = Breaker(SPEC, state=OPEN, opened_at=123.0)
    store.save(b)
    again = store.load(SPEC)
    assert (again.state, again.opened_at) == (OPEN, 123.0)
    path = tmp_path / "breakers" / "api"
    data = bytearray(path.read_bytes())
    data[70] ^= 1
    path.write_bytes(bytes(data))
    assert store.load(SPEC).state == CLOSED  # corrupt = absent, never a crash


def pipeline(max_wait=None, n=4):
    spec = BreakerSpec("api", failure_threshold=2, cooldown=10.0, max_wait=max_wait)
    tasks = {f"t{i}": TaskSpec(f"t{i}", "m:f", breaker="api") for i in range(n)}
    tasks["free"] = TaskSpec("free", "m:f")
    return PipelineSpec("p", tasks, breakers={"api": spec})


def result(tid, ok=True, cancelled=False):
    return AttemptResult(tid, 1, error=None if ok else TaskError("ConnectionError", "down"),
                         cancelled=cancelled)


def test_gate_holds_releases_probe_then_everything(tmp_path):
    clock = Clock()
    gate = BreakerGate(pipeline(), BreakerStore(tmp_path), clock=clock)
    assert gate.admit("t0") and gate.admit("t1") and gate.admit("free")
    gate.settle(result("t0", ok=False))
    gate.settle(result("t1", ok=False))
    assert gate.due() == ([], [])
    assert not gate.admit("t2") and not gate.admit("t3")  # held
    assert gate.admit("free")  # unguarded tasks never wait
    assert gate.holding() and gate.wait_time() == 10.0
    clock.t += 5
    assert gate.due() == ([], []) and gate.wait_time() == 5.0
    clock.t += 5
    release, expired = gate.due()
    assert release == ["t2"] and expired == []  # the oldest held task is the probe
    assert gate.admit("t2")
    assert not gate.admit("t3")
    gate.settle(result("t2"))
    release, _ = gate.due()
    assert release == ["t3"] and gate.admit("t3")
    assert not gate.holding()
    # Persisted: a new gate (the next run) sees the breaker closed.
    assert BreakerStore(tmp_path).load(pipeline().breakers["api"]).state == CLOSED


def test_gate_due_is_idle_until_something_can_change(tmp_path):
    clock = Clock()
    gate = BreakerGate(pipeline(), BreakerStore(tmp_path), clock=clock)
    gate.settle(result("t0", ok=False))
    gate.settle(result("t1", ok=False))
    gate.due()
    assert not gate.admit("t2")
    gate.due()
    gate.held["api"].append((0.0, -1, "sentinel"))  # would be visible if due() scanned
    clock.t += 1
    assert gate.due() == ([], [])


def test_gate_dead_letters_tasks_held_past_max_wait(tmp_path):
    clock = Clock()
    gate = BreakerGate(pipeline(max_wait=3.0), BreakerStore(tmp_path), clock=clock)
    gate.settle(result("t0", ok=False))
    gate.settle(result("t1", ok=False))
    assert not gate.admit("t2")
    clock.t += 1
    assert not gate.admit("t3")
    assert gate.wait_time() == 2.0
    clock.t += 2
    release, expired = gate.due()
    assert release == [] and [t for t, _ in expired] == ["t2"]
    assert expired[0][1].type == "CircuitOpen"
    assert expired[0][1].message.startswith("circuit api open")
    clock.t += 1
    assert [t for t, _ in gate.due()[1]] == ["t3"]
    assert not gate.holding()


def test_gate_loads_an_open_breaker_from_an_earlier_run(tmp_path):
    clock = Clock()
    spec = pipeline()
    BreakerStore(tmp_path).save(Breaker(spec.breakers["api"], state=OPEN, opened_at=995.0))
    notes = []
    gate = BreakerGate(spec, BreakerStore(tmp_path), clock=clock, notify=notes.append)
    assert notes == []  # the reporter has not started yet
    gate.due()
    assert notes == ["circuit api is open (from an earlier run)"]
    assert not gate.admit("t0")
    assert gate.wait_time() == 5.0


# ---------------------------------------------------------------- through the CLI

SERVICE = """
    [pipeline]
    workers = 1
    [breakers.api]
    failure_threshold = 2
    cooldown = {cooldown}
    {extra}
    [defaults]
    breaker = "api"
    [tasks.a]
    call = "misbehave:service"
    kwargs = {{ counter = "{counter}", log = "{log}", name = "a" }}
    priority = 4
    [tasks.b]
    call = "misbehave:service"
    kwargs = {{ counter = "{counter}", log = "{log}", name = "b" }}
    priority = 3
    [tasks.c]
    call = "misbehave:service"
    kwargs = {{ counter = "{counter}", log = "{log}", name = "c" }}
    priority = 2
    [tasks.d]
    call = "misbehave:service"
    kwargs = {{ counter = "{counter}", log = "{log}", name = "d" }}
    priority = 1
"""


def read_log(path: Path) -> dict[str, tuple[float, float, bool]]:
    out = {}
    for line in path.read_text().splitlines():
        name, start, end, ok = line.split()
        out[name] = (float(start), float(end), ok == "ok")
    return out


def test_breaker_opens_holds_half_opens_and_closes(cli, write, tmp_path):
    """The service fails its first two calls: a and b fail, the circuit opens,
    c waits out the real cooldown as the probe, succeeds, closes it; d runs."""
    log, counter = tmp_path / "log", tmp_path / "n"
    write("p.toml", SERVICE.format(cooldown=0.5, extra="", counter=counter, log=log))
    r = cli("run", "p.toml", "--json")
    assert r.code == 1, r.stderr
    t = r.json["tasks"]
    assert [t[x]["state"] for x in "abcd"] == ["dead_lettered", "dead_lettered",
                                              "completed", "completed"]
    assert [t[x]["attempts"] for x in "abcd"] == [1, 1, 1, 1]  # holding used no attempt
    runs = read_log(log)
    assert runs["c"][0] - runs["b"][1] >= 0.5 - 0.05  # held for the cooldown
    assert runs["d"][0] >= runs["c"][1]  # after the probe closed the circuit
    state = Path(os.environ["DAGRUN_STATE_DIR"]) / "breakers" / "api"
    from dagrun.store.records import unframe

    assert unframe(state.read_bytes())["state"] == "closed"


def test_open_breaker_persists_and_max_wait_dead_letters(cli, write, tmp_path):
    """Run 1 opens the circuit (long cooldown); run 2 starts nothing guarded and
    dead-letters its tasks after max_wait with "circuit api open"."""
    log, counter = tmp_path / "log", tmp_path / "n"
    write("p.toml", SERVICE.format(cooldown='"1h"', extra="max_wait = 0.3",
                                   counter=counter, log=log))
    first = cli("run", "p.toml", "--json")
    assert first.code == 1
    assert set(read_log(log)) == {"a", "b"}  # c and d were held from the start
    assert first.json["tasks"]["c"]["error"].startswith("CircuitOpen: circuit api open")
    assert first.json["tasks"]["c"]["attempts"] == 0
    log.unlink()
    started = time.monotonic()
    second = cli("run", "p.toml", "--json")
    assert second.code == 1
    assert not log.exists()  # nothing guarded started
    for x in "abcd":
        assert second.json["tasks"][x]["state"] == "dead_lettered"
        assert second.json["tasks"][x]["error"].startswith("CircuitOpen: circuit api open")
    assert time.monotonic() - started < 20  # generous: 0.3 s max_wait + start-up
    letters = cli("dlq", "list", "--json").json
    assert len(letters) == 8 and all(x["attempts"] in (0, 1) for x in letters)


@pytest.mark.parametrize("threshold", [1])
def test_unguarded_tasks_run_while_circuit_is_open(cli, write, tmp_path, threshold):
    log = tmp_path / "log"
    write("p.toml", f"""
        [pipeline]
        workers = 1
        [breakers.api]
        failure_threshold = {threshold}
        cooldown = "1h"
        max_wait = 0.5
        [tasks.down]
        call = "misbehave:fail_always"
        breaker = "api"
        priority = 9
        [tasks.guarded]
        call = "basic:const"
        breaker = "api"
        priority = 5
        [tasks.free]
        call = "misbehave:timed"
        kwargs = {{ log = "{log}", name = "free" }}
    """)
    r = cli("run", "p.toml", "--json")
    assert r.json["tasks"]["free"]["state"] == "completed"
    assert r.json["tasks"]["guarded"]["state"] == "dead_lettered"
    assert r.json["tasks"]["guarded"]["attempts"] == 0


def test_a_breaker_opened_by_another_process_holds_our_tasks(tmp_path):
    """Two overlapping runs share STATE_DIR/breakers/NAME: each store stands for
    one dagrun process reading and writing the same file."""
    clock = Clock()
    ours = BreakerGate(pipeline(), BreakerStore(tmp_path), clock=clock)
    theirs = BreakerGate(pipeline(), BreakerStore(tmp_path), clock=clock)
    assert ours.admit("t0")
    theirs.settle(result("t0", ok=False))
    theirs.settle(result("t1", ok=False))  # opens it, in the file
    clock.t += 0.001
    assert not ours.admit("t2")  # we see it open without having failed ourselves
    ours.settle(result("t0", ok=True))  # a result from before it opened moves nothing
    assert BreakerStore(tmp_path).load(pipeline().breakers["api"]).state == OPEN


def test_corrupt_breaker_file_is_named_in_a_warning(tmp_path):
    (tmp_path / "breakers").mkdir()
    (tmp_path / "breakers" / "api").write_bytes(b"garbage")
    notes: list[str] = []
    gate = BreakerGate(pipeline(), BreakerStore(tmp_path), clock=Clock(), notify=notes.append)
    gate.due()
    assert any("corrupt" in n and "breakers/api" in n for n in notes)
