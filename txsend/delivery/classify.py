"""What one SMTP outcome means for the row, the relay and the session: one ordered rule table.

`classify(phase, code, text)` walks `RULES` top to bottom and returns the `Verdict` of the
first rule whose condition holds (RFC 5321 reply codes, RFC 3463 enhanced status codes).
The table is data so the README can print it (`Rule.describe()`) and tests can prove every
row reachable. No I/O.

A session that cannot be opened has no transaction to classify: `CONNECT_RULES` says, for
each kind of connection fault, whether waiting can fix it (transient: the relay's circuit
counts it and `give_up_unreachable` bounds the wait) or not (permanent for the run: the
relay is taken out at once, with the reason and what to change).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace

from txsend.delivery.smtp.results import ConnectFault, Phase
from txsend.models import State

MAX_RETRY_AFTER = 24 * 3600.0  # seconds; longer hints are capped

EnhancedCode = tuple[int, int, int]


@dataclass(frozen=True, slots=True)
class Verdict:
    """What to do with one transaction's outcome."""

    state: State  # SENT, BOUNCED, DEFERRED or UNKNOWN
    suppress: bool = False  # add the recipient to the job's suppression list (bad mailbox)
    relay_fault: bool = False  # our side (policy, auth, quota): count against the relay
    slow_down: bool = False  # the relay asks us to throttle
    reconnect: bool = False  # the session is over: close it and open a new one
    retry_after: float | None = None  # seconds, when the reply names a wait
    reason: str = ""  # which rule matched, short

    def describe(self) -> str:
        """The outcome in words, e.g. "deferred; slow down; reconnect"."""
        parts = [self.state.value]
        if self.suppress:
            parts.append("suppress recipient")
        if self.relay_fault:
            parts.append("relay fault")
        if self.slow_down:
            parts.append("slow down")
        if self.reconnect:
            parts.append("reconnect")
        return "; ".join(parts)


@dataclass(frozen=True, slots=True)
class Reply:
    """One outcome, with what the rules look at computed once."""

    phase: Phase
    code: int | None  # None: no reply (connection lost or timed out)
    text: str
    enhanced: EnhancedCode | None
    lowered: str

    @classmethod
    def of(cls, phase: Phase, code: int | None, text: str) -> Reply:
        return cls(phase, code, text, enhanced_code(text), text.lower())

    @property
    def klass(self) -> int | None:
        """The reply class (2, 4, 5, ...) of a three-digit code, else None."""
        if self.code is None or not 100 <= self.code <= 599:
            return None
        return self.code // 100

    def subject(self, subject: int, detail: int | None = None) -> bool:
        """The enhanced code is X.subject.* (or X.subject.detail), whatever its class."""
        e = self.enhanced
        return e is not None and e[1] == subject and (detail is None or e[2] == detail)


@dataclass(frozen=True)
class Rule:
    """One row of the table: a condition (words and predicate) and the verdict it yields."""

    condition: str
    test: Callable[[Reply], bool]
    verdict: Verdict

    def matches(self, reply: Reply) -> bool:
        return self.test(reply)

    def describe(self) -> tuple[str, str]:
        """(condition, outcome) in words, for documentation."""
        return self.condition, f"{self.verdict.describe()} ({self.verdict.reason})"


_THROTTLE = re.compile(r"throttl|rate[ -]?limit", re.IGNORECASE)
_AFTER_DOT = frozenset({Phase.DATA_END, Phase.DONE})


def _asks_slow_down(r: Reply) -> bool:
    return r.subject(7) or _THROTTLE.search(r.text) is not None


def _too_many_recipients(r: Reply) -> bool:
    if r.phase is not Phase.RCPT:
        return False
    return r.code == 452 or (r.code == 552 and "too many recipients" in r.lowered)


# Ordered: the first rule whose condition holds decides. Keep the most specific rows first.
RULES: tuple[Rule, ...] = (
    Rule(
        "2yz after the final dot",
        lambda r: r.phase is Phase.DONE and r.klass == 2,
        Verdict(State.SENT, reason="accepted"),
    ),
    Rule(
        "no reply after the final dot (lost or timed out at end of DATA)",
        lambda r: r.code is None and r.phase in _AFTER_DOT,
        Verdict(State.UNKNOWN, reconnect=True, reason="no reply after final dot (RFC 1047)"),
    ),
    Rule(
        "no reply before the final dot (lost or timed out)",
        lambda r: r.code is None,
        Verdict(
            State.DEFERRED, reconnect=True, reason="connection lost (counts as 451, RFC 5321 3.8)"
        ),
    ),
    Rule(
        "421 with X.7.x or a throttling text",
        lambda r: r.code == 421 and _asks_slow_down(r),
        Verdict(
            State.DEFERRED,
            slow_down=True,
            reconnect=True,
            reason="421 rate limited, session closed",
        ),
    ),
    Rule(
        "421 (any phase)",
        lambda r: r.code == 421,
        Verdict(State.DEFERRED, reconnect=True, reason="421 service closing"),
    ),
    Rule(
        "4yz with X.7.x, or text says throttling / rate limit (e.g. 451 4.7.1, 454 Throttling)",
        lambda r: r.klass == 4 and _asks_slow_down(r),
        Verdict(State.DEFERRED, slow_down=True, reason="4.7.x / throttled"),
    ),
    Rule(
        "4yz or 5yz with X.2.2 (RFC 3463: mailbox full is transient whatever the class)",
        lambda r: r.klass in (4, 5) and r.subject(2, 2),
        Verdict(State.DEFERRED, reason="X.2.2 mailbox full"),
    ),
    Rule(
        "452 at RCPT, or 552 at RCPT saying 'too many recipients'",
        _too_many_recipients,
        Verdict(State.DEFERRED, reason="too many recipients / insufficient storage"),
    ),
    Rule(
        "other 4yz",
        lambda r: r.klass == 4,
        Verdict(State.DEFERRED, reason="transient failure"),
    ),
    Rule(
        "5yz with X.7.x (policy, relaying denied, authentication, DMARC)",
        lambda r: r.klass == 5 and r.subject(7),
        Verdict(State.DEFERRED, relay_fault=True, reason="5.7.x policy/authentication"),
    ),
    Rule(
        "5yz with X.4.5",
        lambda r: r.klass == 5 and r.subject(4, 5),
        Verdict(State.DEFERRED, relay_fault=True, reason="5.4.5 sending quota exceeded"),
    ),
    Rule(
        "530 or 535 (authentication required / failed)",
        lambda r: r.code in (530, 535),
        Verdict(State.DEFERRED, relay_fault=True, reason="authentication required"),
    ),
    Rule(
        "5yz at CONNECT",
        lambda r: r.klass == 5 and r.phase is Phase.CONNECT,
        Verdict(State.DEFERRED, relay_fault=True, reconnect=True, reason="relay refused session"),
    ),
    Rule(
        "5yz at MAIL",
        lambda r: r.klass == 5 and r.phase is Phase.MAIL,
        Verdict(State.DEFERRED, relay_fault=True, reason="sender refused"),
    ),
    Rule(
        "5yz saying the sender is not verified (e.g. SES '554 Message rejected: "
        "Email address is not verified')",
        lambda r: r.klass == 5 and "not verified" in r.lowered,
        Verdict(State.DEFERRED, relay_fault=True, reason="sender not verified"),
    ),
    Rule(
        "5yz with X.1.1 or X.1.10 (bad mailbox, null MX)",
        lambda r: r.klass == 5 and (r.subject(1, 1) or r.subject(1, 10)),
        Verdict(State.BOUNCED, suppress=True, reason="5.1.1 bad mailbox"),
    ),
    Rule(
        "5yz with X.1.2",
        lambda r: r.klass == 5 and r.subject(1, 2),
        Verdict(State.BOUNCED, reason="5.1.2 bad destination system"),
    ),
    Rule(
        "other 5yz",
        lambda r: r.klass == 5,
        Verdict(State.BOUNCED, reason="permanent failure"),
    ),
    Rule(
        "2yz before the final dot",
        lambda r: r.klass == 2,
        Verdict(State.DEFERRED, reconnect=True, reason="unexpected 2yz before final dot"),
    ),
    Rule(
        "anything else (1yz, 3yz, not a reply code)",
        lambda r: True,
        Verdict(State.DEFERRED, reconnect=True, reason="unexpected reply"),
    ),
)


def match_rule(phase: Phase, code: int | None, text: str) -> Rule:
    """The first rule of `RULES` that holds for this outcome (the last one always does)."""
    reply = Reply.of(phase, code, text)
    return next(rule for rule in RULES if rule.matches(reply))


def classify(phase: Phase, code: int | None, text: str) -> Verdict:
    """The verdict for one transaction's outcome; `retry_after` is set on deferrals."""
    verdict = match_rule(phase, code, text).verdict
    if verdict.state is State.DEFERRED:
        wait = parse_retry_after(text)
        if wait is not None:
            verdict = replace(verdict, retry_after=wait)
    return verdict


# RFC 3463: class "." subject "." detail, class 2/4/5, subject and detail 1-3 digits.
# Tolerates a leading reply code ("550-5.1.1 ..." or "550 5.1.1 ...") and Exchange's "#".
_ENHANCED = re.compile(r"\s*(?:[1-5]\d\d[ -])?#?([245])\.(\d{1,3})\.(\d{1,3})(?!\.?\d)")


def enhanced_code(text: str) -> EnhancedCode | None:
    """The RFC 3463 status code at the start of a reply text: "5.1.1 <a@b> ..." -> (5, 1, 1)."""
    m = _ENHANCED.match(text)
    if m is None:
        return None
    return int(m.group(1)), int(m.group(2)), int(m.group(3))


_RETRY = re.compile(
    r"\b(?:try(?:ing)?\s+again|retry|come\s+back|resend|wait)\s+"
    r"(?:(?:in|after|for)\s+)?(?:at\s+least\s+)?"
    r"(\d+(?:\.\d+)?)\s*"
    r"(seconds?|secs?|s|minutes?|mins?|m|hours?|hrs?|h)\b",
    re.IGNORECASE,
)
_UNIT = {"s": 1.0, "m": 60.0, "h": 3600.0}


def parse_retry_after(text: str) -> float | None:
    """Seconds from "try again in 30 seconds", "retry in 5 minutes", "come back in 300 s".

    None when the reply names no wait ("try again later"); capped at 24 hours.
    """
    m = _RETRY.search(text)
    if m is None:
        return None
    seconds = float(m.group(1)) * _UNIT[m.group(2)[0].lower()]
    return min(seconds, MAX_RETRY_AFTER)


@dataclass(frozen=True)
class ConnectRule:
    """One row of the connection-fault table."""

    fault: ConnectFault
    condition: str
    permanent: bool  # waiting will not fix it: take the relay out for the run
    hint: str = ""  # what to change, for the final message

    def describe(self) -> tuple[str, str]:
        """(condition, outcome) in words, for documentation."""
        if self.permanent:
            return self.condition, "relay taken out for the run"
        return self.condition, "transient: circuit counts it; give_up_unreachable bounds the wait"


CONNECT_RULES: tuple[ConnectRule, ...] = (
    ConnectRule(
        ConnectFault.REFUSED,
        "connection refused (nothing listens on the port)",
        False,
        "check the relay's host and port",
    ),
    ConnectRule(ConnectFault.RESET, "connection reset or closed before the session was up", False),
    ConnectRule(
        ConnectFault.TIMEOUT,
        "no answer within timeouts.connect / timeouts.command",
        False,
        "check the relay's host, port and firewall",
    ),
    ConnectRule(ConnectFault.UNROUTABLE, "no route to the host, network unreachable", False),
    ConnectRule(ConnectFault.GREETING_4XX, "4yz greeting (421 service not available)", False),
    ConnectRule(ConnectFault.EHLO_4XX, "4yz reply to EHLO", False),
    ConnectRule(ConnectFault.STARTTLS_4XX, "4yz reply to STARTTLS", False),
    ConnectRule(ConnectFault.OTHER, "any other failure to open a session", False),
    ConnectRule(
        ConnectFault.DNS,
        "the relay's host name does not resolve",
        True,
        "check the host name in the relay's url",
    ),
    ConnectRule(
        ConnectFault.GREETING_5XX,
        "5yz greeting (554: no service for us)",
        True,
        "the relay refuses this host: check its access rules",
    ),
    ConnectRule(ConnectFault.EHLO_5XX, "EHLO and HELO refused with 5yz", True),
    ConnectRule(
        ConnectFault.STARTTLS_MISSING,
        "tls=starttls but STARTTLS is not offered",
        True,
        "use ?tls=none only for a test relay, or the relay's TLS port with smtps://",
    ),
    ConnectRule(ConnectFault.STARTTLS_5XX, "5yz reply to STARTTLS", True),
    ConnectRule(
        ConnectFault.TLS_CERTIFICATE,
        "TLS certificate not verified (unknown CA, wrong host name, expired)",
        True,
        "give the relay's CA with its ca_file key, or fix the host name in its url",
    ),
    ConnectRule(
        ConnectFault.TLS_HANDSHAKE,
        "TLS handshake failed (protocol or cipher mismatch, not TLS at all)",
        True,
        "check smtps:// (port 465) against ?tls=starttls (port 587)",
    ),
    ConnectRule(
        ConnectFault.AUTH_REFUSED,
        "AUTH refused (535 and other 5yz)",
        True,
        "check the relay's user name and its password_env / password_file / password_cmd "
        "(an OAuth token: its scope, and that the account may use SMTP AUTH)",
    ),
    ConnectRule(
        ConnectFault.AUTH_UNAVAILABLE,
        "credentials given, but no AUTH mechanism offered that txsend speaks",
        True,
        "the relay offers no AUTH here: is TLS required first? With auth: xoauth2 or "
        "oauthbearer, choose one the relay lists",
    ),
)

_CONNECT_BY_FAULT = {rule.fault: rule for rule in CONNECT_RULES}


def classify_connect(fault: ConnectFault) -> ConnectRule:
    """The rule for a connection fault: permanent for the run, or transient."""
    return _CONNECT_BY_FAULT[fault]
