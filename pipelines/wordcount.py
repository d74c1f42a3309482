"""Tasks of the YAML example: count words in generated text, in parallel chunks."""

from __future__ import annotations

import random
from collections import Counter

WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()


def make_text(lines: int = 4000, seed: int = 1) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(12)) for _ in range(lines)]


def count(text: list[str], part: int, parts: int) -> dict[str, int]:
    counts: Counter[str] = Counter()
    for line in text[part::parts]:
        counts.update(line.split())
    return dict(counts)


def merge(a: dict, b: dict, c: dict, d: dict) -> dict[str, int]:
    total: Counter[str] = Counter()
    for part in (a, b, c, d):
        total.update(part)
    return dict(total.most_common())


def top(counts: dict, n: int = 3) -> list[str]:
    return list(counts)[:n]
