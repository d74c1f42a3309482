"""--state-dir: accepted by every command, refused in one line when unusable;
stray entries in it are ignored."""

from __future__ import annotations

from pathlib import Path


def test_common_options_on_every_command(cli, write, tmp_path: Path):
    spec = str(write("p.toml", '[tasks.a]\ncall = "basic:const"\n'))
    state = str(tmp_path / "st")
    assert cli("validate", spec, "--state-dir", state).code == 0
    assert cli("graph", spec, "--state-dir", state).code == 0
    r = cli("dlq", "list", "--state-dir", state, "--json")
    assert r.code == 0 and r.json == []


def test_state_dir_that_is_a_file_or_empty(cli, write, tmp_path: Path):
    spec = str(write("p.toml", '[tasks.a]\ncall = "basic:const"\n'))
    afile = write("afile", "x")
    for value in (str(afile), ""):
        r = cli("run", spec, "--state-dir", value)
        assert r.code == 2, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert "--state-dir" in r.stderr


def test_stray_folder_in_dlq_is_ignored(cli, tmp_path: Path):
    (tmp_path / "state" / "dlq" / ".tmpx").mkdir(parents=True)
    r = cli("dlq", "list", "--json")
    assert r.code == 0 and r.json == []
