"""The SMTP outcome classifier: one row per rule with real relay replies, and the table itself."""

from __future__ import annotations

import itertools
from typing import NamedTuple

import pytest

from txsend.delivery.classify import (
    MAX_RETRY_AFTER,
    RULES,
    Verdict,
    classify,
    enhanced_code,
    match_rule,
    parse_retry_after,
)
from txsend.delivery.smtp.results import Phase
from txsend.models import State

SENT, BOUNCED, DEFERRED, UNKNOWN = State.SENT, State.BOUNCED, State.DEFERRED, State.UNKNOWN

GMAIL_NO_SUCH_USER = (
    "5.1.1 The email account that you tried to reach does not exist. Please try\n"
    "5.1.1 double-checking the recipient's email address for typos or\n"
    "5.1.1 unnecessary spaces. For more information, go to\n"
    "5.1.1  https://support.google.com/mail/?p=NoSuchUser a1si1234567qkb.12 - gsmtp"
)
GMAIL_RATE = (
    "4.7.28 Gmail has detected an unusual rate of unsolicited mail originating from your "
    "IP address. To protect our users from spam, mail sent from your IP address has been "
    "temporarily rate limited."
)


class Case(NamedTuple):
    phase: Phase
    code: int | None
    text: str
    expected: Verdict


ACCEPTED = Verdict(SENT, reason="accepted")
LOST_AFTER_DOT = Verdict(UNKNOWN, reason="no reply after final dot (RFC 1047)", reconnect=True)
LOST = Verdict(DEFERRED, reason="connection lost (counts as 451, RFC 5321 3.8)", reconnect=True)
RATE_421 = Verdict(
    DEFERRED, reason="421 rate limited, session closed", slow_down=True, reconnect=True
)
CLOSING_421 = Verdict(DEFERRED, reason="421 service closing", reconnect=True)
THROTTLED = Verdict(DEFERRED, reason="4.7.x / throttled", slow_down=True)
FULL = Verdict(DEFERRED, reason="X.2.2 mailbox full")
TOO_MANY = Verdict(DEFERRED, reason="too many recipients / insufficient storage")
TRANSIENT = Verdict(DEFERRED, reason="transient failure")
POLICY = Verdict(DEFERRED, reason="5.7.x policy/authentication", relay_fault=True)
QUOTA = Verdict(DEFERRED, reason="5.4.5 sending quota exceeded", relay_fault=True)
AUTH = Verdict(DEFERRED, reason="authentication required", relay_fault=True)
SESSION_REFUSED = Verdict(
    DEFERRED, reason="relay refused session", relay_fault=True, reconnect=True
)
SENDER = Verdict(DEFERRED, reason="sender refused", relay_fault=True)
UNVERIFIED = Verdict(DEFERRED, reason="sender not verified", relay_fault=True)
BAD_MAILBOX = Verdict(BOUNCED, reason="5.1.1 bad mailbox", suppress=True)
BAD_SYSTEM = Verdict(BOUNCED, reason="5.1.2 bad destination system")
PERMANENT = Verdict(BOUNCED, reason="permanent failure")
UNEXPECTED_2YZ = Verdict(DEFERRED, reason="unexpected 2yz before final dot", reconnect=True)
UNEXPECTED = Verdict(DEFERRED, reason="unexpected reply", reconnect=True)

D, M, R, E = Phase.DATA_END, Phase.MAIL, Phase.RCPT, Phase.DONE

CASES: dict[str, Case] = {
    # accepted
    "postfix-queued": Case(E, 250, "2.0.0 Ok: queued as 4ZxQ1k3Lw2z9sVb", ACCEPTED),
    "gmail-ok": Case(E, 250, "2.0.0 OK  1717171717 a1-20020a05 - gsmtp", ACCEPTED),
    "ses-ok": Case(E, 250, "Ok 0100018f-aaaa-bbbb-cccc-000000000000-000000", ACCEPTED),
    # no reply
    "timeout-after-dot": Case(D, None, "timed out", LOST_AFTER_DOT),
    "reset-after-dot": Case(D, None, "Connection lost", LOST_AFTER_DOT),
    "lost-at-rcpt": Case(R, None, "Connection lost", LOST),
    "timeout-at-mail": Case(M, None, "timed out", LOST),
    "not-connected": Case(Phase.CONNECT, None, "not connected", LOST),
    # 421
    "gmail-421-rate": Case(D, 421, GMAIL_RATE, RATE_421),
    "yahoo-421-tss04": Case(
        R,
        421,
        "4.7.0 [TSS04] Messages from 192.0.2.1 temporarily deferred due to unexpected "
        "volume or user complaints - 4.16.55.1; see https://postmaster.yahooinc.com/error-codes",
        RATE_421,
    ),
    "421-throttled-no-enhanced": Case(M, 421, "Throttled, slow down", RATE_421),
    "postfix-421-closing": Case(
        R, 421, "4.3.2 Service not available, closing transmission channel", CLOSING_421
    ),
    "421-too-many-connections": Case(
        M,
        421,
        "4.4.5 Too many connections from your host, try again in 60 seconds",
        Verdict(DEFERRED, reason="421 service closing", reconnect=True, retry_after=60.0),
    ),
    # 4yz asking to slow down
    "greylist-451-4.7.1": Case(
        R,
        451,
        "4.7.1 Greylisting in action, please come back in 300 seconds",
        Verdict(DEFERRED, reason="4.7.x / throttled", slow_down=True, retry_after=300.0),
    ),
    "ses-454-throttling": Case(
        M, 454, "Throttling failure: Maximum sending rate exceeded.", THROTTLED
    ),
    "outlook-451-server-busy": Case(
        R,
        451,
        "4.7.500 Server busy. Please try again later from [192.0.2.1]. (S77719) "
        "[BN8NAM12FT010.eop-nam12.prod.protection.outlook.com]",
        THROTTLED,
    ),
    "postfix-450-policy": Case(
        R, 450, "4.7.1 <a@example.org>: Recipient address rejected: Try later", THROTTLED
    ),
    # mailbox full
    "gmail-452-over-quota": Case(
        R,
        452,
        "4.2.2 The email account that you tried to reach is over quota. Please direct the "
        "recipient to https://support.google.com/mail/?p=OverQuotaTemp - gsmtp",
        FULL,
    ),
    "450-4.2.2-after-dot": Case(D, 450, "4.2.2 Mailbox full", FULL),
    # too many recipients / storage at RCPT
    "postfix-452-too-many": Case(R, 452, "4.5.3 Error: too many recipients", TOO_MANY),
    "552-too-many-rcpt": Case(R, 552, "5.5.3 Too many recipients", TOO_MANY),
    "452-storage-no-enhanced": Case(R, 452, "Insufficient system storage", TOO_MANY),
    # other 4yz
    "postfix-451-lookup": Case(
        R, 451, "4.3.0 <a@example.org>: Temporary lookup failure", TRANSIENT
    ),
    "postfix-450-unverified": Case(
        R,
        450,
        "4.1.1 <a@example.org>: Recipient address rejected: unverified address: "
        "connect to mx.example.org[192.0.2.7]:25: Connection timed out",
        TRANSIENT,
    ),
    "postfix-450-sender-domain": Case(
        M, 450, "4.1.8 <news@example.com>: Sender address rejected: Domain not found", TRANSIENT
    ),
    "452-storage-at-mail": Case(M, 452, "4.3.1 Insufficient system storage", TRANSIENT),
    "exim-greylist-minutes": Case(
        R,
        451,
        "Greylisted, please try again in 5 minutes",
        Verdict(DEFERRED, reason="transient failure", retry_after=300.0),
    ),
    # relay faults: policy, quota, authentication
    "relaying-denied": Case(R, 550, "5.7.1 Relaying denied", POLICY),
    "gmail-dmarc-5.7.26": Case(
        D,
        550,
        "5.7.26 This mail is unauthenticated, which poses a security risk to the sender "
        "and Gmail users, and has been blocked.",
        POLICY,
    ),
    "gmail-530-auth": Case(
        M, 530, "5.7.0 Authentication Required. Learn more at https://support.google.com", POLICY
    ),
    "gmail-535-bad-password": Case(
        M, 535, "5.7.8 Username and Password not accepted. Learn more at", POLICY
    ),
    "postfix-554-sender-access": Case(
        M, 554, "5.7.1 <news@example.com>: Sender address rejected: Access denied", POLICY
    ),
    "daily-quota-5.4.5": Case(D, 554, "5.4.5 Daily sending quota exceeded", QUOTA),
    "gmail-550-5.4.5": Case(M, 550, "5.4.5 Daily user sending limit exceeded.", QUOTA),
    "530-no-enhanced": Case(M, 530, "Authentication required", AUTH),
    "535-at-rcpt": Case(R, 535, "Authentication credentials invalid", AUTH),
    "554-greeting": Case(
        Phase.CONNECT, 554, "mx.example.org no SMTP service here", SESSION_REFUSED
    ),
    "550-sender-unknown": Case(
        M, 550, "5.1.0 <news@example.com>: Sender address rejected: User unknown", SENDER
    ),
    "553-sender-5.1.1": Case(M, 553, "5.1.1 <news@example.com>: Sender address rejected", SENDER),
    "553-sender-invalid": Case(M, 553, "5.1.7 The sender address is invalid", SENDER),
    # hard bounces
    "gmail-no-such-user": Case(R, 550, GMAIL_NO_SUCH_USER, BAD_MAILBOX),
    "code-in-text": Case(
        R, 550, "550-5.1.1 The email account that you tried to reach does not exist", BAD_MAILBOX
    ),
    "outlook-5.1.10": Case(
        R,
        550,
        "5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup",
        BAD_MAILBOX,
    ),
    "postfix-user-unknown": Case(
        R,
        550,
        "5.1.1 <a@example.org>: Recipient address rejected: User unknown in virtual mailbox table",
        BAD_MAILBOX,
    ),
    "5.1.1-after-dot": Case(D, 550, "5.1.1 <a@example.org>... User unknown", BAD_MAILBOX),
    "bounce-ignores-retry-hint": Case(
        R, 550, "5.1.1 No such user; do not try again in 5 minutes", BAD_MAILBOX
    ),
    "5.1.2-bad-domain": Case(
        R,
        550,
        "5.1.2 <a@nowhere.invalid>: Recipient address rejected: Domain not found",
        BAD_SYSTEM,
    ),
    "ses-554-not-verified": Case(
        D,
        554,
        "Message rejected: Email address is not verified. The following identities failed "
        "the check in region EU-WEST-1: noreply@acme.example",
        UNVERIFIED,
    ),
    "gmail-552-5.2.2-full": Case(
        R, 552, "5.2.2 The email account that you tried to reach is over quota.", FULL
    ),
    "552-too-big": Case(D, 552, "5.3.4 Message size exceeds fixed limit", PERMANENT),
    "550-no-enhanced": Case(R, 550, "Requested action not taken: mailbox unavailable", PERMANENT),
    "554-transaction-failed": Case(D, 554, "Transaction failed", PERMANENT),
    # defensive
    "250-at-rcpt": Case(R, 250, "2.1.5 Ok", UNEXPECTED_2YZ),
    "250-at-mail": Case(M, 250, "2.1.0 Ok", UNEXPECTED_2YZ),
    "354-at-rcpt": Case(R, 354, "End data with <CR><LF>.<CR><LF>", UNEXPECTED),
    "garbage-code": Case(R, 999, "what", UNEXPECTED),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_classify(case: Case) -> None:
    assert classify(case.phase, case.code, case.text) == case.expected


def test_case_count() -> None:
    assert len(CASES) >= 25


def test_every_rule_is_the_first_match_for_some_case() -> None:
    first = {match_rule(c.phase, c.code, c.text).condition for c in CASES.values()}
    unreachable = [rule.condition for rule in RULES if rule.condition not in first]
    assert unreachable == []


def test_rules_are_distinct_and_documented() -> None:
    conditions = [rule.condition for rule in RULES]
    reasons = [rule.verdict.reason for rule in RULES]
    assert len(set(conditions)) == len(RULES)
    assert len(set(reasons)) == len(RULES)  # a verdict's reason names its rule
    for rule in RULES:
        condition, outcome = rule.describe()
        assert condition and outcome
        assert rule.verdict.reason in outcome
        assert rule.verdict.retry_after is None  # filled in by classify, never by the table


def test_describe_outcome_text() -> None:
    rate = next(r for r in RULES if r.verdict == RATE_421)
    assert rate.describe()[1] == (
        "deferred; slow down; reconnect (421 rate limited, session closed)"
    )
    bad = next(r for r in RULES if r.verdict == BAD_MAILBOX)
    assert bad.describe()[1] == "bounced; suppress recipient (5.1.1 bad mailbox)"


CODES: list[int | None] = [None, 0, 1, 99, 150, 220, 250, 354, 421, 450, 452, 454, 500, 530, 550]
CODES += [552, 554, 599, 600, 999]
TEXTS = ["", "5.1.1 x", "4.7.1 x", "5.7.1 x", "5.4.5 x", "4.2.2 x", "2.0.0 x", "Throttling"]


def test_verdicts_are_consistent_everywhere() -> None:
    """Every outcome gets a verdict, and no verdict mixes incompatible flags."""
    for phase, code, text in itertools.product(Phase, CODES, TEXTS):
        verdict = classify(phase, code, text)
        assert verdict.state in {SENT, BOUNCED, DEFERRED, UNKNOWN}
        assert verdict.reason
        if verdict.suppress or verdict.state is SENT:
            assert not verdict.relay_fault and not verdict.slow_down
        if verdict.suppress:
            assert verdict.state is BOUNCED
        if verdict.relay_fault:
            assert verdict.state is DEFERRED
        if verdict.state is SENT:
            assert phase is Phase.DONE
        if verdict.state is UNKNOWN:
            assert code is None and phase in {Phase.DATA_END, Phase.DONE}
        if code is None:
            assert verdict.reconnect


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("5.1.1 <a@b> unknown", (5, 1, 1)),
        ("5.1.10 RESOLVER.ADR.RecipientNotFound", (5, 1, 10)),
        ("4.7.28 Gmail has detected", (4, 7, 28)),
        ("4.7.500 Server busy", (4, 7, 500)),
        ("2.0.0 Ok", (2, 0, 0)),
        ("  5.7.1 Relaying denied", (5, 7, 1)),
        ("5.1.1: Recipient rejected", (5, 1, 1)),
        ("5.2.2\nsecond line", (5, 2, 2)),
        ("550-5.1.1 The email account", (5, 1, 1)),
        ("550 5.7.1 Relaying denied", (5, 7, 1)),
        ("#5.1.0 Address rejected", (5, 1, 0)),
        ("Relaying denied", None),
        ("", None),
        ("3.1.1 not a class", None),
        ("5.1 too short", None),
        ("5.1.1234 detail too long", None),
        ("5.1.1.2 too many parts", None),
        ("1.2.3.4 an address", None),
        ("Mailbox 5.1.1 not at the start", None),
        ("550 Requested action not taken", None),
    ],
)
def test_enhanced_code(text: str, expected: tuple[int, int, int] | None) -> None:
    assert enhanced_code(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Try again in 30 seconds.", 30.0),
        ("retry in 5 minutes", 300.0),
        ("please try again after 60s", 60.0),
        ("Greylisting in action, please come back in 300 seconds", 300.0),
        ("Rate limited; wait 45 secs", 45.0),
        ("RETRY AFTER 2 HOURS", 7200.0),
        ("try again in 1.5 minutes", 90.0),
        ("try again in 5 min.", 300.0),
        ("retry in 10 m", 600.0),
        ("try again in at least 20 sec", 20.0),
        ("try again in 48 hours", MAX_RETRY_AFTER),
        ("try again later", None),
        ("Please try again later from [192.0.2.1].", None),
        ("Throttling failure: Maximum sending rate exceeded.", None),
        ("retry 3 of 5", None),
        ("try again in 5 mailboxes", None),
        ("deferred - 4.16.55.1; see https://postmaster.yahooinc.com", None),
        ("", None),
    ],
)
def test_parse_retry_after(text: str, expected: float | None) -> None:
    assert parse_retry_after(text) == expected
