"""`dagrun report RUN_ID --html FILE`: one self-contained HTML page about a run.

The page has a Gantt timeline of every attempt (one lane per task, since
attempts do not record their worker; a retry is a second bar in the lane),
the DAG drawn as layered SVG, and the task table with durations, errors and
each task's log excerpt. Everything is inline (CSS in a <style>, SVG in the
page): no script, font or stylesheet is fetched, so it opens from a mail
attachment or an air-gapped box, and no JavaScript is needed.

It reads the run's run.json and journal read-only and takes no lock, so it
works on a live run (showing it as far as its journal goes) without ever
making a concurrent `resume` wait.

    journal records ─► attempts() ─► RunView ─► render() ─► HTML text
"""

from __future__ import annotations

import html
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dagrun.spec import PipelineSpec

# Above this many tasks the two drawings show the first ones only (by start
# time / by layer): an SVG of 100k bars is megabytes no browser renders well,
# while the table below still lists every task.
MAX_DRAWN = 1500
LOG_EXCERPT_LINES = 40  # the tail of an attempt's log: where the error usually is

COLOURS = {"completed": "#2e9e5b", "failed": "#e69b1e", "dead_lettered": "#d64541",
           "cancelled": "#8e7cc3", "running": "#3b82f6", "skipped": "#9aa0a6",
           "pending": "#cfd4da", "retrying": "#e69b1e"}


@dataclass
class Bar:
    """One attempt: `outcome` is completed, failed (a retry followed),
    dead_lettered, cancelled (cut short by dagrun) or running (unfinished)."""

    task: str
    number: int
    start: float
    end: float
    outcome: str
    error: str | None = None


@dataclass
class TaskView:
    task: str
    state: str = "pending"
    attempts: int = 0
    error: dict[str, Any] | None = None
    reason: str | None = None
    bars: list[Bar] = field(default_factory=list)
    log: str | None = None

    @property
    def started(self) -> float | None:
        return self.bars[0].start if self.bars else None

    @property
    def seconds(self) -> float:
        return sum(b.end - b.start for b in self.bars)


@dataclass
class RunView:
    run_id: str
    spec: PipelineSpec
    status: str
    created: float
    last: float
    tasks: dict[str, TaskView]


def load_run(state_dir: str | Path, run_id: str) -> RunView:
    """The run as its journal tells it (UnknownRun, exit 2, for a bad id)."""
    from dagrun.store.journal import read_journal
    from dagrun.store.runs import StateDir

    info = StateDir(state_dir).open_run(run_id)
    spec = info.spec
    tasks = {tid: TaskView(tid) for tid in spec.tasks}
    open_: dict[str, tuple[int, float]] = {}
    status = "unfinished"
    created = float(info.meta.get("created") or 0.0)
    last = created
    for rec in read_journal(info.journal_path).records:
        at = float(rec.get("at") or last)
        last = max(last, at)
        if rec.get("kind") == "run":
            status = str(rec.get("status") or status)
            continue
        tid = rec.get("task")
        if tid not in tasks:
            continue
        view, state = tasks[tid], str(rec.get("state"))
        if status != "unfinished":
            status = "unfinished"  # a resume went on after an earlier end
        view.state = state
        view.attempts = int(rec.get("attempts") or 0)
        view.error = rec.get("error") or (None if state == "completed" else view.error)
        view.reason = rec.get("reason")
        if state == "running":
            open_[tid] = (int(rec.get("number") or view.attempts), at)
            continue
        attempt = rec.get("attempt")
        started = open_.pop(tid, None)
        if isinstance(attempt, dict):
            outcome = {"completed": "completed", "retrying": "failed"}.get(state, state)
            err = attempt.get("error")
            view.bars.append(Bar(tid, int(attempt.get("attempt") or 0),
                                 float(attempt.get("started") or (started or (0, at))[1]),
                                 float(attempt.get("ended") or at), outcome,
                                 _summary(err) if err else None))
        elif started is not None:
            view.bars.append(Bar(tid, started[0], started[1], at, "cancelled"))
    # An attempt still open runs to now if the run is live, else (a dagrun that
    # died) to the run's last record: a crashed run's bars must not stretch to today.
    end = max(last, time.time()) if status == "unfinished" and _live(info.path) else last
    for tid, (number, at) in open_.items():
        tasks[tid].bars.append(Bar(tid, number, at, end, "running"))
    run_dir = info.path
    for view in tasks.values():
        if view.bars:
            view.log = log_excerpt(run_dir, view.task, view.bars[-1].number)
    return RunView(run_id, spec, status, created, last, tasks)


def _live(run_dir: Path) -> bool:
    """Whether the run's driving process still lives (its courtesy owner file;
    the lock itself is never touched)."""
    from dagrun.store.fs import pid_alive
    from dagrun.store.runs import Lock

    owner = Lock(run_dir / "lock", "").owner()
    return owner is not None and pid_alive(owner)


def log_excerpt(run_dir: Path, task: str, attempt: int) -> str | None:
    """The tail of a task attempt's captured output, if per-task logs exist."""
    try:
        # An optional module (per-task logs) that this dagrun may not have yet.
        from dagrun.logs import read_log  # type: ignore[import-not-found,attr-defined]
    except ImportError:
        return None  # this dagrun keeps no per-task logs
    try:
        data = read_log(run_dir, task, attempt)
    except Exception:  # a missing or unreadable log: the report goes on without it
        return None
    if data is None:
        return None
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else str(data)
    lines = text.splitlines()
    if len(lines) > LOG_EXCERPT_LINES:
        lines = [f"… {len(lines) - LOG_EXCERPT_LINES} earlier lines"] + lines[
            -LOG_EXCERPT_LINES:]
    return "\n".join(lines) or None


def _summary(err: dict[str, Any]) -> str:
    kind, msg = err.get("type") or "Error", err.get("message") or ""
    return f"{kind}: {msg}" if msg else str(kind)


# ---------------------------------------------------------------- rendering

_CSS = """
body{font:14px/1.4 system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px;color:#1f2328}
h1{font-size:20px;margin:0 0 4px}h2{font-size:16px;margin:28px 0 8px}
.meta{color:#57606a}.badge{display:inline-block;padding:1px 8px;border-radius:10px;
color:#fff;font-size:12px}table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:4px 8px;border-bottom:1px solid #d0d7de;vertical-align:top}
th{background:#f6f8fa}td.num{text-align:right;font-variant-numeric:tabular-nums}
pre{background:#f6f8fa;padding:8px;overflow:auto;max-height:320px;font-size:12px}
svg text{font:12px system-ui,sans-serif}.legend span{margin-right:14px}
.sw{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:4px}
a{color:#0969da}details summary{cursor:pointer}
"""


def render(run: RunView) -> str:
    e = html.escape
    counts: dict[str, int] = {}
    for t in run.tasks.values():
        counts[t.state] = counts.get(t.state, 0) + 1
    started = _when(run.created)
    span = max(0.0, run.last - run.created)
    parts = [
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>",
        f"<title>dagrun {e(run.spec.name)} {e(run.run_id)}</title><style>{_CSS}</style>",
        "</head><body>",
        f"<h1>{e(run.spec.name)} — run {e(run.run_id)} {_badge(run.status)}</h1>",
        f"<div class=meta>started {started} · {_dur(span)} · {len(run.tasks)} tasks: ",
        ", ".join(f"{n} {e(s)}" for s, n in sorted(counts.items())), "</div>",
        '<div class="legend meta" style="margin-top:8px">',
        "".join(f'<span><i class=sw style="background:{c}"></i>{e(k)}</span>'
                for k, c in COLOURS.items() if k != "retrying"),
        "</div>",
        "<h2>Timeline</h2>", _timeline(run),
        "<h2>Graph</h2>", _dag(run),
        "<h2>Tasks</h2>", _table(run),
    ]
    logs = [t for t in run.tasks.values() if t.log]
    if logs:
        parts.append("<h2>Logs</h2>")
        for t in logs:
            parts.append(f'<details id="log-{e(t.task)}"><summary>{e(t.task)} (attempt '
                         f"{t.bars[-1].number})</summary><pre>{e(t.log or '')}</pre></details>")
    parts.append("</body></html>\n")
    return "".join(parts)


def _badge(state: str) -> str:
    # A run's status first: a failed *run* is red, a failed *attempt* orange.
    colour = {"succeeded": COLOURS["completed"], "failed": COLOURS["dead_lettered"],
              "unfinished": COLOURS["running"]}.get(state) or COLOURS.get(state, "#57606a")
    return f'<span class=badge style="background:{colour}">{html.escape(state)}</span>'


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts)) if ts else "?"


def _dur(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    return f"{int(seconds // 60)} min {seconds % 60:02.0f} s"


def _tick_step(span: float) -> float:
    raw = span / 8 if span > 0 else 1.0
    power = 10 ** math.floor(math.log10(raw))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= raw)


def _timeline(run: RunView) -> str:
    lanes = sorted((t for t in run.tasks.values() if t.bars), key=lambda t: t.bars[0].start)
    if not lanes:
        return "<p class=meta>No attempt has started yet.</p>"
    note = ""
    if len(lanes) > MAX_DRAWN:
        note = f"<p class=meta>The first {MAX_DRAWN} of {len(lanes)} tasks by start time.</p>"
        lanes = lanes[:MAX_DRAWN]
    t0 = min(t.bars[0].start for t in lanes)
    t1 = max(b.end for t in lanes for b in t.bars)
    span = max(t1 - t0, 1e-3)
    label_w, plot_w, row, top = 190, 1000, 20, 24
    scale = plot_w / span
    height = top + row * len(lanes) + 8
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{label_w + plot_w + 20}" '
           f'height="{height}" role="img" aria-label="timeline">']
    step = _tick_step(span)
    k = 0
    while k * step <= span + 1e-9:
        x = label_w + k * step * scale
        out.append(f'<line x1="{x:.1f}" y1="{top - 6}" x2="{x:.1f}" y2="{height - 8}" '
                   f'stroke="#eaeef2"/><text x="{x:.1f}" y="{top - 10}" text-anchor="middle" '
                   f'fill="#57606a">{_dur(k * step) if k else "0"}</text>')
        k += 1
    for i, t in enumerate(lanes):
        y = top + i * row
        name = html.escape(t.task)
        out.append(f'<a href="#task-{name}"><text x="{label_w - 8}" y="{y + 14}" '
                   f'text-anchor="end">{html.escape(_short(t.task, 26))}</text></a>')
        for b in t.bars:
            x = label_w + (b.start - t0) * scale
            w = max(4.0, (b.end - b.start) * scale)  # a quick failure stays visible
            tip = f"{t.task} attempt {b.number}: {b.outcome}, {_dur(b.end - b.start)}"
            if b.error:
                tip += f"\n{b.error}"
            out.append(f'<a href="#task-{name}"><rect x="{x:.1f}" y="{y + 3}" width="{w:.1f}" '
                       f'height="{row - 6}" rx="3" fill="{COLOURS.get(b.outcome, "#57606a")}">'
                       f"<title>{html.escape(tip)}</title></rect></a>")
    out.append("</svg>")
    return note + "".join(out)


def _layers(spec: PipelineSpec) -> list[list[str]]:
    """Tasks by longest path from a root, ordered within a layer by their
    parents' mean position (one pass: linear in tasks + edges, plus sorting)."""
    depth: dict[str, int] = {}
    for tid in _topological(spec):
        deps = spec.tasks[tid].deps
        depth[tid] = 1 + max((depth[d] for d in deps), default=-1)
    layers: list[list[str]] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
    pos: dict[str, float] = {}
    for tid in depth:  # topological order: parents are placed first
        layers[depth[tid]].append(tid)
    for layer in layers:
        layer.sort(key=lambda t: sum(pos[d] for d in spec.tasks[t].deps) /
                   len(spec.tasks[t].deps) if spec.tasks[t].deps else -1)
        for i, tid in enumerate(layer):
            pos[tid] = i
    return layers


def _topological(spec: PipelineSpec) -> list[str]:
    from graphlib import TopologicalSorter

    return list(TopologicalSorter({t: s.deps for t, s in spec.tasks.items()}).static_order())


def _dag(run: RunView) -> str:
    spec = run.spec
    layers = _layers(spec)
    drawn = 0
    kept: list[list[str]] = []
    for layer in layers:
        if drawn >= MAX_DRAWN:
            break
        kept.append(layer[:MAX_DRAWN - drawn])
        drawn += len(kept[-1])
    note = (f"<p class=meta>The first {drawn} of {len(spec.tasks)} tasks, by layer.</p>"
            if drawn < len(spec.tasks) else "")
    box_w, box_h, col, row = 150, 26, 200, 38
    xy = {tid: (10 + li * col, 10 + i * row) for li, layer in enumerate(kept)
          for i, tid in enumerate(layer)}
    width = 20 + col * max(len(kept), 1)
    height = 20 + row * max((len(layer) for layer in kept), default=1)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           'role="img" aria-label="task graph">']
    for tid, (x, y) in xy.items():
        for dep in spec.tasks[tid].deps:
            if dep in xy:
                px, py = xy[dep]
                x0, y0, y1 = px + box_w, py + box_h / 2, y + box_h / 2
                mid = (x0 + x) / 2
                out.append(f'<path d="M{x0},{y0} C{mid},{y0} {mid},{y1} {x},{y1}" '
                           'fill="none" stroke="#8c959f"/>')
    for tid, (x, y) in xy.items():
        view = run.tasks[tid]
        name = html.escape(tid)
        out.append(f'<a href="#task-{name}"><rect x="{x}" y="{y}" width="{box_w}" '
                   f'height="{box_h}" rx="5" fill="{COLOURS.get(view.state, "#57606a")}">'
                   f"<title>{name}: {html.escape(view.state)}</title></rect>"
                   f'<text x="{x + 8}" y="{y + 17}" fill="#fff">'
                   f"{html.escape(_short(tid, 20))}</text></a>")
    out.append("</svg>")
    return note + "".join(out)


def _short(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _table(run: RunView) -> str:
    e = html.escape
    rows = ["<table><tr><th>Task</th><th>State</th><th>Attempts</th><th>Started</th>"
            "<th>Duration</th><th>Error</th><th>Log</th></tr>"]
    order = sorted(run.tasks.values(), key=lambda t: (t.started is None, t.started or 0))
    for t in order:
        err = ""
        if t.state == "skipped":
            err = f"skipped: upstream {e(t.reason or '?')} failed"
        elif t.error and t.state != "completed":
            err = e(_summary(t.error))
            tb = t.error.get("traceback")
            if tb:
                err = f"<details><summary>{err}</summary><pre>{e(tb)}</pre></details>"
        started = time.strftime("%H:%M:%S", time.gmtime(t.started)) if t.started else ""
        log = f'<a href="#log-{e(t.task)}">log</a>' if t.log else ""
        rows.append(f'<tr id="task-{e(t.task)}"><td>{e(t.task)}</td><td>{_badge(t.state)}'
                    f"</td><td class=num>{t.attempts}</td><td>{started}</td>"
                    f"<td class=num>{_dur(t.seconds) if t.bars else ''}</td><td>{err}</td>"
                    f"<td>{log}</td></tr>")
    rows.append("</table>")
    return "".join(rows)


def build(state_dir: str | Path, run_id: str) -> str:
    """The report of `run_id` as one HTML document (the library entry point)."""
    return render(load_run(state_dir, run_id))
