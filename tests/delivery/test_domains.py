"""Tests for txsend.delivery.domains on an injected clock: matching, the pace bucket, the
connection cap, throttling and recovery, the backlog cap and skipping ahead."""

from __future__ import annotations

import pytest

from txsend.delivery.domains import (
    MIN_BACKLOG,
    MIN_INTERVAL,
    QUIET,
    RESERVED,
    STARTED,
    DomainGate,
    DomainMatcher,
    DomainState,
    PaceBucket,
)
from txsend.job.domains import DomainRule
from txsend.reporting.stats import DomainStats, RunStats, busiest_domains
from txsend.units import parse_rate


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def rule(name: str, rate: str | None = None, connections: int | None = None, **kw: object):  # type: ignore[no-untyped-def]
    exact = kw.pop("exact", () if "." not in name else (name,))
    return DomainRule(
        name,
        exact=exact,  # type: ignore[arg-type]
        rate=parse_rate(rate) if rate else None,
        connections=connections,
        **kw,  # type: ignore[arg-type]
    )


def gate(*rules: DomainRule) -> tuple[DomainGate, Clock]:
    clock = Clock()
    return DomainGate(rules, RunStats(), clock), clock


# --- matching ----------------------------------------------------------------------------


def test_a_domain_key_wins_over_a_group_and_suffixes_match_subdomains() -> None:
    matcher = DomainMatcher(
        [
            rule("google", "40/s", exact=("gmail.com", "googlemail.com")),
            rule("gmail.com", "20/s"),
            rule("corp", "1/s", exact=(), suffixes=(".corp.example", ".a.corp.example")),
        ]
    )
    assert matcher.by_domain("gmail.com").name == "gmail.com"  # type: ignore[union-attr]
    assert matcher.by_domain("googlemail.com").name == "google"  # type: ignore[union-attr]
    assert matcher.by_domain("x.a.corp.example").name == "corp"  # type: ignore[union-attr]
    assert matcher.by_domain("corp.example") is None  # ".corp.example" is its subdomains
    assert matcher.by_domain("other.example") is None


def test_mx_suffixes_match_the_longest_first() -> None:
    matcher = DomainMatcher(
        [
            rule("google", "40/s", exact=(), mx=(".google.com",)),
            rule("aspmx", "10/s", exact=(), mx=(".aspmx.l.google.com",)),
        ]
    )
    assert matcher.uses_mx
    assert matcher.by_mx(["alt1.aspmx.l.google.com."]).name == "aspmx"  # type: ignore[union-attr]
    assert matcher.by_mx(["smtp.google.com"]).name == "google"  # type: ignore[union-attr]
    assert matcher.by_mx(["mx.example.net"]) is None
    assert matcher.by_mx([]) is None


def test_an_mx_suffix_matches_that_host_or_below_it_at_a_label_boundary() -> None:
    # `mx: [google.com]` and `mx: [.google.com]` both load as ".google.com"
    matcher = DomainMatcher([rule("google", "40/s", exact=(), mx=(".google.com",))])
    for host in ("aspmx.l.google.com", "google.com", "GOOGLE.COM.", "alt1.google.com"):
        assert matcher.by_mx([host]) is not None, host
    for host in ("notgoogle.com", "google.com.evil.example", "google.co"):
        assert matcher.by_mx([host]) is None, host


def test_recipients_are_matched_case_and_idna_normalised() -> None:
    domains, _clock = gate(rule("xn--bcher-kva.example", "2/s"))
    assert domains.domain_of("a@BÜCHER.example").name == "xn--bcher-kva.example"
    assert domains.domain_of("b@xn--bcher-kva.example").name == "xn--bcher-kva.example"
    other = domains.domain_of("c@Other.Example")
    assert other.name == "other.example"
    assert not other.limited and not other.configured
    assert domains.domain_of("d@other.example") is other


def test_mx_answers_place_a_domain_in_its_group() -> None:
    domains, _clock = gate(rule("google", "40/s", exact=(), mx=(".google.com",)))
    assert domains.needs_mx("a@custom.example") == "custom.example"
    domains.set_mx("custom.example", ["aspmx.l.google.com."])
    assert domains.domain_of("a@custom.example").name == "google"
    assert domains.needs_mx("b@custom.example") is None  # once per domain
    assert domains.needs_mx("a@failed.example") == "failed.example"
    domains.set_mx("failed.example", [])  # a lookup that failed
    assert domains.domain_of("a@failed.example").name == "failed.example"


# --- the pace bucket ---------------------------------------------------------------------


def test_a_per_second_bucket_bursts_a_tenth_then_keeps_the_pace() -> None:
    bucket = PaceBucket.for_rate(100.0, 1.0, now=0.0)
    assert bucket.capacity == 10
    assert sum(bucket.take(0.0) for _ in range(20)) == 10
    assert not bucket.take(0.0)
    assert bucket.wait(0.0) == pytest.approx(0.01)
    assert bucket.take(0.01)
    taken = sum(bucket.take(t / 1000) for t in range(11, 1011))  # 1 s, tried every ms
    assert taken == pytest.approx(100, abs=1)


def test_a_per_minute_bucket_goes_evenly() -> None:
    bucket = PaceBucket.for_rate(1.0, 60.0, now=0.0)  # 60/min
    assert bucket.capacity == 1
    assert bucket.take(0.0)
    assert not bucket.take(0.5)
    assert bucket.wait(0.5) == pytest.approx(0.5)
    assert bucket.take(1.0)


# --- the gate: pace, connections, held messages ------------------------------------------


def test_reservations_count_against_the_pace_until_started() -> None:
    domains, clock = gate(rule("a.example", "4/s"))
    a = domains.domain_of("x@a.example")
    assert domains.reserve(a, clock.now)  # the one token of a 4/s bucket
    assert not domains.reserve(a, clock.now)  # reserved: not twice
    domains.park(a, "m2")
    assert domains.ready(clock.now) == []
    assert domains.next_wake(clock.now) == pytest.approx(0.25)
    assert domains.start(a, RESERVED, clock.now)
    clock.now += 0.25
    assert domains.ready(clock.now) == [(a, "m2")]
    assert not domains.parked


def test_a_held_message_keeps_its_place_before_new_ones() -> None:
    domains, clock = gate(rule("a.example", "1/s"))
    a = domains.domain_of("x@a.example")
    assert domains.reserve(a, clock.now)
    domains.park(a, "m2")
    clock.now += 5
    assert not domains.reserve(a, clock.now)  # m2 waits: a newcomer does not jump it
    domains.let_go(a, RESERVED)
    assert [item for _s, item in domains.ready(clock.now)] == ["m2"]


def test_the_connection_cap_holds_across_everything_in_flight() -> None:
    domains, clock = gate(rule("a.example", connections=2))
    a = domains.domain_of("x@a.example")
    assert domains.reserve(a, clock.now) and domains.reserve(a, clock.now)
    assert not domains.reserve(a, clock.now)
    domains.park(a, "m3")
    assert domains.start(a, RESERVED, clock.now) and domains.start(a, RESERVED, clock.now)
    assert a.in_flight == 2 and a.stats.in_flight == 2
    assert domains.ready(clock.now) == []
    assert domains.next_wake(clock.now) is None  # waits for a transaction to end
    assert domains.let_go(a, STARTED)  # True: a held message may go now
    assert domains.ready(clock.now) == [(a, "m3")]
    assert not domains.start(a, 0, clock.now)  # unreserved: the cap is full (1 + 1 reserved)


def test_start_refuses_without_a_token_and_never_waits() -> None:
    domains, clock = gate(rule("a.example", "2/s"))
    a = domains.domain_of("x@a.example")
    assert domains.start(a, 0, clock.now)
    assert not domains.start(a, 0, clock.now)
    clock.now += 0.5
    assert domains.start(a, 0, clock.now)


def test_unlimited_domains_are_counted_but_never_held() -> None:
    domains, clock = gate()
    b = domains.domain_of("x@b.example")
    assert not b.limited and b.has_room()
    for _ in range(1000):
        assert domains.start(b, 0, clock.now)
    assert b.stats.in_flight == 1000


def test_drain_gives_back_every_held_message() -> None:
    domains, clock = gate(rule("a.example", "1/min"))
    a = domains.domain_of("x@a.example")
    assert domains.reserve(a, clock.now)
    domains.park(a, "m2")
    domains.park(a, "m3")
    assert domains.drain() == ["m2", "m3"]
    assert not domains.parked and a.stats.waiting == 0


# --- throttling --------------------------------------------------------------------------


def test_a_throttle_halves_a_configured_pace_and_quiet_restores_it_step_by_step() -> None:
    stats = DomainStats()
    a = DomainState("a.example", rule("a.example", "20/s"), stats, now=0.0)
    assert a.throttled(now=1.0)
    assert a.pace == 10 and stats.slowed and stats.throttles == 1
    assert not a.throttled(now=1.5)  # a burst of replies halves it once a second
    assert a.pace == 10 and stats.throttles == 2
    assert a.throttled(now=2.5)
    assert a.pace == 5
    a.recover(now=2.5 + QUIET - 0.1)
    assert a.pace == 5  # not quiet long enough
    a.recover(now=2.5 + QUIET)
    assert a.pace == 7.5
    a.recover(now=2.5 + 2 * QUIET)
    assert a.pace == pytest.approx(11.25)
    a.recover(now=2.5 + 3 * QUIET)
    assert a.pace == pytest.approx(16.875)
    a.recover(now=2.5 + 4 * QUIET)
    assert a.pace == 20 and not a.slowed and not stats.slowed
    assert a.bucket is not None and a.bucket.capacity == 2  # its own burst again


def test_a_throttled_pace_never_falls_below_the_minimum() -> None:
    a = DomainState("a.example", rule("a.example", "1/s"), DomainStats(), now=0.0)
    for step in range(10):
        a.throttled(now=float(step * 2))
    assert a.pace == pytest.approx(1 / MIN_INTERVAL)


def test_an_unlimited_domain_gets_a_pace_when_throttled_and_loses_it_later() -> None:
    a = DomainState("b.example", None, DomainStats(), now=0.0)
    for i in range(40):  # 40 starts in its first second
        a.count_start(i / 40)
    a.count_start(1.0)
    assert a.throttled(now=1.0)
    assert a.limited and a.pace == 20  # half of the 40/s it went at
    now = 1.0
    while a.slowed:
        now += QUIET
        a.recover(now)
        assert now < 1.0 + 10 * QUIET
    assert a.bucket is None and not a.limited


def test_gate_reserve_applies_recovery() -> None:
    domains, clock = gate(rule("a.example", "10/s"))
    a = domains.domain_of("x@a.example")
    a.throttled(clock.now)
    assert a.pace == 5
    clock.now += 4 * QUIET
    domains.reserve(a, clock.now)
    assert a.pace == 7.5


def test_after_quiet_spells_held_messages_go_at_the_configured_pace_again() -> None:
    # the dispatcher's and workers' calls, every millisecond of a minute on the gate's
    # clock: a domain of 20/s is throttled once, then hears nothing more
    domains, clock = gate(rule("a.example", "20/s"))
    a = domains.domain_of("x@a.example")
    for n in range(2000):
        domains.park(a, f"m{n}")
    start = clock.now
    starts: list[float] = []
    for step in range(60_000):
        clock.now = start + step / 1000
        if step == 1000:
            domains.throttled(a, "r1", clock.now)  # at 1 s: the pace halves to 10/s
        for _state, _item in domains.ready(clock.now):
            assert domains.start(a, RESERVED, clock.now)
            starts.append(clock.now - start)
            domains.let_go(a, STARTED)

    def per_second(begin: float, end: float) -> float:
        return sum(begin <= t < end for t in starts) / (end - begin)

    assert per_second(0.0, 1.0) == pytest.approx(20, abs=2)
    assert per_second(1.5, 1.0 + QUIET) == pytest.approx(10, abs=0.5)  # halved, held there
    assert per_second(1.0 + QUIET + 0.5, 1.0 + 2 * QUIET) == pytest.approx(15, abs=0.5)
    # two quiet spells later (10 -> 15 -> 20): its own pace, and no more
    assert per_second(1.0 + 2 * QUIET + 0.5, 60.0) == pytest.approx(20, abs=0.5)
    assert max(sum(t <= u < t + 1.0 for u in starts) for t in starts) <= 20 + 2
    assert not a.slowed and a.pace == 20 and a.stats.pace == 20 and not a.stats.slowed


# --- the backlog cap, skipping ahead -----------------------------------------------------


def test_a_full_backlog_skips_rows_and_takes_them_back_in_order() -> None:
    domains, _clock = gate(rule("a.example", "1/s"))
    a = domains.domain_of("x@a.example")
    assert a.backlog_cap == MIN_BACKLOG
    a.backlog = MIN_BACKLOG
    assert domains.skip(a, "k1") and domains.skip(a, "k2")
    assert a.stats.skipped == 2
    a.backlog = MIN_BACKLOG - 1  # one left the pipeline
    assert domains.skip(a, "k3")  # room, but k3 queues behind k2 (order kept)
    assert [key for _s, key in domains.refill(100)] == ["k1"]
    a.backlog = 0
    assert [key for _s, key in domains.refill(100)] == ["k2", "k3"]
    assert not domains.skipping and a.stats.skipped == 0


def test_the_backlog_cap_is_a_few_seconds_of_pace_and_unlimited_domains_have_none() -> None:
    domains, _clock = gate(rule("fast.example", "500/s"), rule("conn.example", connections=8))
    assert domains.domain_of("a@fast.example").backlog_cap == 2000
    assert domains.domain_of("a@conn.example").backlog_cap == 32
    free = domains.domain_of("a@free.example")
    free.backlog = 10**6
    assert free.has_room() and not domains.skip(free, "k")


def test_refill_respects_its_limit() -> None:
    domains, _clock = gate(rule("a.example", "1/s"))
    a = domains.domain_of("x@a.example")
    a.backlog = MIN_BACKLOG
    for n in range(10):
        domains.skip(a, f"k{n}")
    a.backlog = 0
    assert len(domains.refill(3)) == 3
    assert domains.skipped_keys() == {f"k{n}" for n in range(3, 10)}


# --- report figures ----------------------------------------------------------------------


def test_reports_show_configured_domains_and_the_busiest_others() -> None:
    domains: dict[str, DomainStats] = {}
    for n in range(30):
        domains[f"d{n}.example"] = DomainStats(attempts=n)
    domains["group"] = DomainStats(configured=True, attempts=0)
    shown = busiest_domains(domains, others=5)
    names = [name for name, _d in shown]
    assert names == [
        "group",
        "d29.example",
        "d28.example",
        "d27.example",
        "d26.example",
        "d25.example",
        "other",
    ]
    assert shown[-1][1].attempts == sum(range(25))
