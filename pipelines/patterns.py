"""The workflow-patterns example's tasks (pipelines/patterns.toml): a nightly
"ingest files" job. Standard library only.

A producer drops CSV files into an inbox while a sensor waits for them; each
file is parsed by one element of a mapped task; the parts are aggregated, a
robust mean is refined in a loop until it converges, and the night is appended
to a ledger by a task that keeps a watermark across runs. Paths are relative
to the folder the run is started from (the repository root for `make patterns`).
"""

from __future__ import annotations

import csv
import json
import os
import random
import shutil
import statistics
import time
from pathlib import Path

import dagrun


def _write_atomically(path: Path, text: str) -> None:
    # Written under another name, then renamed: the sensor's glob never sees half a file.
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(text)
    os.replace(tmp, path)


def drop_files(workdir: str, day: str, files: int, corrupt: int = 0, rows: int = 200) -> int:
    """The upstream export: writes `files` CSVs into WORKDIR/inbox, one at a
    time, the last `corrupt` of them unreadable. Seeded by file number only,
    so every night's numbers are the same (the example's tests compare them)."""
    inbox = Path(workdir) / "inbox"
    inbox.mkdir(parents=True, exist_ok=True)
    for i in range(files):
        rng = random.Random(i)
        lines = [f"# export of {day}", "order,amount"]
        for n in range(rows):
            amount = rng.lognormvariate(3, 0.6)
            if rng.random() < 0.03:
                amount *= 40  # the odd bulk order that drags a plain mean up
            lines.append(f"{i * rows + n},{amount:.2f}")
        if i >= files - corrupt:
            lines.append("oops,not-a-number")
        _write_atomically(inbox / f"part-{i:03d}.csv", "\n".join(lines) + "\n")
        time.sleep(0.1)  # a slow exporter: the sensor polls a few times
    return files


def parse_file(path: str) -> dict:
    """One element of the map: one file's amounts, written next to the inbox
    as JSON (what flows between tasks stays small: a path and counts)."""
    with open(path, newline="") as fh:
        reader = csv.DictReader(line for line in fh if not line.startswith("#"))
        amounts = [float(row["amount"]) for row in reader]  # ValueError on a corrupt file
    time.sleep(0.15)  # stands in for real parsing work
    parsed = Path(path).parent.parent / "parsed"
    parsed.mkdir(exist_ok=True)
    target = parsed / Path(path).with_suffix(".json").name
    _write_atomically(target, json.dumps(amounts))
    return {"file": Path(path).name, "rows": len(amounts), "amounts": str(target)}


def aggregate(parts: list, workdir: str) -> dict:
    """Totals over the parsed files; a null slot (map_allow_failures) is a
    rejected file. The amounts go to a scratch file for the loop to read."""
    good = [p for p in parts if p is not None]
    rejected = [i for i, p in enumerate(parts) if p is None]
    amounts = [a for p in good for a in json.loads(Path(p["amounts"]).read_text())]
    scratch = Path(workdir) / "scratch"
    scratch.mkdir(parents=True, exist_ok=True)
    _write_atomically(scratch / "amounts.json", json.dumps(amounts))
    return {"files": len(good), "rejected": rejected, "rows": len(amounts),
            "total": round(sum(amounts), 2), "mean": round(statistics.fmean(amounts), 4),
            "amounts": str(scratch / "amounts.json")}


def has_rejects(summary: dict) -> bool:
    """`when` of the quarantine task: only on a night with unreadable files."""
    return bool(summary["rejected"])


def quarantine(summary: dict, workdir: str) -> list[str]:
    moved = []
    target = Path(workdir) / "quarantine"
    target.mkdir(parents=True, exist_ok=True)
    for i in summary["rejected"]:
        name = f"part-{i:03d}.csv"
        os.replace(Path(workdir) / "inbox" / name, target / name)
        moved.append(name)
    return moved


def calibrate(summary: dict, tolerance: float, iteration: int, previous: dict | None) -> dict:
    """One step of a Huber M-estimate of the typical order amount: start from
    the plain mean, then down-weight amounts far from the last estimate."""
    amounts = json.loads(Path(summary["amounts"]).read_text())
    if previous is None:
        estimate = statistics.fmean(amounts)
    else:
        centre = previous["estimate"]
        spread = statistics.median(abs(a - centre) for a in amounts) * 1.5
        weights = [1.0 if abs(a - centre) <= spread else spread / abs(a - centre)
                   for a in amounts]
        estimate = sum(w * a for w, a in zip(weights, amounts)) / sum(weights)
    delta = abs(estimate - previous["estimate"]) if previous else float("inf")
    time.sleep(0.05)
    return {"estimate": round(estimate, 4), "delta": None if previous is None else round(delta, 6),
            "tolerance": tolerance, "iteration": iteration}


def converged(step: dict) -> bool:
    return step["delta"] is not None and step["delta"] < step["tolerance"]


def publish(summary: dict, calibration: dict, ledger: str, day: str, run_id: str,
            workdir: str, state: dict) -> dict:
    """Append the night to the ledger, then archive the parsed inputs. `state`
    (kept by dagrun across runs of this pipeline) is the watermark: how many
    nights are published and which run was last. The ledger line is keyed by
    run id, so a resumed run that re-publishes does not add a second line."""
    path = Path(ledger)
    path.parent.mkdir(parents=True, exist_ok=True)
    nights = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    nights = [n for n in nights if n["run_id"] != run_id]
    night = {"run_id": run_id, "day": day, "rows": summary["rows"], "total": summary["total"],
             "robust_mean": calibration["estimate"]}
    _write_atomically(path, "".join(json.dumps(n) + "\n" for n in [*nights, night]))
    dagrun.emit("ledger_written")  # the dashboard may start now, while we archive
    previous_run = state.get("last_run")
    state["nights"] = state.get("nights", 0) + 1
    state["last_run"] = run_id
    state["rows_published"] = state.get("rows_published", 0) + summary["rows"]
    shutil.make_archive(str(Path(workdir) / "inbox-archive"), "zip", Path(workdir) / "inbox")
    time.sleep(0.3)  # a slow upload of the archive
    return {"nights": state["nights"], "previous_run": previous_run,
            "rows_published": state["rows_published"]}


def refresh_dashboard(calibration: dict, ledger: str, workdir: str) -> dict:
    """Started by the `ledger_written` event: the last seven nights."""
    nights = [json.loads(line) for line in Path(ledger).read_text().splitlines()][-7:]
    board = {"robust_mean": calibration["estimate"], "last_nights": nights}
    _write_atomically(Path(workdir) / "dashboard.json", json.dumps(board, indent=2))
    return {"nights_shown": len(nights)}


def cleanup(workdir: str) -> list[str]:
    """`all_done`: runs whatever happened upstream; removes the scratch space."""
    scratch = Path(workdir) / "scratch"
    removed = sorted(p.name for p in scratch.glob("*")) if scratch.exists() else []
    shutil.rmtree(scratch, ignore_errors=True)
    return removed


def alert(pipeline: str, run_id: str, token: str, workdir: str) -> str:
    """`one_failed`: would page someone with `token`; writes the page instead
    (never the token itself)."""
    message = f"{pipeline} run {run_id} failed: see `dagrun dlq list --run-id {run_id}`"
    Path(workdir).mkdir(parents=True, exist_ok=True)
    _write_atomically(Path(workdir) / "ALERT.txt", message + f"\n(token of {len(token)} chars)\n")
    return message
