"""Values JSON cannot carry: out-of-range integers and NaN in kwargs are spec
errors (exit 2, one line); a NaN output fails its task."""

from __future__ import annotations


def test_huge_integer_in_kwargs_is_a_spec_error(cli, write):
    spec = write("big.toml", '[tasks.a]\ncall = "basic:const"\n'
                 "kwargs = { value = 99999999999999999999 }\n")
    for command in ("validate", "run"):
        r = cli(command, str(spec), "--json")
        assert r.code == 2 and "out of range" in r.stderr and r.stdout == ""
        assert "Traceback" not in r.stderr


def test_nan_in_yaml_kwargs_is_a_spec_error(cli, write):
    spec = write("nan.yaml", "tasks:\n  a: {call: 'basic:const', kwargs: {value: .nan}}\n")
    r = cli("validate", str(spec))
    assert r.code == 2 and "not a JSON number" in r.stderr


def test_nan_output_fails_the_task(cli, write):
    r = cli("run", str(write("n.toml", '[tasks.a]\ncall = "basic:nan"\n')), "--json")
    assert r.code == 1
    assert "NaN or infinity" in r.json["tasks"]["a"]["error"]


CONVERTED = """
import dataclasses, datetime, enum, uuid

class Color(enum.Enum):
    RED = "red"

@dataclasses.dataclass
class Point:
    x: int

def make():
    utc = datetime.timezone.utc
    return {"at": datetime.datetime(2026, 11, 27, 8, 30, tzinfo=utc),
            "naive": datetime.datetime(2026, 11, 27, 8, 30), "day": datetime.date(2026, 11, 27),
            "time": datetime.time(8, 30), "id": uuid.UUID(int=1), "color": Color.RED,
            "point": Point(1)}

def kinds(value):
    return {k: type(v).__name__ for k, v in value.items()}
"""


def test_datetimes_and_friends_become_strings_as_documented(cli, write):
    # README (A pipeline): converted silently, not refused; downstream gets the strings.
    write("conv.py", CONVERTED)
    spec = write("c.toml", '[tasks.a]\ncall = "conv:make"\n'
                 '[tasks.b]\ncall = "conv:kinds"\ndeps = ["a"]\ninputs = { value = "a" }\n')
    r = cli("run", str(spec), "--json")
    assert r.code == 0, r.stderr
    assert r.json["tasks"]["a"]["output"] == {
        "at": "2026-11-27T08:30:00+00:00", "naive": "2026-11-27T08:30:00", "day": "2026-11-27",
        "time": "08:30:00", "id": "00000000-0000-0000-0000-000000000001", "color": "red",
        "point": {"x": 1}}
    assert r.json["tasks"]["b"]["output"] == {
        "at": "str", "naive": "str", "day": "str", "time": "str", "id": "str", "color": "str",
        "point": "dict"}
