"""A task that writes to its worker's inherited result pipe: a protocol error
that kills that worker and fails the attempt as WorkerCrashed, never a crash,
a hang or a timeout of dagrun."""

from __future__ import annotations

import orjson
import pytest

from dagrun.executor import wire

KINDS = ["not_json", "not_dict", "huge_length", "text"]


@pytest.mark.parametrize("kind", KINDS)
def test_a_frame_written_by_the_task_fails_the_attempt_and_resume_finishes(cli, write, kind):
    spec = write("p.toml", f"""
        [pipeline]
        workers = 1
        [tasks.w]
        call = "misbehave:write_to_worker_pipe"
        kwargs = {{ kind = "{kind}" }}
        timeout = "60s"
        [tasks.after]
        call = "basic:const"
        kwargs = {{ value = 1 }}
        deps = ["w"]
        [tasks.other]
        call = "basic:const"
        kwargs = {{ value = 2 }}
    """)
    # Generous subprocess timeout: a huge length prefix hung dagrun before the fix.
    r = cli("run", str(spec), "--json", timeout=45)
    assert r.code == 1, r.stderr
    assert "Traceback" not in r.stderr
    w = r.json["tasks"]["w"]
    assert w["state"] == "dead_lettered"
    assert w["error"].startswith("WorkerCrashed: the task wrote to dagrun's result pipe"), w
    assert r.json["tasks"]["after"]["state"] == "skipped"
    assert r.json["tasks"]["other"]["output"] == 2  # the next worker is fine
    again = cli("resume", r.json["run_id"], "--json", timeout=45)
    assert again.code == 1, again.stderr
    assert "Traceback" not in again.stderr
    assert again.json["tasks"]["other"]["output"] == 2


@pytest.mark.parametrize("kind", ["huge_length", "not_dict"])
def test_the_attempt_is_retried_as_usual(cli, write, tmp_path, kind):
    spec = write("p.toml", f"""
        [tasks.w]
        call = "misbehave:write_to_worker_pipe"
        kwargs = {{ kind = "{kind}", counter = "{tmp_path / 'n'}", until = 2 }}
        retries = 1
        retry_delay = "10ms"
        timeout = "60s"
    """)
    r = cli("run", str(spec), "--json", timeout=45)
    assert r.code == 0, r.stderr
    assert r.json["tasks"]["w"]["output"] == "ok"
    assert r.json["tasks"]["w"]["attempts"] == 2


def _frame(body: bytes, msg_id: int = 7, size: int | None = None) -> bytearray:
    return bytearray(wire.HEADER.pack(wire.MAGIC, msg_id, len(body) if size is None else size)
                     + body)


@pytest.mark.parametrize(("buf", "expected", "says"), [
    (bytearray(b"hello"), 7, "not a dagrun frame"),
    (bytearray(b"d"), 7, None),  # a frame's first byte: wait for the rest
    (_frame(b"{}", msg_id=8), 7, "id 8 where 7"),
    (_frame(b"{}"), None, "while no task was running"),
    (_frame(b"{", size=wire.MAX_FRAME + 1), 7, "over the 1024 MiB cap"),
    (_frame(b"{", size=1000), 7, None),  # incomplete, not yet wrong
])
def test_a_header_is_judged_before_its_body_arrives(buf, expected, says):
    if says is None:
        assert wire.take_frame(buf, expected) is None
    else:
        with pytest.raises(wire.FrameError, match=says):
            wire.take_frame(buf, expected)


@pytest.mark.parametrize(("body", "says"), [
    (b"nope", "not JSON"),
    (b"[1]", "JSON list"),
    (b"[1.0, 2.0, 5, 3, null]", "not a byte range"),
    (b'{"started": "x", "ended": 1}', "'started' is not a number"),
    (b'{"started": 1, "ended": 2, "error": "boom"}', "'error' is not an error"),
])
def test_a_result_body_with_the_wrong_shape_is_a_protocol_error(body, says):
    with pytest.raises(wire.FrameError, match=says):
        wire.result_message(body)


def test_a_well_formed_result_passes():
    body = orjson.dumps({"started": 1.0, "ended": 2, "output": [1]})
    assert wire.result_message(wire.take_frame(_frame(body), 7))["output"] == [1]
