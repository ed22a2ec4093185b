"""Durations written the way operators write them: `500ms`, `10s`, `5m`, `2h`, `1d`."""

from __future__ import annotations

import math
import re

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$", re.ASCII)
# No setting of the prober means anything beyond a year; fields narrow this further.
MIN_DURATION = 0.001
MAX_DURATION = 366 * 86400.0
_FORM = "a duration must be like 500ms, 10s, 5m, 2h or 1d"


def parse_duration(value: object) -> float:
    """Seconds from `10s`-style text or a plain number of seconds, between 1ms and 366d."""
    if isinstance(value, bool):
        raise ValueError(_FORM)
    if isinstance(value, int | float):
        try:
            seconds = float(value)
        except OverflowError:
            seconds = math.inf
    elif isinstance(value, str) and (match := _DURATION.match(value)):
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    else:
        raise ValueError(_FORM)
    if math.isnan(seconds):
        raise ValueError(f"{_FORM}, not NaN")
    if seconds <= 0:
        raise ValueError("a duration must be positive")
    if seconds < MIN_DURATION:
        raise ValueError("a duration must be at least 1ms")
    if seconds > MAX_DURATION:
        raise ValueError(f"a duration must be at most {format_duration(MAX_DURATION)}")
    return seconds


def format_duration(seconds: float) -> str:
    for unit in ("d", "h", "m", "s"):
        size = _UNITS[unit]
        if seconds >= size and (seconds / size).is_integer():
            return f"{int(seconds / size)}{unit}"
    return f"{round(seconds * 1000)}ms" if seconds < 1 else f"{seconds:g}s"
