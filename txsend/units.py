"""Units a user writes: sizes ("10MB"), durations ("1h30m"), rates ("50/s", "10000/day",
"10000/24h") and shares ("5%", 0.05).

Part of the kernel: the job loader, the rate limiter, the sink and the command line all
read these, so they live below all of them. `describe_value` says how a value from a job
file reads to a user, for "expected X, got Y" messages.
"""

from __future__ import annotations

import datetime
import math
import re
import time
from dataclasses import dataclass

__all__ = [
    "MAX_RATE_COUNT",
    "RATE_FORMS",
    "Rate",
    "describe_period",
    "describe_value",
    "iso_utc",
    "parse_duration",
    "parse_rate",
    "parse_share",
    "parse_size",
]

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
# a period with a number: a rolling window of that length ("10000/24h", "200/30min", "/1d")
_ROLLING = re.compile(r"\s*(\d+(?:\.\d+)?)\s*/\s*(\d+)\s*(s|sec|min|m|h|d|day)\s*\Z")
RATE_FORMS = (
    "50/s or 600/min (a pace), 1000/h or 10000/day (a quota per UTC hour or day), "
    "10000/24h, 500/1h, 200/30min or 50000/7d (a rolling quota over that many hours, "
    "minutes or days)"
)
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
    if not math.isfinite(seconds):  # nan, inf: no wait, window or limit can use them
        raise ValueError(f"a duration must be a finite number, got {value!r}")
    if seconds <= 0:
        raise ValueError(f"a duration must be positive, got {value!r}")
    return seconds


@dataclass(frozen=True)
class Rate:
    """``count`` messages per ``per`` seconds.

    Without ``rolling``, ``per`` is 1, 60 (a pace), 3600 or 86400 (a quota per UTC hour
    or day). A rolling rate ("10000/24h") is a quota over any ``per`` seconds ending now.
    """

    count: float
    per: float
    rolling: bool = False

    @property
    def is_quota(self) -> bool:
        """True for /h, /day and rolling windows: a budget persisted across runs."""
        return self.rolling or self.per >= 3600.0

    @property
    def limit(self) -> int:
        """A quota's budget in whole messages: a fractional N allows ``ceil(N)``."""
        return math.ceil(self.count - 1e-9)

    @property
    def per_second(self) -> float:
        return self.count / self.per

    def __str__(self) -> str:
        if self.rolling:
            return f"{self.count:g}/{describe_period(self.per)}"
        unit = next(name for name, seconds in RATE_UNITS.items() if seconds == self.per)
        return f"{self.count:g}/{unit}"


def describe_period(seconds: float) -> str:
    """A rolling window's length as a rate writes it: 86400 -> 24h, 1800 -> 30min."""
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("min", 60.0)):
        if seconds >= size and seconds % size == 0:
            if unit == "d" and seconds % 3600 == 0 and seconds <= 86400:
                return f"{seconds / 3600:g}h"
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


MAX_RATE_COUNT = 10**12  # more is no limit a relay sets, and would print as 1e+23


def parse_rate(text: str) -> Rate:
    """A Rate from "50/s", "600/min", "1000/h", "10000/day" or a rolling "10000/24h"
    (N may be a decimal > 0)."""
    match = _RATE.match(text) if isinstance(text, str) else None
    rolling = _ROLLING.match(text) if isinstance(text, str) and match is None else None
    if match is None and rolling is None:
        raise ValueError(f"expected a rate like {RATE_FORMS}; got {text!r}")
    count = float((match or rolling).group(1))  # type: ignore[union-attr]
    if not count > 0 or not math.isfinite(count):
        raise ValueError(f"a rate must be positive, got {text!r}")
    if count > MAX_RATE_COUNT:
        raise ValueError(f"a rate counts at most {MAX_RATE_COUNT:,} (10^12), got {text!r}")
    if match is not None:
        return Rate(count=count, per=RATE_UNITS[match.group(2)])
    assert rolling is not None
    unit = rolling.group(3).lower()
    per = int(rolling.group(2)) * _DURATION_UNITS["d" if unit == "day" else unit]
    if per <= 0:
        raise ValueError(f"a rolling window must be longer than 0, got {text!r}")
    if per < 60:
        raise ValueError(
            f"a rolling window is at least a minute, got {text!r} (for a pace write e.g. 50/s)"
        )
    return Rate(count=count, per=per, rolling=True)


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


def utc_minute(timestamp: float) -> str:
    """A time for people, rounded up to the minute: 2026-12-07 09:14 UTC."""
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(math.ceil(timestamp / 60) * 60))


def iso_utc(timestamp: float | None) -> str | None:
    """A moment for machines (reports, JSON): ISO 8601 in UTC to the second (…T09:13:07Z)."""
    if timestamp is None:
        return None
    moment = datetime.datetime.fromtimestamp(timestamp, datetime.UTC)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def utc_second(timestamp: float) -> str:
    """When something frees (a quota's next slot, a held slot's lapse), for people, the
    same wherever and whenever it is shown: to the second, rounded up (2026-12-07 09:13:07
    UTC; a minute rounded up would make a wait of 61 s two minutes, and a rule "to the
    second within the hour" would print the same moment two ways as it nears)."""
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(math.ceil(timestamp)))
