"""Property: whatever document reaches the spec loader — random TOML or YAML
text, random nested structures shaped like a spec — it either loads into a
spec that a run can store (the snapshot round-trips through orjson) or fails
with a documented exit-2 error. Never another exception."""

from __future__ import annotations

import json
import math

import orjson
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from dagrun.errors import SpecError, UsageError
from dagrun.spec import load_spec, parse_document, snapshot

KEYS = ["pipeline", "defaults", "tasks", "breakers", "x-a", "name", "workers", "deadline",
        "durability", "python_path", "call", "deps", "inputs", "kwargs", "timeout",
        "timeout_grace", "retries", "retry_delay", "retry_backoff", "retry_max_delay",
        "retry_jitter", "retry_on", "no_retry_on", "priority", "memory_limit", "breaker",
        "cooldown", "max_wait", "failure_threshold", "a", "b", "value", "<<"]
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(),
    st.sampled_from(["basic:const", "basic:total", "a", "b", "1h30m", "500ms", "inf",
                     "200000d", "exponential", "512MB", "x\n", "", "api", ".."]),
    st.text(max_size=8))
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=4),
                                            inner, max_size=5)),
    max_leaves=30)
TASK = st.dictionaries(st.sampled_from(KEYS[9:]), VALUES, max_size=6).map(
    lambda d: {"call": "basic:const", **d})
DOCS = st.fixed_dictionaries(
    {"tasks": st.dictionaries(st.sampled_from(["a", "b", "c", "bad id", "x\n"]), TASK,
                              max_size=3)},
    optional={"pipeline": VALUES, "defaults": st.dictionaries(st.sampled_from(KEYS), VALUES),
              "breakers": st.dictionaries(st.sampled_from(["api", "db"]), VALUES),
              "x-anchors": VALUES})


def check(load) -> None:
    try:
        spec = load()
    except (SpecError, UsageError) as exc:
        assert "\n" not in str(exc)  # one line
        return
    # Loaded: a run must be able to store and reload its snapshot.
    assert snapshot.from_dict(orjson.loads(orjson.dumps(snapshot.to_dict(spec)))) == spec


FUZZ = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])


@FUZZ
@given(doc=DOCS)
def test_random_structures(doc) -> None:
    check(lambda: parse_document(doc))


def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) \
            else repr(v)
    if isinstance(v, (int, str)):
        return json.dumps(v) if isinstance(v, str) else str(v)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v if x is not None) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))} = {toml_value(x)}"
                               for k, x in v.items() if x is not None) + "}"
    return '""'


def toml_text(doc) -> str:
    lines = []
    for top, body in doc.items():
        if top == "tasks":
            for tid, task in body.items():
                lines.append(f"[tasks.{json.dumps(tid)}]")
                lines += [f"{json.dumps(k)} = {toml_value(v)}" for k, v in task.items()
                          if v is not None]
        elif isinstance(body, dict):
            lines.append(f"[{json.dumps(top)}]")
            lines += [f"{json.dumps(str(k))} = {toml_value(v)}" for k, v in body.items()
                      if v is not None]
        elif body is not None:
            lines.insert(0, f"{json.dumps(top)} = {toml_value(body)}")
    return "\n".join(lines) + "\n"


@FUZZ
@given(doc=DOCS, noise=st.text(max_size=20), cut=st.integers(min_value=0, max_value=400))
def test_random_toml_and_yaml_text(tmp_path, doc, noise, cut) -> None:
    for name, text in [("f.toml", toml_text(doc)), ("f.yaml", yaml.safe_dump(doc))]:
        for variant in (text, text[:cut] + noise + text[cut:]):
            path = tmp_path / name
            path.write_text(variant, encoding="utf-8", errors="surrogatepass")
            check(lambda p=path: load_spec(p))


@FUZZ
@given(text=st.text(alphabet=st.sampled_from(list("ab:-[]{}&*<>?!|,'\"\n #x12F\\U")),
               max_size=80))
@example(text='a: "\\UFFFFFFFF"')
@example(text="? [a, b]\n: 1")
def test_random_yaml_syntax(tmp_path, text) -> None:
    path = tmp_path / "f.yaml"
    path.write_text(text)
    check(lambda: load_spec(path))
