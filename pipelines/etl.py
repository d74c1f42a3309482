"""The example ETL pipeline's tasks: plain functions, standard library only.

Generates a deterministic sample of sales, cleans it, aggregates it along
several independent branches in parallel and writes a Markdown report. Files
go to pipelines/out/; what flows between tasks is small JSON (paths, totals).
"""

from __future__ import annotations

import csv
import hashlib
import random
import statistics
import time
from collections import Counter, defaultdict
from pathlib import Path

OUT = Path(__file__).resolve().parent / "out"
REGIONS = ["north", "south", "east", "west", "central"]
PRODUCTS = ["widget", "gadget", "doohickey", "gizmo", "sprocket", "flange"]


def _rows(path: str) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def extract(day: str, rows: int = 20000, seed: int = 7) -> dict:
    """Write a raw CSV of sales for `day`; about 2% of rows are malformed."""
    rng = random.Random(f"{seed}-{day}")
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"raw-{day}.csv"
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["order", "customer", "region", "product", "hour", "amount"])
        for i in range(rows):
            amount = round(rng.lognormvariate(3, 0.8), 2)
            if rng.random() < 0.02:
                amount = rng.choice(["", "n/a", "-1"])
            w.writerow([i, f"c{rng.randrange(2000):04d}", rng.choice(REGIONS),
                        rng.choice(PRODUCTS), rng.randrange(24), amount])
    time.sleep(0.3)  # stands in for a slow source, so the live display has something to show
    return {"path": str(path), "rows": rows}


def clean(raw: dict) -> dict:
    """Drop rows whose amount is missing or not positive."""
    kept, dropped = [], 0
    for row in _rows(raw["path"]):
        try:
            if float(row["amount"]) > 0:
                kept.append(row)
                continue
        except ValueError:
            pass
        dropped += 1
    path = OUT / Path(raw["path"]).name.replace("raw-", "clean-")
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(kept[0]))
        w.writeheader()
        w.writerows(kept)
    time.sleep(0.3)
    return {"path": str(path), "rows": len(kept), "dropped": dropped}


def _sum_by(data: dict, key: str) -> dict[str, float]:
    totals: dict[str, float] = defaultdict(float)
    for row in _rows(data["path"]):
        totals[row[key]] += float(row["amount"])
    time.sleep(0.5)
    return {k: round(v, 2) for k, v in sorted(totals.items())}


def by_region(data: dict) -> dict[str, float]:
    return _sum_by(data, "region")


def by_product(data: dict) -> dict[str, float]:
    return _sum_by(data, "product")


def by_hour(data: dict) -> dict[str, int]:
    counts = Counter(int(r["hour"]) for r in _rows(data["path"]))
    time.sleep(0.5)
    return {f"{h:02d}": counts[h] for h in range(24)}


def top_customers(data: dict, n: int = 5) -> list[list]:
    totals: dict[str, float] = defaultdict(float)
    for row in _rows(data["path"]):
        totals[row["customer"]] += float(row["amount"])
    time.sleep(0.5)
    return [[c, round(v, 2)] for c, v in sorted(totals.items(), key=lambda kv: -kv[1])[:n]]


def stats(data: dict) -> dict[str, float]:
    amounts = [float(r["amount"]) for r in _rows(data["path"])]
    time.sleep(0.5)
    return {"count": len(amounts), "mean": round(statistics.fmean(amounts), 4),
            "median": round(statistics.median(amounts), 4),
            "stdev": round(statistics.stdev(amounts), 4)}


def anomalies(data: dict, summary: dict) -> dict:
    """Orders more than three standard deviations above the mean."""
    limit = summary["mean"] + 3 * summary["stdev"]
    big = [r["order"] for r in _rows(data["path"]) if float(r["amount"]) > limit]
    return {"threshold": round(limit, 2), "count": len(big), "first": big[:5]}


def report(day: str, data: dict, regions: dict, products: dict, hours: dict, top: list,
           summary: dict, outliers: dict) -> dict:
    """Fan-in: write the Markdown report and return its path and digest."""
    lines = [f"# Sales report for {day}", "",
             f"{data['rows']} clean orders ({data['dropped']} malformed rows dropped).", "",
             f"Mean order {summary['mean']:.2f}, median {summary['median']:.2f}, "
             f"stdev {summary['stdev']:.2f}; {outliers['count']} orders above "
             f"{outliers['threshold']:.2f}.", "", "## By region", ""]
    lines += [f"- {k}: {v:,.2f}" for k, v in regions.items()]
    lines += ["", "## By product", ""] + [f"- {k}: {v:,.2f}" for k, v in products.items()]
    busiest = max(hours, key=hours.get)
    lines += ["", f"Busiest hour: {busiest}:00 ({hours[busiest]} orders).", "",
              "## Top customers", ""] + [f"- {c}: {v:,.2f}" for c, v in top]
    text = "\n".join(lines) + "\n"
    path = OUT / f"report-{day}.md"
    path.write_text(text)
    return {"path": str(path), "sha256": hashlib.sha256(text.encode()).hexdigest()}


def publish(report: dict) -> str:
    """The last step: in real life an upload; here a line in a manifest."""
    with open(OUT / "published.txt", "a") as fh:
        fh.write(f"{report['sha256']}  {report['path']}\n")
    return report["sha256"][:12]
