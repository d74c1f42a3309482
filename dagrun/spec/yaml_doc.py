"""YAML text -> plain document, safely: PyYAML's safe loader plus

- duplicate keys are errors; `<<` merge keys work (explicit keys override
  merged ones; among merged mappings the first listed wins, as YAML says);
- a key must be hashable (`? [a, b]` is an error, not a TypeError);
- nesting is bounded (PyYAML composes and constructs recursively);
- with aliases, the *expanded* document is bounded (nodes, scalar bytes and
  depth) before anything is constructed, so a few hundred bytes of nested
  aliases (a "billion laughs") fail at once instead of eating memory; a
  recursive alias is an error.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from dagrun.errors import SpecError

# Deeper than any real spec; keeps PyYAML's recursion (and ours) far from
# Python's limit.
MAX_DEPTH = 100
# The expanded document may be this many times the written one (or these
# absolute sizes, whichever is larger): room for `<<: *defaults` on every task
# of a large spec, none for exponential alias nesting.
EXPANSION = 10
MIN_NODES = 1_000_000
MIN_BYTES = 50_000_000

_MERGE_TAG = "tag:yaml.org,2002:merge"
_VALUE_TAG = "tag:yaml.org,2002:value"
_STR_TAG = "tag:yaml.org,2002:str"


class _Loader(yaml.SafeLoader):
    label = "<yaml>"
    depth = 0
    aliases = False

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        if self.check_event(yaml.AliasEvent):
            self.aliases = True
            return super().compose_node(parent, index)
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise SpecError(f"{self.label}: line {mark.line + 1}: nested more than "
                                f"{MAX_DEPTH} levels deep")
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def _line(node: Node) -> int:
    return int(node.start_mark.line) + 1


def _construct_mapping(loader: _Loader, node: MappingNode) -> dict[Any, Any]:
    result: dict[Any, Any] = {}
    explicit: list[tuple[Node, Node]] = []
    for key_node, value_node in node.value:
        if key_node.tag != _MERGE_TAG:
            explicit.append((key_node, value_node))
            continue
        if isinstance(value_node, MappingNode):
            sources = [value_node]
        elif isinstance(value_node, SequenceNode) and all(
                isinstance(n, MappingNode) for n in value_node.value):
            sources = value_node.value
        else:
            raise SpecError(f"{loader.label}: line {_line(key_node)}: '<<' must merge a "
                            "mapping (*anchor) or a list of them")
        for source in reversed(sources):  # the first listed wins
            result.update(loader.construct_object(source, deep=True))
    seen: set[Any] = set()
    for key_node, value_node in explicit:
        if key_node.tag == _VALUE_TAG:
            key_node.tag = _STR_TAG
        key = loader.construct_object(key_node, deep=True)
        try:
            duplicate = key in seen
        except TypeError:
            raise SpecError(f"{loader.label}: line {_line(key_node)}: a mapping key must be "
                            f"a plain value, got a {type(key).__name__}") from None
        if duplicate:
            raise SpecError(f"{loader.label}: line {_line(key_node)}: duplicate key {key!r}")
        seen.add(key)
        result[key] = loader.construct_object(value_node, deep=True)
    return result


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _children(node: Node) -> list[Node]:
    if isinstance(node, MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, SequenceNode):
        return list(node.value)
    return []


def _check_expanded(root: Node, label: str, text_size: int) -> None:
    """Size of the document with every alias expanded, computed on the node
    graph without expanding it (each distinct node measured once, iteratively)."""
    sizes: dict[int, tuple[int, int, int]] = {}  # id -> (nodes, scalar bytes, depth)
    on_path: set[int] = set()
    stack: list[tuple[Node, bool]] = [(root, False)]
    # Measured against the text (a node is at least a few bytes of it).
    max_nodes = max(MIN_NODES, EXPANSION * text_size)
    max_bytes = max(MIN_BYTES, EXPANSION * text_size)
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            on_path.discard(key)
            kids = [sizes[id(k)] for k in _children(node)]
            own = len(node.value) if isinstance(node, ScalarNode) else 0
            sizes[key] = (1 + sum(k[0] for k in kids), own + sum(k[1] for k in kids),
                          1 + max((k[2] for k in kids), default=0))
            n, b, d = sizes[key]
            if n > max_nodes or b > max_bytes or d > MAX_DEPTH:
                raise SpecError(f"{label}: line {_line(node)}: the document expands (through "
                                f"its aliases) to {_expanded_size(n, b, d)}: too large")
            continue
        if key in sizes:
            continue
        if key in on_path:
            raise SpecError(f"{label}: line {_line(node)}: an alias refers to a node that "
                            "contains it (a recursive alias)")
        on_path.add(key)
        stack.append((node, True))
        stack.extend((k, False) for k in _children(node) if id(k) not in sizes)


def _expanded_size(nodes: int, size: int, depth: int) -> str:
    if depth > MAX_DEPTH:
        return f"more than {MAX_DEPTH} levels of nesting"
    return f"{nodes:,} values and {size:,} bytes of text"


def load_yaml(text: str, label: str) -> Any:
    """Parse one YAML document; raises SpecError or yaml.YAMLError."""
    loader = _Loader(text)
    loader.label = label
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if loader.aliases:
            _check_expanded(node, label, len(text))
        return loader.construct_document(node)
    finally:
        loader.dispose()
