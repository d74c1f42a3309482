"""Parsing of human durations ("30s", "5m", "1h", "2d", 1.5) and sizes ("512MB")."""

from __future__ import annotations

import re

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B?|B)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "B": 1, "K": 1000, "M": 1000**2, "G": 1000**3, "T": 1000**4}


def parse_duration(value: object) -> float:
    """Seconds from a number or a string like "30s"; raises ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration, got {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        match = _DURATION.match(value)
        if not match:
            raise ValueError(f"expected a duration like 30s, 5m, 1h or 2d, got {value!r}")
        seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    else:
        raise ValueError(f"expected a duration, got {value!r}")
    if seconds != seconds or seconds < 0:  # NaN or negative
        raise ValueError(f"expected a non-negative duration, got {value!r}")
    return seconds


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
        size = int(float(match.group(1)) * base)
    else:
        raise ValueError(f"expected a size, got {value!r}")
    if size <= 0:
        raise ValueError(f"expected a positive size, got {value!r}")
    return size
