"""`txsend status` for a job whose rows carry their own time zone (`recipients.timezone`).

The job's zone alone does not say whether a run would send: rows in other zones may be
inside their windows while the job's zone is closed. This module answers, from the zones
of the rows still due (`JournalBackend.due_values`) and the time given: which of those
zones are open, how many due rows are in open zones, and which closed zone opens first.
Pure: the time and the counts are parameters.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Mapping, Sequence
from typing import Any

from txsend.job.schedule import (
    Schedule,
    describe_instant,
    describe_wait,
    iso_instant,
    zone_problem,
)

__all__ = ["ZONES_LISTED", "zone_lines", "zones_status"]

ZONES_LISTED = 1000  # distinct zones read from the journal (IANA has about 600)


def zones_status(
    schedule: Schedule,
    column: str,
    due: Sequence[tuple[str | None, int]],
    due_total: int,
    at: float,
) -> dict[str, Any]:
    """The `zones` member of `schedule` in `status --json`: the due rows' zones at `at`.

    `due`: (zone or None, rows) as `due_values` gives them (None: the job's zone);
    `due_total`: every row due, so that rows past the listed values are still counted."""
    per_zone: dict[str, int] = {}
    unknown = 0
    for value, rows in due:
        zone = value or schedule.timezone
        if zone_problem(zone) is not None:
            unknown += rows  # a run skips these rows (no window): not open, never opening
            continue
        per_zone[zone] = per_zone.get(zone, 0) + rows
    listed: list[dict[str, Any]] = []
    next_at: float | None = None
    next_zone: str | None = None
    for zone, rows in sorted(per_zone.items(), key=lambda item: (-item[1], item[0])):
        span = schedule.span(zone, at)
        until = None if math.isinf(span.until) else span.until
        listed.append(
            {
                "timezone": zone,
                "rows": rows,
                "open": span.open,
                "closes_at": iso_instant(until, zone) if span.open and until else None,
                "opens_at": iso_instant(until, zone) if not span.open and until else None,
            }
        )
        if not span.open and until is not None and (next_at is None or until < next_at):
            next_at, next_zone = until, zone
    counted = sum(per_zone.values()) + unknown
    return {
        "column": column,
        "due": due_total,
        "zones_open": sum(1 for z in listed if z["open"]),
        "rows_open": sum(z["rows"] for z in listed if z["open"]),
        "rows_closed": sum(z["rows"] for z in listed if not z["open"]),
        "rows_unknown_zone": unknown,
        "rows_not_listed": max(0, due_total - counted),
        "next_opens_at": None if next_at is None else iso_instant(next_at, str(next_zone)),
        "next_opens_zone": next_zone,
        "zones": listed,
    }


def zone_lines(zones: Mapping[str, Any], at: float) -> list[str]:
    """`zones_status` in words, for `txsend status`."""
    listed: list[dict[str, Any]] = list(zones["zones"])
    if not zones["due"]:
        return [f"rows' zones ({zones['column']}): no row is due"]
    open_names = [z["timezone"] for z in listed if z["open"]]
    shown = ", ".join(open_names[:5]) + (
        f" and {len(open_names) - 5} more" if len(open_names) > 5 else ""
    )
    line = (
        f"rows' zones ({zones['column']}): {zones['zones_open']} of {len(listed)} open now"
        + (f" ({shown})" if open_names else "")
        + f"; {zones['rows_open']} of {zones['due']} rows due are in open zones"
    )
    lines = [line]
    if zones["next_opens_at"]:
        zone = str(zones["next_opens_zone"])
        moment = datetime.datetime.fromisoformat(str(zones["next_opens_at"])).timestamp()
        lines.append(
            f"next opening among closed zones: {zone}, {describe_instant(moment, zone)} "
            f"(in {describe_wait(moment - at)})"
        )
    elif zones["rows_closed"]:
        lines.append("no closed zone opens again before not_after")
    if zones["rows_unknown_zone"]:
        lines.append(
            f"{zones['rows_unknown_zone']} rows due name no known time zone: a run skips them"
        )
    if zones["rows_not_listed"]:
        lines.append(f"{zones['rows_not_listed']} rows due in zones not listed (too many zones)")
    return lines
