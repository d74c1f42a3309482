"""Damage every file of a finished run's state in turn — change a digit of a
stored output, flip a byte, truncate — and resume: it must finish with the
right outputs or refuse with exit 2; it must never accept a changed value."""

from __future__ import annotations

import os
import random
import re
import shutil

from tasks.sidefx import runs_of

SPEC = """
[pipeline]
name = "small"
workers = 2
[tasks.a]
call = "sidefx:step"
kwargs = {{ log = "{log}", name = "a", k = 1234 }}
[tasks.b]
call = "sidefx:step"
kwargs = {{ log = "{log}", name = "b", k = 5678 }}
"""
# c..h: a small lattice over a and b, so damage to one record has dependents.
for i, (x, y) in enumerate([("a", "b"), ("a", "c"), ("b", "d"), ("c", "e"), ("d", "f"),
                            ("e", "g")]):
    tid = "cdefgh"[i]
    SPEC += (f'[tasks.{tid}]\ncall = "sidefx:step"\ndeps = ["{x}", "{y}"]\n'
             f'inputs = {{{{ x = "{x}", y = "{y}" }}}}\n'
             f'kwargs = {{{{ log = "{{log}}", name = "{tid}", k = {i + 1} }}}}\n')


def expected_outputs() -> dict[str, int]:
    out = {"a": 1234, "b": 5678}
    for i, (x, y) in enumerate([("a", "b"), ("a", "c"), ("b", "d"), ("c", "e"),
                                ("d", "f"), ("e", "g")]):
        out["cdefgh"[i]] = i + 1 + out[x] + out[y]
    return out


def mutations(data: bytes, rng: random.Random) -> list[tuple[str, bytes]]:
    out = []
    digits = [m.start() for m in re.finditer(rb'"output":(\d)', data)]
    for pos in rng.sample(digits, min(3, len(digits))):
        pos += len(b'"output":')
        new = b"9" if data[pos:pos + 1] != b"9" else b"8"
        out.append((f"digit of an output at {pos}", data[:pos] + new + data[pos + 1:]))
    if not digits:  # run.json: change a digit of the spec (a task's k)
        for m in list(re.finditer(rb"\d", data))[-3:]:
            pos = m.start()
            new = b"7" if data[pos:pos + 1] != b"7" else b"3"
            out.append((f"digit at {pos}", data[:pos] + new + data[pos + 1:]))
    # Records get four flips; the lock files' few bytes (a pid) one.
    flips = 4 if len(data) > 64 else 1
    for pos in sorted(rng.sample(range(len(data)), min(flips, len(data)))):
        flipped = bytearray(data)
        flipped[pos] ^= 1 << rng.randrange(8)
        out.append((f"byte flipped at {pos}", bytes(flipped)))
    sizes = {0, len(data) // 3, len(data) // 2, max(len(data) - 1, 0)} if flips > 1 else {0}
    for size in sorted(sizes):
        out.append((f"truncated to {size}", data[:size]))
    return out


def test_damaged_state_never_yields_a_changed_value(cli, write, tmp_path):
    log = tmp_path / "log"
    spec = write("small.toml", SPEC.format(log=log))
    first = cli("run", str(spec), "--run-id", "c", "--json")
    assert first.code == 0, first.stderr
    expected = expected_outputs()
    assert {t: v["output"] for t, v in first.json["tasks"].items()} == expected
    state = tmp_path / "state"
    pristine = tmp_path / "pristine"
    shutil.copytree(state, pristine)
    files = sorted(p.relative_to(pristine) for p in pristine.rglob("*") if p.is_file())
    assert any(f.name == "journal" for f in files) and any(f.name == "run.json" for f in files)
    rng = random.Random(int(os.environ.get("DAGRUN_CORRUPTION_SEED", "4")))
    outcomes = {"finished": 0, "refused": 0}
    for rel in files:
        for what, damaged in mutations((pristine / rel).read_bytes(), rng):
            shutil.rmtree(state)
            shutil.copytree(pristine, state)
            (state / rel).write_bytes(damaged)
            r = cli("resume", "c", "--json")
            where = f"{rel}: {what}: {r.stderr}"
            assert "Traceback" not in r.stderr, where
            if r.code == 2:
                assert rel.name == "run.json", where  # only the run's metadata may refuse
                assert "run.json" in r.stderr and r.stdout == "", where
                outcomes["refused"] += 1
                continue
            assert r.code == 0, where
            outputs = {t: v["output"] for t, v in r.json["tasks"].items()}
            assert outputs == expected, where
            outcomes["finished"] += 1
    assert outcomes["finished"] and outcomes["refused"]
    # Damage re-ran some tasks (at-least-once); never more than the 8 per resume.
    assert sum(runs_of(log).values()) <= 8 * (1 + sum(outcomes.values()))


# ------------------------------------------------------- records out of place

PAIR = """
[pipeline]
name = "pair"
[tasks.a]
call = "sidefx:step"
kwargs = {{ log = "{log}", name = "a", k = {k} }}
[tasks.b]
call = "sidefx:step"
deps = ["a"]
inputs = {{ x = "a" }}
kwargs = {{ log = "{log}", name = "b", k = 1 }}
"""


def _two_runs(cli, write, tmp_path):
    log = tmp_path / "log"
    for rid, k in (("A", 10), ("B", 20)):
        spec = write(f"{rid}/pair.toml", PAIR.format(log=log, k=k))
        assert cli("run", str(spec), "--run-id", rid, "--json").code == 0
    return tmp_path / "state" / "runs"


def test_a_journal_copied_from_another_run_is_not_trusted(cli, write, tmp_path):
    runs = _two_runs(cli, write, tmp_path)
    (runs / "A" / "journal").write_bytes((runs / "B" / "journal").read_bytes())
    r = cli("resume", "A", "--json")
    assert r.code == 0, r.stderr
    assert {t: v["output"] for t, v in r.json["tasks"].items()} == {"a": 10, "b": 11}
    assert "of another run" in r.stderr


def test_a_line_appended_from_another_run_never_wins(cli, write, tmp_path):
    runs = _two_runs(cli, write, tmp_path)
    theirs = [line for line in (runs / "B" / "journal").read_bytes().splitlines(True)
              if b'"completed"' in line]
    with open(runs / "A" / "journal", "ab") as fh:
        fh.writelines(theirs)  # B's completed records of a and b, after A's
    r = cli("resume", "A", "--json")
    assert r.code == 0, r.stderr
    assert {t: v["output"] for t, v in r.json["tasks"].items()} == {"a": 10, "b": 11}


def test_a_replayed_line_of_the_same_run_never_wins(cli, write, tmp_path):
    runs = _two_runs(cli, write, tmp_path)
    journal = runs / "A" / "journal"
    lines = journal.read_bytes().splitlines(True)
    running_a = next(line for line in lines if b'"running"' in line and b'"task":"a"' in line)
    journal.write_bytes(b"".join(lines) + running_a)  # a's first record again, at the end
    r = cli("resume", "A", "--json")
    assert r.code == 0, r.stderr
    assert r.json["tasks"]["a"]["state"] == "completed" and r.json["tasks"]["b"]["output"] == 11
    assert "does not follow its previous record" in r.stderr


SPEC_CHANGE = """
[pipeline]
name = "t"
[tasks.t0]
call = "sidefx:step"
kwargs = {{ log = "{log}", name = "t0", k = {k}, sleep = {sleep} }}
[tasks.t1]
call = "sidefx:step"
deps = ["t0"]
inputs = {{ x = "t0" }}
kwargs = {{ log = "{log}", name = "t1", k = 10 }}
[tasks.t2]
call = "sidefx:step"
deps = ["t1"]
inputs = {{ x = "t1" }}
kwargs = {{ log = "{log}", name = "t2", k = 100 }}
"""


def test_no_damaged_line_lets_a_superseded_output_win(cli, write, tmp_path):
    """resume --spec changed t0 (so t1 and t2 re-run), SIGKILLed while t0 ran:
    whatever single journal line is then damaged, t2 never ends with its old value."""
    from proc import start, wait_for

    log = tmp_path / "log"
    old = write("old/t.toml", SPEC_CHANGE.format(log=log, k=1, sleep=0))
    new = write("new/t.toml", SPEC_CHANGE.format(log=log, k=2, sleep=1.0))
    assert cli("run", str(old), "--run-id", "s", "--json").json["tasks"]["t2"]["output"] == 111
    proc = start("resume", "s", "--spec", str(new))
    wait_for(lambda: runs_of(log).get("t0") == 2)  # the new t0 is running
    proc.kill()
    proc.communicate()
    state = tmp_path / "state"
    pristine = tmp_path / "pristine"
    shutil.copytree(state, pristine)
    journal = pristine / "runs" / "s" / "journal"
    lines = journal.read_bytes().splitlines(True)
    cases = [("undamaged", b"".join(lines))]
    for i, line in enumerate(lines):
        damaged = bytearray(line)
        damaged[len(line) // 2] ^= 0x04
        cases.append((f"line {i + 1} damaged", b"".join(lines[:i] + [bytes(damaged)]
                                                       + lines[i + 1:])))
    for what, data in cases:
        shutil.rmtree(state)
        shutil.copytree(pristine, state)
        (state / "runs" / "s" / "journal").write_bytes(data)
        r = cli("resume", "s", "--json")
        assert r.code == 0, f"{what}: {r.stderr}"
        outputs = {t: v["output"] for t, v in r.json["tasks"].items()}
        assert outputs == {"t0": 2, "t1": 12, "t2": 112}, f"{what}: {r.stderr}"
