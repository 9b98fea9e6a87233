"""A quota at one moment, as `txsend status`, `txsend report` and the run's report show it.

The delivery side (`txsend.delivery.quotas`) reads the figures from the journal's ledger
into a `QuotaUsage`; this module gives them their JSON form (the report's `quotas` member,
docs/report.schema.json) and their line of text, which `quota_line` writes from that JSON
form so that the status, the report and a stored report all read the same.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from txsend.units import iso_utc, utc_second

__all__ = ["QuotaUsage", "held_words", "quota_line"]


@dataclass(frozen=True)
class QuotaUsage:
    """A quota's window at one moment: what counts in it, its limit, when it frees."""

    account: str  # a relay's URL without password, or warmup:<domain>
    kind: str  # "fixed" (per UTC hour or day), "rolling" or "warmup"
    rate: str  # as the job writes it, or "warm-up"
    window: str  # "the last 24 h", "this UTC hour", "today (UTC)"
    used: int  # accepted recipients counted in the window
    held: int  # slots held by transactions under way
    limit: int
    frees_at: float | None  # wall time the next slot frees, when none is free now
    held_until: float | None = None  # wall time the last held slot lapses (None: none held)
    relay: str | None = None  # the relay's name (host:port), for a relay's quota
    warmup_day: int | None = None  # the warm-up's day today (1 before it starts)
    started: bool = True  # the warm-up: has an accepted recipient begun day 1?
    tomorrow: int | None = None  # the warm-up's cap tomorrow
    full: int | None = None  # the warm-up's full cap
    full_day: int | None = None  # the first day at the full cap

    def to_json(self) -> dict[str, Any]:
        """One entry of the report's `quotas` member."""
        data: dict[str, Any] = {
            "kind": self.kind,
            "relay": self.relay,
            "account": self.account,
            "rate": self.rate,
            "window": self.window,
            "used": self.used,
            "held": self.held,
            "held_until": iso_utc(None if self.held_until is None else math.ceil(self.held_until)),
            "limit": self.limit,
            "frees_at": iso_utc(None if self.frees_at is None else math.ceil(self.frees_at)),
        }
        if self.kind == "warmup":
            data["warmup"] = {
                "started": self.started,
                "day": self.warmup_day,
                "cap": self.limit,
                "tomorrow": self.tomorrow,
                "full": self.full,
                "full_day": self.full_day,
            }
        return data


def quota_line(entry: Mapping[str, Any]) -> str:
    """One `quotas` entry in words, e.g. ``relay smtp.example:587: 312 of 10000 accepted
    in the last 24 h (10000/24h), 2 held, lapse by 09:14:20 UTC`` or ``warm-up
    example.com: day 3, today's cap 1125 (312 used), tomorrow 1687, full 50000 on day
    13``. The time the next slot frees reads as the run's final line says it
    (`utc_second`)."""
    held = held_words(entry)
    frees = entry.get("frees_at")
    spent = f"; none left: the next slot frees at {_when(frees)}" if frees else ""
    warmup = entry.get("warmup")
    if isinstance(warmup, Mapping):
        sender = str(entry.get("account", "")).removeprefix("warmup:")
        if not warmup.get("started"):
            return (
                f"warm-up {sender}: not started: day 1 begins with the first accepted "
                f"recipient; cap {entry.get('limit')}{held}"
            )
        full_on = (
            "full cap reached"
            if warmup.get("day") is not None
            and warmup.get("full_day") is not None
            and warmup["day"] >= warmup["full_day"]
            else f"full {warmup.get('full')} on day {warmup.get('full_day')}"
        )
        return (
            f"warm-up {sender}: day {warmup.get('day')}, today's cap {entry.get('limit')} "
            f"({entry.get('used')} used{held}), tomorrow {warmup.get('tomorrow')}, "
            f"{full_on}{spent}"
        )
    window = str(entry.get("window", ""))
    where = f"in {window}" if window.startswith("the last") else window
    return (
        f"relay {entry.get('relay')}: {entry.get('used')} of {entry.get('limit')} accepted "
        f"{where} ({entry.get('rate')}){held}{spent}"
    )


def held_words(entry: Mapping[str, Any]) -> str:
    """The held slots of a `quotas` entry and when the last lapses (``, 2 held, lapse by
    09:14:20 UTC``), or nothing when none is held."""
    if not entry.get("held"):
        return ""
    until = entry.get("held_until")
    lapse = f", lapse by {_clock(until)}" if until else ""
    return f", {entry.get('held')} held{lapse}"


def _clock(value: object) -> str:
    """The time of day of an ISO time (a hold lapses within minutes): 09:14:20 UTC."""
    moment = _parse(value)
    return str(value) if moment is None else moment.strftime("%H:%M:%S UTC")


def _parse(value: object) -> datetime.datetime | None:
    """An ISO time of a report (UTC when it names no zone); None if it is not one."""
    try:
        moment = datetime.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.astimezone(datetime.UTC)


def _when(value: object) -> str:
    """An ISO time from `frees_at` as `utc_second` says it: 2026-12-07 09:14:07 UTC."""
    moment = _parse(value)
    return str(value) if moment is None else utc_second(moment.timestamp())
