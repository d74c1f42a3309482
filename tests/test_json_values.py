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
