"""Command-line arguments: usage errors are one line; any spec file name works."""

from __future__ import annotations


def test_usage_errors_are_one_line(cli):
    r = cli("run")
    assert r.code == 2
    assert len(r.stderr.strip().splitlines()) == 1 and "Missing argument" in r.stderr


def test_spec_file_name_that_is_not_an_id(cli, write):
    spec = write("my etl.toml", '[tasks.a]\ncall = "basic:const"\n')
    r = cli("run", str(spec), "--json")
    assert r.code == 0, r.stderr
