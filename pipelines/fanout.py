"""Tiny tasks for README's Python API helper example (fan_out_in, chain)."""


def square(index: int, data: int = 0) -> int:
    return index * index + data


def total(results: list[int]) -> int:
    return sum(results)


def double(x: int) -> int:
    return 2 * x


def start() -> int:
    return 1
