"""dagrun report RUN_ID --html FILE: a self-contained page, checked as text and
rendered by a real headless Chromium."""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest

MIXED = """
[pipeline]
name = "mixed"
workers = 2

[tasks.a]
call = "basic:const"
kwargs = { value = 1 }

[tasks.b]
call = "misbehave:flaky"
kwargs = { counter = "{counter}", succeed_on = 2 }
retries = 1

[tasks.c]
call = "misbehave:fail_always"
kwargs = { kind = "ValueError" }

[tasks.d]
call = "basic:const"
deps = ["c"]

[tasks.e]
call = "basic:const"
deps = ["a", "b"]
"""


@pytest.fixture
def mixed_run(cli, write, tmp_path):
    spec = write("mixed.toml", MIXED.replace("{counter}", str(tmp_path / "counter")))
    res = cli("run", str(spec), "--json")
    assert res.code == 1, res.stderr
    return res.json["run_id"]


def test_report_is_self_contained_and_shows_every_attempt(cli, mixed_run, tmp_path):
    out = tmp_path / "report.html"
    res = cli("report", mixed_run, "--html", str(out))
    assert res.code == 0, res.stderr
    assert res.stdout == ""
    page = out.read_text()
    low = page.lower()
    # Nothing fetched from anywhere: no script at all, no stylesheet, font or image URL.
    for banned in ("<script", "<link", "@import", "url(", "src=", "@font-face"):
        assert banned not in low, banned
    assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", page)
    assert "<svg" in page and "<style>" in page
    # b's retry is two bars: the failed first attempt and the completed second.
    assert "b attempt 1: failed" in page
    assert "b attempt 2: completed" in page
    assert "c attempt 1: dead_lettered" in page
    assert "ValueError: failing on purpose" in page
    assert "skipped: upstream c failed" in page
    for task in "abcde":
        assert f'id="task-{task}"' in page


def test_unknown_run_is_one_line_exit_2(cli, tmp_path):
    res = cli("report", "no-such-run", "--html", str(tmp_path / "r.html"))
    assert res.code == 2
    assert res.stderr.count("\n") == 1 and "no run 'no-such-run'" in res.stderr
    assert not (tmp_path / "r.html").exists()


def test_report_of_a_live_run_takes_no_lock(cli, write, tmp_path):
    spec = write("slow.toml", """
        [tasks.nap]
        call = "basic:sleep"
        kwargs = { seconds = 30 }
        """)
    proc = subprocess.Popen([sys.executable, "-m", "dagrun", "run", str(spec), "--run-id",
                             "live1"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        journal = Path("state/runs/live1/journal")
        deadline = time.monotonic() + 30  # generous: a loaded machine starts slowly
        while time.monotonic() < deadline and b"running" not in (
                journal.read_bytes() if journal.exists() else b""):
            time.sleep(0.1)
        res = cli("report", "live1", "--html", str(tmp_path / "live.html"))
        assert res.code == 0, res.stderr
        page = (tmp_path / "live.html").read_text()
        assert "unfinished" in page and "nap attempt 1: running" in page
        assert proc.poll() is None, "the report disturbed the live run"
    finally:
        proc.terminate()
        proc.wait(timeout=60)


# ---------------------------------------------------------------- in a browser


def png_colours(data: bytes, limit: int = 64) -> int:
    """How many distinct pixel colours an 8-bit RGB/RGBA PNG has (counting stops
    at `limit`): a blank page has one or two."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width, height, channels = 8, b"", 0, 0, 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour_type = struct.unpack(">IIBB", body[:10])
            assert depth == 8 and colour_type in (2, 6), (depth, colour_type)
            channels = 3 if colour_type == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = width * channels
    prev = bytearray(stride)
    seen: set[bytes] = set()
    for y in range(height):
        line = raw[y * (stride + 1):(y + 1) * (stride + 1)]
        ftype, cur = line[0], bytearray(line[1:])
        for i in range(stride):  # undo the PNG row filter (RFC 2083, 6.2)
            a = cur[i - channels] if i >= channels else 0
            b = prev[i]
            if ftype == 1:
                cur[i] = (cur[i] + a) & 0xFF
            elif ftype == 2:
                cur[i] = (cur[i] + b) & 0xFF
            elif ftype == 3:
                cur[i] = (cur[i] + (a + b) // 2) & 0xFF
            elif ftype == 4:
                c = prev[i - channels] if i >= channels else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                cur[i] = (cur[i] + pred) & 0xFF
        if y % 8 == 0:  # sampling rows is plenty to tell a page from a blank
            seen.update(bytes(cur[x:x + 3]) for x in range(0, stride, channels * 4))
            if len(seen) >= limit:
                return len(seen)
        prev = cur
    return len(seen)


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(chromium() is None, reason="no chromium on PATH (Debian: apt-get install "
                    "chromium; .ci/run installs it)")
def test_report_renders_in_headless_chromium(cli, mixed_run, tmp_path):
    out = tmp_path / "report.html"
    assert cli("report", mixed_run, "--html", str(out)).code == 0
    shot = tmp_path / "shot.png"
    # No network: the flags keep Chromium's own background traffic off too.
    proc = subprocess.run(
        [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}",
         f"--screenshot={shot}", "--window-size=1400,900", out.as_uri()],
        capture_output=True, timeout=180,  # generous: a cold start on a loaded machine
        stdin=subprocess.DEVNULL)
    assert shot.exists(), proc.stderr.decode()[-2000:]
    assert png_colours(shot.read_bytes()) >= 16, "the screenshot is (nearly) blank"
