"""`make bench` / `make bench-quick`: dagrun against the floor, one table.

    python -m bench [--quick] [--runs N] [--only W1,W2,...]

Every measurement runs in its own process (bench/child.py, or the dagrun CLI),
measurements of one workload are interleaved (floor, API, CLI, floor, ...) so
that noise from the shared machine hits them alike, and the table shows
medians. Specs and the task module are generated into a temporary folder.
"""

from __future__ import annotations

import argparse
import compileall
import importlib.util
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

from bench import measure
from bench.workloads import WORKERS, Workload, all_workloads
from dagrun.spec import DEFAULT_DURABILITY, DURABILITY_MODES

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable


class Bench:
    def __init__(self, folder: Path, runs: int) -> None:
        self.folder = folder
        self.runs = runs
        self.rows: list[list[str]] = []
        self.notes: list[str] = []
        self.env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep
                    + os.environ.get("PYTHONPATH", "")}
        self.env.pop("DAGRUN_STATE_DIR", None)
        self._n = 0
        self.metrics = False  # --metrics: a row for the CLI with --metrics-file
        self.dask = False  # W1, W4: rows on a Dask LocalCluster (distributed installed)

    def state(self) -> str:
        self._n += 1
        return str(self.folder / f"state{self._n}")

    def _child(self, *args: str) -> tuple[dict, measure.Measured]:
        m = measure.run([PY, "-m", "bench.child", *args], env=self.env, cwd=str(ROOT))
        if m.code != 0:
            raise SystemExit(f"bench: {' '.join(args[:2])} failed:\n{m.stderr.decode()}")
        return orjson.loads(m.stdout.splitlines()[-1]), m

    def floor(self, w: Workload) -> tuple[float, float, measure.Measured]:
        out, m = self._child("floor", str(w.path))
        return out["run"], out["parse"], m

    def raw(self, path: Path) -> tuple[float, measure.Measured]:
        out, m = self._child("raw", str(path))
        return out["run"], m

    def api(self, w: Workload, durability: str = "default", path: Path | None = None,
            state: str | None = None) -> tuple[float, measure.Measured]:
        out, m = self._child("api", str(path or w.path), state or self.state(), durability)
        if out["status"] != "succeeded":
            raise SystemExit(f"bench: dagrun run of {w.key} {out['status']}")
        return out["run"], m

    def cli(self, *args: str, on_start: object = None) -> measure.Measured:
        m = measure.run([PY, "-m", "dagrun", *args], env=self.env, cwd=str(self.folder),
                        on_start=on_start)
        return m

    def cli_run(self, w: Workload, *extra: str, on_start: object = None,
                path: Path | None = None, state: str | None = None) -> measure.Measured:
        m = self.cli("run", str(path or w.path), "--json", "--workers", str(WORKERS),
                     "--state-dir", state or self.state(), *extra, on_start=on_start)
        if m.code != 0 and not extra:
            raise SystemExit(f"bench: dagrun run {w.key} exited {m.code}:\n{m.stderr.decode()}")
        return m

    def row(self, w: Workload, runner: str, walls: list[float], mems: list[float],
            floor: float | None, ideal: float | None = None) -> float:
        med = statistics.median(walls)
        base = ideal if ideal is not None else 0.0
        per_task = (med - base) / w.tasks * 1e6
        ratio = "" if floor is None else f"{med / floor:.2f}x"
        extra = "" if floor is None else f"{(med - floor) / w.tasks * 1e6:+,.0f}"
        self.rows.append([w.key, runner, f"{med:.3f}", f"{per_task:,.0f}", extra, ratio,
                          f"{max(mems):.0f}", f"{len(walls)}"])
        print(f"  {w.key} {runner}: {med:.3f}s {ratio}", file=sys.stderr, flush=True)
        return med

    # ------------------------------------------------------------ workloads

    def small(self, w: Workload, durability_modes: bool = False) -> None:
        """W1-W4: floor, dagrun API (run phase) and dagrun CLI (whole process)."""
        print(f"{w.key}: {w.title}", file=sys.stderr, flush=True)
        res: dict[str, tuple[list[float], list[float]]] = {}

        def add(name: str, wall: float, m: measure.Measured) -> None:
            walls, mems = res.setdefault(name, ([], []))
            walls.append(wall)
            mems.append(m.tree_mb)

        modes = [m for m in DURABILITY_MODES if m != DEFAULT_DURABILITY] if durability_modes else []
        for _ in range(self.runs):
            wall, _, m = self.floor(w)
            add("floor (ProcessPoolExecutor)", wall, m)
            wall, m = self.raw(w.path)
            add("raw floor (fork + pipes)", wall, m)
            wall, m = self.api(w)
            add(f"dagrun API, run phase ({DEFAULT_DURABILITY})", wall, m)
            m = self.cli_run(w)
            add("dagrun CLI, whole process", m.wall, m)
            if w.cached is not None:  # W1: every task cached, a cold cache
                m = self.cli_run(w, path=w.cached)
                add("dagrun CLI, cache = true, cold", m.wall, m)
            if self.metrics:
                m = self.cli_run(w, "--metrics-file", str(self.folder / "bench.prom"))
                add("dagrun CLI, --metrics-file", m.wall, m)
            for mode in modes:
                wall, m = self.api(w, mode)
                add(f"dagrun API, --durability {mode}", wall, m)
            if self.dask and w.key in ("W1", "W4"):
                out, m = self._child("dask", str(w.path), self.state())
                if out["status"] != "succeeded":
                    raise SystemExit(f"bench: dagrun run of {w.key} on dask {out['status']}")
                add("dask: raw client.submit (LocalCluster)", out["raw"], m)
                add("dask: dagrun --executor dask, same cluster", out["run"], m)
                m = self.cli_run(w, "--executor", "dask")
                if m.code != 0:
                    raise SystemExit(f"bench: dagrun run {w.key} --executor dask exited "
                                     f"{m.code}:\n{m.stderr.decode()}")
                add("dask: dagrun CLI --executor dask (own cluster), whole", m.wall, m)
        floor = None
        for name, (walls, mems) in res.items():
            med = self.row(w, name, walls, mems, floor,
                           ideal=w.ideal if w.ideal else None)
            if floor is None:
                floor = med
        api = statistics.median(res[f"dagrun API, run phase ({DEFAULT_DURABILITY})"][0])
        pool = statistics.median(res["floor (ProcessPoolExecutor)"][0])
        raw = statistics.median(res["raw floor (fork + pipes)"][0])
        self.notes.append(f"{w.key}: dagrun API run phase {api:.2f}s = {api / pool:.2f}x the "
                          f"ProcessPoolExecutor floor ({pool:.2f}s), {api / raw:.2f}x the raw "
                          f"floor ({raw:.2f}s)")
        if "dagrun CLI, cache = true, cold" in res:
            plain = statistics.median(res["dagrun CLI, whole process"][0])
            cold = statistics.median(res["dagrun CLI, cache = true, cold"][0])
            self.notes.append(f"{w.key}: cache = true with a cold cache {cold:.2f}s = "
                              f"{cold / plain:.2f}x without cache ({plain:.2f}s), CLI")
        if "dask: raw client.submit (LocalCluster)" in res:
            raw_dask = statistics.median(res["dask: raw client.submit (LocalCluster)"][0])
            on_dask = statistics.median(res["dask: dagrun --executor dask, same cluster"][0])
            self.notes.append(
                f"{w.key}: on Dask ({WORKERS} single-threaded workers) dagrun {on_dask:.2f}s = "
                f"{on_dask / raw_dask:.2f}x raw client.submit ({raw_dask:.2f}s); µs/task "
                f"{(on_dask - w.ideal) / w.tasks * 1e6:,.0f} vs "
                f"{(raw_dask - w.ideal) / w.tasks * 1e6:,.0f}"
                + (f"; {(on_dask / w.ideal - 1) * 100:+.1f}% off ideal" if w.ideal else ""))
        if w.ideal:
            api = statistics.median(res[f"dagrun API, run phase ({DEFAULT_DURABILITY})"][0])
            self.notes.append(f"{w.key}: ideal {w.ideal:.2f}s; dagrun API run phase is "
                              f"{(api / w.ideal - 1) * 100:+.1f}% off ideal")

    def fan_out(self, w: Workload) -> None:
        """W6: a map over N no-op elements against N plain tasks (both through the
        API, run phase) and the raw floor running the same map; journal bytes per
        element and peak RSS of the dagrun process (CLI)."""
        print(f"W6: {w.title}", file=sys.stderr, flush=True)
        assert w.plain is not None
        res: dict[str, tuple[list[float], list[float]]] = {}
        journal_bytes: list[int] = []

        def add(name: str, wall: float, m: measure.Measured) -> None:
            walls, mems = res.setdefault(name, ([], []))
            walls.append(wall)
            mems.append(m.tree_mb)

        rss: dict[str, float] = {}
        for _ in range(max(1, self.runs // 2)):
            wall, m = self.raw(w.path)
            add("raw floor, the same map", wall, m)
            state = self.state()
            wall, m = self.api(w, state=state)
            add("dagrun API, map (run phase)", wall, m)
            journal_bytes.append(sum(p.stat().st_size
                                     for p in Path(state).glob("runs/*/journal")))
            wall, m = self.api(w, path=w.plain)
            add("dagrun API, N plain tasks", wall, m)
        m = self.cli_run(w)
        rss["map"] = m.root_mb
        add("dagrun CLI, map, whole process", m.wall, m)
        m = self.cli("run", str(w.plain), "--json", "--workers", str(WORKERS), "--state-dir",
                     self.state())
        rss["plain"] = m.root_mb
        add("dagrun CLI, N plain tasks, whole process", m.wall, m)
        raw = None
        for name, (walls, mems) in res.items():
            med = self.row(w, name, walls, mems, raw)
            if raw is None:
                raw = med
        mapped = statistics.median(res["dagrun API, map (run phase)"][0])
        plain = statistics.median(res["dagrun API, N plain tasks"][0])
        per = statistics.median(journal_bytes) / w.tasks
        self.notes.append(
            f"W6: map {mapped:.2f}s vs {w.tasks:,} plain tasks {plain:.2f}s "
            f"({mapped / plain:.2f}x) and vs the raw floor {raw:.2f}s ({mapped / raw:.2f}x); "
            f"journal {per:.0f} bytes per element; peak RSS of dagrun (CLI) "
            f"{rss['map']:.0f} MB for the map, {rss['plain']:.0f} MB for the plain tasks")

    def warm(self, w: Workload) -> None:
        """W7: the CLI twice on one state dir: a cold cache, then every task a hit."""
        print(f"W7: {w.title}", file=sys.stderr, flush=True)
        res: dict[str, tuple[list[float], list[float]]] = {}
        for _ in range(self.runs):
            state = self.state()
            for name in ("dagrun CLI, first run (cold cache)",
                         "dagrun CLI, second run (every task a hit)"):
                m = self.cli_run(w, state=state)
                walls, mems = res.setdefault(name, ([], []))
                walls.append(m.wall)
                mems.append(m.tree_mb)
            tasks = orjson.loads(m.stdout)["tasks"]
            if sum(1 for t in tasks.values() if t.get("cached")) != w.tasks:
                raise SystemExit("bench: W7's second run was not all cache hits")
        cold = None
        for name, (walls, mems) in res.items():
            med = self.row(w, name, walls, mems, cold)
            if cold is None:
                cold = med
        self.notes.append(f"W7: second run {med:.2f}s = {med / cold:.2f}x the first "
                          f"({cold:.2f}s), CLI")

    def scale(self, w: Workload) -> None:
        print(f"W5: {w.title}", file=sys.stderr, flush=True)
        walls, parses, mems = [], [], []
        for _ in range(max(1, self.runs // 3)):
            wall, parse, m = self.floor(w)
            walls.append(wall)
            parses.append(parse)
            mems.append(m.tree_mb)
        floor = statistics.median(walls)
        parse = statistics.median(parses)
        self.row(w, "floor run phase", walls, mems, None)
        self.row(w, "tomllib parse alone", parses, [0.0], None)
        v = self.cli("validate", str(w.path))
        if v.code != 0:
            raise SystemExit(f"bench: dagrun validate failed:\n{v.stderr.decode()}")
        self.row(w, "dagrun validate (CLI)", [v.wall], [v.tree_mb], None)
        m = self.cli_run(w)
        self.row(w, "dagrun run (CLI)", [m.wall], [m.tree_mb], floor + parse)
        self.notes.append(f"W5: floor run phase + parse = {floor + parse:.2f}s; dagrun run "
                          f"(CLI) = {m.wall / (floor + parse):.2f}x that; peak RSS of the "
                          f"dagrun process {m.root_mb:.0f} MB; validate {v.wall:.2f}s")
        self.resume(w)

    def resume(self, w: Workload) -> None:
        """Kill a run at ~50% of its tasks completed, then time `dagrun resume` until
        the first task is dispatched (its first `running` record)."""
        probe = subprocess.run([PY, "-m", "dagrun", "resume", "--help"], env=self.env,
                               capture_output=True)
        if probe.returncode != 0:
            self.notes.append("W5 resume: pending (`dagrun resume` is not on this branch yet)")
            return
        state = self.state()
        run_id = "w5-killed"
        journal = Path(state) / "runs" / run_id / "journal"
        half = w.tasks // 2

        def kill_at_half(proc: subprocess.Popen) -> None:
            seen, offset = 0, 0
            while proc.poll() is None and seen < half:
                time.sleep(0.01)
                try:
                    with open(journal, "rb") as fh:
                        fh.seek(offset)
                        data = fh.read()
                except FileNotFoundError:
                    continue
                cut = data.rfind(b"\n") + 1
                offset += cut
                seen += data[:cut].count(b'"state":"completed"')
            os.kill(proc.pid, signal.SIGKILL)

        self.cli("run", str(w.path), "--json", "--workers", str(WORKERS), "--state-dir", state,
                 "--run-id", run_id, on_start=kill_at_half)
        time.sleep(1.0)  # the sentinels kill the orphaned workers
        start_size = journal.stat().st_size
        first: list[float] = []

        def watch(proc: subprocess.Popen) -> None:
            t0 = time.perf_counter()
            offset = start_size
            while proc.poll() is None and not first:
                with open(journal, "rb") as fh:
                    fh.seek(offset)
                    data = fh.read()
                if b'"state":"running"' in data:
                    first.append(time.perf_counter() - t0)
                    return
                offset += data.rfind(b"\n") + 1
                time.sleep(0.005)

        m = self.cli("resume", run_id, "--json", "--state-dir", state, on_start=watch)
        if m.code != 0 or not first:
            self.notes.append(f"W5 resume: failed (exit {m.code}): "
                              f"{m.stderr.decode().strip()[-300:]}")
            return
        self.row(w, "dagrun resume: until dispatching", [first[0]], [m.tree_mb], None)
        self.notes.append(f"W5 resume after SIGKILL at {half:,} completed: dispatching after "
                          f"{first[0]:.2f}s, whole resume {m.wall:.2f}s, peak RSS "
                          f"{m.root_mb:.0f} MB")

    # ------------------------------------------------------------ output

    def table(self) -> str:
        head = ["workload", "runner", "median s", "µs/task", "+µs/task", "vs floor", "tree MB",
                "runs"]
        widths = [max(len(r[i]) for r in [head, *self.rows]) for i in range(len(head))]
        lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)) + " |",
                 "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
        for r in self.rows:
            cells = [c.rjust(w) if i >= 2 else c.ljust(w)
                     for i, (c, w) in enumerate(zip(r, widths, strict=True))]
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return (f"{os.cpu_count()} CPUs ({cpu}), Python {platform.python_version()}, "
            f"{platform.system()} {platform.release()}, {WORKERS} workers")


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench")
    ap.add_argument("--quick", action="store_true", help="smaller sizes (< 2 minutes)")
    ap.add_argument("--runs", type=int, default=5, help="runs per measurement (median)")
    ap.add_argument("--only", default="W1,W2,W3,W4,W5,W6,W7", help="comma-separated workloads")
    ap.add_argument("--metrics", action="store_true", help="W1-W4: also time the CLI with "
                    "--metrics-file, interleaved with the others")
    ap.add_argument("--no-dask", action="store_true", help="W1, W4: skip the Dask rows "
                    "(they run when `distributed` is installed)")
    args = ap.parse_args()
    only = {k.strip().upper() for k in args.only.split(",")}
    t0 = time.perf_counter()
    # Bytecode for dagrun's modules, as an installed package has: without it, and
    # with PYTHONDONTWRITEBYTECODE set, every measured process would also compile
    # the ~40 modules a run imports (tens of ms; __pycache__ is in .gitignore).
    compileall.compile_dir(str(ROOT / "dagrun"), quiet=1)
    folder = Path(tempfile.mkdtemp(prefix="dagrun-bench-"))
    try:
        workloads = all_workloads(folder, args.quick)
        b = Bench(folder, args.runs)
        b.metrics = args.metrics
        b.dask = not args.no_dask and importlib.util.find_spec("distributed") is not None
        for key, w in workloads.items():
            if key not in only:
                continue
            if key == "W5":
                b.scale(w)
            elif key == "W6":
                b.fan_out(w)
            elif key == "W7":
                b.warm(w)
            else:
                b.small(w, durability_modes=key == "W1")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(f"\n{machine()}; medians of {args.runs} runs"
          f"{' (quick sizes)' if args.quick else ''}\n")
    print(b.table())
    print()
    print("µs/task: (median wall - ideal) / tasks; ideal is 0 except W4 (sleeps / workers).")
    print("+µs/task: overhead per task over the floor (or, for W5 run, over floor + parse; for "
          "W6, over the raw floor).")
    print("tree MB: peak PSS of the measured process tree (interpreter, workers, sentinels).")
    for note in b.notes:
        print(f"- {note}")
    print(f"\nbench: {time.perf_counter() - t0:.0f}s in all")


if __name__ == "__main__":
    main()
