"""README's examples stay true: its spec examples validate next to
pipelines/etl.py, and its Python API snippets run as written, each alone."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def fences(lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```$", README, flags=re.S | re.M)


@pytest.fixture
def repo_copy(tmp_path: Path) -> Path:
    """The example pipeline's folder, copied without its outputs: the snippets
    run from a repository root and write under pipelines/out."""
    shutil.copytree(ROOT / "pipelines", tmp_path / "pipelines",
                    ignore=shutil.ignore_patterns("out", "__pycache__"))
    return tmp_path


@pytest.mark.parametrize("lang,name", [("toml", "readme.toml"), ("yaml", "readme.yaml")])
def test_first_spec_example_validates_next_to_etl_py(cli, repo_copy, lang, name):
    spec = repo_copy / "pipelines" / name
    spec.write_text(fences(lang)[0])
    r = cli("validate", str(spec))
    assert r.code == 0, r.stderr


def test_python_api_snippets_run_alone(repo_copy):
    snippets = fences("python")
    assert snippets and any("dagrun.Pipeline(" in s for s in snippets)
    for code in snippets:
        # A fresh interpreter per snippet: none may lean on one run before it.
        proc = subprocess.run([sys.executable, "-c", code], cwd=repo_copy, capture_output=True,
                              text=True, timeout=120, stdin=subprocess.DEVNULL)
        assert proc.returncode == 0, (code, proc.stderr[-2000:])
        assert proc.stdout.startswith("succeeded"), (code, proc.stdout)
