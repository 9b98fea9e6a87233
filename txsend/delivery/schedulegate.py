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

Each zone's open/closed answer is cached until it changes (`SpanCache`), so a row costs
a dictionary look-up and a comparison.
"""

from __future__ import annotations

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
        self, schedule: Schedule | None, column: str | None, wall: Callable[[], float]
    ) -> None:
        self.schedule = schedule
        self.column = column if schedule is not None else None
        self.wall = wall
        self.held: set[str] = set()  # keys of rows left for their window this run
        self._spans = SpanCache(schedule) if schedule is not None else None
        self._next: float = math.inf  # the earliest opening among held rows
        self._next_zone: str | None = None
        self._closed_at: float | None = None  # the run stopped taking rows then
        self.stats = ScheduleStats(schedule.timezone) if schedule is not None else None
        if schedule is not None and self.stats is not None:
            self.stats.not_after = schedule.not_after

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

    def hold(self, claimed: Claimed) -> None:
        """Leave the row for its window: not sent this run."""
        if self.schedule is None or claimed.key in self.held:
            return
        self.held.add(claimed.key)
        zone = self._zone(claimed.data)
        opens = self._opening(zone, self.wall())
        if opens is not None and opens < self._next:
            self._next, self._next_zone = opens, zone

    def retry_due(self, due: float | None) -> float | None:
        """The retry time the run waits for: a due retry of a held row is not one."""
        if due is not None and self.held and due <= self.wall():
            return None
        return due

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
        if self.schedule is None or self.stats is None:
            return None
        stats = self.stats
        stats.at = self.wall()
        if self.schedule.expired(stats.at):
            stats.expired = journal.expire(expired_reason(self.schedule))
            return stats
        stats.waiting = len(self.held)
        if self._closed_at is not None or self.held:
            stats.next_window = None if math.isinf(self._next) else self._next
            stats.next_zone = self._next_zone
        return stats
