"""Units a user writes: sizes ("10MB"), durations ("1h30m"), rates ("50/s", "10000/day")
and shares ("5%", 0.05).

Part of the kernel: the job loader, the rate limiter, the sink and the command line all
read these, so they live below all of them. `describe_value` says how a value from a job
file reads to a user, for "expected X, got Y" messages.
"""

from __future__ import annotations

import datetime
import math
import re
from dataclasses import dataclass

__all__ = ["Rate", "describe_value", "parse_duration", "parse_rate", "parse_share", "parse_size"]

_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([kmg]i?b?|b)?\s*\Z", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
_DURATION_PART = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|sec|min|s|m|h|d)", re.IGNORECASE)
_DURATION_UNITS = {
    "ms": 0.001,
    "s": 1.0,
    "sec": 1.0,
    "m": 60.0,
    "min": 60.0,
    "h": 3600.0,
    "d": 86400.0,
}
RATE_UNITS = {"s": 1.0, "min": 60.0, "h": 3600.0, "day": 86400.0}
_RATE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*/\s*(s|min|h|day)\s*\Z")
_RATE_EXAMPLES = "50/s, 600/min, 1000/h or 10000/day"
_PERCENT = re.compile(r"\s*(\d+(?:\.\d+)?)\s*%\s*\Z")


def describe_value(value: object) -> str:
    """How a YAML value reads to a user, for "expected X, got Y"."""
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, (int, float)):
        return f"the number {value}"
    if isinstance(value, str):
        return f"the string {value!r}" if len(value) <= 40 else "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, (datetime.date, datetime.datetime)):
        return "a date"
    return type(value).__name__


def parse_size(value: str | int) -> int:
    """Bytes from an int or a string like "10MB", "512KB", "1.5 MiB" (units are powers of 1024)."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(f"expected a size like 10MB, got {describe_value(value)}")
    if isinstance(value, int):
        size = value
    else:
        match = _SIZE.match(value)
        if match is None:
            raise ValueError(f"not a size: {value!r} (write e.g. 512KB or 10MB)")
        unit = (match.group(2) or "").lower()[:1]
        size = int(float(match.group(1)) * _SIZE_UNITS[unit])
    if size <= 0:
        raise ValueError(f"a size must be positive, got {value!r}")
    return size


def parse_duration(value: str | float) -> float:
    """Seconds from a number or a string like "30s", "2m", "1h", "1h30m", "500ms", "2d"."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"expected a duration like 30s, got {describe_value(value)}")
    if isinstance(value, str):
        text = value.strip()
        try:
            seconds = float(text)
        except ValueError:
            seconds = 0.0
            pos = 0
            while pos < len(text):
                match = _DURATION_PART.match(text, pos)
                if match is None:
                    raise ValueError(
                        f"not a duration: {value!r} (write e.g. 30s, 2m or 1h)"
                    ) from None
                seconds += float(match.group(1)) * _DURATION_UNITS[match.group(2).lower()]
                pos = match.end()
            if not text:
                raise ValueError("not a duration: empty string") from None
    else:
        seconds = float(value)
    if not math.isfinite(seconds):  # nan and inf would be no limit at all
        raise ValueError(f"a duration must be a finite number, got {value!r}")
    if seconds <= 0:
        raise ValueError(f"a duration must be positive, got {value!r}")
    return seconds


@dataclass(frozen=True)
class Rate:
    """``count`` messages per ``per`` seconds (1, 60, 3600 or 86400)."""

    count: float
    per: float

    @property
    def is_quota(self) -> bool:
        """True for /h and /day: a budget per clock window, persisted across runs."""
        return self.per >= 3600.0

    @property
    def per_second(self) -> float:
        return self.count / self.per

    def __str__(self) -> str:
        unit = next(name for name, seconds in RATE_UNITS.items() if seconds == self.per)
        return f"{self.count:g}/{unit}"


def parse_rate(text: str) -> Rate:
    """A Rate from "50/s", "600/min", "1000/h", "10000/day" (N may be a decimal > 0)."""
    match = _RATE.match(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"expected a rate like {_RATE_EXAMPLES}, got {text!r}")
    count = float(match.group(1))
    if not count > 0 or not math.isfinite(count):
        raise ValueError(f"a rate must be positive, got {text!r}")
    return Rate(count=count, per=RATE_UNITS[match.group(2)])


def parse_share(value: str | float) -> float:
    """A share of a whole, 0 < share <= 1, from "5%", "12.5%" or a number like 0.05."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"expected a share like 5% or 0.05, got {describe_value(value)}")
    if isinstance(value, str):
        match = _PERCENT.match(value)
        if match is None:
            raise ValueError(f"not a share: {value!r} (write e.g. 5% or 0.05)")
        share = float(match.group(1)) / 100
    else:
        share = float(value)
        if 1 < share <= 100:
            raise ValueError(
                f"a share is at most 1, got {value:g} (for {value:g}% write '{value:g}%')"
            )
    if not (math.isfinite(share) and 0 < share <= 1):
        raise ValueError(f"a share must be above 0 and at most 100%, got {value!r}")
    return share
