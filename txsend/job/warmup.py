"""A new sender's warm-up: `warmup: {start: 500/day, growth: 1.5, until: 50000/day}`.

The daily cap of accepted recipients grows day by day from `start` by the factor `growth`
until it reaches `until`: on day n the cap is ``min(until, floor(start * growth**(n-1)))``.
Day 1 is the first UTC day on which the journal recorded an accepted recipient for the
sender (the From address's domain); days are calendar days, whether anything was sent on
them or not, as ESP warm-up plans count them. The delivery side keeps the count
(`txsend.delivery.quotas`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from txsend.addresses import envelope_address, split_mailbox
from txsend.job.yamlmap import Section
from txsend.units import describe_value, parse_rate

__all__ = ["WARMUP_HINT", "Warmup", "job_warmup", "sender_domain"]

WARMUP_HINT = "e.g. warmup: {start: 500/day, growth: 1.5, until: 50000/day}"
_KEYS = ("start", "growth", "until")


@dataclass(frozen=True)
class Warmup:
    """The warm-up plan: a daily cap from `start`, times `growth` each day, up to `until`."""

    start: float  # accepted recipients on day 1
    growth: float  # > 1
    until: float  # the full daily volume, >= start

    def cap(self, day: int) -> int:
        """The cap of accepted recipients on day `day` (1 is the first sending day)."""
        if day < 1:
            day = 1
        try:
            grown = self.start * self.growth ** (day - 1)
        except OverflowError:
            return math.floor(self.until)
        # float slack: 500 * 1.5 ** 2 is 1125 exactly, not 1124.9999
        return math.floor(min(self.until, grown) + 1e-9)

    def full_day(self) -> int:
        """The first day whose cap is `until`: the logarithm's estimate, checked against
        `cap` on both sides (float error moves it by a day at most)."""
        full = math.floor(self.until)
        if self.cap(1) >= full:
            return 1
        day = 1 + max(1, math.ceil(math.log(full / self.start) / math.log(self.growth)))
        while day > 1 and self.cap(day - 1) >= full:
            day -= 1
        while self.cap(day) < full:
            day += 1
        return day


def sender_domain(from_addr: str) -> str | None:
    """The warm-up's sender: the From address's domain as the envelope and the Message-IDs
    write it (lower-case A-labels); None without a valid one."""
    try:
        address = envelope_address(split_mailbox(from_addr)[1])
    except ValueError:
        return None
    return address.rpartition("@")[2].lower() or None


def job_warmup(root: Section) -> Warmup | None:
    """The job file's `warmup:` mapping, checked; None when there is none."""
    section = root.opt_map("warmup")
    if section is None:
        return None
    section.check_keys(_KEYS)
    start = _daily(section, "start")
    until = _daily(section, "until")
    value = section.value("growth")
    if value is None:
        raise section.missing("growth", hint=WARMUP_HINT)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise section.error(
            "growth", f"expected a number above 1, got {describe_value(value)}", hint=WARMUP_HINT
        )
    growth = float(value)
    if not (math.isfinite(growth) and growth > 1):
        raise section.error(
            "growth",
            "must be a finite number above 1 (the factor of each day's cap over the day "
            f"before), got {value}",
            hint=WARMUP_HINT,
        )
    if until < start:
        raise section.error(
            "until", f"must be at least start ({start:g}/day), got {until:g}/day", hint=WARMUP_HINT
        )
    return Warmup(start=start, growth=growth, until=until)


def _daily(section: Section, key: str) -> float:
    """A warm-up volume: a rate per day (500/day, 500/24h or 500/1d)."""
    value = section.value(key)
    if value is None:
        raise section.missing(key, hint=WARMUP_HINT)
    try:
        if not isinstance(value, str):
            raise ValueError(f"expected a daily rate like 500/day, got {describe_value(value)}")
        rate = parse_rate(value)
    except ValueError as exc:
        raise section.error(key, str(exc), hint=WARMUP_HINT) from None
    if rate.per != 86400.0:
        raise section.error(
            key, f"expected a daily rate like 500/day, got {value!r}", hint=WARMUP_HINT
        )
    if rate.count < 1:
        raise section.error(key, f"must allow at least 1 a day, got {value!r}", hint=WARMUP_HINT)
    return rate.count
