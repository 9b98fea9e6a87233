"""The outcome policy on plain values: attempts counting, hand-backs, the journal record a
transaction settles into, retry backoff and give-up, the error-rate abort, the template
judgement and the supervisor's give-up and waiting reasons. No sockets, no sleeps: `now`
is given, and the jitter comes from an injected random source."""

from __future__ import annotations

import random
import time
from typing import Any

import pytest

from txsend.delivery.classify import Verdict, classify
from txsend.delivery.outcomes import (
    HARD_BOUNCE,
    JITTER,
    MAX_HAND_BACKS,
    TEMPLATE_FAILURES,
    ErrorRate,
    GiveUp,
    Outlook,
    Tally,
    TemplateErrors,
    Transaction,
    abandoned,
    backoff,
    blames_relay,
    error_class,
    expired,
    give_up_reason,
    may_hand_back,
    settle,
    waiting_reason,
)
from txsend.delivery.relays import Circuit, RelayPool, RelayState
from txsend.delivery.smtp import Phase, SendResult
from txsend.errors import TemplateRowError
from txsend.journal.records import Claimed, Record
from txsend.models import AbortPolicy, RelayConfig, RetryPolicy, State, TlsMode
from txsend.reporting.stats import ErrorClass

NOW = 1_800_000_000.0  # wall clock
POLICY = RetryPolicy(attempts=5, backoff=30.0, max_backoff=1800.0, max_age=86400.0)


class Fixed(random.Random):
    """A random source whose jitter is always `factor`."""

    def __init__(self, factor: float = 1.0) -> None:
        super().__init__(0)
        self.factor = factor
        self.draws = 0

    def uniform(self, a: float, b: float) -> float:
        self.draws += 1
        return self.factor


def claimed(attempts: int = 0, first_attempt_at: float | None = None) -> Claimed:
    return Claimed(
        key="k1",
        row=1,
        address="a@example.com",
        data={},
        message_id="<m@example.com>",
        attempts=attempts,
        state=State.PENDING if attempts == 0 else State.DEFERRED,
        first_attempt_at=first_attempt_at,
    )


def transaction(phase: Phase, code: int | None, text: str = "", relay: str = "a:25") -> Transaction:
    """A transaction's outcome with the verdict the real classifier gives it."""
    return Transaction(SendResult(phase, code, text), classify(phase, code, text), relay)


def relay(name: str = "a", **kwargs: Any) -> RelayState:
    """A relay named name:25 in the state kwargs set."""
    config = RelayConfig(url=f"smtp://{name}:25?tls=none", host=name, port=25, tls=TlsMode.NONE)
    state = RelayState(config, None)
    for attribute, value in kwargs.items():
        setattr(state, attribute, value)
    return state


def outlook(relays: list[RelayState], **kwargs: Any) -> Outlook:
    """What the supervisor sees at monotonic 1000.0, wall clock NOW."""
    return Outlook(relays, now=1000.0, wall=NOW, **kwargs)


def clock(timestamp: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(timestamp))


# --- attempts counting ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("phase", "transactions", "uncounted"),
    [
        (Phase.CONNECT, 0, 0),  # the connection was gone before MAIL: nothing reached a relay
        (Phase.MAIL, 1, 1),
        (Phase.RCPT, 1, 1),
        (Phase.DATA, 1, 1),  # before the 354: the journal has not counted it
        (Phase.DATA_END, 1, 0),  # after `sending`: the journal counted it
        (Phase.DONE, 1, 0),
    ],
)
def test_every_transaction_that_reached_a_relay_counts(
    phase: Phase, transactions: int, uncounted: int
) -> None:
    tally = Tally(claimed(attempts=2))
    tally.count(phase)
    assert (tally.transactions, tally.uncounted) == (transactions, uncounted)
    assert tally.attempts == 2 + transactions


def test_a_retry_is_a_row_tried_before() -> None:
    first = Tally(claimed())
    first.count(Phase.RCPT)
    assert not first.retried
    first.count(Phase.DONE)
    assert first.retried
    resumed = Tally(claimed(attempts=1))
    resumed.count(Phase.DONE)
    assert resumed.retried


def test_a_hand_back_remembers_the_relay_unless_nothing_reached_it() -> None:
    tally = Tally(claimed())
    idle = transaction(Phase.CONNECT, None, "connection lost", relay="a:25")
    tally.hand_back(idle)
    assert tally.failed_relays == set() and tally.relay_faults == 1 and tally.last == idle
    refused = transaction(Phase.MAIL, 451, "4.3.0 try later", relay="b:25")
    tally.hand_back(refused)
    assert tally.failed_relays == {"b:25"} and tally.relay_faults == 2 and tally.last == refused


# --- relay health -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("phase", "code", "text", "blamed"),
    [
        (Phase.DONE, 250, "ok", False),
        (Phase.RCPT, 550, "5.1.1 no such user", False),  # the recipient's fault
        (Phase.RCPT, 450, "4.2.0 mailbox busy", False),
        (Phase.RCPT, 421, "4.3.2 closing", True),
        (Phase.MAIL, None, "connection lost", True),
        (Phase.DATA_END, None, "timed out", True),
        (Phase.RCPT, 451, "4.7.1 throttled", False),  # slows the recipient's domain only
        (Phase.DATA_END, 451, "4.7.1 throttled", False),
        (Phase.MAIL, 451, "4.7.1 throttled", True),  # slows the session: the relay
        (Phase.RCPT, 421, "4.7.0 rate limited, closing", True),  # closes the session
        (Phase.MAIL, 554, "5.7.1 relaying denied", True),  # relay fault
    ],
)
def test_what_counts_against_a_relay(
    phase: Phase, code: int | None, text: str, blamed: bool
) -> None:
    assert blames_relay(transaction(phase, code, text)) is blamed


# --- hand-backs -------------------------------------------------------------------------------


def test_only_deferrals_are_handed_back() -> None:
    for outcome in (
        transaction(Phase.DONE, 250, "ok"),
        transaction(Phase.RCPT, 550, "5.1.1 no such user"),
        transaction(Phase.DATA_END, None, "timed out"),  # unknown: never sent twice at once
    ):
        assert not may_hand_back(Tally(claimed()), outcome, relay(), POLICY, failover=True)


def test_failover_while_attempts_are_left() -> None:
    tally = Tally(claimed(attempts=3))
    tally.count(Phase.MAIL)  # the 4th attempt of 5
    refused = transaction(Phase.MAIL, 451, "4.3.0 try later")
    assert may_hand_back(tally, refused, relay(), POLICY, failover=True)
    assert not may_hand_back(tally, refused, relay(), POLICY, failover=False)
    tally.count(Phase.MAIL)  # the 5th: attempts spent
    assert not may_hand_back(tally, refused, relay(), POLICY, failover=True)


def test_an_idle_connection_lost_is_handed_back_whatever_the_attempts() -> None:
    tally = Tally(claimed(attempts=POLICY.attempts))
    lost = transaction(Phase.CONNECT, None, "connection lost")
    assert may_hand_back(tally, lost, relay(), POLICY, failover=False)
    tally.relay_faults = MAX_HAND_BACKS
    assert not may_hand_back(tally, lost, relay(), POLICY, failover=True)


def test_hand_backs_are_bounded_however_many_relays() -> None:
    tally = Tally(claimed())
    tally.relay_faults = MAX_HAND_BACKS - 1
    refused = transaction(Phase.MAIL, 451, "4.3.0 try later")
    assert may_hand_back(tally, refused, relay(), POLICY, failover=True)
    tally.relay_faults = MAX_HAND_BACKS
    assert not may_hand_back(tally, refused, relay(), POLICY, failover=True)


@pytest.mark.parametrize(
    ("phase", "code", "text"),
    [(Phase.RCPT, 421, "4.3.2 closing"), (Phase.MAIL, None, "connection lost")],
)
def test_a_lone_421_or_lost_session_tries_the_same_relay_once(
    phase: Phase, code: int | None, text: str
) -> None:
    over = transaction(phase, code, text)
    tally = Tally(claimed())
    tally.count(phase)
    assert may_hand_back(tally, over, relay(failures=1), POLICY, failover=False)
    assert not may_hand_back(tally, over, relay(failures=2), POLICY, failover=False)
    assert not may_hand_back(tally, over, relay(circuit=Circuit.HALF_OPEN), POLICY, failover=False)
    tally.relay_faults = 1  # once per message and run
    assert not may_hand_back(tally, over, relay(), POLICY, failover=False)


def test_other_deferrals_wait_for_their_retry_without_another_relay() -> None:
    tally = Tally(claimed())
    busy = transaction(Phase.RCPT, 450, "4.2.0 mailbox busy")
    assert not may_hand_back(tally, busy, relay(), POLICY, failover=False)


# --- settling a row ---------------------------------------------------------------------------


def test_accepted_is_sent() -> None:
    tally = Tally(claimed())
    tally.count(Phase.DONE)
    record = settle(tally, transaction(Phase.DONE, 250, "2.0.0 ok"), POLICY, now=NOW, rng=Fixed())
    assert record == Record(
        "k1", State.SENT, 250, "250 2.0.0 ok", "a:25", None, 0, None, "a@example.com"
    )


def test_a_5xx_bad_mailbox_bounces_and_suppresses() -> None:
    tally = Tally(claimed())
    tally.count(Phase.RCPT)
    bad = transaction(Phase.RCPT, 550, "5.1.1 no such user")
    record = settle(tally, bad, POLICY, now=NOW, rng=Fixed())
    assert record.state is State.BOUNCED and record.code == 550
    assert record.suppress == HARD_BOUNCE and record.address == "a@example.com"
    assert record.next_attempt_at is None
    assert record.attempt == 1  # ended before DATA: the journal has not counted it


def test_other_5xx_bounce_without_suppressing() -> None:
    tally = Tally(claimed())
    record = settle(
        tally,
        transaction(Phase.DATA_END, 554, "5.6.0 content rejected"),
        POLICY,
        now=NOW,
        rng=Fixed(),
    )
    assert record.state is State.BOUNCED and record.suppress is None


def test_no_reply_after_the_final_dot_is_unknown_and_not_retried() -> None:
    tally = Tally(claimed())
    tally.count(Phase.DATA_END)
    rng = Fixed()
    record = settle(tally, transaction(Phase.DATA_END, None, "timed out"), POLICY, now=NOW, rng=rng)
    assert record.state is State.UNKNOWN and record.next_attempt_at is None
    assert record.attempt == 0  # the journal counted it when it recorded `sending`
    assert rng.draws == 0


def test_a_4xx_is_deferred_with_backoff() -> None:
    tally = Tally(claimed())
    tally.count(Phase.RCPT)
    record = settle(
        tally, transaction(Phase.RCPT, 450, "4.2.0 mailbox busy"), POLICY, now=NOW, rng=Fixed(1.1)
    )
    assert record.state is State.DEFERRED and record.reply == "450 4.2.0 mailbox busy"
    assert record.next_attempt_at == NOW + 30.0 * 1.1
    assert record.attempt == 1 and record.suppress is None


def test_a_deferral_past_its_attempts_fails() -> None:
    tally = Tally(claimed(attempts=4))
    tally.count(Phase.RCPT)
    rng = Fixed()
    record = settle(
        tally, transaction(Phase.RCPT, 452, "4.2.2 mailbox full"), POLICY, now=NOW, rng=rng
    )
    assert record.state is State.FAILED and record.next_attempt_at is None
    assert record.reply == "452 4.2.2 mailbox full (gave up: 5 attempts)"
    assert rng.draws == 0


def test_a_deferral_past_max_age_fails() -> None:
    tally = Tally(claimed(attempts=1, first_attempt_at=NOW - POLICY.max_age))
    tally.count(Phase.RCPT)
    record = settle(tally, transaction(Phase.RCPT, 450, "4.2.0 busy"), POLICY, now=NOW, rng=Fixed())
    assert record.state is State.FAILED
    assert record.reply == "450 4.2.0 busy (gave up: older than max_age (86400 s))"


def test_expired() -> None:
    assert expired(4, NOW - 10, POLICY, now=NOW) is None
    assert expired(5, NOW - 10, POLICY, now=NOW) == "5 attempts"
    assert expired(1, NOW - POLICY.max_age + 0.5, POLICY, now=NOW) is None
    assert expired(1, NOW - POLICY.max_age, POLICY, now=NOW) == ("older than max_age (86400 s)")
    # a row never tried before is as old as now
    assert expired(1, None, POLICY, now=NOW) is None
    assert expired(1, None, RetryPolicy(max_age=0.0), now=NOW) == "older than max_age (0 s)"


def test_backoff_doubles_up_to_its_cap() -> None:
    delays = [backoff(n, POLICY, None, spread=1.0) for n in range(1, 10)]
    assert delays == [30.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1800.0, 1800.0, 1800.0]


def test_backoff_jitter_and_the_replys_wait() -> None:
    assert backoff(2, POLICY, None, spread=0.8) == 48.0
    assert backoff(7, POLICY, None, spread=1.2) == 1800.0 * 1.2  # jitter is applied to the cap
    # the reply's "try again in 10 minutes" wins over a shorter backoff, even past the cap
    assert backoff(1, POLICY, 600.0, spread=1.0) == 600.0
    assert backoff(1, POLICY, 3600.0, spread=1.0) == 3600.0
    assert backoff(3, POLICY, 5.0, spread=1.0) == 120.0


def test_the_jitter_spreads_a_batch_within_its_range() -> None:
    rng = random.Random(7)
    low, high = JITTER
    for _ in range(200):
        tally = Tally(claimed())
        tally.count(Phase.RCPT)
        record = settle(tally, transaction(Phase.RCPT, 450, "4.2.0"), POLICY, now=NOW, rng=rng)
        assert record.next_attempt_at is not None
        assert NOW + 30.0 * low <= record.next_attempt_at <= NOW + 30.0 * high


def test_a_named_wait_sets_the_retry_time() -> None:
    tally = Tally(claimed())
    tally.count(Phase.RCPT)
    greylisted = transaction(Phase.RCPT, 451, "4.7.1 greylisted, try again in 5 minutes")
    assert greylisted.verdict.retry_after == 300.0
    record = settle(tally, greylisted, POLICY, now=NOW, rng=Fixed())
    assert record.next_attempt_at == NOW + 300.0


def test_the_first_transaction_of_a_row_counts_as_one_attempt() -> None:
    # a deferral that reached no relay (CONNECT) still backs off as the first attempt
    tally = Tally(claimed())
    lost = transaction(Phase.CONNECT, None, "connection lost")
    record = settle(tally, lost, POLICY, now=NOW, rng=Fixed())
    assert record.state is State.DEFERRED and record.next_attempt_at == NOW + 30.0
    assert record.attempt == 0


def test_abandoned_after_hand_backs_is_deferred_with_the_last_failure() -> None:
    tally = Tally(claimed())
    assert abandoned(tally, POLICY, now=NOW, rng=Fixed()) is None  # never sent
    refused = transaction(Phase.MAIL, 451, "4.3.0 try later", relay="b:25")
    tally.count(Phase.MAIL)
    tally.hand_back(refused)
    record = abandoned(tally, POLICY, now=NOW, rng=Fixed())
    assert record == Record(
        "k1",
        State.DEFERRED,
        451,
        "451 4.3.0 try later",
        "b:25",
        NOW + 30.0,
        1,
        None,
        "a@example.com",
    )


def test_abandoned_after_idle_hand_backs_only_leaves_the_row_alone() -> None:
    tally = Tally(claimed())
    tally.hand_back(transaction(Phase.CONNECT, None, "connection lost"))
    assert abandoned(tally, POLICY, now=NOW, rng=Fixed()) is None


def test_abandoned_past_its_attempts_fails() -> None:
    tally = Tally(claimed(attempts=4))
    tally.count(Phase.MAIL)
    tally.hand_back(transaction(Phase.MAIL, 451, "4.3.0 try later"))
    record = abandoned(tally, POLICY, now=NOW, rng=Fixed())
    assert record is not None and record.state is State.FAILED
    assert record.reply == "451 4.3.0 try later (gave up: 5 attempts)"


@pytest.mark.parametrize(
    ("phase", "code", "klass"),
    [
        (Phase.DONE, 250, None),
        (Phase.RCPT, 450, ErrorClass.TRANSIENT),
        (Phase.RCPT, 550, ErrorClass.PERMANENT),
        (Phase.DATA_END, 554, ErrorClass.PERMANENT),
        (Phase.MAIL, None, ErrorClass.TRANSIENT),  # lost before DATA: retried
        (Phase.DATA, None, ErrorClass.TRANSIENT),
        (Phase.DATA_END, None, ErrorClass.UNKNOWN),  # lost after the final dot
    ],
)
def test_error_classes(phase: Phase, code: int | None, klass: str | None) -> None:
    assert error_class(SendResult(phase, code, "")) == klass


# --- the error-rate abort ---------------------------------------------------------------------


def test_no_abort_policy_never_aborts() -> None:
    rate = ErrorRate(None)
    assert all(rate.judge(State.BOUNCED) is None for _ in range(500))


def test_the_abort_is_judged_from_min_messages_on() -> None:
    rate = ErrorRate(AbortPolicy(error_rate=0.5, min_messages=4))
    assert [rate.judge(s) for s in (State.BOUNCED, State.FAILED, State.UNKNOWN)] == [None] * 3
    reason = rate.judge(State.SENT)  # 3 of 4
    assert reason == "error rate 75% over the last 4 messages exceeds abort_on.error_rate 50%"


def test_the_abort_needs_a_rate_over_the_threshold() -> None:
    rate = ErrorRate(AbortPolicy(error_rate=0.5, min_messages=4))
    for state in (State.BOUNCED, State.SENT, State.FAILED):
        assert rate.judge(state) is None
    assert rate.judge(State.SENT) is None  # exactly 50%: not over it


def test_deferrals_are_not_outcomes() -> None:
    rate = ErrorRate(AbortPolicy(error_rate=0.1, min_messages=2))
    assert rate.judge(State.BOUNCED) is None
    assert all(rate.judge(State.DEFERRED) is None for _ in range(10))
    assert rate.judge(State.BOUNCED) is not None


def test_the_window_rolls() -> None:
    rate = ErrorRate(AbortPolicy(error_rate=0.5, min_messages=4))
    for state in (State.BOUNCED, State.BOUNCED, State.SENT, State.SENT):
        assert rate.judge(state) is None  # 50%
    assert rate.judge(State.SENT) is None  # the first bounce left the window: 25%
    assert rate.judge(State.SKIPPED) is None  # the second too, and a skip is no failure: 0%
    assert rate.judge(State.BOUNCED) is None  # 25%
    assert rate.judge(State.UNKNOWN) is None  # 50%
    assert rate.judge(State.FAILED) == (
        "error rate 75% over the last 4 messages exceeds abort_on.error_rate 50%"
    )


# --- the template judgement -------------------------------------------------------------------


def template_error(row: int, reason: str = "'plan' is undefined") -> TemplateRowError:
    return TemplateRowError(reason, row=row, key=f"k{row}")


def test_the_first_rows_failing_one_way_stop_the_run() -> None:
    judge = TemplateErrors()
    for row in range(1, TEMPLATE_FAILURES):
        assert judge.failed(template_error(row)) == ([], None)
    skipped, stop = judge.failed(template_error(TEMPLATE_FAILURES))
    assert skipped == []
    assert stop == "the template fails the same way for the first 10 rows: 'plan' is undefined"
    failure = judge.failure()
    assert failure is not None and failure.hint is not None
    assert "the first 10 rows" in str(failure) and "(first: row 1)" in str(failure)


def test_a_row_that_renders_makes_the_held_errors_the_rows_own() -> None:
    judge = TemplateErrors()
    held = [template_error(1), template_error(2)]
    for exc in held:
        judge.failed(exc)
    assert judge.trust() == held
    assert judge.failure() is None
    later = template_error(3)
    assert judge.failed(later) == ([later], None)  # skipped at once from now on


def test_another_error_makes_the_held_errors_the_rows_own() -> None:
    judge = TemplateErrors()
    first, other = template_error(1), template_error(2, "'x' is undefined")
    judge.failed(first)
    assert judge.failed(other) == ([first, other], None)
    assert judge.failure() is None


# --- the supervisor's judgement ---------------------------------------------------------------


def test_every_relay_dead_gives_up_at_once() -> None:
    a = relay("a", circuit=Circuit.DEAD, last_error="535 auth failed", hint="check the password")
    b = relay("b", circuit=Circuit.DEAD)
    reason = give_up_reason(outlook([a, b], all_dead=True), 120.0)
    assert reason == GiveUp(
        "no relay usable: relay a:25: 535 auth failed (hint: check the password); "
        "relay b:25: not usable",
        True,
    )


def test_an_outage_gives_up_after_give_up_unreachable() -> None:
    a = relay("a", circuit=Circuit.OPEN, last_error="connection refused")
    assert give_up_reason(outlook([a], outage_since=1000.0 - 89.9), 90.0) is None
    reason = give_up_reason(outlook([a], outage_since=1000.0 - 90.0), 90.0)
    assert reason == GiveUp(
        "no relay reachable for 1m30s (give_up_unreachable): relay a:25: connection refused",
        True,
    )
    short = give_up_reason(outlook([a], outage_since=0.0), 3.0)
    assert short is not None and short.reason.startswith("no relay reachable for 3s ")


def test_a_spent_quota_gives_up_only_when_the_dispatcher_waits_for_it() -> None:
    a = relay("a")
    assert give_up_reason(outlook([a], quota_spent=600.0), 120.0) is None
    reason = give_up_reason(outlook([a], quota_spent=600.0, waiting_for_relay=True), 120.0)
    assert reason == GiveUp(f"relay rate quota spent until {clock(NOW + 600.0)}", False)


@pytest.mark.parametrize("spent_first", [True, False])
def test_a_spent_relay_beside_an_unreachable_one_is_an_outage(spent_first: bool) -> None:
    """One relay's quota spent, the other unreachable: the run gives up once the other
    has failed for give_up_unreachable (it used to wait for the quota for ever)."""
    now = [1000.0]
    note = "relay a:25: 2/1h rolling quota used (2 accepted in the last 1 h); ..."
    spent = relay("a", quota_until=4000.0, quota_note=note)
    down = relay("b", circuit=Circuit.OPEN, retry_at=1005.0, last_error="connection refused")
    down.failing_since = 990.0
    relays = [spent, down] if spent_first else [down, spent]
    pool = RelayPool(relays, clock=lambda: now[0])
    assert pool.quota_spent_until() is None  # not every relay is spent
    assert pool.outage_since() == 990.0
    waiting = waiting_reason(outlook(relays, outage_since=pool.outage_since()), 15.0)
    assert waiting is not None and waiting.kind == "outage" and note in waiting.words
    assert give_up_reason(Outlook(relays, now=1004.9, wall=NOW, outage_since=990.0), 15.0) is None
    stop = give_up_reason(Outlook(relays, now=1005.0, wall=NOW, outage_since=990.0), 15.0)
    assert stop is not None and stop.unreachable
    assert stop.reason.startswith("no relay reachable for 15s (give_up_unreachable): ")
    assert note in stop.reason and "relay b:25: connection refused" in stop.reason
    # once the quota frees, the spent relay can send again: no outage
    now[0] = 4000.0
    assert pool.outage_since() is None
    # every relay spent is no outage but a spent quota
    down.quota_until = 5000.0
    now[0] = 1000.0
    assert pool.outage_since() is None and pool.quota_spent_until() == 3000.0


def test_waiting_for_an_outage_names_each_relay_and_the_deadline() -> None:
    a = relay("a", circuit=Circuit.OPEN, retry_at=1010.0, last_error="refused")
    b = relay("b", circuit=Circuit.HALF_OPEN, last_error="reset")
    c = relay("c", circuit=Circuit.DEAD, last_error="dns")
    waiting = waiting_reason(outlook([a, b, c], outage_since=990.0), 120.0)
    offset = NOW - 1000.0
    assert waiting is not None and waiting.kind == "outage"
    assert waiting.words == (
        f"relay a:25 circuit open until {clock(offset + 1010.0)}: refused; "
        "relay b:25 being probed: reset; relay c:25 dead: dns; "
        f"giving up at {clock(offset + 990.0 + 120.0)} (give_up_unreachable)"
    )


def test_waiting_for_paused_relays_then_for_a_retry() -> None:
    a = relay("a")
    paused = waiting_reason(outlook([a], waiting_for_relay=True, next_change=30.0), 120.0)
    assert paused is not None and paused.kind == "paused"
    assert paused.words == f"relays paused or throttled until {clock(NOW + 30.0)}"
    retry = waiting_reason(outlook([a], retry_due=NOW + 40.0), 120.0)
    assert retry is not None and retry.kind == "retry"
    assert retry.words == f"next retry due {clock(NOW + 40.0)}"
    assert waiting_reason(outlook([a], retry_due=NOW + 40.0, busy=True), 120.0) is None
    assert waiting_reason(outlook([a]), 120.0) is None


def test_an_unused_verdict_field_does_not_change_the_record() -> None:
    # a reconnect or relay fault is the session's and the relay's business, not the row's
    tally = Tally(claimed())
    plain = Transaction(SendResult(Phase.RCPT, 450, "busy"), Verdict(State.DEFERRED), "a:25")
    noisy = Transaction(
        plain.result, Verdict(State.DEFERRED, relay_fault=True, reconnect=True), "a:25"
    )
    assert settle(tally, plain, POLICY, now=NOW, rng=Fixed()) == settle(
        tally, noisy, POLICY, now=NOW, rng=Fixed()
    )
