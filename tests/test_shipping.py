"""Code shipping (executor/shipping.py): which files of the pipeline's own code
go into the zip a cluster's workers import, and that the zip imports."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

from dagrun.executor.shipping import build_zip
from dagrun.spec import load_spec


def put(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


def make_project(tmp_path: Path) -> tuple[Path, Path]:
    """A spec folder with a package, a module it imports, a python_path folder,
    a virtualenv-looking folder and a state dir inside the spec folder."""
    proj = tmp_path / "proj"
    put(proj, {
        "flow.toml": """
            [pipeline]
            python_path = ["lib", "venv/lib/python3.11/site-packages", "state"]
            [tasks.a]
            call = "etl.steps:extract"
            [tasks.b]
            call = "toolbox:load"
            deps = ["a"]
            when = "checks:ready"
            [tasks.c]
            call = "vendored:f"
            repeat = { until = "etl.steps:done", max_iterations = 2 }
            [tasks.d]
            call = "json:dumps"
            kwargs = { obj = 1 }
            [tasks.e]
            call = "cached:f"
            """,
        "etl/__init__.py": "",
        "etl/steps.py": """
            import os
            from helpers import shout
            from . import util
            def extract(): return shout(util.N)
            def done(x): return True
            """,
        "etl/util.py": "N = 1\n",
        "etl/data/table.csv": "a,b\n",
        "etl/__pycache__/steps.cpython-311.pyc": "junk",
        "helpers.py": "def shout(x): return x\n",
        "checks.py": "def ready(): return True\n",
        "unrelated.py": "raise SystemExit('never shipped: nothing names it')\n",
        "lib/toolbox/__init__.py": "def load(): return 'lib'\n",
        "lib/toolbox/sub/deep.py": "X = 1\n",
        "venv/pyvenv.cfg": "home = /usr/bin\n",
        "venv/lib/python3.11/site-packages/vendored.py": "def f(): return 0\n",
        "state/cached.py": "def f(): return 0\n",
    })
    return proj, proj / "state"


def test_only_the_pipelines_own_code_is_zipped(tmp_path):
    proj, state = make_project(tmp_path)
    spec = load_spec(proj / "flow.toml")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    path = build_zip(spec, scratch, exclude=[state])
    assert path is not None and Path(path).parent == scratch
    names = sorted(zipfile.ZipFile(path).namelist())
    assert names == ["checks.py", "etl/__init__.py", "etl/data/table.csv", "etl/steps.py",
                     "etl/util.py", "helpers.py", "toolbox/__init__.py",
                     "toolbox/sub/deep.py"]
    # The same code again: the same zip; changed code: a new name (workers cache uploads).
    assert build_zip(spec, scratch, exclude=[state]) == path
    (proj / "helpers.py").write_text("def shout(x): return -x\n")
    assert build_zip(spec, scratch, exclude=[state]) != path


def test_the_zip_imports_as_the_spec_folder_does(tmp_path):
    proj, state = make_project(tmp_path)
    path = build_zip(load_spec(proj / "flow.toml"), tmp_path, exclude=[state])
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import etl.steps, toolbox, checks; "
            "print(etl.steps.extract(), toolbox.load(), etl.steps.__file__.startswith("
            "sys.argv[1]))")
    out = subprocess.run([sys.executable, "-c", code, str(path)], cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1", "lib", "True"]


def test_nothing_to_ship(tmp_path):
    put(tmp_path / "p", {"flow.toml": """
        [tasks.a]
        call = "json:dumps"
        kwargs = { obj = 1 }
        [tasks.b]
        call = "dagrun.sensors:file_exists"
        kwargs = { path = "x" }
        """})
    # Even a copy of dagrun next to the spec is not shipped: workers have their own.
    put(tmp_path / "p", {"dagrun/__init__.py": "", "dagrun/sensors.py": "def file_exists(path): 0"})
    assert build_zip(load_spec(tmp_path / "p" / "flow.toml"), tmp_path) is None
