"""Per-domain pace (the job's `domains:`): which messages may start now, per recipient domain.

Every message belongs to one domain state: a `domains:` entry (a domain or a group) that
matches its recipient, else the recipient's own domain (unlimited, but tracked for the
report and throttled when it asks to be). A limited domain has a pace (a token bucket)
and/or a cap on transactions in flight across all relays and connections.

How the engine uses it, in the order a message goes:

* the producer asks `DomainGate.domain_of` for the row's domain, and skips the row (keeping
  only its key, `DomainState.skipped`) while that domain's backlog is full
  (`DomainState.backlog_cap`: a few seconds of its pace), coming back to it when there is
  room (`DomainGate.refill`): a slow domain never fills the whole pipeline;
* the dispatcher gives a message to a relay only when its domain could start it now
  (`DomainGate.reserve`); otherwise the message waits in its domain's queue
  (`DomainGate.park`), and the others go on: no head-of-line blocking;
* the worker takes the domain's slot just before the transaction begins
  (`DomainGate.start`, never waiting), so the pace holds at the server, and lets it go when
  the transaction is over (`DomainGate.let_go`);
* a throttling reply to a recipient (RCPT, DATA) slows that domain only
  (`DomainState.throttled`: the pace halves, down to one message every `MIN_INTERVAL`
  seconds; after `QUIET` seconds without one it grows back by half, step by step).

Nothing here sleeps or reads a clock of its own: every method takes `now` (monotonic).
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from txsend.job.domains import DomainRule, normal_domain
from txsend.logs import event
from txsend.reporting.stats import DomainStats, RunStats

__all__ = [
    "BACKLOG_SECONDS",
    "DomainGate",
    "DomainMatcher",
    "DomainState",
    "PaceBucket",
    "recipient_domain",
]

BACKLOG_SECONDS = 4.0  # a limited domain's messages in the pipeline: this much of its pace
MIN_BACKLOG = 16
MIN_INTERVAL = 5.0  # a throttled domain still gets one message every this many seconds
QUIET = 10.0  # seconds without a throttling reply before the pace grows back a step
DECREASE_EVERY = 1.0  # a burst of throttling replies halves the pace once a second at most
MAX_TRACKED = 10_000  # distinct unconfigured domains followed; the rest count as "other"
OTHER = "other"
_EPSILON = 1e-9

FREE = 0  # DomainItem.held: nothing of its domain's
RESERVED = 1  # given to a relay: counted against the domain's pace and connections
STARTED = 2  # its transaction began (a token spent, a connection slot held)


def recipient_domain(address: str) -> str:
    """The domain part of an address as it is written (the matcher normalises it)."""
    return address.rpartition("@")[2]


class PaceBucket:
    """A token bucket: `per_second` tokens a second, at most `capacity` (the burst)."""

    __slots__ = ("_at", "capacity", "per_second", "tokens")

    def __init__(self, per_second: float, capacity: float, now: float) -> None:
        self.per_second = per_second
        self.capacity = capacity
        self.tokens = capacity
        self._at = now

    @classmethod
    def for_rate(cls, per_second: float, per: float, now: float) -> PaceBucket:
        """The bucket of a `rate:` as the relays' limiter shapes it: N/s may burst a tenth
        of a second's worth; N/min goes evenly (one at a time)."""
        capacity = max(1.0, per_second / 10.0) if per <= 1.0 else 1.0
        return cls(per_second, capacity, now)

    def level(self, now: float) -> float:
        """Tokens in the bucket at `now`."""
        if now > self._at:
            self.tokens = min(self.capacity, self.tokens + (now - self._at) * self.per_second)
            self._at = now
        return self.tokens

    def take(self, now: float) -> bool:
        """Take a token if there is one."""
        if self.level(now) >= 1.0 - _EPSILON:
            self.tokens = max(0.0, self.tokens - 1.0)
            return True
        return False

    def wait(self, now: float, tokens: float = 1.0) -> float:
        """Seconds until the bucket holds `tokens`."""
        missing = tokens - self.level(now)
        return 0.0 if missing <= _EPSILON else missing / self.per_second

    def set_pace(self, per_second: float, capacity: float, now: float) -> None:
        """A new pace from `now` on (the tokens already there stay, within the capacity)."""
        self.level(now)
        self.per_second = per_second
        self.capacity = capacity
        self.tokens = min(self.tokens, capacity)


class DomainState:
    """One domain (or group) during a run: its limits, what it holds, what waits for it."""

    __slots__ = (
        "backlog",
        "bucket",
        "cap",
        "ceiling",
        "configured",
        "in_flight",
        "last_step",
        "last_throttle",
        "name",
        "observed",
        "reserved",
        "rule_pace",
        "rule_per",
        "skipped",
        "slowed",
        "stats",
        "throttles",
        "waiting",
        "window",
        "window_starts",
    )

    def __init__(self, name: str, rule: DomainRule | None, stats: DomainStats, now: float) -> None:
        self.name = name
        self.configured = rule is not None
        self.rule_pace: float | None = None
        self.rule_per = 1.0
        self.bucket: PaceBucket | None = None
        if rule is not None and rule.rate is not None:
            self.rule_pace = rule.rate.per_second
            self.rule_per = rule.rate.per
            self.bucket = PaceBucket.for_rate(self.rule_pace, self.rule_per, now)
        self.cap = rule.connections if rule is not None else None
        self.in_flight = 0
        self.reserved = 0
        self.backlog = 0  # messages of this domain in the pipeline
        self.waiting: deque[Any] = deque()  # messages the dispatcher holds for this domain
        self.skipped: deque[str] = deque()  # keys of rows the producer passed over
        self.stats = stats
        stats.configured = self.configured
        self.slowed = False  # a throttling reply lowered the pace
        self.ceiling: float | None = None  # the pace to grow back to (None: unlimited)
        self.last_throttle = -math.inf
        self.last_step = -math.inf
        self.window = now  # starts counted in the current second (the observed pace)
        self.window_starts = 0
        self.observed = 0.0  # starts in the last whole second
        self.throttles = 0
        self._show(now)

    @property
    def limited(self) -> bool:
        """Does anything hold this domain's messages back?"""
        return self.bucket is not None or self.cap is not None

    @property
    def pace(self) -> float | None:
        """Messages a second this domain may start now (None: no pace)."""
        return None if self.bucket is None else self.bucket.per_second

    @property
    def backlog_cap(self) -> int:
        """The most messages of this domain in the pipeline at once."""
        pace = self.pace
        by_pace = math.ceil(pace * BACKLOG_SECONDS) if pace is not None else 0
        by_cap = 4 * self.cap if self.cap is not None else 0
        return max(MIN_BACKLOG, by_pace, by_cap)

    def has_room(self) -> bool:
        """May the producer add a message of this domain to the pipeline?"""
        return not self.limited or self.backlog < self.backlog_cap

    def could_start(self, now: float) -> bool:
        """Could one more message start now, beyond those already given to relays?"""
        if self.cap is not None and self.in_flight + self.reserved >= self.cap:
            return False
        bucket = self.bucket
        return bucket is None or bucket.level(now) - self.reserved >= 1.0 - _EPSILON

    def wait(self, now: float) -> float | None:
        """Seconds until `could_start` may say yes by the pace alone (None: not the pace)."""
        if self.bucket is None:
            return None
        return self.bucket.wait(now, self.reserved + 1.0)

    def count_start(self, now: float) -> None:
        """A transaction began: for the pace a throttled unlimited domain starts from."""
        if now - self.window >= 1.0:
            elapsed = now - self.window
            self.observed = self.window_starts / elapsed if elapsed < 2.0 else 0.0
            self.window = now
            self.window_starts = 0
        self.window_starts += 1

    def throttled(self, now: float) -> bool:
        """A throttling reply: halve the pace (at most once a `DECREASE_EVERY`). True when
        the pace changed."""
        self.throttles += 1
        self.stats.throttles += 1
        self.last_throttle = now
        if now - self.last_step < DECREASE_EVERY:
            return False
        self.last_step = now
        if self.bucket is None:
            # no pace until now: start from what the domain did in about the last second
            since = max(now - self.window, 1.0)
            current = max(self.observed, self.window_starts / since, 1.0)
            self.ceiling = current
            self.bucket = PaceBucket(max(current / 2, 1.0 / MIN_INTERVAL), 1.0, now)
        else:
            if not self.slowed:
                self.ceiling = self.bucket.per_second
            pace = max(self.bucket.per_second / 2, 1.0 / MIN_INTERVAL)
            self.bucket.set_pace(pace, 1.0, now)
        self.slowed = True
        self._show(now)
        return True

    def recover(self, now: float) -> None:
        """After a quiet spell, grow the pace back a step (by half) toward where it was."""
        if not self.slowed or now - max(self.last_throttle, self.last_step) < QUIET:
            return
        bucket = self.bucket
        assert bucket is not None and self.ceiling is not None
        self.last_step = now
        grown = bucket.per_second * 1.5
        if grown < self.ceiling:
            bucket.set_pace(grown, 1.0, now)
        else:  # back where it was: its own rate, or none
            self.slowed = False
            self.ceiling = None
            if self.rule_pace is None:
                self.bucket = None
            else:
                self.bucket = PaceBucket.for_rate(self.rule_pace, self.rule_per, now)
                self.bucket.tokens = 1.0
        self._show(now)

    def _show(self, now: float) -> None:
        self.stats.pace = self.pace
        self.stats.slowed = self.slowed


class DomainMatcher:
    """Which `domains:` entry a recipient domain belongs to (see `txsend.job.domains`)."""

    def __init__(self, rules: Iterable[DomainRule]) -> None:
        self.rules = tuple(rules)
        self._domains: dict[str, DomainRule] = {}
        self._exact: dict[str, DomainRule] = {}
        self._suffixes: dict[str, DomainRule] = {}
        self.mx: list[tuple[str, DomainRule]] = []
        for rule in self.rules:
            if not rule.is_group:
                self._domains[rule.name] = rule
                continue
            for domain in rule.exact:
                self._exact[domain] = rule
            for suffix in rule.suffixes:
                self._suffixes[suffix] = rule
            self.mx.extend((suffix, rule) for suffix in rule.mx)
        self.mx.sort(key=lambda pair: -len(pair[0]))  # the longest suffix first

    @property
    def uses_mx(self) -> bool:
        return bool(self.mx)

    def by_domain(self, domain: str) -> DomainRule | None:
        """The entry for a normalised domain by its name alone (not its MX)."""
        rule = self._domains.get(domain) or self._exact.get(domain)
        if rule is not None or not self._suffixes:
            return rule
        dot = domain.find(".")
        while dot >= 0:  # ".a.example.com", then ".example.com", then ".com"
            rule = self._suffixes.get(domain[dot:])
            if rule is not None:
                return rule
            dot = domain.find(".", dot + 1)
        return None

    def by_mx(self, hosts: Iterable[str]) -> DomainRule | None:
        """The group whose `mx:` suffix one of the MX hosts ends with (the longest)."""
        names = ["." + normal_domain(h) for h in hosts]
        for suffix, rule in self.mx:
            if any(name.endswith(suffix) for name in names):
                return rule
        return None


class DomainGate:
    """The run's domain states, and the messages that wait for their domain."""

    def __init__(
        self,
        rules: Iterable[DomainRule],
        stats: RunStats,
        clock: Callable[[], float],
    ) -> None:
        self.matcher = DomainMatcher(rules)
        self._stats = stats
        self._clock = clock
        self._states: dict[str, DomainState] = {}  # by entry or domain name
        self._by_written: dict[str, DomainState] = {}  # by the domain as rows write it
        self._mx: dict[str, DomainRule | None] = {}  # normalised domain: its MX match
        self.parked: dict[str, DomainState] = {}  # domains with messages waiting
        self.skipping: dict[str, DomainState] = {}  # domains with rows passed over

    # --- which domain ------------------------------------------------------------------

    @property
    def uses_mx(self) -> bool:
        """Does some entry match recipient domains by their MX hosts?"""
        return self.matcher.uses_mx

    def needs_mx(self, address: str) -> str | None:
        """The normalised domain whose MX to look up first, if any (once per domain)."""
        written = recipient_domain(address)
        if not self.matcher.uses_mx or written in self._by_written:
            return None
        domain = _normal(written)
        if domain in self._mx or self.matcher.by_domain(domain) is not None:
            return None
        return domain

    def set_mx(self, domain: str, hosts: Iterable[str]) -> None:
        """What the MX lookup of a domain found (nothing, when it failed)."""
        self._mx[domain] = self.matcher.by_mx(hosts)

    def domain_of(self, address: str) -> DomainState:
        """The domain state a recipient's message belongs to."""
        written = recipient_domain(address)
        state = self._by_written.get(written)
        if state is not None:
            return state
        domain = _normal(written)
        rule = self.matcher.by_domain(domain) or self._mx.get(domain)
        name = rule.name if rule is not None else domain
        state = self._states.get(name)
        if state is None:
            if rule is None and len(self._states) >= MAX_TRACKED:
                name = OTHER
                state = self._states.get(OTHER)
            if state is None:
                state = DomainState(name, rule, self._stats.domain(name), self._clock())
                self._states[name] = state
        if len(self._by_written) < 4 * MAX_TRACKED:
            self._by_written[written] = state
        return state

    def states(self) -> list[DomainState]:
        return list(self._states.values())

    # --- the producer: backlog ---------------------------------------------------------

    def skip(self, state: DomainState, key: str) -> bool:
        """Pass a row over while its domain's backlog is full (or others wait before it)."""
        if state.skipped or not state.has_room():
            state.skipped.append(key)
            state.stats.skipped = len(state.skipped)
            self.skipping[state.name] = state
            return True
        return False

    def refill(self, limit: int) -> list[tuple[DomainState, str]]:
        """Keys of passed-over rows whose domain has room again (at most `limit`)."""
        found: list[tuple[DomainState, str]] = []
        for name, state in list(self.skipping.items()):
            room = state.backlog_cap - state.backlog
            while room > 0 and state.skipped and len(found) < limit:
                found.append((state, state.skipped.popleft()))
                room -= 1
            state.stats.skipped = len(state.skipped)
            if not state.skipped:
                del self.skipping[name]
        return found

    def skipped_keys(self) -> set[str]:
        """Every key passed over and not yet taken back (not to be claimed again)."""
        return {key for state in self.skipping.values() for key in state.skipped}

    # --- the dispatcher ----------------------------------------------------------------

    def reserve(self, state: DomainState, now: float) -> bool:
        """May a message of this domain go to a relay now? (True: it holds a reservation.)"""
        state.recover(now)
        if state.waiting or not state.could_start(now):
            return False
        state.reserved += 1
        return True

    def park(self, state: DomainState, item: Any, *, front: bool = False) -> None:
        """Hold a message until its domain can start it."""
        if front:
            state.waiting.appendleft(item)
        else:
            state.waiting.append(item)
        state.stats.waiting = len(state.waiting)
        self.parked[state.name] = state

    def ready(self, now: float) -> list[tuple[DomainState, Any]]:
        """The held messages whose domain can start them now (each holds a reservation)."""
        found: list[tuple[DomainState, Any]] = []
        for name, state in list(self.parked.items()):
            state.recover(now)
            while state.waiting and state.could_start(now):
                state.reserved += 1
                found.append((state, state.waiting.popleft()))
            state.stats.waiting = len(state.waiting)
            if not state.waiting:
                del self.parked[name]
        return found

    def next_wake(self, now: float) -> float | None:
        """Seconds until a held message's pace allows it (None: none waits for its pace)."""
        waits = [w for s in self.parked.values() if (w := s.wait(now)) is not None]
        return min(waits) if waits else None

    def take_out(self, which: Callable[[Any], bool]) -> list[Any]:
        """The held messages `which` selects, no longer held."""
        found: list[Any] = []
        for name, state in list(self.parked.items()):
            kept: deque[Any] = deque()
            for item in state.waiting:
                (found if which(item) else kept).append(item)
            state.waiting = kept
            state.stats.waiting = len(kept)
            if not kept:
                del self.parked[name]
        return found

    def drain(self) -> list[Any]:
        """Every held message (a stop: they are dropped)."""
        items = [item for state in self.parked.values() for item in state.waiting]
        for state in self.parked.values():
            state.waiting.clear()
            state.stats.waiting = 0
        self.parked.clear()
        return items

    def throttled(self, state: DomainState, relay: str, now: float) -> None:
        """A throttling reply to one of the domain's recipients: slow the domain down."""
        if state.name == OTHER or not state.throttled(now):
            return  # ("other" is many domains: one of them throttling says nothing of the rest)
        pace = state.pace or 0.0
        event(
            logging.WARNING,
            "domain_throttled",
            f"domain {state.name} throttled by relay {relay}: pace now {pace:.3g}/s",
            domain=state.name,
            relay=relay,
            pace=pace,
        )

    # --- the worker --------------------------------------------------------------------

    def start(self, state: DomainState, held: int, now: float) -> bool:
        """Begin a transaction of this domain now, if its pace and connections allow; a
        reservation (`held`) is spent either way."""
        if held == RESERVED:
            state.reserved -= 1
        elif held == STARTED:
            return True
        # what others hold reserved stays theirs
        if not state.could_start(now):
            return False
        if state.bucket is not None:
            state.bucket.take(now)
        state.in_flight += 1
        state.stats.in_flight = state.in_flight
        state.count_start(now)
        return True

    def let_go(self, state: DomainState, held: int) -> bool:
        """Give back what a message held of its domain; True when others may now start."""
        if held == RESERVED:
            state.reserved -= 1
        elif held == STARTED:
            state.in_flight -= 1
            state.stats.in_flight = state.in_flight
        else:
            return False
        return state.name in self.parked


def _normal(written: str) -> str:
    try:
        return normal_domain(written)
    except ValueError:
        return written.lower()
