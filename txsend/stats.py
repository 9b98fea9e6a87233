"""Counters and a fixed-size latency histogram for one run: memory stays flat at any size."""

from __future__ import annotations

import math
import time
from collections import Counter
from dataclasses import dataclass, field

from txsend.models import State

# Log-spaced buckets: 0.1 ms to ~100 s at ~5% resolution (about 290 counters).
_BASE = 1.05
_MIN_SECONDS = 1e-4
_BUCKETS = int(math.log(1e6, _BASE)) + 2


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


@dataclass
class RelayStats:
    connections: int = 0
    connect_failures: int = 0
    outcomes: Counter[State] = field(default_factory=Counter)
    last_error: str | None = None
    circuit: str = "closed"
    events: list[str] = field(default_factory=list)  # circuit changes, quota spent


@dataclass
class RunStats:
    """What the engine observed during one run (the journal holds the totals)."""

    started: float = field(default_factory=time.monotonic)
    ended: float | None = None
    outcomes: Counter[State] = field(default_factory=Counter)
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)
    relays: dict[str, RelayStats] = field(default_factory=dict)
    queued: int = 0  # rows rendered for sending in this run
    not_sent: int = 0  # rendered rows a stop left unsent (still due in the journal)
    unknown_recovered: int = 0  # rows a dead run left in `sending`
    stop_reason: str | None = None
    unreachable: bool = False
    ever_connected: bool = False
    signal: int | None = None

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
