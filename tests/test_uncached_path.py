"""A run with no `cache` keys (nor files_out) pays nothing for caching: the
scheduler, the results and the run wiring do not even import dagrun.cache's
key, store or plug modules (issue 9: W1's per-task overhead)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path


def test_run_without_cache_keys_imports_no_cache_machinery(tmp_path: Path) -> None:
    (tmp_path / "noop_tasks.py").write_text("def noop():\n    return None\n")
    spec = tmp_path / "p.toml"
    spec.write_text('[pipeline]\nname = "p"\n\n'
                    + "".join(f'[tasks.t{i}]\ncall = "noop_tasks:noop"\n\n' for i in range(3)))
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(tmp_path)!r})
        import dagrun
        from dagrun.api import load
        result = dagrun.run(load({str(spec)!r}), state_dir={str(tmp_path / "state")!r})
        assert result.status == "succeeded", result.status
        print(" ".join(sorted(m for m in sys.modules if m.startswith("dagrun.cache."))))
    """)
    # Generous: a cold interpreter on a loaded 2-core machine.
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    imported = set(out.stdout.split())
    assert not imported & {"dagrun.cache.plug", "dagrun.cache.key", "dagrun.cache.store"}, imported
