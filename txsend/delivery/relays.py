"""Relay health and choice: circuit breakers, failover by priority, weights within one.

A relay's circuit opens after repeated failures (refused or lost connections, AUTH
refused, replies that blame the relay, repeated throttling): its traffic moves to the
next healthy relay of the same priority, then of the next priority. After a cool-down
one connection probes it (half-open); success closes the circuit, failure reopens it
with a longer cool-down, never longer than a quarter of `give_up_unreachable`, so that
a relay is probed several times before the run gives up on it.

Each relay also keeps `failing_since`: when its current run of failures began (None while
it is healthy). The pool's outage began when the last relay still working started failing;
`RelayPool.outage_since` is what the engine's supervisor holds against
`give_up_unreachable`. A probe that fails again does not restart that clock.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from txsend.delivery.ratelimit import RateLimiter
from txsend.job.credentials import RelaySecret
from txsend.logs import event
from txsend.models import RelayConfig

FAILURES_TO_OPEN = 3  # consecutive failures that open a circuit
COOL_DOWN = 2.0  # seconds, doubled each time the circuit reopens
MAX_COOL_DOWN = 300.0
SLOW_DOWN = 1.0  # seconds of pause after a throttling reply, doubled while they repeat
MAX_SLOW_DOWN = 60.0


def cool_down_cap(give_up_unreachable: float) -> float:
    """The longest cool-down for a run: a relay is probed at least four times before the
    run gives up on it, and never waits more than MAX_COOL_DOWN."""
    return min(MAX_COOL_DOWN, max(COOL_DOWN, give_up_unreachable / 4))


class Circuit(StrEnum):
    CLOSED = "closed"  # healthy
    OPEN = "open"  # cooling down: no traffic
    HALF_OPEN = "half-open"  # one probe allowed
    DEAD = "dead"  # a fault waiting cannot fix (AUTH, certificate, DNS): out for the run


@dataclass
class RelayState:
    """One relay's configuration and health during a run."""

    config: RelayConfig
    secret: RelaySecret | str | None  # a password, or where each connection's token comes from
    limiter: RateLimiter | None = None
    circuit: Circuit = Circuit.CLOSED
    failures: int = 0  # consecutive
    opened: int = 0  # times the circuit opened this run
    retry_at: float = 0.0  # monotonic time the open circuit may be probed
    probing: bool = False
    paused_until: float = 0.0  # throttled: no new transaction before this
    slow_downs: int = 0  # consecutive throttling replies
    quota_until: float = 0.0  # a quota (or the warm-up's cap) is spent until this (monotonic)
    quota_note: str = ""  # which quota, and when it frees a slot (`Quota.spent`)
    ever_connected: bool = False
    failing_since: float | None = None  # monotonic time of the first failure since a success
    max_cool_down: float = MAX_COOL_DOWN
    current_weight: int = 0  # smooth weighted round robin state
    last_error: str | None = None
    hint: str = ""  # what to change, after a connection fault that has a remedy
    events: list[str] = field(default_factory=list)  # circuit changes, for logs/reports

    @property
    def name(self) -> str:
        return self.config.name

    def available(self, now: float) -> bool:
        """May a new message be assigned to this relay now?"""
        if self.circuit is Circuit.DEAD or now < self.quota_until or now < self.paused_until:
            return False
        if self.circuit is Circuit.OPEN:
            if now < self.retry_at:
                return False
            self.circuit = Circuit.HALF_OPEN
            self.probing = False
        return not (self.circuit is Circuit.HALF_OPEN and self.probing)

    def succeeded(self) -> None:
        """A transaction or connection worked: the relay is healthy again."""
        self.failures = 0
        self.slow_downs = 0
        self.failing_since = None
        if self.circuit is Circuit.DEAD:
            return  # taken out for the run: a late reply does not bring it back
        if self.circuit is not Circuit.CLOSED:
            self.events.append("circuit closed")
            event(
                logging.INFO,
                "circuit_closed",
                f"relay {self.name}: circuit closed",
                relay=self.name,
            )
        self.circuit = Circuit.CLOSED
        self.probing = False

    def failed(self, reason: str, *, now: float, fatal: bool = False) -> bool:
        """Count a failure; returns True when the circuit has just opened (or died)."""
        self.last_error = reason
        if self.failing_since is None:
            self.failing_since = now
        if self.circuit is Circuit.DEAD:
            return False
        if fatal:
            self.circuit = Circuit.DEAD
            self.events.append(f"relay given up: {reason}")
            event(
                logging.WARNING,
                "relay_given_up",
                f"relay {self.name} given up: {reason}",
                relay=self.name,
                reason=reason,
            )
            return True
        self.failures += 1
        if self.circuit is Circuit.HALF_OPEN or self.failures >= FAILURES_TO_OPEN:
            self.opened += 1
            cool_down = min(self.max_cool_down, COOL_DOWN * 2.0 ** (self.opened - 1))
            self.circuit = Circuit.OPEN
            self.retry_at = now + cool_down
            self.probing = False
            self.failures = 0
            self.events.append(f"circuit opened for {cool_down:.0f} s: {reason}")
            event(
                logging.WARNING,
                "circuit_opened",
                f"relay {self.name}: circuit opened for {cool_down:.0f} s: {reason}",
                relay=self.name,
                reason=reason,
                seconds=cool_down,
            )
            return True
        return False

    def throttled(self, now: float) -> float:
        """The relay asked us to slow down: pause it, longer while it keeps asking."""
        self.slow_downs += 1
        pause = min(MAX_SLOW_DOWN, SLOW_DOWN * 2.0 ** (self.slow_downs - 1))
        self.paused_until = max(self.paused_until, now + pause)
        return pause


class RelayPool:
    """The relays of a run, and the choice of one for each message."""

    def __init__(
        self,
        relays: Sequence[RelayState],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.relays = list(relays)
        self._clock = clock

    def choose(self, avoid: Collection[str] = ()) -> RelayState | None:
        """The relay for the next message: best priority with a healthy relay, by weight.

        Relays named in avoid (they already failed this message) are passed over while
        another relay is available.
        """
        now = self._clock()
        available = [relay for relay in self.relays if relay.available(now)]
        preferred = [relay for relay in available if relay.name not in avoid]
        by_priority: dict[int, list[RelayState]] = {}
        for relay in preferred or available:
            by_priority.setdefault(relay.config.priority, []).append(relay)
        if not by_priority:
            return None
        candidates = by_priority[min(by_priority)]
        # smooth weighted round robin (as nginx): exact shares, evenly interleaved
        total = 0
        best = candidates[0]
        for relay in candidates:
            relay.current_weight += relay.config.weight
            total += relay.config.weight
            if relay.current_weight > best.current_weight:
                best = relay
        best.current_weight -= total
        if best.circuit is Circuit.HALF_OPEN:
            best.probing = True
        return best

    def has_other(self, avoid: Collection[str]) -> bool:
        """True if a relay not named in avoid could take a message now or soon."""
        return any(
            relay.circuit is not Circuit.DEAD and relay.name not in avoid for relay in self.relays
        )

    def next_change(self) -> float | None:
        """Seconds until some unavailable relay may become available (None: never)."""
        now = self._clock()
        times: list[float] = []
        for relay in self.relays:
            if relay.circuit is Circuit.DEAD:
                continue
            if relay.circuit is Circuit.OPEN:
                times.append(relay.retry_at)
            if relay.quota_until > now:
                times.append(relay.quota_until)
            if relay.paused_until > now:
                times.append(relay.paused_until)
        return max(0.0, min(times) - now) if times else None

    def quota_notes(self) -> list[str]:
        """What each spent quota says (once each: the warm-up's is every relay's)."""
        now = self._clock()
        notes = [r.quota_note for r in self.relays if r.quota_until > now and r.quota_note]
        return list(dict.fromkeys(notes))

    def quota_spent_until(self) -> float | None:
        """Seconds until a quota frees up, when spent quotas are all that keeps relays idle."""
        now = self._clock()
        usable = [r for r in self.relays if r.circuit is not Circuit.DEAD]
        if not usable or any(r.quota_until <= now for r in usable):
            return None
        return min(r.quota_until for r in usable) - now

    def outage_since(self) -> float | None:
        """Since when no usable relay has worked (None: one is healthy, or untried).

        Dead relays do not count; with every relay dead the outage is total (see
        `all_dead`). A relay whose quota is spent cannot send either: while the others
        all fail, the outage is theirs (the run gives up once it lasts
        `give_up_unreachable`, rather than wait for a quota behind relays it cannot
        reach); with every usable relay spent, it is no outage (`quota_spent_until`)."""
        now = self._clock()
        usable = [r for r in self.relays if r.circuit is not Circuit.DEAD]
        sending = [r for r in usable if r.quota_until <= now]
        if not sending or any(r.failing_since is None for r in sending):
            return None
        return max(r.failing_since for r in sending if r.failing_since is not None)

    @property
    def ever_connected(self) -> bool:
        """True if any relay accepted a connection during the run, or is known good: its
        quota (or the warm-up's cap) was spent, by messages it accepted. A resume does not
        dial a spent relay; the others' outage is then no reason to say none is reachable
        (69): the quota frees later (75)."""
        return any(
            relay.ever_connected or (relay.quota_until > 0 and relay.circuit is not Circuit.DEAD)
            for relay in self.relays
        )

    @property
    def all_dead(self) -> bool:
        """True when no relay can be used again in this run."""
        return all(relay.circuit is Circuit.DEAD for relay in self.relays)
