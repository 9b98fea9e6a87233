"""The outcome policy: what a transaction's result does to its row, and when a run gives up.

Pure: plain values in, decisions out; no I/O, and no clock (`now` is always a parameter).
The engine calls these and does the writing and the waiting.

Every transaction that reached a relay counts as one of the row's `retry.attempts`,
whatever its phase, so hand-backs and failovers are bounded too. The journal counts the
ones that reached DATA's 354 when it records the row `sending`; `Tally` keeps the others
(`uncounted`) until the row is settled. A deferred message goes to another relay at once
while it has attempts left (`may_hand_back`); otherwise `settle` turns the transaction into
the journal `Record`: a deferral gets a retry time (`backoff`), or fails once its attempts
or `max_age` are spent (`expired`). `ErrorRate` judges `delivery.abort_on`;
`give_up_reason` and `waiting_reason` are the supervisor's judgement of the relays;
`TemplateErrors` tells a broken template from rows that break it.
"""

from __future__ import annotations

import random
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from txsend.delivery.classify import Verdict
from txsend.delivery.relays import Circuit, RelayState
from txsend.delivery.smtp import Phase, SendResult
from txsend.errors import JobError, TemplateRowError
from txsend.journal.records import Claimed, Record
from txsend.models import AbortPolicy, RetryPolicy, State
from txsend.reporting.stats import ErrorClass

MAX_HAND_BACKS = 10  # hand-backs of one message in a run, however many relays there are
JITTER = (0.8, 1.2)  # retry delays are spread by a factor in this range
HARD_BOUNCE = "hard bounce in this job"  # the suppression reason a bad mailbox leaves
# phases a transaction reaches only after the journal recorded it `sending` (and counted it)
MARKED = frozenset({Phase.DATA_END, Phase.DONE})
# a reply in these phases answers one recipient's message, not the session
RECIPIENT_PHASES = frozenset({Phase.RCPT, Phase.DATA, Phase.DATA_END})
FAILURES = frozenset({State.BOUNCED, State.FAILED, State.UNKNOWN})  # what abort_on counts
TEMPLATE_FAILURES = 10  # the first rows all failing on one template error: the job's fault


# --- one message's transactions ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Transaction:
    """One transaction's outcome: what the relay said, what that means, and which relay."""

    result: SendResult
    verdict: Verdict
    relay: str  # its name


@dataclass(slots=True)
class Tally:
    """One claimed row's transactions in this run: what the retry and hand-back rules count."""

    claimed: Claimed
    relay_faults: int = 0  # hand-backs after a failure this run
    failed_relays: set[str] = field(default_factory=set)  # relays that failed it this run
    transactions: int = 0  # transactions this run that reached a relay
    uncounted: int = 0  # ... of which the journal has not counted (ended before DATA's 354)
    last: Transaction | None = None  # the failure it was last handed back after

    @property
    def attempts(self) -> int:
        """The row's attempts so far: the journal's at claim time and this run's."""
        return self.claimed.attempts + self.transactions

    @property
    def retried(self) -> bool:
        """The row was tried before its latest transaction (the report's `retries`)."""
        return bool(self.claimed.attempts) or self.transactions > 1

    def count(self, phase: Phase) -> None:
        """Count a transaction that ended at `phase`."""
        if phase is Phase.CONNECT:
            return  # the connection was gone before MAIL: nothing reached the relay
        self.transactions += 1
        if phase not in MARKED:
            self.uncounted += 1  # ended before `sending`: the journal has not counted it

    def hand_back(self, transaction: Transaction) -> None:
        """Remember the failure the message is about to be tried again after."""
        if transaction.result.phase is not Phase.CONNECT:
            self.failed_relays.add(transaction.relay)
        self.relay_faults += 1
        self.last = transaction


def throttles_relay(transaction: Transaction) -> bool:
    """Does a throttling reply slow the whole relay (else only the recipient's domain)?

    One to the session (greeting, EHLO, MAIL, or one that closes it) does; one to a
    recipient (RCPT, DATA, the final dot) that leaves the session open does not."""
    verdict = transaction.verdict
    return verdict.slow_down and (
        verdict.reconnect or transaction.result.phase not in RECIPIENT_PHASES
    )


def blames_relay(transaction: Transaction) -> bool:
    """Does the outcome count against the relay's health (else it shows the relay works)?

    A recipient's domain asking us to slow down does not: the session worked, and the
    domain's pace takes the hint (circuit-opening there would stall every other domain)."""
    result, verdict = transaction.result, transaction.verdict
    return verdict.relay_fault or throttles_relay(transaction) or result.code in (None, 421)


def relay_error(transaction: Transaction) -> str:
    """What a failed transaction says of its relay (its last error, in the give-up line):
    a reply that did not come in time says which and which timeout, e.g. "no reply to
    RCPT within 5 s (timeouts.command)"; anything else is the verdict's reason."""
    result = transaction.result
    if result.timed_out:
        return result.reply
    return transaction.verdict.reason or result.reply


def may_hand_back(
    tally: Tally,
    transaction: Transaction,
    relay: RelayState,
    policy: RetryPolicy,
    *,
    failover: bool,
) -> bool:
    """Should a deferred message be tried again in this run, at once?

    `failover`: a relay that has failed neither this message nor this transaction could
    take it. A message refused for a reason that is not the recipient's goes to another
    relay at once while the row has attempts left; to the same relay again only after a
    lone 421 or lost session on a relay that was working (a new connection often takes
    it). The relay's health is as this transaction left it."""
    result = transaction.result
    if transaction.verdict.state is not State.DEFERRED or tally.relay_faults >= MAX_HAND_BACKS:
        return False
    if result.phase is Phase.CONNECT:
        return True  # the connection closed while idle: nothing reached the relay
    if tally.attempts >= policy.attempts:
        return False
    if failover:
        return True
    session_over = result.code == 421 or (
        result.code is None and result.phase is not Phase.DATA_END
    )
    return (
        session_over
        and tally.relay_faults == 0  # once per message and run
        and relay.failures <= 1
        and relay.circuit is Circuit.CLOSED
    )


# --- settling a row ------------------------------------------------------------------


def expired(
    attempts: int, first_attempt_at: float | None, policy: RetryPolicy, *, now: float
) -> str | None:
    """Why a deferred row is given up now (delivery.retry spent), or None."""
    if attempts >= policy.attempts:
        return f"{attempts} attempts"
    first = first_attempt_at or now  # a row never tried before starts its age now
    if now - first >= policy.max_age:
        return f"older than max_age ({policy.max_age:g} s)"
    return None


def backoff(
    attempts: int, policy: RetryPolicy, retry_after: float | None, *, spread: float
) -> float:
    """Seconds until the next attempt: doubling from `backoff` up to `max_backoff`, times
    the jitter `spread`, and never sooner than the wait the reply asked for."""
    delay = min(policy.max_backoff, policy.backoff * 2.0 ** (attempts - 1)) * spread
    if retry_after is not None:
        delay = max(delay, retry_after)
    return delay


def settle(
    tally: Tally,
    transaction: Transaction,
    policy: RetryPolicy,
    *,
    now: float,
    rng: random.Random,
) -> Record:
    """The journal row a transaction settles its message into (`now`: wall clock).

    A deferral gets its retry time, or fails once delivery.retry is spent; a hard bounce
    also suppresses the address; `attempt` carries the transactions the journal has not
    counted yet."""
    result, verdict = transaction.result, transaction.verdict
    state, next_attempt_at, reply = verdict.state, None, result.reply
    if state is State.DEFERRED:
        state, next_attempt_at, reply = _defer(tally, transaction, policy, now=now, rng=rng)
    return Record(
        tally.claimed.key,
        state,
        result.code,
        reply,
        transaction.relay,
        next_attempt_at,
        tally.uncounted,
        HARD_BOUNCE if verdict.suppress else None,
        tally.claimed.address,
    )


def abandoned(
    tally: Tally, policy: RetryPolicy, *, now: float, rng: random.Random
) -> Record | None:
    """The row of a message left unsent this run after it was handed back, or None when
    no transaction of it reached a relay (the row stays as the journal has it).

    It is deferred with its last failure, so that the journal counts those attempts."""
    last = tally.last
    if last is None or not tally.transactions:
        return None
    state, next_attempt_at, reply = _defer(tally, last, policy, now=now, rng=rng)
    return Record(
        tally.claimed.key,
        state,
        last.result.code,
        reply,
        last.relay,
        next_attempt_at,
        tally.uncounted,
        address=tally.claimed.address,
    )


def _defer(
    tally: Tally,
    transaction: Transaction,
    policy: RetryPolicy,
    *,
    now: float,
    rng: random.Random,
) -> tuple[State, float | None, str]:
    """A deferred row's state, retry time and reply: failed once delivery.retry is spent."""
    attempts = max(1, tally.attempts)
    reply = transaction.result.reply
    reason = expired(attempts, tally.claimed.first_attempt_at, policy, now=now)
    if reason is not None:
        return State.FAILED, None, f"{reply} (gave up: {reason})"
    spread = rng.uniform(*JITTER)  # the retries of a batch spread out
    delay = backoff(attempts, policy, transaction.verdict.retry_after, spread=spread)
    return State.DEFERRED, now + delay, reply


def error_class(result: SendResult) -> str | None:
    """How the report counts a transaction that was not accepted (None: it was): no reply
    after the final dot is unknown, a 5yz permanent, anything else transient."""
    if result.accepted:
        return None
    if result.code is None:
        return ErrorClass.UNKNOWN if result.phase is Phase.DATA_END else ErrorClass.TRANSIENT
    return ErrorClass.PERMANENT if result.code >= 500 else ErrorClass.TRANSIENT


# --- the run as a whole --------------------------------------------------------------


class ErrorRate:
    """delivery.abort_on: the failure rate over the last `min_messages` settled rows."""

    def __init__(self, policy: AbortPolicy | None) -> None:
        self._policy = policy
        self._recent: deque[bool] = deque(maxlen=policy.min_messages if policy else 1)

    def judge(self, state: State) -> str | None:
        """Count one row's outcome; the reason to abort the job, or None.

        A deferral is no outcome yet; nothing is judged before `min_messages` outcomes."""
        policy = self._policy
        if policy is None or state is State.DEFERRED:
            return None
        recent = self._recent
        recent.append(state in FAILURES)
        if len(recent) < policy.min_messages:
            return None
        rate = sum(recent) / len(recent)
        if rate > policy.error_rate:
            return (
                f"error rate {rate:.0%} over the last {len(recent)} messages "
                f"exceeds abort_on.error_rate {policy.error_rate:.0%}"
            )
        return None


class TemplateErrors:
    """The run's first template errors, held back while they are all the same one.

    When the first rows of a run all fail to render the same way the template is at
    fault, not the rows: the run stops (exit 65) and leaves them pending. Once a row
    renders, or fails some other way, the held errors are the rows' own: they are skipped.
    """

    def __init__(self) -> None:
        self._held: list[TemplateRowError] | None = []  # None: the template is trusted

    def failed(self, exc: TemplateRowError) -> tuple[list[TemplateRowError], str | None]:
        """A row's template error: the errors to skip now, and the reason to stop the run
        (the job's fault), or None."""
        held = self._held
        if held is None or (held and held[0].reason != exc.reason):
            return [*self.trust(), exc], None
        held.append(exc)
        if len(held) < TEMPLATE_FAILURES:
            return [], None
        return [], f"the template fails the same way for the first {len(held)} rows: " + exc.reason

    def trust(self) -> list[TemplateRowError]:
        """A row rendered (or failed otherwise): the held errors, to be skipped now."""
        held, self._held = self._held, None
        return held or []

    def failure(self) -> JobError | None:
        """The run's error when every row it took on failed one way; else None."""
        if not self._held:
            return None
        first = self._held[0]
        return JobError(
            f"the template fails for the first {len(self._held)} rows of this run, all with the "
            f"same error (first: row {first.row}): {first.reason}; nothing was sent",
            hint="fix the template and run again: those rows are still pending",
        )


@dataclass(frozen=True)
class Outlook:
    """What the supervisor sees at one look: the relays, the pool's figures, the run."""

    relays: Sequence[RelayState]
    now: float  # monotonic, the relays' clock
    wall: float  # the wall clock at the same moment
    outage_since: float | None = None  # RelayPool.outage_since
    all_dead: bool = False  # RelayPool.all_dead
    quota_spent: float | None = None  # RelayPool.quota_spent_until, seconds
    quota_notes: Sequence[str] = ()  # RelayPool.quota_notes: which quotas, freeing when
    next_change: float | None = None  # RelayPool.next_change, seconds
    waiting_for_relay: bool = False  # the dispatcher holds a message no relay can take
    retry_due: float | None = None  # wall time of the retry the producer waits for
    busy: bool = False  # messages are in the pipeline


class GiveUp(NamedTuple):
    """Why the run stops waiting for its relays."""

    reason: str
    unreachable: bool  # no relay reachable or usable (exit 69/75), not a spent quota


class Waiting(NamedTuple):
    """What the run waits for, with its deadline."""

    kind: str  # "outage", "paused" or "retry"
    words: str


def give_up_reason(outlook: Outlook, give_up_unreachable: float) -> GiveUp | None:
    """Why the run must stop now, or None while waiting may still help."""
    if outlook.all_dead:
        return GiveUp("no relay usable: " + _failing(outlook.relays, outlook.now), True)
    outage = outlook.outage_since
    if outage is not None and outlook.now - outage >= give_up_unreachable:
        return GiveUp(
            f"no relay reachable for {_duration(give_up_unreachable)} (give_up_unreachable): "
            + _failing(outlook.relays, outlook.now),
            True,
        )
    if outlook.waiting_for_relay and outlook.quota_spent is not None:
        if outlook.quota_notes:
            return GiveUp("; ".join(outlook.quota_notes), False)
        return GiveUp(
            f"relay rate quota spent until {_clock(outlook.wall + outlook.quota_spent)}", False
        )
    return None


def waiting_reason(outlook: Outlook, give_up_unreachable: float) -> Waiting | None:
    """What the run waits for now, or None while it makes progress."""
    if outlook.outage_since is not None:
        return Waiting("outage", _outage(outlook, outlook.outage_since, give_up_unreachable))
    if outlook.waiting_for_relay and outlook.next_change is not None:
        until = _clock(outlook.wall + outlook.next_change)
        return Waiting("paused", f"relays paused or throttled until {until}")
    if outlook.retry_due is not None and not outlook.busy:
        return Waiting("retry", f"next retry due {_clock(outlook.retry_due)}")
    return None


def _outage(outlook: Outlook, since: float, give_up_unreachable: float) -> str:
    """Each relay's state during an outage, and when the run will give up."""
    offset = outlook.wall - outlook.now  # monotonic -> wall clock
    parts = []
    for relay in outlook.relays:
        if relay.quota_until > outlook.now and relay.quota_note:
            parts.append(relay.quota_note)  # spent: it waits for no outage
            continue
        if relay.circuit is Circuit.OPEN and relay.retry_at > outlook.now:
            state = f"circuit open until {_clock(offset + relay.retry_at)}"
        elif relay.circuit in (Circuit.OPEN, Circuit.HALF_OPEN):
            state = "being probed"
        else:
            state = relay.circuit.value
        parts.append(f"relay {relay.name} {state}: {relay.last_error}")
    give_up_at = _clock(offset + since + give_up_unreachable)
    return "; ".join(dict.fromkeys(parts)) + f"; giving up at {give_up_at} (give_up_unreachable)"


def _failing(relays: Sequence[RelayState], now: float) -> str:
    """Why each relay fails, with what to change where that is known; a relay whose quota
    is spent says which quota and when it frees a slot (once: the warm-up's is every
    relay's)."""
    parts = [
        r.quota_note
        if r.quota_until > now and r.quota_note and r.circuit is not Circuit.DEAD
        else f"relay {r.name}: {r.last_error or 'not usable'}"
        + (f" (hint: {r.hint})" if r.hint else "")
        for r in relays
    ]
    return "; ".join(dict.fromkeys(parts))


def _clock(timestamp: float) -> str:
    """A wall-clock time for people: 14:03:07."""
    return time.strftime("%H:%M:%S", time.localtime(timestamp))


def _duration(seconds: float) -> str:
    """A duration as the job would write it: 90 s -> 1m30s, 120 s -> 2m, 3 s -> 3s."""
    whole = round(seconds)
    if whole < 60:
        return f"{seconds:g}s"
    minutes, rest = divmod(whole, 60)
    return f"{minutes}m{rest}s" if rest else f"{minutes}m"
