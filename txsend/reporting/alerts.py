"""The job's alerts, judged over sliding windows of the run's own transaction outcomes.

The engine tells `AlertMonitor` of each settled row (`outcome`: O(1), a few counters and,
for an accepted message, one histogram bucket) and of the times it waits with nothing to
send (`waiting`); the run's tick calls `evaluate(now)`, which returns the alerts that
changed state. Time is always passed in (`now`, monotonic seconds), never read here, so
the rules are tested on an injected clock.

Semantics (README, "Alerts"):

- A window of W seconds is kept as SLOTS slots of W/SLOTS seconds: it slides in steps of
  1/60 of its length, and memory stays flat whatever the run's size.
- `error_rate`: bounced, failed and unknown rows over every transaction outcome (sent,
  bounced, failed, unknown, deferred) in the window; `deferred_share`: deferred ones over
  the same; `p95_transaction_time`: the 95th percentile of accepted transactions' times
  (within ~5%, the run's histogram buckets). None of the three is judged on fewer than
  `min_messages` outcomes (accepted transactions for the p95).
- `throughput`: accepted messages per second over the window, judged only once the run
  has been sending for a whole window. Waiting with nothing to send (every due row done
  and retries not yet due, or the relays' rate quota spent) is not slowness: it stops
  the clock, and the floor is judged again a whole window after sending resumes.
- An alert fires when its condition becomes true and resolves when it becomes false; a
  window with too little to judge changes nothing (an alert firing stays firing).
"""

from __future__ import annotations

import datetime
import math
from collections import deque
from dataclasses import dataclass
from typing import Any

from txsend.job.hooks import AlertRule, Alerts
from txsend.models import State
from txsend.reporting.stats import BUCKETS, bucket_edge, bucket_of

__all__ = ["SLOTS", "AlertChange", "AlertMonitor", "describe_value", "describe_window"]

SLOTS = 60  # steps of a window
MAX_EVENTS = 50  # firings and resolutions kept per alert in the report (`fired` counts all)

_FAILED = frozenset({State.BOUNCED, State.FAILED, State.UNKNOWN})
_TRANSACTION = frozenset({State.SENT, State.DEFERRED}) | _FAILED
# the counters of a slot
_SETTLED, _FAILURES, _DEFERRED, _ACCEPTED = range(4)


@dataclass(frozen=True)
class AlertChange:
    """One alert firing or resolving."""

    rule: AlertRule
    state: str  # "firing" or "resolved"
    value: float  # in the rule's unit
    messages: int  # how many outcomes (accepted messages for p95 and throughput) it rests on
    at: float  # Unix time

    @property
    def name(self) -> str:
        return self.rule.name

    @property
    def text(self) -> str:
        """One line for people: what crossed which threshold over which window."""
        rule = self.rule
        value = describe_value(self.value, rule.unit)
        window = describe_window(rule.window)
        if rule.name == "error_rate":
            what = f"{value} of {self.messages} transactions refused or failed"
        elif rule.name == "deferred_share":
            what = f"{value} of {self.messages} transactions deferred"
        elif rule.name == "p95_transaction_time":
            what = f"p95 transaction time {value} over {self.messages} accepted messages"
        else:
            what = f"throughput {value} ({self.messages} messages accepted)"
        threshold = describe_value(rule.threshold, rule.unit)
        limit = f"{rule.condition} {threshold}" if self.state == "firing" else f"limit {threshold}"
        return f"alert {rule.name} {self.state}: {what} in the last {window} ({limit})"

    def to_json(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "at": _iso(self.at),
            "value": _round(self.value),
            "messages": self.messages,
        }


class _Window:
    """Outcome counters (and, if `timed`, a latency histogram) of the last `length` seconds."""

    def __init__(self, length: float, timed: bool) -> None:
        self.length = length
        self.step = length / SLOTS
        self.head: int | None = None  # the newest slot's number (slots since time 0)
        self.slots = [[0, 0, 0, 0] for _ in range(SLOTS)]
        self.totals = [0, 0, 0, 0]
        self.timed = timed
        self.slot_times: list[dict[int, int]] = [{} for _ in range(SLOTS)] if timed else []
        self.times = [0] * BUCKETS if timed else []
        self.timed_count = 0

    def advance(self, now: float) -> int:
        """Slide to `now`: slots that fell out of the window are subtracted and emptied."""
        slot = int(now // self.step)
        head = self.head
        if head is None:
            self.head = slot
            return slot
        if slot <= head:
            return head  # (the same slot; a clock never goes back, but be safe)
        totals = self.totals
        for number in range(head + 1, min(slot, head + SLOTS) + 1):
            index = number % SLOTS
            counts = self.slots[index]
            for k in range(4):
                totals[k] -= counts[k]
                counts[k] = 0
            if self.timed:
                times = self.slot_times[index]
                for bucket, n in times.items():
                    self.times[bucket] -= n
                    self.timed_count -= n
                times.clear()
        self.head = slot
        return slot

    def add(self, state: State, seconds: float | None, now: float) -> None:
        slot = int(now // self.step)
        if slot != self.head:
            slot = self.advance(now)
        index = slot % SLOTS
        counts, totals = self.slots[index], self.totals
        counts[_SETTLED] += 1
        totals[_SETTLED] += 1
        if state is State.SENT:
            kind = _ACCEPTED
        elif state is State.DEFERRED:
            kind = _DEFERRED
        else:
            kind = _FAILURES
        counts[kind] += 1
        totals[kind] += 1
        if seconds is not None and self.timed:
            bucket = bucket_of(seconds)
            times = self.slot_times[index]
            times[bucket] = times.get(bucket, 0) + 1
            self.times[bucket] += 1
            self.timed_count += 1

    def span(self, now: float) -> float:
        """The seconds the window covers at `now` (the oldest slot's start to `now`)."""
        head = self.advance(now)
        return max(now - (head - SLOTS + 1) * self.step, self.step)

    def percentile(self, p: float) -> float | None:
        if not self.timed_count:
            return None
        rank = max(1, math.ceil(self.timed_count * p / 100))
        seen = 0
        for index, n in enumerate(self.times):
            seen += n
            if seen >= rank:
                return bucket_edge(index)
        return None


class _Alert:
    """One rule's state: firing or not, how often it fired, its last value."""

    def __init__(self, rule: AlertRule) -> None:
        self.rule = rule
        self.active = False
        self.fired = 0
        self.value: float | None = None
        self.messages = 0
        self.events: deque[AlertChange] = deque(maxlen=MAX_EVENTS)

    def to_json(self) -> dict[str, Any]:
        rule = self.rule
        return {
            "name": rule.name,
            "condition": rule.condition,
            "threshold": _round(rule.threshold),
            "unit": rule.unit,
            "window_seconds": _round(rule.window),
            "active": self.active,
            "fired": self.fired,
            "value": None if self.value is None else _round(self.value),
            "messages": self.messages,
            "events": [change.to_json() for change in self.events],
        }


class AlertMonitor:
    """Judges a job's alerts over the run's outcomes; see the module's docstring."""

    def __init__(self, alerts: Alerts, now: float, wall_offset: float = 0.0) -> None:
        """`now`: when the run started sending (monotonic); `wall_offset`: Unix time minus
        monotonic time, to stamp events."""
        self.config = alerts
        self._offset = wall_offset
        self._alerts = [_Alert(rule) for rule in alerts.rules]
        timed = {rule.window for rule in alerts.rules if rule.name == "p95_transaction_time"}
        # one window per length: rules with the same window share its counters
        self._windows = {
            rule.window: _Window(rule.window, rule.window in timed) for rule in alerts.rules
        }
        self._all = list(self._windows.values())
        self._sending_since: float | None = now

    # --- fed by the engine (OutcomeWatcher) -----------------------------------------

    def outcome(self, state: State, seconds: float | None, now: float) -> None:
        """One row's transaction outcome; `seconds` for an accepted one. O(1)."""
        if state not in _TRANSACTION:
            return
        for window in self._all:
            window.add(state, seconds, now)

    def waiting(self, idle: bool, now: float) -> None:
        """The run waits with nothing to send (True), or sends (False)."""
        if idle:
            self._sending_since = None
        elif self._sending_since is None:
            self._sending_since = now

    # --- judged on the run's tick ---------------------------------------------------

    def evaluate(self, now: float) -> list[AlertChange]:
        """Judge every alert at `now`; the ones that fired or resolved, in rule order."""
        changes: list[AlertChange] = []
        for alert in self._alerts:
            judged = self._judge(alert.rule, now)
            if judged is None:
                continue
            value, messages = judged
            alert.value, alert.messages = value, messages
            crossed = alert.rule.crossed(value)
            if crossed == alert.active:
                continue
            alert.active = crossed
            alert.fired += crossed
            change = AlertChange(
                alert.rule, "firing" if crossed else "resolved", value, messages, now + self._offset
            )
            alert.events.append(change)
            changes.append(change)
        return changes

    def _judge(self, rule: AlertRule, now: float) -> tuple[float, int] | None:
        """The rule's value and what it rests on, or None when there is too little to judge."""
        window = self._windows[rule.window]
        window.advance(now)
        settled, failures, deferred, accepted = window.totals
        enough = self.config.min_messages
        if rule.name == "throughput":
            since = self._sending_since
            if since is None or now - since < rule.window:
                return None
            return accepted / window.span(now), accepted
        if rule.name == "p95_transaction_time":
            p95 = window.percentile(95)
            if p95 is None or window.timed_count < enough:
                return None
            return p95, window.timed_count
        if settled < enough:
            return None
        return (failures if rule.name == "error_rate" else deferred) / settled, settled

    # --- the report -------------------------------------------------------------------

    @property
    def firing(self) -> list[str]:
        """The names of the alerts firing now."""
        return [alert.rule.name for alert in self._alerts if alert.active]

    @property
    def fired(self) -> list[str]:
        """The names of the alerts that fired during the run."""
        return [alert.rule.name for alert in self._alerts if alert.fired]

    def to_json(self) -> list[dict[str, Any]]:
        """The report's `alerts`: one object per configured alert."""
        return [alert.to_json() for alert in self._alerts]


def describe_value(value: float, unit: str) -> str:
    """A value as people read it: 12.5%, 2.1s, 350ms, 20/s."""
    if unit == "ratio":
        return f"{value * 100:.3g}%"
    if unit == "seconds":
        return f"{value * 1000:.3g}ms" if value < 1 else f"{value:.3g}s"
    return f"{value:.3g}/s"


def describe_window(seconds: float) -> str:
    """A window as the job would write it: 5m, 90s, 1h, 1h30m."""
    whole = round(seconds)
    if whole < 60 or whole != seconds:
        return f"{seconds:g}s"
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    parts = ((hours, "h"), (minutes, "m"), (secs, "s"))
    return "".join(f"{n}{unit}" for n, unit in parts if n)


def _round(value: float) -> float:
    return round(value, 6)


def _iso(timestamp: float) -> str:
    return (
        datetime.datetime.fromtimestamp(timestamp, datetime.UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )
