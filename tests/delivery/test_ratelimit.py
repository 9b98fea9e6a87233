"""Tests for txsend.delivery.ratelimit: paces (/s, /min), and parse_rate (quotas are
tested in test_quotas.py)."""

from __future__ import annotations

import asyncio
import itertools
import time
from pathlib import Path

import pytest

from txsend.delivery.ratelimit import RateLimiter, limiter_for
from txsend.models import RelayConfig, TlsMode
from txsend.units import Rate, parse_rate

# 2026-11-03 10:00:00 UTC
HOUR_START = 1793700000.0
assert HOUR_START % 3600 == 0


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def drain(limiter: RateLimiter, clock: FakeClock, messages: int) -> float:
    """Send `messages` through the limiter, advancing fake time by each wait; the time used."""
    start = clock.now
    sent = 0
    while sent < messages:
        wait = limiter.reserve()
        if wait == 0.0:
            sent += 1
        else:
            assert wait > 0
            clock.now += wait
    return clock.now - start


# --------------------------------------------------------------------------- parse_rate


@pytest.mark.parametrize(
    ("text", "count", "per"),
    [
        ("50/s", 50.0, 1.0),
        ("600/min", 600.0, 60.0),
        ("1000/h", 1000.0, 3600.0),
        ("10000/day", 10000.0, 86400.0),
        (" 0.5 / s ", 0.5, 1.0),
        ("2.5/min", 2.5, 60.0),
    ],
)
def test_parse_rate(text: str, count: float, per: float) -> None:
    rate = parse_rate(text)
    assert rate == Rate(count=count, per=per)


@pytest.mark.parametrize(
    "text", ["", "50", "fast", "50/sec", "50/hour", "50 per second", "-5/s", "1e3/s", "/s"]
)
def test_parse_rate_errors(text: str) -> None:
    with pytest.raises(ValueError, match="expected a rate like 50/s"):
        parse_rate(text)


@pytest.mark.parametrize("text", ["0/s", "0.0/h"])
def test_parse_rate_must_be_positive(text: str) -> None:
    with pytest.raises(ValueError, match="a rate must be positive"):
        parse_rate(text)


@pytest.mark.parametrize(
    ("text", "count", "per"),
    [
        ("10000/24h", 10000.0, 86400.0),
        ("500/1h", 500.0, 3600.0),
        ("200/30min", 200.0, 1800.0),
        ("50000/7d", 50000.0, 7 * 86400.0),
        ("3/1d", 3.0, 86400.0),
        ("5 / 2 h", 5.0, 7200.0),
        ("1/1min", 1.0, 60.0),
    ],
)
def test_parse_rolling_rate(text: str, count: float, per: float) -> None:
    rate = parse_rate(text)
    assert rate == Rate(count=count, per=per, rolling=True)
    assert rate.is_quota


@pytest.mark.parametrize("text", ["5/30s", "5/59s"])
def test_rolling_window_is_at_least_a_minute(text: str) -> None:
    with pytest.raises(ValueError, match="at least a minute"):
        parse_rate(text)


def test_rate_error_lists_every_form() -> None:
    with pytest.raises(ValueError) as caught:
        parse_rate("5/week")
    for form in ("50/s", "600/min", "1000/h", "10000/day", "10000/24h", "200/30min", "50000/7d"):
        assert form in str(caught.value)


def test_rolling_rate_str() -> None:
    assert [str(parse_rate(t)) for t in ("10000/24h", "200/30min", "5/7d", "3/1d", "2/36h")] == [
        "10000/24h",
        "200/30min",
        "5/7d",
        "3/24h",
        "2/36h",
    ]
    assert parse_rate("2.5/2h").limit == 3


def test_is_quota_and_str() -> None:
    assert not parse_rate("50/s").is_quota
    assert not parse_rate("600/min").is_quota
    assert parse_rate("1000/h").is_quota
    assert parse_rate("10000/day").is_quota
    assert [str(parse_rate(t)) for t in ("50/s", "0.5/min", "1000/h", "10000/day")] == [
        "50/s",
        "0.5/min",
        "1000/h",
        "10000/day",
    ]


# --------------------------------------------------------------------------- paces


def test_per_second_bursts_a_tenth_then_paces() -> None:
    clock = FakeClock()
    limiter = RateLimiter(parse_rate("100/s"), "r", clock=clock)
    assert limiter.capacity == 10.0
    assert [limiter.reserve() for _ in range(10)] == [0.0] * 10
    wait = limiter.reserve()
    assert wait == pytest.approx(0.01)
    assert limiter.reserve() == pytest.approx(0.01)  # nothing was taken by asking


def test_per_second_300_messages_take_at_least_2_8_seconds() -> None:
    clock = FakeClock()
    limiter = RateLimiter(parse_rate("100/s"), "r", clock=clock)
    elapsed = drain(limiter, clock, 300)
    assert elapsed >= 2.8
    assert elapsed == pytest.approx(2.9, abs=0.01)


def test_per_second_never_more_than_count_in_any_second() -> None:
    clock = FakeClock()
    limiter = RateLimiter(parse_rate("20/s"), "r", clock=clock)
    times: list[float] = []
    while len(times) < 200:
        wait = limiter.reserve()
        if wait == 0.0:
            times.append(clock.now)
        else:
            clock.now += wait
    for i, start in enumerate(times):
        in_window = [t for t in times[i:] if t < start + 1.0 - 1e-9]
        assert len(in_window) <= 20 + 2  # the rate plus the burst of max(1, 20/10)


def test_slow_per_second_rate_has_a_burst_of_one() -> None:
    clock = FakeClock()
    limiter = RateLimiter(parse_rate("0.5/s"), "r", clock=clock)
    assert limiter.capacity == 1.0
    assert limiter.reserve() == 0.0
    assert limiter.reserve() == pytest.approx(2.0)


def test_per_minute_paces_evenly() -> None:
    clock = FakeClock()
    limiter = RateLimiter(parse_rate("60/min"), "r", clock=clock)
    assert limiter.capacity == 1.0
    sent_at: list[float] = []
    while len(sent_at) < 10:
        wait = limiter.reserve()
        if wait == 0.0:
            sent_at.append(clock.now)
        else:
            assert wait == pytest.approx(1.0)
            clock.now += wait
    gaps = [b - a for a, b in itertools.pairwise(sent_at)]
    assert gaps == pytest.approx([1.0] * 9)


def test_idle_time_refills_only_up_to_capacity() -> None:
    clock = FakeClock()
    limiter = RateLimiter(parse_rate("100/s"), "r", clock=clock)
    drain(limiter, clock, 50)
    clock.now += 3600.0
    assert [limiter.reserve() for _ in range(10)] == [0.0] * 10
    assert limiter.reserve() > 0


def test_a_quota_is_not_a_pace() -> None:
    with pytest.raises(ValueError, match="quota"):
        RateLimiter(parse_rate("5/h"), "r")
    with pytest.raises(ValueError, match="quota"):
        RateLimiter(parse_rate("5/24h"), "r")


# --------------------------------------------------------------------------- acquire


def test_acquire_really_sleeps() -> None:
    limiter = RateLimiter(parse_rate("50/s"), "r")  # burst 5, then one per 20 ms

    async def send_all() -> list[float]:
        return [await limiter.acquire(max_wait=1.0) for _ in range(20)]

    start = time.monotonic()
    results = asyncio.run(send_all())
    elapsed = time.monotonic() - start
    assert results == [0.0] * 20
    assert elapsed >= 0.28  # (20 - 5) / 50 = 0.3 s, less timer slack
    assert elapsed < 2.0


def test_acquire_shared_by_concurrent_connections() -> None:
    limiter = RateLimiter(parse_rate("100/s"), "r")  # burst 10

    async def connection(count: int) -> None:
        for _ in range(count):
            assert await limiter.acquire(max_wait=1.0) == 0.0

    async def main() -> None:
        await asyncio.gather(*(connection(10) for _ in range(4)))

    start = time.monotonic()
    asyncio.run(main())
    assert time.monotonic() - start >= 0.28  # (40 - 10) / 100


def test_acquire_returns_long_waits_without_sleeping() -> None:
    clock = FakeClock()
    limiter = RateLimiter(parse_rate("1/min"), "r", clock=clock)

    async def twice() -> tuple[float, float]:
        return await limiter.acquire(30.0), await limiter.acquire(30.0)

    start = time.monotonic()
    first, second = asyncio.run(twice())
    assert first == 0.0
    assert second == pytest.approx(60.0)
    assert time.monotonic() - start < 0.5


def test_acquire_naps_with_the_sleep_it_is_given_and_ends_at_a_stop() -> None:
    """The run's nap ends at a stop request: the wait left comes back, no slot taken
    (it slept up to 60 s with asyncio.sleep, so a stop waited for the grace period)."""
    clock = FakeClock()
    limiter = RateLimiter(parse_rate("1/min"), "r", clock=clock)
    stopping = [False]
    naps: list[float] = []

    async def nap(seconds: float) -> None:
        naps.append(seconds)
        stopping[0] = True  # a stop request arrives during the nap and ends it
        clock.now += 1.0

    async def twice() -> tuple[float, float]:
        first = await limiter.acquire(60.0, sleep=nap, stopped=lambda: stopping[0])
        return first, await limiter.acquire(60.0, sleep=nap, stopped=lambda: stopping[0])

    first, second = asyncio.run(twice())
    assert first == 0.0
    assert naps == [pytest.approx(60.0)]
    assert second == pytest.approx(59.0)


# --------------------------------------------------------------------------- limiter_for


def relay(rate: str | None) -> RelayConfig:
    return RelayConfig(
        url="smtp://u@relay.example:587",
        host="relay.example",
        port=587,
        tls=TlsMode.STARTTLS,
        username="u",
        rate=rate,
        password_file=Path("/nonexistent"),
    )


def test_limiter_for_relay() -> None:
    assert limiter_for(relay(None)) is None
    assert limiter_for(relay("5/h")) is None  # a quota: txsend.delivery.quotas
    assert limiter_for(relay("5/24h")) is None
    limiter = limiter_for(relay("5/s"))
    assert limiter is not None
    assert limiter.rate == Rate(5.0, 1.0)
    assert limiter.relay == "smtp://u@relay.example:587"


# --------------------------------------------------------------------------- shared pace


class Gcra:
    """The SlotStore protocol as the PostgreSQL journal keeps it, on a fake clock."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.tat = 0.0
        self.reservations: list[int] = []

    def reserve_slots(self, relay: str, emission: float, n: int) -> float:
        start = max(self.tat, self.clock.now)
        self.tat = start + emission * n
        self.reservations.append(n)
        return start - self.clock.now


def test_shared_pace_spends_reserved_slots_at_their_times() -> None:
    clock = FakeClock()
    store = Gcra(clock)
    limiter = RateLimiter(parse_rate("200/s"), "r", clock=clock, shared=store)
    assert limiter.shared_batch == 20  # a tenth of a second's worth, 10 to 50
    taken = []
    for _ in range(60):
        while (wait := limiter.reserve()) > 0:
            clock.now += wait
        taken.append(clock.now)
    gaps = {round(b - a, 6) for a, b in itertools.pairwise(taken)}
    assert gaps == {0.005}  # exactly the emission interval, never a burst
    assert store.reservations == [20, 20, 20]


def test_shared_pace_drops_slots_reached_too_late() -> None:
    clock = FakeClock()
    store = Gcra(clock)
    limiter = RateLimiter(parse_rate("100/s"), "r", clock=clock, shared=store)
    assert limiter.reserve() == 0.0  # the first of 10 slots, 10 ms apart from 1000.000
    clock.now += 0.055  # the sender stalled: the slots at +10 .. +40 ms are over 10 ms late
    assert limiter.reserve() == 0.0  # they are dropped; the one at +50 ms (5 late) is taken
    clock.now += 0.001
    assert limiter.reserve() == pytest.approx(0.004)  # the next, at +60 ms: no catching up
    assert store.reservations == [10]
