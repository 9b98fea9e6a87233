"""The engine's side of `schedule:`: which claimed rows may go now, and when a
transaction may begin.

The engine asks three things (`txsend.delivery.engine`): before claiming, whether the run
may take rows at all (`closed_for`: seconds until it may; the job's zone, not_before and
not_after); for each claimed row, whether its window (its own zone with
`recipients.timezone`, else the job's) is open (`admit`); and right before a message's
MAIL, whether it may still begin (`may_begin`), since a rendered message may wait in the
queues or for a rate slot. A row whose window is closed is held: not sent this run, left
`pending` or `deferred` in the journal. At the end of a run past not_after, every row
still pending or deferred becomes `expired` (`expire`).

A row held for a window that opens within the run's wait horizon (the minute a run waits
for retries due soon) is kept (`release_in`, `release`): the run waits and sends it in
the same run, like a retry due soon. Others stay for `txsend resume`.

Each zone's open/closed answer is cached until it changes (`SpanCache`), so a row costs
a dictionary look-up and a comparison.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Callable
from typing import Any

from txsend.errors import RowError
from txsend.job.schedule import Schedule, SpanCache, describe_instant, zone_problem
from txsend.job.scheduling import row_zone
from txsend.journal.api import JournalBackend
from txsend.journal.records import Claimed
from txsend.reporting.stats import ScheduleStats

__all__ = ["BEGIN_MARGIN", "ScheduleGate", "expired_reason"]

# No transaction begins in the last second of a window (or before not_after): the check
# and the MAIL command are a moment apart, and the relay must see MAIL inside the window.
BEGIN_MARGIN = 1.0
# Rows kept in memory for a window opening within the horizon; beyond, rows wait for resume
SOON_MAX = 50_000


def expired_reason(schedule: Schedule) -> str:
    """The reply an expired row carries."""
    assert schedule.not_after is not None
    return (
        "not sent before schedule.not_after "
        f"({describe_instant(schedule.not_after, schedule.timezone)})"
    )


class ScheduleGate:
    """A job's schedule for one run; with no schedule every question answers "go"."""

    def __init__(
        self,
        schedule: Schedule | None,
        column: str | None,
        wall: Callable[[], float],
        horizon: float = 0.0,
    ) -> None:
        self.schedule = schedule
        self.column = column if schedule is not None else None
        self.wall = wall
        self.held: set[str] = set()  # keys of rows left for their window this run
        self.horizon = horizon  # a row whose window opens within this many seconds is kept
        # the rows kept: (opening, order, row), earliest opening first
        self._soon: list[tuple[float, int, Claimed]] = []
        self._order = itertools.count()
        self._kept: set[str] = set()  # their keys
        self._spans = SpanCache(schedule) if schedule is not None else None
        self._next: float = math.inf  # the earliest opening among held rows
        self._next_zone: str | None = None
        self._closed_at: float | None = None  # the run stopped taking rows then
        self.stats = ScheduleStats(schedule.timezone) if schedule is not None else None
        if schedule is not None and self.stats is not None:
            self.stats.not_after = schedule.not_after

    @classmethod
    def zones_only(
        cls, schedule: Schedule | None, column: str | None, wall: Callable[[], float]
    ) -> ScheduleGate:
        """A gate for a dry run: every window is open, but a row whose time zone is not one
        is refused (`admit` raises RowError) as a real run would."""
        if schedule is None:
            return cls(None, None, wall)
        return cls(Schedule(timezone=schedule.timezone, origin=schedule.origin), column, wall)

    @property
    def active(self) -> bool:
        return self.schedule is not None

    # --- the run ---------------------------------------------------------------------

    def closed_for(self) -> float:
        """Seconds until the run may take rows (0: now; inf: never again).

        Without `recipients.timezone` that is the job's window; with it, only not_before
        and not_after (each row's window is its own)."""
        if self.schedule is None or self._spans is None:
            return 0.0
        now = self.wall()
        if self.schedule.expired(now):
            return math.inf
        if self.column is None:
            span = self._spans.span(None, now)
        elif self.schedule.not_before is not None and now < self.schedule.not_before:
            return self.schedule.not_before - now
        else:
            return 0.0
        if span.open and now + BEGIN_MARGIN < span.until:
            return 0.0
        opens = span.until if not span.open else self.schedule.next_open(None, span.until)
        if opens is None or math.isinf(opens):
            return math.inf
        return max(opens - now, 0.05)

    def stop_taking(self) -> None:
        """The run takes no more rows: note when the job's window opens next."""
        if self.schedule is None:
            return
        now = self.wall()
        if self._closed_at is None:
            self._closed_at = now
        if self.schedule.expired(now):
            return
        opens = self._opening(None, now)
        if opens is not None and opens < self._next:
            self._next, self._next_zone = opens, None

    # --- rows ------------------------------------------------------------------------

    def admit(self, claimed: Claimed) -> bool:
        """True when the row's window is open now; False holds it (not sent this run).
        RowError: the row's time zone is not one (the row is skipped)."""
        if self._spans is None:
            return True
        zone = self._zone(claimed.data)
        if zone is not None and (problem := zone_problem(zone)) is not None:
            raise RowError(f"{self.column}: {problem}", key=claimed.key)
        if self._spans.is_open(zone, self.wall()):
            return True
        self.hold(claimed)
        return False

    def may_begin(self, claimed: Claimed) -> bool:
        """True when a transaction for the row may begin now (its window stays open
        BEGIN_MARGIN longer)."""
        if self._spans is None:
            return True
        zone = self._zone(claimed.data)
        now = self.wall()
        span = self._spans.span(zone, now)
        return span.open and now + BEGIN_MARGIN < span.until

    def time_left(self, claimed: Claimed) -> float:
        """Seconds during which a transaction for the row may still begin (inf: no end;
        0 or less: it may not begin now). A wait for a rate or quota slot longer than this
        would end outside the window: the message is given back instead."""
        if self._spans is None:
            return math.inf
        now = self.wall()
        span = self._spans.span(self._zone(claimed.data), now)
        if not span.open:
            return 0.0
        return span.until - BEGIN_MARGIN - now

    def hold(self, claimed: Claimed) -> None:
        """Leave the row for its window: kept for this run when the window opens within the
        horizon, else not sent this run."""
        if self.schedule is None or claimed.key in self.held:
            return
        self.held.add(claimed.key)
        zone = self._zone(claimed.data)
        now = self.wall()
        opens = self._opening(zone, now)
        if opens is not None and opens - now <= self.horizon and len(self._soon) < SOON_MAX:
            heapq.heappush(self._soon, (opens, next(self._order), claimed))
            self._kept.add(claimed.key)
        elif opens is not None and opens < self._next:
            self._next, self._next_zone = opens, zone

    def slot_after_close(self, claimed: Claimed, wait: float, whose: str) -> None:
        """Note that the row's window closes before `whose` next slot (`wait` seconds
        away): the run says so rather than "outside the send window" (`schedule_note`)."""
        if self._spans is None or self.stats is None:
            return
        now = self.wall()
        span = self._spans.span(self._zone(claimed.data), now)
        stats = self.stats
        if span.open and (stats.slot_at is None or now + wait < stats.slot_at):
            stats.closes_at, stats.slot_at, stats.slot_of = span.until, now + wait, whose

    def left(self, batch: list[Claimed]) -> list[Claimed]:
        """The rows of `batch` held for a later run (not kept for this one)."""
        return [c for c in batch if c.key in self.held and c.key not in self._kept]

    def release_in(self) -> float | None:
        """Seconds until a kept row's window opens (0: open now); None: no row is kept."""
        if not self._soon:
            return None
        return max(self._soon[0][0] - self.wall(), 0.0)

    def expires_in(self) -> float | None:
        """Seconds until not_after passes, when that is within the horizon (None: not so).
        A run whose rows can no longer begin waits that long, to expire them as it ends."""
        if self.schedule is None or self.schedule.not_after is None:
            return None
        left = self.schedule.not_after - self.wall()
        return left if 0 < left <= self.horizon else None

    def release(self) -> list[Claimed]:
        """The kept rows whose window has opened: no longer held, to be admitted again."""
        now = self.wall()
        released: list[Claimed] = []
        while self._soon and self._soon[0][0] <= now:
            claimed = heapq.heappop(self._soon)[2]
            self.held.discard(claimed.key)
            self._kept.discard(claimed.key)
            released.append(claimed)
        return released

    def _zone(self, data: dict[str, Any]) -> str | None:
        return None if self.column is None else row_zone(data, self.column)

    def _opening(self, zone: str | None, now: float) -> float | None:
        """When a transaction for `zone` may next begin (None: never)."""
        assert self.schedule is not None and self._spans is not None
        span = self._spans.span(zone, now)
        if not span.open:
            return None if math.isinf(span.until) else span.until
        return self.schedule.next_open(zone, span.until)

    # --- the end of the run ----------------------------------------------------------

    def finish(self, journal: JournalBackend) -> ScheduleStats | None:
        """Past not_after, rows left become `expired`; the run's schedule figures."""
        stats = self.figures()
        if stats is None or self.schedule is None or stats.at is None:
            return stats
        if self.schedule.expired(stats.at):
            stats.expired = journal.expire(expired_reason(self.schedule))
        return stats

    def cut_short(self, limit_left: int, taken: set[str]) -> bool:
        """With --limit: True when the schedule, not the limit, ended the run: it stopped
        taking rows (or held some) while the limit had room left, or it held rows the limit
        had taken on (their window closed before they could begin)."""
        if self.schedule is None:
            return False
        shut = self._closed_at is not None or bool(self.held)
        return shut and (limit_left > 0 or not self.held.isdisjoint(taken))

    def figures(self) -> ScheduleStats | None:
        """The run's schedule figures now: rows waiting, the next window (not_after passed:
        none; `finish` then expires the rows left)."""
        if self.schedule is None or self.stats is None:
            return None
        stats = self.stats
        stats.at = self.wall()
        if self.schedule.expired(stats.at):
            return stats
        stats.waiting = len(self.held)
        for opens, _, claimed in self._soon:  # kept, but the run ended before they opened
            if opens < self._next:
                self._next, self._next_zone = opens, self._zone(claimed.data)
        stats.shut = self._closed_at is not None or bool(self.held)
        if stats.shut:
            stats.next_window = None if math.isinf(self._next) else self._next
            stats.next_zone = self._next_zone
        return stats
