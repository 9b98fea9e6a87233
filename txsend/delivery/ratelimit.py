"""Per-relay send rates (a relay's ``rate:``), shared by all of that relay's connections.

Two kinds of limit, chosen by the unit of the rate:

* ``N/s`` and ``N/min`` are a *pace*: a token bucket refilled continuously at N/per
  tokens a second. Its capacity (the largest burst) is:

  - ``/s``: ``max(1, N / 10)``, a tenth of a second's worth, so 100/s may burst 10
    messages and then goes at 100 a second (300 messages take at least 2.9 s). Small
    bursts keep the connections busy without a provider ever seeing more than N in
    any one second.
  - ``/min``: 1, so the messages are evenly spaced (60/min is one a second). A minute's
    worth in one burst is exactly what such limits are there to prevent.

  The bucket starts full and lives only in this process. With a shared journal
  (PostgreSQL: several workers on one job) the pace is kept across all of them
  instead: a worker reserves `shared_batch` send slots at a time from the relay's
  GCRA row in the journal (``SlotStore.reserve_slots``) and spends them at their
  scheduled times; a slot it reaches too late is dropped rather than bunched.

* ``N/h`` and ``N/day`` are a *quota*: a budget per clock-aligned UTC hour or UTC day,
  counted in a ``WindowStore`` (the journal) so that a second run, e.g. the next cron
  invocation in the same hour, sees what the first one already used. Within the
  window nothing paces the messages; once the budget is spent, ``reserve`` answers the
  seconds until the window ends. A fractional N allows ``ceil(N)`` messages.

Nothing here sleeps except ``RateLimiter.acquire``; the clocks are injectable for tests.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from typing import Protocol

from txsend.models import RelayConfig
from txsend.units import Rate, parse_rate

__all__ = [
    "MemoryWindowStore",
    "RateLimiter",
    "SlotStore",
    "WindowStore",
    "limiter_for",
]

# Float slack: a bucket refilled for exactly the wait it was told holds 0.999999... tokens.
_EPSILON = 1e-9


class WindowStore(Protocol):
    """Where quota windows are counted (the journal, so that later runs see them)."""

    def take_from_window(self, relay: str, window_start: float, limit: float) -> bool:
        """Count one message in the window if it holds fewer than limit (atomically)."""
        ...


class SlotStore(Protocol):
    """Send slots of a pace shared by several processes (GCRA in the journal)."""

    def reserve_slots(self, relay: str, emission: float, n: int) -> float:
        """Reserve n slots `emission` seconds apart; seconds from now to the first."""
        ...


class MemoryWindowStore:
    """A WindowStore in a dict: one process's count, forgotten when it exits."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, float], int] = {}

    def window_count(self, relay: str, window_start: float) -> int:
        return self.counts.get((relay, window_start), 0)

    def add_to_window(self, relay: str, window_start: float, n: int) -> None:
        key = (relay, window_start)
        self.counts[key] = self.counts.get(key, 0) + n

    def take_from_window(self, relay: str, window_start: float, limit: float) -> bool:
        if self.window_count(relay, window_start) >= limit:
            return False
        self.add_to_window(relay, window_start, 1)
        return True


class RateLimiter:
    """One relay's rate. Create one per relay and share it between its connections.

    ``reserve`` is synchronous and does not yield, so connections running as tasks on
    one event loop cannot interleave inside it.
    """

    def __init__(
        self,
        rate: Rate,
        relay: str,
        store: WindowStore | None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        shared: SlotStore | None = None,
    ) -> None:
        self.rate = rate
        self.relay = relay  # the store's key for this relay's quota windows
        self._store: WindowStore = store if store is not None else MemoryWindowStore()
        self._shared = None if rate.is_quota else shared
        self._emission = 1.0 / rate.per_second
        # 10 to 50 slots a reservation: about a tenth of a second's worth
        self.shared_batch = max(10, min(50, math.ceil(rate.per_second / 10.0)))
        # a reserved slot missed by more than this is dropped (a burst would break the pace)
        self._tolerance = max(self._emission, 0.01)
        self._next_slot = 0.0
        self._slots_left = 0
        self._clock = clock
        self._wall = wall
        if rate.per <= 1.0:
            self.capacity = max(1.0, rate.count / 10.0)
        else:
            self.capacity = 1.0
        self._tokens = self.capacity
        self._refilled_at = clock()

    def reserve(self) -> float:
        """Take one send slot: 0.0 if the message may go now, else seconds to wait.

        When the answer is not 0.0 no slot was taken; ask again after waiting.
        """
        if self.rate.is_quota:
            return self._reserve_quota()
        if self._shared is not None:
            return self._reserve_shared(self._shared)
        return self._reserve_token()

    async def acquire(self, max_wait: float) -> float:
        """Wait (sleeping) for a slot; 0.0 once taken.

        If the next slot is more than ``max_wait`` seconds away, returns that wait
        without taking a slot or sleeping; the caller decides (e.g. stop until the
        hour's quota renews, and leave the rows pending).
        """
        while True:
            wait = self.reserve()
            if wait <= 0.0:
                return 0.0
            if wait > max_wait:
                return wait
            await asyncio.sleep(wait)

    def window_end(self) -> float | None:
        """For a quota: wall-clock time the current window ends; None for a pace."""
        if not self.rate.is_quota:
            return None
        return self._window_start(self._wall()) + self.rate.per

    # ----------------------------------------------------------------- internals

    def _reserve_token(self) -> float:
        now = self._clock()
        elapsed = max(0.0, now - self._refilled_at)
        self._refilled_at = now
        self._tokens = min(self.capacity, self._tokens + elapsed * self.rate.per_second)
        if self._tokens >= 1.0 - _EPSILON:
            self._tokens = max(0.0, self._tokens - 1.0)
            return 0.0
        return (1.0 - self._tokens) / self.rate.per_second

    def _reserve_shared(self, shared: SlotStore) -> float:
        now = self._clock()
        late = now - self._next_slot
        if self._slots_left and late > self._tolerance:
            stale = math.floor((late - self._tolerance) / self._emission) + 1
            self._slots_left = max(0, self._slots_left - stale)
            self._next_slot += stale * self._emission
        if not self._slots_left:
            wait = shared.reserve_slots(self.relay, self._emission, self.shared_batch)
            self._next_slot = now + wait
            self._slots_left = self.shared_batch
        wait = self._next_slot - now
        if wait > _EPSILON:
            return wait
        self._next_slot += self._emission
        self._slots_left -= 1
        return 0.0

    def _window_start(self, now: float) -> float:
        # POSIX time has no leap seconds, so whole multiples of 3600 / 86400 since the
        # epoch are the starts of UTC hours / UTC days.
        return math.floor(now / self.rate.per) * self.rate.per

    def _reserve_quota(self) -> float:
        now = self._wall()
        start = self._window_start(now)
        if self._store.take_from_window(self.relay, start, self.rate.count):
            return 0.0
        return max(start + self.rate.per - now, _EPSILON)


def limiter_for(
    relay: RelayConfig,
    store: WindowStore | None,
    *,
    clock: Callable[[], float] = time.monotonic,
    wall: Callable[[], float] = time.time,
    shared: SlotStore | None = None,
) -> RateLimiter | None:
    """The limiter for a relay's ``rate:`` (None when it has none).

    Quota windows are keyed by the relay's URL (it names the account: user, host and
    port; it never holds a password).
    """
    if relay.rate is None:
        return None
    return RateLimiter(
        parse_rate(relay.rate), relay.url, store, clock=clock, wall=wall, shared=shared
    )
