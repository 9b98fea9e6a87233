"""When a job may send: `schedule:` (not_before, not_after, weekly windows in a time zone).

A pure calculator: every function takes the time as a parameter, nothing here reads a
clock. Times are epoch seconds (floats); zones are IANA names read through zoneinfo.

Windows are wall-clock times in their zone, so they follow daylight-saving changes: a
window "08:00-18:00" lasts 9 hours on the day clocks go forward (if the change falls
inside it) and 11 hours on the day they go back. A boundary that falls in the gap of a
forward change (02:30 on a day that jumps from 02:00 to 03:00) is taken at the first
instant after the gap (03:00); a boundary in the fold of a backward change (01:30 happening
twice) is taken at its first occurrence.

`Schedule.span(zone, at)` is the one question the sender asks: is the zone open at `at`,
and until when does that answer hold. `SpanCache` keeps that answer per zone, so that
checking a row is a dictionary look-up and a comparison.
"""

from __future__ import annotations

import datetime
import functools
import math
import re
import zoneinfo
from collections.abc import Collection
from dataclasses import dataclass, field

__all__ = [
    "DEFAULT_ZONE",
    "Schedule",
    "Span",
    "SpanCache",
    "Window",
    "describe_instant",
    "describe_wait",
    "iso_instant",
    "load_zone",
    "parse_instant",
    "parse_window",
    "reach_warnings",
    "schedule_status",
    "status_lines",
    "zone_problem",
]

DEFAULT_ZONE = "UTC"
_DAY = 86400.0
_DAYS_AHEAD = 8  # a weekly window opens within a week: the calendar looks this far

_DAY_NAMES = {
    "mon": 0,
    "monday": 0,
    "tue": 1,
    "tues": 1,
    "tuesday": 1,
    "wed": 2,
    "wednesday": 2,
    "thu": 3,
    "thur": 3,
    "thurs": 3,
    "thursday": 3,
    "fri": 4,
    "friday": 4,
    "sat": 5,
    "saturday": 5,
    "sun": 6,
    "sunday": 6,
}
_WINDOW = re.compile(
    r"^\s*(?:(?P<days>[A-Za-z][A-Za-z,\s-]*?)\s+)?"
    r"(?P<start>\d{1,2}:\d{2})\s*-\s*(?P<end>\d{1,2}:\d{2})\s*$"
)
WINDOW_EXAMPLE = 'e.g. "Mon-Fri 08:00-18:00", "Sat,Sun 10:00-12:00" or "22:00-06:00"'


@dataclass(frozen=True)
class Window:
    """One weekly window: the days it starts on, from `start` to `end` (minutes after
    local midnight). An end at or before the start runs into the next day."""

    days: frozenset[int]  # 0 = Monday
    start: int
    end: int  # 1..1440
    text: str

    @property
    def crosses_midnight(self) -> bool:
        return self.end <= self.start


@dataclass(frozen=True)
class Span:
    """What `Schedule.span` says of a moment: open or closed, from `start` until `until`
    (epoch seconds; inf: for ever). Closed with `until` inf: it never opens again."""

    open: bool
    start: float
    until: float

    def holds(self, at: float) -> bool:
        return self.start <= at < self.until


@dataclass(frozen=True)
class Schedule:
    """`schedule:` of a job. Empty windows: open at every hour."""

    timezone: str = DEFAULT_ZONE
    not_before: float | None = None
    not_after: float | None = None
    windows: tuple[Window, ...] = ()
    origin: str = ""  # "job.yaml:12", for messages

    def span(self, zone: str | None, at: float) -> Span:
        """Open or closed at `at` in `zone` (None: the schedule's own), and until when."""
        lo = -math.inf if self.not_before is None else self.not_before
        hi = math.inf if self.not_after is None else self.not_after
        if at >= hi:
            return Span(False, hi, math.inf)
        if not self.windows or self.always_open:
            if at < lo:
                return Span(False, -math.inf, lo)
            return Span(True, lo, hi)
        tz = load_zone(zone or self.timezone)
        opens = _intervals(self.windows, tz, max(at, lo))
        previous_end = -math.inf
        for start, end in opens:
            start, end = max(start, lo), min(end, hi)
            if end <= start:
                continue
            if at < start:
                # closed since the last window the calendar shows (else: since now)
                return Span(False, previous_end if previous_end > -math.inf else at, start)
            if at < end:
                return Span(True, start, end)
            previous_end = end
        # nothing within the calendar's reach: windows lie beyond not_after
        return Span(False, max(previous_end, at), math.inf)

    @functools.cached_property
    def always_open(self) -> bool:
        """True when the windows, together, cover every minute of the week (e.g.
        "00:00-00:00", or "08:00-24:00" with "00:00-08:00"): they never close."""
        return _covers_week(self.windows)

    def is_open(self, zone: str | None, at: float) -> bool:
        """True when a message to `zone` may begin at `at`."""
        return self.span(zone, at).open

    def next_open(self, zone: str | None, at: float) -> float | None:
        """`at` when open, else when the zone next opens; None: never again."""
        span = self.span(zone, at)
        if span.open:
            return at
        return None if math.isinf(span.until) else span.until

    def open_until(self, zone: str | None, at: float) -> float:
        """When the open period around `at` closes (inf: never); `at` itself when closed."""
        span = self.span(zone, at)
        return span.until if span.open else at

    def expired(self, at: float) -> bool:
        """True once not_after has passed: nothing is sent any more."""
        return self.not_after is not None and at >= self.not_after


@dataclass
class SpanCache:
    """`Schedule.span` per zone, computed once per open or closed period."""

    schedule: Schedule
    _spans: dict[str | None, Span] = field(default_factory=dict)

    def span(self, zone: str | None, at: float) -> Span:
        span = self._spans.get(zone)
        if span is None or not span.holds(at):
            span = self._spans[zone] = self.schedule.span(zone, at)
        return span

    def is_open(self, zone: str | None, at: float) -> bool:
        span = self._spans.get(zone)
        if span is not None and span.start <= at < span.until:
            return span.open
        return self.span(zone, at).open


# --------------------------------------------------------------------------- zones


@functools.lru_cache(maxsize=512)
def load_zone(name: str) -> zoneinfo.ZoneInfo:
    """The zone by its IANA name; KeyError (ZoneInfoNotFoundError) or ValueError if none."""
    return zoneinfo.ZoneInfo(name)


@functools.lru_cache(maxsize=4096)
def zone_problem(name: str) -> str | None:
    """Why `name` is not a time zone, or None when it is one."""
    text = name.strip()
    if not text:
        return "is empty"
    try:
        load_zone(text)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        return f"unknown time zone {name!r} (an IANA name, e.g. Europe/Paris or America/New_York)"
    return None


# --------------------------------------------------------------------------- parsing


def parse_window(text: str) -> Window:
    """A window from its text; ValueError says what is wrong."""
    match = _WINDOW.match(text)
    if match is None:
        raise ValueError(f"not a window: {text!r} ({WINDOW_EXAMPLE})")
    start = _minutes(match["start"], allow_24=False)
    end = _minutes(match["end"], allow_24=True)
    days = _days(match["days"]) if match["days"] else frozenset(range(7))
    return Window(days, start, end, text.strip())


def _minutes(text: str, *, allow_24: bool) -> int:
    hours, minutes = (int(part) for part in text.split(":"))
    if allow_24 and hours == 24 and minutes == 0:
        return 1440
    if hours > 23 or minutes > 59:
        top = "24:00" if allow_24 else "23:59"
        raise ValueError(f"{text} is not a time of day (00:00 to {top})")
    return hours * 60 + minutes


def _days(text: str) -> frozenset[int]:
    days: set[int] = set()
    for item in text.replace(" ", "").split(","):
        if not item:
            raise ValueError(f"empty day in {text!r}")
        if "-" in item:
            first, _, last = item.partition("-")
            a, b = _day(first), _day(last)
            days.update((a + i) % 7 for i in range((b - a) % 7 + 1))
        else:
            days.add(_day(item))
    return frozenset(days)


def _day(name: str) -> int:
    day = _DAY_NAMES.get(name.lower())
    if day is None:
        raise ValueError(f"unknown day {name!r} (Mon, Tue, Wed, Thu, Fri, Sat, Sun)")
    return day


_DATE_ONLY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def parse_instant(value: object, zone: str, *, end_of_day: bool = False) -> float:
    """not_before / not_after: ISO 8601 text, or a date/datetime YAML made; a time
    without an offset is in `zone`. A date alone names its day: its first instant, or
    with `end_of_day` (not_after) the instant it ends, the next day's midnight, so that
    the whole day is included. ValueError says what is wrong."""
    if isinstance(value, str) and _DATE_ONLY.match(value.strip()):
        try:
            value = datetime.date.fromisoformat(value.strip())
        except ValueError as exc:
            raise ValueError(
                f"{value!r} is not a date{_why(exc)} (ISO 8601, e.g. 2026-12-07)"
            ) from None
    if isinstance(value, datetime.datetime):
        moment = value
    elif isinstance(value, datetime.date):
        day = value + datetime.timedelta(days=1) if end_of_day else value
        moment = datetime.datetime(day.year, day.month, day.day)
    elif isinstance(value, str):
        try:
            moment = datetime.datetime.fromisoformat(value.strip())
        except ValueError as exc:
            raise ValueError(
                f"{value!r} is not a date and time{_why(exc)} (ISO 8601, e.g. 2026-12-07T08:00 "
                "or 2026-12-07T08:00+01:00)"
            ) from None
    else:
        raise ValueError("expected a date and time, e.g. 2026-12-07T08:00")
    if moment.tzinfo is not None:
        return moment.timestamp()
    return _local(moment, load_zone(zone))


def _why(exc: ValueError) -> str:
    """': month must be in 1..12' when the calendar refused the value, not its form."""
    reason = str(exc)
    return "" if not reason or reason.startswith("Invalid isoformat") else f": {reason}"


# --------------------------------------------------------------------------- calendar


def _local(naive: datetime.datetime, tz: zoneinfo.ZoneInfo) -> float:
    """The instant a local wall time names: its first occurrence in a fold, the end of
    the gap when it falls in one."""
    first = naive.replace(tzinfo=tz, fold=0)
    epoch = first.timestamp()
    back = datetime.datetime.fromtimestamp(epoch, tz).replace(tzinfo=None)
    if back == naive:
        return epoch
    # in a gap: the transition lies between the two readings of the wall time
    lo = naive.replace(tzinfo=tz, fold=1).timestamp()
    hi = epoch
    lo, hi = min(lo, hi), max(lo, hi)
    before = datetime.datetime.fromtimestamp(lo, tz).utcoffset()
    while hi - lo > 1:
        mid = math.floor((lo + hi) / 2)
        if datetime.datetime.fromtimestamp(mid, tz).utcoffset() == before:
            lo = mid
        else:
            hi = mid
    return hi


def _intervals(
    windows: tuple[Window, ...], tz: zoneinfo.ZoneInfo, at: float
) -> list[tuple[float, float]]:
    """The open intervals (merged, sorted) of the local days from the day before `at` to
    a week after it."""
    today = datetime.datetime.fromtimestamp(at, tz).date()
    spans: list[tuple[float, float]] = []
    for offset in range(-1, _DAYS_AHEAD + 1):
        day = today + datetime.timedelta(days=offset)
        for window in windows:
            if day.weekday() not in window.days:
                continue
            start = _at(day, window.start, tz)
            end_day = day + datetime.timedelta(days=1) if window.crosses_midnight else day
            end = _at(end_day, window.end, tz)
            if end > start:
                spans.append((start, end))
    spans.sort()
    merged: list[tuple[float, float]] = []
    for start, end in spans:
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


_WEEK = 7 * 1440


def _covers_week(windows: tuple[Window, ...]) -> bool:
    """Whether the windows leave no minute of the week closed (wall-clock minutes)."""
    if not windows:
        return False
    spans: list[tuple[int, int]] = []
    for window in windows:
        length = window.end - window.start + (1440 if window.crosses_midnight else 0)
        for day in window.days:
            start = day * 1440 + window.start
            end = start + length
            spans.append((start, min(end, _WEEK)))
            if end > _WEEK:  # Sunday's window running into Monday
                spans.append((0, end - _WEEK))
    reached = 0
    for start, end in sorted(spans):
        if start > reached:
            return False
        reached = max(reached, end)
    return reached >= _WEEK


def _at(day: datetime.date, minutes: int, tz: zoneinfo.ZoneInfo) -> float:
    if minutes >= 1440:
        day, minutes = day + datetime.timedelta(days=1), minutes - 1440
    naive = datetime.datetime(day.year, day.month, day.day, minutes // 60, minutes % 60)
    return _local(naive, tz)


# --------------------------------------------------------------------------- words


def schedule_status(schedule: Schedule, at: float, expired: int = 0) -> dict[str, object]:
    """The schedule as `txsend status` shows it at `at` (the job's zone); `expired`: the
    journal's rows in state `expired`."""
    zone = schedule.timezone
    span = schedule.span(None, at)

    def iso(value: float | None) -> str | None:
        return None if value is None or math.isinf(value) else iso_instant(value, zone)

    return {
        "timezone": zone,
        "open": span.open,
        "closes_at": iso(span.until) if span.open else None,
        "opens_at": None if span.open else iso(span.until),
        "not_before": iso(schedule.not_before),
        "not_after": iso(schedule.not_after),
        "windows": [w.text for w in schedule.windows],
        "expired": expired,
        "past_not_after": schedule.expired(at),
    }


def status_lines(status: dict[str, object], at: float) -> list[str]:
    """`schedule_status` in words."""
    zone = str(status["timezone"])
    lines = []
    # with rows in their own zones, these lines are the job's zone's (the rows': below)
    whose = f" in {zone} (the job's zone)" if status.get("zones") else ""

    def words(iso: object) -> str:
        moment = datetime.datetime.fromisoformat(str(iso)).timestamp()
        return f"{describe_instant(moment, zone)} (in {describe_wait(moment - at)})"

    if status["past_not_after"]:
        lines.append(f"schedule: past not_after ({status['not_after']}): nothing is sent")
    elif status["open"]:
        closes = status["closes_at"]
        lines.append(
            f"send window{whose}: open now"
            + (
                f", closes {words(closes)}"
                if closes
                else " (the windows cover the whole week)"
                if status["windows"]
                else ""
            )
        )
    elif status["opens_at"]:
        lines.append(f"send window{whose}: closed now, opens {words(status['opens_at'])}")
    else:
        lines.append(f"send window{whose}: closed now, and no window opens before not_after")
    if status["not_after"] and not status["past_not_after"]:
        lines.append(f"not_after: {status['not_after']}")
    return lines


def reach_warnings(schedule: Schedule, zones: Collection[str | None], at: float) -> list[str]:
    """What `txsend validate` warns of at `at`: not_after already past, or no window opening
    between max(at, not_before) and not_after in any of `zones` (None: the job's zone)."""
    ends = schedule.not_after
    if ends is None:
        return []
    zone = schedule.timezone
    if at >= ends:
        return [
            f"schedule.not_after ({describe_instant(ends, zone)}) has passed: a run would "
            "expire every unsent row"
        ]
    start = max(at, schedule.not_before if schedule.not_before is not None else at)
    if any(schedule.next_open(z, start) is not None for z in (zones or [None])):
        return []
    return [
        f"no send window opens before schedule.not_after ({describe_instant(ends, zone)}) "
        f"from {describe_instant(start, zone)}: nothing would be sent; widen the windows or "
        "move not_after"
    ]


def describe_instant(at: float, zone: str) -> str:
    """'Mon 2026-12-07 08:00 CET' for messages."""
    moment = datetime.datetime.fromtimestamp(at, load_zone(zone))
    return moment.strftime("%a %Y-%m-%d %H:%M %Z")


def iso_instant(at: float, zone: str) -> str:
    """'2026-12-07T08:00:00+01:00' for reports."""
    return datetime.datetime.fromtimestamp(at, load_zone(zone)).isoformat(timespec="seconds")


def describe_wait(seconds: float) -> str:
    """'9 h 12 min', '3 min', '2 d 4 h' for messages."""
    minutes = max(0, math.ceil(seconds / 60))
    days, rest = divmod(minutes, 1440)
    hours, mins = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h" if hours else f"{days} d"
    if hours:
        return f"{hours} h {mins} min" if mins else f"{hours} h"
    return f"{mins} min"
