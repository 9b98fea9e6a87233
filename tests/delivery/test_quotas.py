"""Tests for txsend.delivery.quotas: fixed and rolling quotas and the warm-up, counted per
accepted recipient in a real SQLite journal's ledger, on an injected wall clock."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterator
from pathlib import Path

import pytest

from txsend.delivery.quotas import (
    HOLD_POLL,
    FixedQuota,
    Quotas,
    RollingQuota,
    Slot,
    Spent,
    WarmupQuota,
    quota_for,
    utc_second,
)
from txsend.job.warmup import Warmup, sender_domain
from txsend.journal.sqlite import Journal
from txsend.models import RelayConfig, TlsMode
from txsend.units import parse_rate

# 2026-11-03 00:00:00 UTC
DAY_START = 1793664000.0
assert DAY_START % 86400 == 0
HOUR = 3600.0
TTL = 700.0


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Journal]:
    journal = Journal.open(tmp_path / "j.db")
    yield journal
    journal.close()


def rolling(ledger: Journal, text: str, account: str = "smtp://u@r:587") -> RollingQuota:
    return RollingQuota(parse_rate(text), account, ledger, ttl=TTL, label="relay r:587")


def fixed(ledger: Journal, text: str, account: str = "smtp://u@r:587") -> FixedQuota:
    return FixedQuota(parse_rate(text), account, ledger, ttl=TTL, label="relay r:587")


def send(quota: RollingQuota | FixedQuota | WarmupQuota, now: float, n: int = 1) -> None:
    """n messages accepted at `now`: a hold each, kept."""
    for _ in range(n):
        hold = quota.hold(now)
        assert hold is not None, f"no slot at {now}"
        quota.keep(hold, now)


# --------------------------------------------------------------------------- rolling


def test_rolling_window_buckets_are_a_1440th_of_it(ledger: Journal) -> None:
    assert rolling(ledger, "10/24h").width() == 60.0
    assert rolling(ledger, "10/1h").width() == 2.5
    assert rolling(ledger, "10/1min").width() == 1.0  # at least a second


def test_rolling_quota_allows_n_in_any_window(ledger: Journal) -> None:
    quota = rolling(ledger, "5/1h")
    t0 = DAY_START + 10 * HOUR  # a bucket edge (2.5 s buckets)
    send(quota, t0, 3)
    send(quota, t0 + 600, 2)
    assert quota.hold(t0 + 601) is None
    # the first three leave when their bucket's end leaves the window: t0 + 2.5 + 1 h
    assert quota.wait(t0 + 601) == pytest.approx(t0 + 2.5 + HOUR - (t0 + 601))
    assert quota.hold(t0 + HOUR + 2.4) is None  # the bucket is still partly inside
    first = quota.hold(t0 + HOUR + 2.5)
    assert first is not None
    quota.keep(first, t0 + HOUR + 2.5)
    send(quota, t0 + HOUR + 2.5, 2)
    assert quota.hold(t0 + HOUR + 3) is None  # the two at t0 + 600 still count


def test_rolling_bucket_edge_mid_bucket(ledger: Journal) -> None:
    """An acceptance in the middle of a bucket counts until that bucket's end leaves."""
    quota = rolling(ledger, "1/24h")
    t = DAY_START + 30.0  # in the bucket [00:00, 00:01)
    send(quota, t)
    assert quota.hold(t + 86400.0 + 29.9) is None
    assert quota.wait(t + 86400.0 + 29.0) == pytest.approx(1.0)
    assert quota.hold(DAY_START + 86400.0 + 60.0) is not None


def test_rolling_wait_counts_as_many_buckets_as_must_leave(ledger: Journal) -> None:
    quota = rolling(ledger, "4/24h")
    send(quota, DAY_START, 2)
    send(quota, DAY_START + 3600, 2)
    assert quota.hold(DAY_START + 7200) is None
    # one slot is needed: the oldest bucket (2 in it) frees it
    assert quota.wait(DAY_START + 7200) == pytest.approx(86400 + 60 - 7200)
    note = quota.spent(DAY_START + 7200)
    assert note == (
        "relay r:587: 4/24h rolling quota used (4 accepted in the last 24 h); "
        f"the next slot frees at {utc_second(DAY_START + 86460)}"
    )
    assert "2026-11-04 00:01:00 UTC" in note


def test_a_hold_counts_until_kept_released_or_lapsed(ledger: Journal) -> None:
    quota = rolling(ledger, "2/1h")
    now = DAY_START
    first = quota.hold(now)
    second = quota.hold(now)
    assert first is not None and second is not None
    assert quota.hold(now) is None  # two held: full
    # held by another process (or a killed one): the first lapses after its ttl at most
    assert quota.wait(now) == pytest.approx(TTL)
    assert "; 2 held slots of other runs lapse from" in quota.spent(now)
    quota.holding = 2  # this process's transactions under way may give theirs back
    assert quota.wait(now) == HOLD_POLL
    quota.holding = 0
    quota.release(first)
    third = quota.hold(now)
    assert third is not None
    # a hold a killed process left lapses after its ttl: the slot is free again
    assert quota.hold(now + TTL - 1) is None
    assert quota.hold(now + TTL + 0.001) is not None


def test_give_back_takes_an_acceptance_out(ledger: Journal) -> None:
    quota = rolling(ledger, "1/1h")
    hold = quota.hold(DAY_START)
    assert hold is not None
    start = quota.keep(hold, DAY_START + 1)
    assert quota.hold(DAY_START + 2) is None
    quota.give_back(start)
    assert quota.hold(DAY_START + 2) is not None


def test_accounts_are_apart(ledger: Journal) -> None:
    send(rolling(ledger, "1/1h", "smtp://a@r:587"), DAY_START)
    assert rolling(ledger, "1/1h", "smtp://a@r:587").hold(DAY_START) is None
    assert rolling(ledger, "1/1h", "smtp://b@r:587").hold(DAY_START) is not None


def test_prune_forgets_buckets_no_window_needs(ledger: Journal) -> None:
    quota = rolling(ledger, "5/1h")
    send(quota, DAY_START, 2)
    ledger.ledger_prune(DAY_START + HOUR)  # still counted (its end has not left)
    assert quota.usage(DAY_START + HOUR).used == 2
    ledger.ledger_prune(DAY_START + HOUR + 2.5)
    assert ledger.ledger_usage(quota.account, 0.0, DAY_START + HOUR).buckets == []


# --------------------------------------------------------------------------- fixed


def test_hourly_quota_is_the_utc_hour(ledger: Journal) -> None:
    quota = fixed(ledger, "3/h")
    send(quota, DAY_START + 10 * HOUR + 1200, 3)
    assert quota.hold(DAY_START + 10 * HOUR + 1200) is None
    assert quota.wait(DAY_START + 10 * HOUR + 1200) == pytest.approx(2400.0)
    assert quota.spent(DAY_START + 10 * HOUR + 1200) == (
        "relay r:587: 3/h quota used (3 accepted this UTC hour); "
        "the next slot frees at 2026-11-03 11:00:00 UTC"
    )
    assert quota.hold(DAY_START + 11 * HOUR) is not None  # the next hour starts afresh


def test_daily_quota_fractional_allows_the_ceiling(ledger: Journal) -> None:
    quota = fixed(ledger, "2.5/day")
    send(quota, DAY_START + 86400 - 5, 3)
    assert quota.hold(DAY_START + 86400 - 5) is None
    assert quota.wait(DAY_START + 86400 - 5) == pytest.approx(5.0)
    assert quota.hold(DAY_START + 86400) is not None


def test_quota_for_relay() -> None:
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

    ledger = object()
    assert quota_for(relay(None), ledger, ttl=1) is None  # type: ignore[arg-type]
    assert quota_for(relay("50/s"), ledger, ttl=1) is None  # type: ignore[arg-type]
    hourly = quota_for(relay("5/h"), ledger, ttl=1)  # type: ignore[arg-type]
    assert isinstance(hourly, FixedQuota)
    assert hourly.account == "smtp://u@relay.example:587"
    assert isinstance(quota_for(relay("5/1h"), ledger, ttl=1), RollingQuota)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- warm-up


PLAN = Warmup(start=500, growth=1.5, until=50000)


def test_warmup_caps() -> None:
    assert [PLAN.cap(d) for d in (1, 2, 3, 4)] == [500, 750, 1125, 1687]
    assert PLAN.cap(12) == 43248  # floor(500 * 1.5**11 = 43248.5)
    assert PLAN.cap(13) == 50000  # 64872 capped at until
    assert PLAN.full_day() == 13
    assert PLAN.cap(100_000) == 50000


@pytest.mark.parametrize(
    ("start", "growth", "until"),
    [(1, 1.0000001, 99999999999), (500, 1.5, 50000), (1, 1.0001, 3), (7, 2, 7), (3, 1.01, 1e9)],
)
def test_warmup_full_day_is_exact(start: float, growth: float, until: float) -> None:
    plan = Warmup(start=start, growth=growth, until=until)
    day = plan.full_day()
    full = math.floor(until)
    assert plan.cap(day) >= full
    assert day == 1 or plan.cap(day - 1) < full


def test_warmup_full_day_beyond_ten_thousand_days() -> None:
    # the tester's tiny growth: full in about 253 million days, not "on day 10000"
    plan = Warmup(start=1, growth=1.0000001, until=99999999999)
    assert plan.full_day() > 250_000_000
    assert plan.cap(10_000) == 1
    assert Warmup(start=3, growth=2, until=100).cap(2) == 6
    assert Warmup(start=1, growth=1.1, until=5).cap(2) == 1  # floor(1.1)


def test_warmup_day_counts_calendar_days(ledger: Journal) -> None:
    quota = WarmupQuota(Warmup(start=3, growth=2, until=20), "acme.example", ledger, ttl=TTL)
    assert quota.account == "warmup:acme.example"
    now = DAY_START + 23 * HOUR  # 23:00 UTC on the first day
    assert quota.day(now) == 1
    send(quota, now, 3)
    assert quota.hold(now) is None
    assert quota.wait(now) == pytest.approx(HOUR)  # until midnight UTC
    assert quota.spent(now) == (
        "warm-up day 1: today's cap of 3 accepted recipients is reached; "
        "tomorrow's cap is 6 from 2026-11-04 00:00 UTC"
    )
    tomorrow = WarmupQuota(Warmup(start=3, growth=2, until=20), "acme.example", ledger, ttl=TTL)
    assert tomorrow.day(DAY_START + 86400) == 2  # a new UTC day, just after midnight
    send(tomorrow, DAY_START + 86400, 6)
    assert tomorrow.hold(DAY_START + 86400) is None
    # days without sending count too: day 4 is two days later, cap min(20, 3 * 2**3)
    later = WarmupQuota(Warmup(start=3, growth=2, until=20), "acme.example", ledger, ttl=TTL)
    assert later.day(DAY_START + 3 * 86400 + 5) == 4
    assert later.limit(DAY_START + 3 * 86400 + 5) == 20
    usage = later.usage(DAY_START + 3 * 86400 + 5)
    assert (usage.warmup_day, usage.limit, usage.used, usage.tomorrow, usage.full) == (
        4,
        20,
        0,
        20,
        20,
    )
    assert usage.full_day == 4


def test_warmup_day_one_is_the_first_accepted_day(ledger: Journal) -> None:
    """A hold given back does not start the warm-up: only an acceptance does."""
    quota = WarmupQuota(Warmup(start=3, growth=2, until=20), "acme.example", ledger, ttl=TTL)
    hold = quota.hold(DAY_START)
    assert hold is not None
    quota.release(hold)
    fresh = WarmupQuota(Warmup(start=3, growth=2, until=20), "acme.example", ledger, ttl=TTL)
    assert fresh.day(DAY_START + 86400) == 1


# --------------------------------------------------------------------------- slots


def test_slot_keeps_sent_and_gives_back_the_rest(ledger: Journal) -> None:
    clock = FakeClock(DAY_START)
    relay = rolling(ledger, "3/1h")
    warm = WarmupQuota(Warmup(start=10, growth=2, until=20), "acme.example", ledger, ttl=TTL)
    quotas = Quotas(ledger, {"r:587": relay}, warm, wall=clock)

    def attempt(*, sending: bool, accepted: bool | None) -> None:
        slot = quotas.take("r:587")
        assert isinstance(slot, Slot)
        if sending:
            slot.sending()
        slot.accepted = accepted
        slot.close()

    attempt(sending=True, accepted=True)  # sent
    attempt(sending=True, accepted=None)  # unknown: kept
    attempt(sending=True, accepted=False)  # bounced after DATA: given back
    attempt(sending=False, accepted=None)  # refused at RCPT, handed back, stopped
    assert relay.usage(clock.now).used == 2
    assert warm.usage(clock.now).used == 2
    assert relay.usage(clock.now).held == 0
    attempt(sending=True, accepted=True)
    spent = quotas.take("r:587")
    assert isinstance(spent, Spent)
    assert spent.quota is relay
    # the warm-up's slot taken before the relay refused was given back
    assert warm.usage(clock.now).used == 3 and warm.usage(clock.now).held == 0


def test_acquire_sleeps_for_short_waits_only(ledger: Journal) -> None:
    clock = FakeClock(DAY_START + HOUR - 10)
    naps: list[float] = []

    async def sleep(seconds: float) -> None:
        naps.append(seconds)
        clock.now += seconds

    quotas = Quotas(ledger, {"r": fixed(ledger, "1/h")}, wall=clock, sleep=sleep)
    first = asyncio.run(quotas.acquire("r", 60.0))
    assert isinstance(first, Slot)
    first.sending()
    first.close()
    second = asyncio.run(quotas.acquire("r", 60.0))  # the hour ends in 10 s: waited for
    assert isinstance(second, Slot)
    assert naps == [pytest.approx(10.0)]
    second.sending()
    second.close()
    third = asyncio.run(quotas.acquire("r", 60.0))  # a whole hour: answered at once
    assert isinstance(third, Spent)
    assert third.wait == pytest.approx(HOUR)
    assert naps == [pytest.approx(10.0)]


def test_a_quota_is_not_spent_while_a_transaction_after_data_may_give_its_slot_back(
    ledger: Journal,
) -> None:
    """The race seen end to end: the fifth of 5/1h is counted from DATA on (`sending`) and
    then refused (554); a take in between saw 5 accepted and stopped the relay for an
    hour. While a kept slot's transaction is under way, the quota waits for it instead."""
    clock = FakeClock(DAY_START + 10 * HOUR)
    naps: list[float] = []
    relay = rolling(ledger, "5/1h")
    in_data: list[Slot] = []

    async def sleep(seconds: float) -> None:
        naps.append(seconds)
        clock.now += seconds
        for slot in in_data:  # the relay answers the content: refused
            slot.accepted = False
            slot.close()
        in_data.clear()

    quotas = Quotas(ledger, {"r": relay}, wall=clock, sleep=sleep)
    for _ in range(4):
        slot = quotas.take("r")
        assert isinstance(slot, Slot)
        slot.sending()
        slot.accepted = True
        slot.close()
    fifth = quotas.take("r")
    assert isinstance(fifth, Slot)
    fifth.sending()  # counted: the content goes
    in_data.append(fifth)
    found = quotas.take("r")
    assert isinstance(found, Spent) and found.wait <= HOLD_POLL  # not an hour
    sixth = asyncio.run(quotas.acquire("r", 60.0))
    assert isinstance(sixth, Slot)  # the refused one's slot came back
    assert naps == [pytest.approx(HOLD_POLL)]
    sixth.sending()
    sixth.accepted = True
    sixth.close()
    spent = asyncio.run(quotas.acquire("r", 60.0))
    assert isinstance(spent, Spent) and spent.wait > 60.0
    assert "(5 accepted in the last 1 h)" in relay.spent(clock.now)


@pytest.mark.parametrize("text", ["2/1min", "2/90s", "2/5min"])
def test_a_short_rolling_window_paces_rather_than_stops(ledger: Journal, text: str) -> None:
    """Its next slot frees just over a window away (the bucket's end leaves it): a wait
    the run sleeps through, not a spent quota (every run used to stop at once)."""
    clock = FakeClock(DAY_START + 10 * HOUR)
    naps: list[float] = []

    async def sleep(seconds: float) -> None:
        naps.append(seconds)
        clock.now += seconds

    quota = rolling(ledger, text)
    quotas = Quotas(ledger, {"r": quota}, wall=clock, sleep=sleep)
    send(quota, clock.now, 2)
    third = asyncio.run(quotas.acquire("r", 60.0))
    assert isinstance(third, Slot)
    assert len(naps) == 1 and quota.rate.per < naps[0] <= quota.rate.per + quota.width()


def test_a_long_rolling_window_still_stops(ledger: Journal) -> None:
    clock = FakeClock(DAY_START + 10 * HOUR)
    quota = rolling(ledger, "2/10min")
    quotas = Quotas(ledger, {"r": quota}, wall=clock)
    send(quota, clock.now, 2)
    spent = asyncio.run(quotas.acquire("r", 60.0))
    assert isinstance(spent, Spent) and spent.wait > 600.0


def test_a_wait_for_a_slot_ends_when_the_run_stops(ledger: Journal) -> None:
    clock = FakeClock(DAY_START + 10 * HOUR)
    stopping = [False]

    async def sleep(seconds: float) -> None:
        stopping[0] = True  # a stop request ends the nap at once
        clock.now += 1.0

    quota = rolling(ledger, "2/1min")
    quotas = Quotas(ledger, {"r": quota}, wall=clock, sleep=sleep, stopped=lambda: stopping[0])
    send(quota, clock.now, 2)
    assert isinstance(asyncio.run(quotas.acquire("r", 60.0)), Spent)


def test_the_next_slot_is_told_to_the_second(ledger: Journal) -> None:
    now = DAY_START + 10 * HOUR
    quota = rolling(ledger, "2/1h")
    send(quota, now + 0.5, 2)
    # frees when its 2.5 s bucket leaves the window: 1 h 2.5 s later, rounded up
    assert quota.spent(now + 1).endswith("the next slot frees at 2026-11-03 11:00:03 UTC")
    short = rolling(ledger, "2/30min", account="smtp://other:25")
    send(short, now + 0.5, 2)
    assert short.spent(now + 1).endswith("the next slot frees at 2026-11-03 10:30:02 UTC")


def test_warmup_spent_words_are_singular_for_one(ledger: Journal) -> None:
    warm = WarmupQuota(Warmup(start=1, growth=2, until=8), "acme.example", ledger, ttl=TTL)
    send(warm, DAY_START + 60)
    assert "today's cap of 1 accepted recipient is reached" in warm.spent(DAY_START + 61)


def test_a_run_forgets_a_killed_runs_holds(ledger: Journal) -> None:
    """A SQLite run holds the journal's lock: the holds it finds are a killed run's, and
    it does not wait minutes for them to lapse (resume used to wait silently)."""
    clock = FakeClock(DAY_START + 10 * HOUR)
    quota = rolling(ledger, "2/1h")
    assert quota.hold(clock.now) is not None and quota.hold(clock.now) is not None
    quotas = Quotas(ledger, {"r": quota}, wall=clock)
    assert isinstance(quotas.take("r"), Spent)
    quotas.prune()  # as a run starts
    assert isinstance(quotas.take("r"), Slot)


def test_a_wait_for_held_slots_is_logged(ledger: Journal, caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock(DAY_START + 10 * HOUR)

    async def sleep(seconds: float) -> None:
        clock.now += seconds

    quota = rolling(ledger, "1/1min")
    assert quota.hold(clock.now) is not None  # another run's
    quotas = Quotas(ledger, {"r": quota}, wall=clock, sleep=sleep)
    with caplog.at_level("INFO"):
        taken = asyncio.run(quotas.acquire("r", TTL + 1))
    assert isinstance(taken, Slot)
    assert "relay r:587: waiting for 1 held slot to lapse, until" in caplog.text


def test_check_reads_without_holding(ledger: Journal) -> None:
    """`check` before dialling: a spent quota is told, one with room or a short wait is
    not, and nothing is held either way."""
    clock = FakeClock(DAY_START + 10 * HOUR)
    quota = rolling(ledger, "2/24h")
    quotas = Quotas(ledger, {"r": quota}, wall=clock)
    assert quotas.check("r", 60.0) is None
    assert quotas.check("other", 60.0) is None
    send(quota, clock.now, 2)
    spent = quotas.check("r", 60.0)
    assert spent is not None and spent.quota is quota and spent.wait > 86000
    assert quota.usage(clock.now).held == 0
    short = rolling(ledger, "2/1min", account="smtp://short:25")
    send(short, clock.now, 2)
    assert Quotas(ledger, {"s": short}, wall=clock).check("s", 60.0) is None  # paces


def test_a_slot_time_reads_to_the_second_near_or_far() -> None:
    now = DAY_START + 10 * HOUR
    assert utc_second(now + 600) == "2026-11-03 10:10:00 UTC"
    assert utc_second(now + 600.2) == "2026-11-03 10:10:01 UTC"  # rounded up
    assert utc_second(now + 2 * HOUR + 0.5) == "2026-11-03 12:00:01 UTC"


def test_the_warm_up_counts_by_the_from_domain_as_the_envelope_writes_it() -> None:
    # one sender, however the job writes its domain: the ledger key must not split
    assert sender_domain("Acme <news@Bücher.Example>") == "xn--bcher-kva.example"
    assert sender_domain("news@xn--bcher-kva.example") == "xn--bcher-kva.example"
    assert sender_domain("no domain") is None
