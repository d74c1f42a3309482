"""Inputs and outputs larger than a pipe buffer never stall the parent."""

from __future__ import annotations

import time


def test_fan_out_of_a_large_output(cli, write):
    # ~240 KB of JSON passed to 20 short tasks on 4 workers: the parent queues
    # requests on busy workers while they send results back.
    tasks = "".join(f'[tasks.c{i}]\ncall = "basic:echo_len"\ndeps = ["src"]\n'
                    f'inputs = {{ data = "src" }}\n' for i in range(20))
    spec = write("fan.toml", "[pipeline]\nworkers = 4\n[tasks.src]\ncall = \"basic:big_list\"\n"
                 "kwargs = { n = 15000 }\n" + tasks)
    r = cli("run", str(spec), "--json", timeout=60)
    assert r.code == 0, r.stderr
    assert all(r.json["tasks"][f"c{i}"]["output"] == 15000 for i in range(20))


def test_timeout_fires_while_a_large_request_waits(cli, write):
    big = "x" * 200_000
    spec = write("hang.toml", f"""
        [pipeline]
        workers = 1
        [tasks.q]
        call = "basic:const"
        [tasks.a]
        call = "basic:sleep"
        deps = ["q"]
        kwargs = {{ seconds = 30 }}
        timeout = 1
        priority = 5
        [tasks.b]
        call = "basic:const"
        deps = ["q"]
        kwargs = {{ value = "{big}" }}
    """)
    start = time.monotonic()
    r = cli("run", str(spec), "--json", timeout=60)
    elapsed = time.monotonic() - start
    assert r.json["tasks"]["a"]["state"] == "dead_lettered"
    assert "TaskTimeout" in r.json["tasks"]["a"]["error"]
    assert r.json["tasks"]["b"]["output"] == big
    assert elapsed < 15, elapsed  # the 30 s sleep was cut at 1 s (generous for CI)


def test_task_closing_its_fds_is_still_timed_out(cli, write):
    spec = write("fds.toml", """
        [tasks.c]
        call = "basic:close_fds_and_sleep"
        timeout = 1
    """)
    start = time.monotonic()
    r = cli("run", str(spec), "--json", timeout=60)
    assert time.monotonic() - start < 15  # not the task's 30 s
    assert r.code == 1
    assert "TaskTimeout" in r.json["tasks"]["c"]["error"]
