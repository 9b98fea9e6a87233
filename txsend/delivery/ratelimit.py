"""Per-relay send rates (a relay's ``rate:``), shared by all of that relay's connections.

A pace, chosen by the unit of the rate:

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

* ``N/h``, ``N/day`` and rolling windows (``N/24h``) are quotas, counted per accepted
  recipient in the journal: `txsend.delivery.quotas`, not here.

Nothing here sleeps except ``RateLimiter.acquire`` (with the sleep it is given: the run's
ends at a stop); the clocks are injectable for tests.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

from txsend.models import RelayConfig
from txsend.units import Rate, parse_rate

__all__ = ["RateLimiter", "SlotStore", "limiter_for"]

# Float slack: a bucket refilled for exactly the wait it was told holds 0.999999... tokens.
_EPSILON = 1e-9


class SlotStore(Protocol):
    """Send slots of a pace shared by several processes (GCRA in the journal)."""

    def reserve_slots(self, relay: str, emission: float, n: int) -> float:
        """Reserve n slots `emission` seconds apart; seconds from now to the first."""
        ...


class RateLimiter:
    """One relay's rate. Create one per relay and share it between its connections.

    ``reserve`` is synchronous and does not yield, so connections running as tasks on
    one event loop cannot interleave inside it.
    """

    def __init__(
        self,
        rate: Rate,
        relay: str,
        clock: Callable[[], float] = time.monotonic,
        shared: SlotStore | None = None,
    ) -> None:
        self.rate = rate
        if rate.is_quota:
            raise ValueError(f"{rate} is a quota, not a pace (txsend.delivery.quotas)")
        self.relay = relay  # the shared journal's key for this relay's pace
        self._shared = shared
        self._emission = 1.0 / rate.per_second
        # 10 to 50 slots a reservation: about a tenth of a second's worth
        self.shared_batch = max(10, min(50, math.ceil(rate.per_second / 10.0)))
        # a reserved slot missed by more than this is dropped (a burst would break the pace)
        self._tolerance = max(self._emission, 0.01)
        self._next_slot = 0.0
        self._slots_left = 0
        self._clock = clock
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
        if self._shared is not None:
            return self._reserve_shared(self._shared)
        return self._reserve_token()

    async def acquire(
        self,
        max_wait: float,
        within: float = math.inf,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        stopped: Callable[[], bool] = lambda: False,
    ) -> float:
        """Wait (sleeping) for a slot; 0.0 once taken.

        If the next slot is more than ``max_wait`` seconds away, or later than ``within``
        seconds from this call (a send window closing first), returns that wait without
        taking a slot or sleeping; the caller decides. `sleep` is how the wait naps (the
        run's: a stop request ends it at once); once `stopped` says so, the wait left is
        returned without a slot (the caller checks for the stop first).
        """
        deadline = self._clock() + within
        while True:
            wait = self.reserve()
            if wait <= 0.0:
                return 0.0
            if wait > max_wait or stopped() or self._clock() + wait > deadline:
                return wait
            await sleep(wait)

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


def limiter_for(
    relay: RelayConfig,
    *,
    clock: Callable[[], float] = time.monotonic,
    shared: SlotStore | None = None,
) -> RateLimiter | None:
    """The pace of a relay's ``rate:`` (None when it has none, or a quota).

    A shared pace is keyed by the relay's URL (user, host and port; never a password).
    """
    if relay.rate is None:
        return None
    rate = parse_rate(relay.rate)
    if rate.is_quota:
        return None
    return RateLimiter(rate, relay.url, clock=clock, shared=shared)
