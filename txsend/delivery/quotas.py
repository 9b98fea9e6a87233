"""Quotas counted per accepted recipient in the journal's ledger, and the warm-up.

A quota is a budget of accepted recipients per account (a relay's URL without password,
the key of `user@host:port`; or `warmup:<domain>` for a sender's warm-up), kept in the
journal's ledger (`Ledger`) so that every run, job and worker using that journal shares
it:

* ``N/h`` and ``N/day``: per clock-aligned UTC hour or UTC day (`FixedQuota`);
* ``N/24h``, ``N/30min``, ``N/7d`` (a period with a number): at most N in any window of
  that length ending now, the way SES and Exchange Online count (`RollingQuota`). The
  ledger counts acceptances in buckets ``window / 1440`` wide (at least 1 s: 60 s for
  24 h); a bucket counts while any part of it is inside the window, so the count never
  falls short of the acceptances of the last ``window`` seconds;
* the job's ``warmup:``: a cap per UTC day that grows day by day (`WarmupQuota`,
  `txsend.job.warmup`).

A message takes a *slot* before its transaction (`Quotas.acquire`: the warm-up's, then
its relay's), held in the ledger with an expiry so that a process killed mid-transaction
cannot leak it. Its `Slot` is kept (turned into an acceptance) when the message's content
starts to go (`Slot.sending`, just before the row is marked `sending`): a run killed from
then on leaves the row `unknown` and the acceptance counted, as the relay may have taken
it. When the transaction ends, `Slot.close` gives back what did not get accepted: a hold
never kept (refused at MAIL or RCPT, handed back, stopped) is released; an acceptance
whose row ended `bounced`, `deferred` or `failed`, or that was handed back after DATA, is
taken back out of its bucket. `sent` and `unknown` keep it.

When a quota has no room, `Quota.wait` says when its next slot frees (the oldest bucket
leaves the window, the hour or day ends) and `Quota.spent` says so in words. While slots
are held, or counted from DATA on by transactions not over yet (`Quota.settling`), the
quota is not spent: those may come back, so the wait is a short poll.
Nothing here sleeps except `Quotas.acquire`; the wall clock is injectable.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import NamedTuple, Protocol

from txsend.job.spec import Job
from txsend.job.warmup import Warmup, sender_domain
from txsend.journal.records import LedgerUsage
from txsend.logs import event
from txsend.models import RelayConfig, Timeouts
from txsend.reporting.quotas import QuotaUsage
from txsend.units import Rate, describe_period, parse_rate, utc_minute, utc_second

__all__ = [
    "DAY",
    "FixedQuota",
    "Ledger",
    "Quota",
    "QuotaUsage",
    "Quotas",
    "RollingQuota",
    "Slot",
    "Spent",
    "WarmupQuota",
    "hold_ttl",
    "job_quotas",
    "quota_for",
    "utc_minute",
    "utc_second",
]

DAY = 86400.0
BUCKETS_PER_WINDOW = 1440
RECHECK = 0.05  # the shortest wait for a slot: seconds
HOLD_POLL = 1.0  # seconds between looks while held slots (transactions under way) fill a quota
HOLD_MARGIN = 60.0  # seconds a hold outlives the longest transaction
SHORT_WINDOW = 300.0  # a rolling window this short paces: a run waits for its next slot


class Ledger(Protocol):
    """The journal's quota ledger (both journal backends implement it)."""

    def ledger_hold(
        self, account: str, since: float, limit: int, now: float, expires: float
    ) -> int | None: ...
    def ledger_keep(
        self, hold: int, account: str, start: float, width: float, keep_until: float | None
    ) -> None: ...
    def ledger_release(self, hold: int) -> None: ...
    def ledger_give_back(self, account: str, start: float, width: float) -> None: ...
    def ledger_usage(self, account: str, since: float, now: float) -> LedgerUsage: ...
    def ledger_first(self, account: str) -> float | None: ...
    def ledger_prune(self, now: float) -> None: ...
    def ledger_seed(self, account: str, buckets: list[tuple[float, float, int]]) -> bool: ...
    def sent_days(self) -> list[tuple[float, int]]: ...


def hold_ttl(timeouts: Timeouts) -> float:
    """How long a held slot lasts: longer than any transaction can (MAIL, RCPT, DATA and
    the reply to the content, each within its timeout), plus a margin."""
    return timeouts.data_end + 3 * timeouts.command + HOLD_MARGIN


def _day_start(now: float) -> float:
    # POSIX time has no leap seconds: multiples of 86400 are UTC midnights
    return math.floor(now / DAY) * DAY


class Quota:
    """One account's budget in the ledger. Subclasses say where the window lies, how wide
    a bucket is, and the limit; this class holds, keeps and gives back slots."""

    label: str  # who the quota is for, in messages: "relay smtp.example:587", "warm-up"
    kind: str  # "fixed", "rolling" or "warmup" (`QuotaUsage.kind`)

    def __init__(self, account: str, ledger: Ledger, *, ttl: float) -> None:
        self.account = account
        self._ledger = ledger
        self._ttl = ttl
        # slots this process counted as accepted whose transaction is not over: the relay
        # may still refuse the content (then the slot comes back), so they do not spend
        # the quota yet (`wait`)
        self.settling = 0
        self.holding = 0  # slots this process holds for transactions not at DATA yet

    # --- what each kind says ------------------------------------------------------------

    def since(self, now: float) -> float:
        """Where the window counted at `now` begins."""
        raise NotImplementedError

    def width(self) -> float:
        """The width of this quota's buckets."""
        raise NotImplementedError

    def limit(self, now: float) -> int:
        """The budget of the window at `now`."""
        raise NotImplementedError

    def keep_until(self, start: float) -> float | None:
        """Until when a bucket starting at `start` matters (None: for good)."""
        return start + self.width() + DAY

    def _frees_at(self, now: float, usage: LedgerUsage, limit: int) -> float:
        """When the next slot frees, counting held slots as accepted now (they may be)."""
        raise NotImplementedError

    def spent(self, now: float) -> str:
        """What a full window means, for the run's last line; held slots of other runs
        (or of a run that was killed) say when they lapse."""
        words = self._spent_words(now)
        usage = self.read(now)
        if usage.holds and not (self.holding or self.settling):
            count = len(usage.holds)
            words += (
                f"; {count} held slot{'' if count == 1 else 's'} of other runs lapse "
                f"from {utc_second(usage.holds[0])}"
            )
        return words

    def _spent_words(self, now: float) -> str:
        raise NotImplementedError

    def patience(self) -> float:
        """The longest wait for a slot worth sleeping through (0: the caller's)."""
        return 0.0

    # --- the ledger ---------------------------------------------------------------------

    def read(self, now: float) -> LedgerUsage:
        """The ledger's window at `now`."""
        return self._ledger.ledger_usage(self.account, self.since(now), now)

    def hold(self, now: float) -> int | None:
        """Hold one slot: its id, or None when the window is full."""
        return self._ledger.ledger_hold(
            self.account, self.since(now), self.limit(now), now, now + self._ttl
        )

    def keep(self, hold: int, now: float) -> float:
        """Count a held slot as accepted at `now`; the start of its bucket."""
        width = self.width()
        start = math.floor(now / width) * width
        self._ledger.ledger_keep(hold, self.account, start, width, self.keep_until(start))
        return start

    def release(self, hold: int) -> None:
        self._ledger.ledger_release(hold)

    def give_back(self, start: float) -> None:
        self._ledger.ledger_give_back(self.account, start, self.width())

    def wait(self, now: float) -> float:
        """Seconds until a slot may be free (a full window; > 0)."""
        usage = self.read(now)
        limit = self.limit(now)
        if usage.accepted + len(usage.holds) < limit:
            # a slot freed since the hold was refused: ask again soon (not at once: should the
            # read and the hold ever disagree, this must not become a busy loop)
            return RECHECK
        wait = self._frees_at(now, usage, limit) - now
        if self.holding or self.settling:  # our transactions under way may give theirs back
            wait = min(wait, HOLD_POLL)
        elif usage.holds:  # other runs' (or a killed run's): the first lapses then at the latest
            wait = min(wait, usage.holds[0] - now)
        return max(wait, RECHECK)

    def usage(self, now: float) -> QuotaUsage:
        """The window at `now` (one or two ledger reads)."""
        usage = self.read(now)
        limit = self.limit(now)
        full = usage.accepted + len(usage.holds) >= limit
        return QuotaUsage(
            account=self.account,
            kind=self.kind,
            rate=self.describe(),
            window=self.window_words(),
            used=usage.accepted,
            held=len(usage.holds),
            limit=limit,
            frees_at=self._frees_at(now, usage, limit) if full else None,
            held_until=max(usage.holds, default=None),
        )

    def describe(self) -> str:
        raise NotImplementedError

    def window_words(self) -> str:
        raise NotImplementedError


class RollingQuota(Quota):
    """At most N accepted recipients in any `per` seconds ending now ("10000/24h")."""

    kind = "rolling"

    def __init__(self, rate: Rate, account: str, ledger: Ledger, *, ttl: float, label: str):
        super().__init__(account, ledger, ttl=ttl)
        self.rate = rate
        self.label = label
        self._width = max(1.0, rate.per / BUCKETS_PER_WINDOW)

    def since(self, now: float) -> float:
        return now - self.rate.per

    def width(self) -> float:
        return self._width

    def limit(self, now: float) -> int:
        return self.rate.limit

    def patience(self) -> float:
        # a short window paces: its next slot frees within it ("10/1min", "5/90s"), so
        # the wait is for it, not a reason to stop
        return self.rate.per + self._width if self.rate.per <= SHORT_WINDOW else 0.0

    def keep_until(self, start: float) -> float | None:
        return start + self._width + self.rate.per

    def _frees_at(self, now: float, usage: LedgerUsage, limit: int) -> float:
        # a bucket counts until its end leaves the window: at start + width + per
        excess = usage.accepted + len(usage.holds) - limit + 1
        freed = 0
        for start, width, accepted in usage.buckets:
            freed += accepted
            if freed >= excess:
                return start + width + self.rate.per
        # held slots fill it: once kept, they leave a window from now at the latest
        return now + self._width + self.rate.per

    def _spent_words(self, now: float) -> str:
        usage = self.read(now)
        frees = self._frees_at(now, usage, self.limit(now))
        return (
            f"{self.label}: {self.rate} rolling quota used ({usage.accepted} accepted in "
            f"{self.window_words()}); the next slot frees at {utc_second(frees)}"
        )

    def describe(self) -> str:
        return str(self.rate)

    def window_words(self) -> str:
        period = describe_period(self.rate.per)
        return f"the last {period[:-3] + ' min' if period.endswith('min') else _spaced(period)}"


def _spaced(period: str) -> str:
    """24h -> 24 h, 7d -> 7 d, 90s -> 90 s."""
    return period[:-1] + " " + period[-1]


class FixedQuota(Quota):
    """A budget per clock-aligned UTC hour or UTC day ("1000/h", "10000/day")."""

    kind = "fixed"

    def __init__(self, rate: Rate, account: str, ledger: Ledger, *, ttl: float, label: str):
        super().__init__(account, ledger, ttl=ttl)
        self.rate = rate
        self.label = label

    def since(self, now: float) -> float:
        return math.floor(now / self.rate.per) * self.rate.per

    def width(self) -> float:
        return self.rate.per

    def limit(self, now: float) -> int:
        return self.rate.limit

    def keep_until(self, start: float) -> float | None:
        return start + self.rate.per + DAY

    def _frees_at(self, now: float, usage: LedgerUsage, limit: int) -> float:
        return self.since(now) + self.rate.per

    def _spent_words(self, now: float) -> str:
        usage = self.read(now)
        return (
            f"{self.label}: {self.rate} quota used ({usage.accepted} accepted "
            f"{self.window_words()}); the next slot frees at "
            f"{utc_second(self._frees_at(now, usage, self.limit(now)))}"
        )

    def describe(self) -> str:
        return str(self.rate)

    def window_words(self) -> str:
        return "this UTC hour" if self.rate.per == 3600.0 else "today (UTC)"


class WarmupQuota(Quota):
    """The warm-up's cap of accepted recipients per UTC day, for one sender domain."""

    label = "warm-up"
    kind = "warmup"

    def __init__(self, warmup: Warmup, domain: str, ledger: Ledger, *, ttl: float) -> None:
        super().__init__(f"warmup:{domain}", ledger, ttl=ttl)
        self.warmup = warmup
        self._first: float | None = None  # day 1's start, once the ledger has one
        # the journal's own acceptances per day, read (not written) while the ledger has
        # no history for the warm-up: `status` before the first run that counts them
        self._journal: list[tuple[float, float, int]] | None = None

    def backfill(self) -> None:
        """Carry the journal's accepted recipients (sent before the warm-up was added)
        into a ledger that has no history for it, as daily buckets kept for good, so that
        day 1 is the first day the journal sent on and today's count includes them; a
        ledger with history is left alone (idempotent). Once a run, before any slot."""
        days = self._ledger.sent_days()
        if days:
            self._ledger.ledger_seed(self.account, [(day, DAY, n) for day, n in days])
        self._first = None
        self._journal = None

    def _history(self) -> list[tuple[float, float, int]]:
        """The journal's daily buckets when the ledger has no history (else none)."""
        if self._start() is not None:
            return []
        if self._journal is None:
            self._journal = [(day, DAY, n) for day, n in self._ledger.sent_days()]
        return self._journal

    def read(self, now: float) -> LedgerUsage:
        found = super().read(now)
        since = self.since(now)
        extra = [b for b in self._history() if b[0] + b[1] > since and b[2] > 0]
        if not extra:
            return found
        return LedgerUsage(sorted(extra + found.buckets, key=lambda b: b[0] + b[1]), found.holds)

    def _start(self) -> float | None:
        """The ledger's first day (read again while it has none)."""
        if self._first is None:
            self._first = self._ledger.ledger_first(self.account)
        return self._first

    def _day_one(self) -> float | None:
        """Day 1's start: the ledger's first, else the journal's first sending day."""
        first = self._start()
        if first is None and (history := self._history()):
            return history[0][0]
        return first

    def day(self, now: float) -> int:
        """Today's day of the warm-up (1: no acceptance recorded before today)."""
        first = self._day_one()
        today = _day_start(now)
        if first is None or first > today:
            return 1
        return round((today - first) / DAY) + 1

    def since(self, now: float) -> float:
        return _day_start(now)

    def width(self) -> float:
        return DAY

    def limit(self, now: float) -> int:
        return self.warmup.cap(self.day(now))

    def keep_until(self, start: float) -> float | None:
        return None  # the history says which day of the warm-up it is

    def _frees_at(self, now: float, usage: LedgerUsage, limit: int) -> float:
        return _day_start(now) + DAY

    def _spent_words(self, now: float) -> str:
        day = self.day(now)
        tomorrow = _day_start(now) + DAY
        cap = self.warmup.cap(day)
        return (
            f"warm-up day {day}: today's cap of {cap} accepted "
            f"recipient{'' if cap == 1 else 's'} is reached; tomorrow's cap is "
            f"{self.warmup.cap(day + 1)} from {utc_minute(tomorrow)}"
        )

    def usage(self, now: float) -> QuotaUsage:
        found = super().usage(now)
        day = self.day(now)
        return replace(
            found,
            warmup_day=day,
            started=(first := self._day_one()) is not None and first <= _day_start(now),
            tomorrow=self.warmup.cap(day + 1),
            full=math.floor(self.warmup.until),
            full_day=self.warmup.full_day(),
        )

    def describe(self) -> str:
        return "warm-up"

    def window_words(self) -> str:
        return "today (UTC)"


def quota_for(
    relay: RelayConfig, ledger: Ledger, *, ttl: float
) -> FixedQuota | RollingQuota | None:
    """The quota of a relay's ``rate:`` (None for a pace or no rate), keyed by its URL
    (the account: user, host and port; never a password)."""
    if relay.rate is None:
        return None
    rate = parse_rate(relay.rate)
    if not rate.is_quota:
        return None
    label = f"relay {relay.name}"
    if rate.rolling:
        return RollingQuota(rate, relay.url, ledger, ttl=ttl, label=label)
    return FixedQuota(rate, relay.url, ledger, ttl=ttl, label=label)


@dataclass
class Slot:
    """The slots one transaction holds, in each quota that applies to its message.

    Whoever takes a Slot closes it (`close`, in a `finally`): what was not accepted goes
    back, whatever ended the transaction."""

    holds: list[tuple[Quota, int]]
    wall: Callable[[], float] = time.time
    kept: list[tuple[Quota, float]] = field(default_factory=list)  # quota, bucket start
    accepted: bool | None = None  # the outcome, once known (None: unknown, keep)

    def sending(self) -> None:
        """The content starts to go: count the slots as accepted from now on."""
        now = self.wall()
        holds, self.holds = self.holds, []
        for quota, hold in holds:
            self.kept.append((quota, quota.keep(hold, now)))
            quota.holding -= 1
            quota.settling += 1

    def close(self) -> None:
        """The transaction is over: give back what the relay did not accept (or hold)."""
        holds, self.holds = self.holds, []
        for quota, hold in holds:
            quota.release(hold)
            quota.holding -= 1
        kept, self.kept = self.kept, []
        for quota, start in kept:
            if self.accepted is False:
                quota.give_back(start)
            quota.settling -= 1


class Spent(NamedTuple):
    """No slot: the quota that is full, and the seconds until it frees one."""

    quota: Quota
    wait: float


class Quotas:
    """The quotas a run's messages take slots from: the job's warm-up (every relay),
    then the relay's own."""

    def __init__(
        self,
        ledger: Ledger,
        relays: Mapping[str, Quota],
        warmup: WarmupQuota | None = None,
        *,
        wall: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        stopped: Callable[[], bool] = lambda: False,
    ) -> None:
        self._ledger = ledger
        self._relays = relays
        self.warmup = warmup
        self._wall = wall
        self._sleep = sleep  # the run's: a stop request ends it at once
        self._stopped = stopped

    def now(self) -> float:
        """The quotas' wall clock."""
        return self._wall()

    def applies(self, relay: str) -> bool:
        """Does a message through this relay take a slot?"""
        return self.warmup is not None or relay in self._relays

    def all(self) -> list[Quota]:
        quotas: list[Quota] = [self.warmup] if self.warmup is not None else []
        return quotas + list(self._relays.values())

    def take(self, relay: str) -> Slot | Spent:
        """Hold a slot in each quota of a message through `relay`, or none at all."""
        now = self._wall()
        quotas: Sequence[Quota] = [
            q for q in (self.warmup, self._relays.get(relay)) if q is not None
        ]
        holds: list[tuple[Quota, int]] = []
        for quota in quotas:
            hold = quota.hold(now)
            if hold is None:
                for taken, held in holds:
                    taken.release(held)
                    taken.holding -= 1
                return Spent(quota, quota.wait(now))
            quota.holding += 1
            holds.append((quota, hold))
        return Slot(holds, wall=self._wall)

    def check(self, relay: str, max_wait: float) -> Spent | None:
        """A quota of `relay` that has no slot for longer than `max_wait` (or its
        `patience`), from a read of the ledger that holds nothing: a spent relay is not
        dialled (None: it may have one, `acquire` says)."""
        now = self._wall()
        for quota in (self.warmup, self._relays.get(relay)):
            if quota is None:
                continue
            usage = quota.read(now)
            if usage.accepted + len(usage.holds) < quota.limit(now):
                continue
            wait = quota.wait(now)
            if wait > max(max_wait, quota.patience()):
                return Spent(quota, wait)
        return None

    async def acquire(self, relay: str, max_wait: float, within: float = math.inf) -> Slot | Spent:
        """A slot, sleeping for it while that takes at most `max_wait` seconds (or the
        quota's `patience`, a short rolling window's) and ends within `within` seconds of
        this call (a send window closing first); a longer wait is answered at once (the
        caller stops using the relay that long), and so is any once the run stops."""
        deadline = self._wall() + within
        while True:
            taken = self.take(relay)
            if isinstance(taken, Slot) or taken.wait > max(max_wait, taken.quota.patience()):
                return taken
            if self._stopped() or self._wall() + taken.wait > deadline:
                return taken
            self._say_wait(taken)
            await self._sleep(taken.wait)

    def _say_wait(self, spent: Spent) -> None:
        """Log a wait for held slots of other runs (a killed run's lapse on their own)."""
        quota = spent.quota
        if quota.holding or quota.settling or spent.wait < 1.0:
            return
        now = self._wall()
        usage = quota.usage(now)
        if not usage.held:
            return
        event(
            logging.INFO,
            "quota_wait",
            f"{quota.label}: waiting for {usage.held} held slot{'' if usage.held == 1 else 's'} "
            f"to lapse, until {utc_second(now + spent.wait)}",
            account=quota.account,
            seconds=spent.wait,
        )

    def usage(self) -> list[QuotaUsage]:
        """Each quota's window now, the warm-up's first (for status and the report)."""
        now = self._wall()
        found = [self.warmup.usage(now)] if self.warmup is not None else []
        found.extend(replace(quota.usage(now), relay=name) for name, quota in self._relays.items())
        return found

    def prune(self) -> None:
        """Forget what no window needs any more, and carry the journal's acceptances
        into a warm-up without history (once a run, as it starts)."""
        if self.all():
            self._ledger.ledger_prune(self._wall())
        if self.warmup is not None:
            self.warmup.backfill()


def job_quotas(
    job: Job,
    ledger: Ledger,
    relays: Sequence[RelayConfig],
    *,
    wall: Callable[[], float] = time.time,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    stopped: Callable[[], bool] = lambda: False,
) -> Quotas:
    """A job's quotas: each relay's /h, /day or rolling rate and the job's warm-up;
    `sleep` is how a wait for a slot naps (the run's: a stop ends it), `stopped` whether
    the run stops."""
    ttl = hold_ttl(job.delivery.timeouts)
    by_relay: dict[str, Quota] = {
        config.name: quota
        for config in relays
        if (quota := quota_for(config, ledger, ttl=ttl)) is not None
    }
    warmup = None
    domain = sender_domain(job.from_addr) if job.warmup is not None else None
    if job.warmup is not None and domain is not None:
        warmup = WarmupQuota(job.warmup, domain, ledger, ttl=ttl)
    return Quotas(ledger, by_relay, warmup, wall=wall, sleep=sleep, stopped=stopped)
