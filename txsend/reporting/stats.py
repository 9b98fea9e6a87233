"""Counters and a fixed-size latency histogram for one run: memory stays flat at any size."""

from __future__ import annotations

import math
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Protocol

from txsend.models import State

# Log-spaced buckets: 0.1 ms to ~100 s at ~5% resolution (about 290 counters).
_BASE = 1.05
_MIN_SECONDS = 1e-4
_BUCKETS = int(math.log(1e6, _BASE)) + 2
BUCKETS = _BUCKETS


def bucket_of(seconds: float) -> int:
    """The index of the log-spaced bucket a duration falls in."""
    index = 0 if seconds <= _MIN_SECONDS else int(math.log(seconds / _MIN_SECONDS, _BASE)) + 1
    return min(index, _BUCKETS - 1)


def bucket_edge(index: int) -> float:
    """The upper edge of bucket `index`, in seconds."""
    return float(_MIN_SECONDS * _BASE**index)


class OutcomeWatcher(Protocol):
    """Told of every transaction outcome as it is settled (`txsend.reporting.alerts`)."""

    def outcome(self, state: State, seconds: float | None, now: float) -> None:
        """One row's outcome at monotonic `now`; `seconds`: an accepted transaction's time."""

    def waiting(self, idle: bool, now: float) -> None:
        """Whether the run waits with nothing to send (retries not due, quota spent)."""


class LatencyHistogram:
    """Counts durations in log-spaced buckets; percentiles are within ~5%."""

    def __init__(self) -> None:
        self._counts = [0] * _BUCKETS
        self.count = 0
        self.total = 0.0

    def add(self, seconds: float) -> None:
        """Record one duration."""
        index = 0 if seconds <= _MIN_SECONDS else int(math.log(seconds / _MIN_SECONDS, _BASE)) + 1
        self._counts[min(index, _BUCKETS - 1)] += 1
        self.count += 1
        self.total += seconds

    def buckets(self) -> list[tuple[float, int]]:
        """(upper edge in seconds, count) of every non-empty bucket, in order."""
        return [(_MIN_SECONDS * _BASE**i, n) for i, n in enumerate(self._counts) if n]

    def percentile(self, p: float) -> float | None:
        """The duration below which p percent of the recorded ones fall (None if empty)."""
        if not self.count:
            return None
        rank = max(1, math.ceil(self.count * p / 100))
        seen = 0
        for index, n in enumerate(self._counts):
            seen += n
            if seen >= rank:
                # upper edge of the bucket
                return _MIN_SECONDS * _BASE**index
        return None


_ENHANCED = re.compile(r"[245]\.\d{1,3}\.\d{1,3}\Z")
MAX_REPLY_CODES = 200  # distinct codes kept; the rest count as "other"
MAX_STEPS = 600  # timeline steps; their length doubles when a run outgrows them


class ErrorClass:
    """How a transaction that was not accepted failed (the report's `errors`)."""

    TRANSIENT = "transient"  # 4xx, a timeout or a connection lost before DATA: retried
    PERMANENT = "permanent"  # 5xx: bounced or failed
    UNKNOWN = "unknown"  # lost after the message was sent: RFC 1047's window


def reply_code(code: int | None, text: str) -> str:
    """ "550 5.1.1", "250" or "none": the basic code and the enhanced status if any."""
    if code is None:
        return "none"
    first = text.split(" ", 1)[0]
    return f"{code} {first}" if _ENHANCED.match(first) else str(code)


@dataclass
class ReplyCodes:
    """Counts of reply codes with one example text each; bounded."""

    counts: Counter[str] = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)

    def add(self, code: int | None, text: str) -> None:
        """Count one reply."""
        key = reply_code(code, text)
        if key not in self.counts and len(self.counts) >= MAX_REPLY_CODES:
            key = "other"
        self.counts[key] += 1
        if key not in self.examples:
            self.examples[key] = (f"{code} {text}" if code is not None else text)[:300]

    def top(self, n: int = 20) -> list[dict[str, Any]]:
        """The n most frequent, most first."""
        return [
            {"code": code, "count": count, "example": self.examples.get(code, "")}
            for code, count in self.counts.most_common(n)
        ]


class Timeline:
    """Outcomes per time step since the start; at most MAX_STEPS steps (memory is flat)."""

    def __init__(self, started: float) -> None:
        self.started = started
        self.step = 1.0
        self.steps: list[Counter[State]] = []

    def add(self, state: State, now: float) -> None:
        """Count one outcome at monotonic time `now`."""
        index = int((now - self.started) / self.step)
        while index >= MAX_STEPS:  # merge pairs: the step doubles
            merged = []
            for i in range(0, len(self.steps), 2):
                pair = self.steps[i]
                if i + 1 < len(self.steps):
                    pair = pair + self.steps[i + 1]
                merged.append(pair)
            self.steps = merged
            self.step *= 2
            index = int((now - self.started) / self.step)
        while len(self.steps) <= index:
            self.steps.append(Counter())
        self.steps[index][state] += 1

    def recent_rate(self, now: float, seconds: float = 10.0) -> float:
        """Accepted messages per second over about the last `seconds` (rolling)."""
        if not self.steps:
            return 0.0
        last = int((now - self.started) / self.step)
        first = max(0, last - max(1, int(seconds / self.step)) + 1)
        sent = sum(c[State.SENT] for c in self.steps[first : last + 1])
        span = min(now - self.started, (last - first + 1) * self.step)
        return sent / span if span > 0 else 0.0

    def as_list(self) -> list[dict[str, Any]]:
        """The report's `timeline`."""
        return [
            {
                "t": round(i * self.step, 3),
                "seconds": self.step,
                "outcomes": {s.value: n for s, n in sorted(c.items()) if n},
            }
            for i, c in enumerate(self.steps)
        ]


@dataclass
class RelayStats:
    connections: int = 0
    connect_failures: int = 0
    attempts: int = 0  # SMTP transactions started
    outcomes: Counter[State] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)  # by ErrorClass
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)
    connect_time: LatencyHistogram = field(default_factory=LatencyHistogram)
    last_error: str | None = None
    circuit: str = "closed"
    events: list[str] = field(default_factory=list)  # circuit changes, quota spent


@dataclass
class ScheduleStats:
    """What `schedule:` did to a run: rows left for their window, when one opens next."""

    zone: str  # the job's zone: the next opening is shown in it
    waiting: int = 0  # rows not sent this run because their window was closed
    next_window: float | None = None  # epoch of the next opening (None: none ahead)
    next_zone: str | None = None  # the zone of that opening (a row's own zone)
    expired: int = 0  # rows this run made `expired` (not_after passed)
    not_after: float | None = None
    at: float | None = None  # the wall clock when the run ended (the schedule's clock)
    shut: bool = False  # the schedule left rows (no window was open for them)
    # with --limit: the window, not the limit, ended the run (rows it could take wait)
    limit_unmet: bool = False
    # a row given back because its window closes before its rate's or quota's next slot:
    # when that window closes, when the slot would have come (epochs), whose slot it is
    closes_at: float | None = None
    slot_at: float | None = None
    slot_of: str = ""


@dataclass
class DomainStats:
    """One recipient domain (or `domains:` group) during a run."""

    configured: bool = False  # a `domains:` entry (else the recipient's own domain)
    attempts: int = 0  # SMTP transactions started
    outcomes: Counter[State] = field(default_factory=Counter)
    throttles: int = 0  # throttling replies to its recipients
    pace: float | None = None  # messages a second it may start now (None: no pace)
    slowed: bool = False  # a throttling reply lowered its pace
    in_flight: int = 0  # transactions under way
    waiting: int = 0  # messages ready, waiting for its pace or connections
    skipped: int = 0  # rows passed over while its backlog was full, not yet taken back

    def to_json(self) -> dict[str, Any]:
        """The report's figures of one domain."""
        return {
            "configured": self.configured,
            "attempts": self.attempts,
            "outcomes": {s.value: n for s, n in sorted(self.outcomes.items()) if n},
            "throttles": self.throttles,
            "pace": None if self.pace is None else round(self.pace, 3),
            "slowed": self.slowed,
            "in_flight": self.in_flight,
            "waiting": self.waiting + self.skipped,
        }


MAX_DOMAINS_SHOWN = 20  # reports: every configured domain, and this many others
OTHER_DOMAINS = "other"  # the rest of the domains, summed up


def busiest_domains(
    domains: dict[str, DomainStats], others: int = MAX_DOMAINS_SHOWN
) -> list[tuple[str, DomainStats]]:
    """The domains a report shows: the configured ones and the `others` busiest others
    (most transactions first); the rest are summed up as "other"."""
    ranked = sorted(domains.items(), key=lambda pair: (-pair[1].attempts, pair[0]))
    shown = [(n, d) for n, d in ranked if d.configured]
    rest = [(n, d) for n, d in ranked if not d.configured and n != OTHER_DOMAINS]
    left = rest[others:]
    if OTHER_DOMAINS in domains and not domains[OTHER_DOMAINS].configured:
        left.append((OTHER_DOMAINS, domains[OTHER_DOMAINS]))
    shown.extend(rest[:others])
    if left:
        total = DomainStats()
        for _name, d in left:
            total.attempts += d.attempts
            total.outcomes.update(d.outcomes)
            total.throttles += d.throttles
            total.in_flight += d.in_flight
            total.waiting += d.waiting
            total.skipped += d.skipped
        shown.append((OTHER_DOMAINS, total))
    return shown


@dataclass
class RunStats:
    """What the engine observed during one run (the journal holds the totals)."""

    started: float = field(default_factory=time.monotonic)
    ended: float | None = None
    started_at: float = field(default_factory=time.time)  # wall clock, for reports
    ended_at: float | None = None
    outcomes: Counter[State] = field(default_factory=Counter)
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)
    relays: dict[str, RelayStats] = field(default_factory=dict)
    domains: dict[str, DomainStats] = field(default_factory=dict)  # by recipient domain
    queued: int = 0  # rows rendered for sending in this run
    not_sent: int = 0  # rendered rows a stop left unsent (still due in the journal)
    unknown_recovered: int = 0  # rows a dead run left in `sending`
    abandoned: int = 0  # rows this run stopped waiting for after DATA began: now `unknown`
    retries: int = 0  # transactions for rows that had been tried before
    errors: Counter[str] = field(default_factory=Counter)  # by ErrorClass
    reply_codes: ReplyCodes = field(default_factory=ReplyCodes)
    timeline: Timeline = field(init=False)
    queue_depth: int = 0  # rendered messages waiting for a connection (last seen)
    stop_reason: str | None = None
    waiting: str | None = None  # what the run waits for now, and until when (live view)
    unreachable: bool = False
    ever_connected: bool = False
    signal: int | None = None
    watcher: OutcomeWatcher | None = None  # the job's alerts, fed by the engine
    schedule: ScheduleStats | None = None  # the job has a `schedule:`

    def __post_init__(self) -> None:
        self.timeline = Timeline(self.started)

    @property
    def attempted(self) -> int:
        """Rows that got an outcome in this run."""
        return sum(self.outcomes.values())

    @property
    def elapsed(self) -> float:
        """Seconds since the run started (until it ended)."""
        return (self.ended or time.monotonic()) - self.started

    @property
    def rate(self) -> float:
        """Messages accepted by relays per second."""
        elapsed = self.elapsed
        return self.outcomes[State.SENT] / elapsed if elapsed > 0 else 0.0

    def relay(self, name: str) -> RelayStats:
        """The counters of one relay."""
        found = self.relays.get(name)
        if found is None:
            found = self.relays[name] = RelayStats()
        return found

    def domain(self, name: str) -> DomainStats:
        """The counters of one recipient domain (or `domains:` group)."""
        found = self.domains.get(name)
        if found is None:
            found = self.domains[name] = DomainStats()
        return found
