"""What a person sees: a live display on a TTY, plain lines with NO_COLOR."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
import time

SPEC = """
[pipeline]
workers = 2
[tasks.a]
call = "basic:sleep"
kwargs = { seconds = 0.4, value = 1 }
[tasks.b]
call = "basic:sleep"
kwargs = { seconds = 0.4, value = 2 }
[tasks.c]
call = "basic:add"
deps = ["a", "b"]
inputs = { x = "a", y = "b" }
"""


def _run_on_tty(args: list[str], env: dict[str, str]) -> tuple[int, str]:
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "dagrun", *args], stdin=slave, stdout=slave,
                            stderr=slave, env={**os.environ, "TERM": "xterm", **env})
    os.close(slave)
    chunks = []
    deadline = time.monotonic() + 60  # generous: a loaded CI machine
    while time.monotonic() < deadline:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    return proc.wait(timeout=30), b"".join(chunks).decode(errors="replace")


def test_live_display_on_a_tty(write):
    spec = write("p.toml", SPEC)
    code, screen = _run_on_tty(["run", str(spec)], {})
    assert code == 0
    assert "done" in screen and "\x1b[" in screen  # rich drew with ANSI sequences
    assert "completed" in screen  # the summary table


def test_no_color_gives_plain_lines_on_a_tty(write):
    spec = write("p.toml", SPEC)
    code, screen = _run_on_tty(["run", str(spec)], {"NO_COLOR": "1"})
    assert code == 0
    assert "\x1b[" not in screen
    assert "[3/3] c completed" in screen
