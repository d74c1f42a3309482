"""Every command that finds nothing says in which state directory it looked:
the usual cause is a wrong --state-dir or DAGRUN_STATE_DIR."""

from __future__ import annotations

import os


def test_commands_finding_nothing_name_the_state_dir(cli, write):
    state = os.environ["DAGRUN_STATE_DIR"]
    r = cli("dlq", "list")
    assert r.code == 0 and f"no dead letters in {state}" in r.stderr
    r = cli("dlq", "list", "--run-id", "nope")
    assert r.code == 0 and f"no dead letters of run nope in {state}" in r.stderr
    for args in (["resume", "nope"], ["dlq", "show", "nope", "t"], ["dlq", "retry", "nope"],
                 ["dlq", "purge", "--run-id", "nope"]):
        r = cli(*args)
        assert r.code == 2 and "nope" in r.stderr and state in r.stderr, (args, r.stderr)
    write("ok.toml", """
        [tasks.a]
        call = "basic:const"
    """)
    assert cli("run", "ok.toml", "--run-id", "fine").code == 0
    r = cli("dlq", "retry", "fine")
    assert r.code == 2 and "has no dead letters" in r.stderr and state in r.stderr
    # A different state dir given after the subcommand is the one named.
    other = os.path.join(state, "elsewhere")
    r = cli("dlq", "list", "--state-dir", other)
    assert f"no dead letters in {other}" in r.stderr
