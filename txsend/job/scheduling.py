"""`schedule:` in a job file (and `recipients.timezone`), read and checked with file:line.

The calculator itself is `txsend.job.schedule`; this module only turns the job file's
section into a `Schedule`, or a JobError (exit 65) naming the key and its line.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from txsend.errors import JobError
from txsend.job.schedule import (
    DEFAULT_ZONE,
    WINDOW_EXAMPLE,
    Schedule,
    Window,
    describe_instant,
    parse_instant,
    parse_window,
    zone_problem,
)
from txsend.job.yamlmap import Section
from txsend.units import describe_value

__all__ = ["SCHEDULE_KEYS", "job_schedule", "row_zone", "row_zone_problem"]

SCHEDULE_KEYS = ("timezone", "not_before", "not_after", "windows")
_HINT = (
    "e.g. schedule: {timezone: Europe/Paris, not_after: 2026-12-09T18:00, "
    'windows: ["Mon-Fri 08:00-18:00"]}'
)


def job_schedule(root: Section) -> Schedule | None:
    """The job file's `schedule:`, checked; None when the job has none."""
    section = root.opt_map("schedule")
    if section is None:
        return None
    section.check_keys(SCHEDULE_KEYS)
    zone = (section.opt_str("timezone") or DEFAULT_ZONE).strip()
    problem = zone_problem(zone)
    if problem is not None:
        raise section.error("timezone", problem)
    not_before = _instant(section, "not_before", zone)
    not_after = _instant(section, "not_after", zone, end_of_day=True)
    if not_before is not None and not_after is not None and not_after <= not_before:
        raise section.error(
            "not_after",
            f"must be after not_before ({describe_instant(not_before, zone)}), "
            f"got {describe_instant(not_after, zone)}",
        )
    return Schedule(
        timezone=zone,
        not_before=not_before,
        not_after=not_after,
        windows=_windows(section),
        origin=f"{root.display}:{root.line_of('schedule')}",
    )


def check_column_zone(recipients: Section) -> str | None:
    """recipients.timezone: the column holding each row's IANA zone."""
    value = recipients.opt_str("timezone")
    return value.strip() if value is not None else None


def _instant(section: Section, key: str, zone: str, *, end_of_day: bool = False) -> float | None:
    value = section.value(key)
    if value is None:
        return None
    try:
        return parse_instant(value, zone, end_of_day=end_of_day)
    except ValueError as exc:
        raise section.error(key, str(exc)) from None


def _windows(section: Section) -> tuple[Window, ...]:
    value = section.value("windows")
    if isinstance(value, str):  # one window alone
        items = [(value, section.line_of("windows"))]
    else:
        items = section.opt_list("windows")
    windows: list[Window] = []
    for index, (item, line) in enumerate(items):
        name = f"{section.name('windows')}[{index}]"
        if not isinstance(item, str):
            raise JobError(
                f"{name}: expected a window as text, got {describe_value(item)}",
                file=section.display,
                line=line,
                hint=WINDOW_EXAMPLE + " (quote it)",
            )
        try:
            windows.append(parse_window(item))
        except ValueError as exc:
            raise JobError(
                f"{name}: {exc}", file=section.display, line=line, hint=WINDOW_EXAMPLE
            ) from None
    if "windows" in section.data and not windows:
        raise section.error("windows", "is empty", hint=_HINT + " (or leave windows out)")
    return tuple(windows)


def row_zone(data: Mapping[str, Any], column: str) -> str | None:
    """The time zone a row names in `recipients.timezone`'s column (matched like the
    header: exactly, else case-insensitively); None: empty, the job's zone applies."""
    value = data.get(column)
    if value is None:
        value = next((v for k, v in data.items() if k.casefold() == column.casefold()), None)
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def row_zone_problem(data: Mapping[str, Any], column: str) -> str | None:
    """Why a row's time zone is not one ("tz: unknown time zone ..."), or None."""
    zone = row_zone(data, column)
    problem = None if zone is None else zone_problem(zone)
    return None if problem is None else f"{column}: {problem}"
