"""Shared fixtures.

- Every test runs in its own temporary folder with DAGRUN_STATE_DIR pointing
  inside it, so no test can write to a real ./.dagrun.
- Every test gets a unique DAGRUN_TEST_TOKEN in its environment; processes
  started by the test (dagrun, its workers, their children) inherit it, and
  after the test none of them may still be alive (zombies count as dead).
- `cli(*args)` runs the real `dagrun` command in a subprocess and returns
  (exit code, parsed --json output or None, stderr).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

TASKS_DIR = Path(__file__).parent / "tasks"


def processes_with_token(token: str) -> list[int]:
    found = []
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                state = fh.read().rsplit(b")", 1)[1].split()[0]
            if state in (b"Z", b"X"):
                continue
            with open(f"/proc/{entry}/environ", "rb") as fh:
                env = fh.read()
        except OSError:
            continue
        if f"DAGRUN_TEST_TOKEN={token}".encode() in env:
            found.append(int(entry))
    return found


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    token = uuid.uuid4().hex
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DAGRUN_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("DAGRUN_TEST_TOKEN", token)
    monkeypatch.setenv("PYTHONPATH", str(TASKS_DIR) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.syspath_prepend(str(TASKS_DIR))
    yield token
    # Generous: a killed process group can take a moment to be reaped.
    deadline = time.monotonic() + 5.0
    alive = processes_with_token(token)
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = processes_with_token(token)
    for pid in alive:
        try:
            os.kill(pid, 9)
        except OSError:
            pass
    assert not alive, f"processes started by the test are still alive: {alive}"


@dataclass
class CliResult:
    code: int
    json: Any
    stdout: str
    stderr: str


def run_cli(*args: str, timeout: float = 120, env: dict[str, str] | None = None,
            cwd: str | Path | None = None) -> CliResult:
    proc = subprocess.run(
        [sys.executable, "-m", "dagrun", *args], capture_output=True, timeout=timeout,
        env={**os.environ, **(env or {})}, cwd=cwd, stdin=subprocess.DEVNULL,
    )
    out = proc.stdout.decode()
    parsed = None
    if "--json" in args and out.strip():
        parsed = orjson.loads(out)
    return CliResult(proc.returncode, parsed, out, proc.stderr.decode())


@pytest.fixture
def cli() -> Any:
    return run_cli


@pytest.fixture
def write(tmp_path: Path) -> Any:
    """write("name.toml", text) -> Path; dedents the text."""

    def _write(name: str, text: str) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
        return path

    return _write
