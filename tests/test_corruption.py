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
