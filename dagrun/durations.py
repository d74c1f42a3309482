"""Parsing of human durations ("30s", "500ms", "1h30m", "2d", 1.5) and sizes ("512MB")."""

from __future__ import annotations

import math
import re

# Longer than any real timeout, deadline, retry delay or cooldown; beyond it a
# value is a typo ("200000d", inf), and waits that long overflow the OS timers.
MAX_DURATION = 10 * 365 * 86400.0

_UNIT = r"(ms|s|m|h|d)"
_PART = re.compile(rf"(\d+(?:\.\d+)?)\s*{_UNIT}")
_COMPOUND = re.compile(rf"(?:\d+(?:\.\d+)?\s*{_UNIT}\s*)+")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_DURATION_UNITS = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
_UNIT_ORDER = list(_DURATION_UNITS)

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B?|B)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "B": 1, "K": 1000, "M": 1000**2, "G": 1000**3, "T": 1000**4}
_MAX_SIZE = 2**63 - 1  # what the state files (64-bit JSON integers) can hold


def parse_duration(value: object) -> float:
    """Seconds from a number or a string like "30s", "500ms" or "1h30m" (units in
    decreasing order, each once); raises ValueError otherwise, and for values
    that are not finite or longer than ten years."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration, got {value!r}")
    if isinstance(value, int):
        if value > MAX_DURATION:  # before float(): a huge int would overflow it
            raise ValueError(_too_long("a larger number"))
        seconds = float(value)
    elif isinstance(value, float):
        seconds = value
    elif isinstance(value, str):
        seconds = _parse_text(value)
    else:
        raise ValueError(f"expected a duration, got {value!r}")
    if math.isnan(seconds) or seconds < 0:
        raise ValueError(f"expected a non-negative duration, got {value!r}")
    if seconds > MAX_DURATION:  # also inf
        raise ValueError(_too_long(value))
    return seconds


def _parse_text(value: str) -> float:
    text = value.strip()
    if _NUMBER.fullmatch(text):
        return float(text)
    if not _COMPOUND.fullmatch(text):
        raise ValueError(f"expected a duration like 30s, 500ms, 5m, 1h30m or 2d, got {value!r}")
    seconds = 0.0
    last = -1
    for number, unit in _PART.findall(text):
        rank = _UNIT_ORDER.index(unit)
        if rank <= last:
            raise ValueError(f"expected the units of a duration in decreasing order, each "
                             f"once (like 1h30m), got {value!r}")
        last = rank
        seconds += float(number) * _DURATION_UNITS[unit]
    return seconds


def _too_long(value: object) -> str:
    return f"a duration must be finite and at most 10 years (3650d), got {value!r}"


def parse_size(value: object) -> int:
    """Bytes from an int or a string like "512MB" / "1GiB"; raises ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError(f"expected a size, got {value!r}")
    if isinstance(value, int):
        size = value
    elif isinstance(value, str):
        match = _SIZE.match(value)
        if not match:
            raise ValueError(f"expected a size like 512MB or 2GiB, got {value!r}")
        unit = (match.group(2) or "").upper()
        binary = "I" in unit
        letter = unit[:1] if unit not in ("B", "") else ""
        base = 1024 ** " KMGT".index(letter) if binary and letter else _SIZE_UNITS[letter]
        number = float(match.group(1)) * base
        if not number <= _MAX_SIZE:  # also inf
            raise ValueError(f"size {value!r} is too large")
        size = int(number)
    else:
        raise ValueError(f"expected a size, got {value!r}")
    if size <= 0:
        raise ValueError(f"expected a positive size, got {value!r}")
    if size > _MAX_SIZE:
        raise ValueError(f"size {value!r} is too large")
    return size
