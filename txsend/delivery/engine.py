"""The async pipeline: journal → render → dispatcher → relay connections → journal.

The producer claims due rows from the journal (pending first, then deferred rows whose
retry time comes during the run) and renders them; a semaphore bounds how many are in
the pipeline, so memory stays flat for any list size. The dispatcher gives each message
to a relay (`RelayPool.choose`: priority, then weight, skipping open circuits); each
relay has `connections` workers, each keeping one SMTP connection for up to
`messages_per_connection` transactions. Every outcome is classified by
`txsend.delivery.classify` and settled in one place (`_settle`) by the pure rules of
`txsend.delivery.outcomes` (hand-backs, retries, the journal record, the error-rate abort),
then written through the group committer.

Waiting has one owner: the supervisor task (`_supervise`). The other tasks only ever nap
for bounded moments and wake on a stop; the supervisor holds the pool's outage
(`RelayPool.outage_since`) against `delivery.give_up_unreachable`, stops the run when no
relay is left or usable, and says in `RunStats.waiting` what the run waits for and when it
will give up (`outcomes.give_up_reason`, `outcomes.waiting_reason`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

from txsend.content.renderer import Renders
from txsend.delivery.classify import classify, classify_connect
from txsend.delivery.committer import GroupCommitter
from txsend.delivery.domains import FREE, RESERVED, STARTED, DomainGate, DomainState
from txsend.delivery.mx import MxLookup
from txsend.delivery.mxwait import MxWaits
from txsend.delivery.outcomes import (
    ErrorRate,
    Outlook,
    Tally,
    TemplateErrors,
    Transaction,
    abandoned,
    blames_relay,
    error_class,
    give_up_reason,
    may_hand_back,
    relay_error,
    settle,
    throttles_relay,
    waiting_reason,
)
from txsend.delivery.quotas import Slot, Spent, WarmupQuota, job_quotas
from txsend.delivery.ratelimit import limiter_for
from txsend.delivery.relays import Circuit, RelayPool, RelayState, cool_down_cap
from txsend.delivery.schedulegate import ScheduleGate
from txsend.delivery.smtp import RelayDown, SendResult, SmtpConnection
from txsend.errors import RowError, RowFailed, TemplateRowError
from txsend.job.credentials import RelaySecret
from txsend.job.spec import Job
from txsend.job.suppression import SuppressionList
from txsend.journal.api import JournalBackend
from txsend.journal.records import Claimed, Record
from txsend.logs import LOGGER, event
from txsend.models import RelayConfig, RenderedMessage, Row, State
from txsend.reporting.stats import RunStats

CLAIM_BATCH = 256
RETRY_WAIT_IN_RUN = 60.0  # a run waits for deferred rows due within this many seconds
# what `_ready_to_send` says of a message: it goes, it is handed back, its window closes
GO, BACK, CLOSING = "go", "back", "closing"
RATE_MAX_WAIT = 60.0  # longer than this for a rate slot: the relay's quota is spent
GATE_LOOK = 1.0  # with a schedule: seconds between looks at messages held for a domain's pace
CONNECT_PAUSE = 0.2  # seconds a worker waits after a failed connection
SUPERVISE_TICK = 0.25  # seconds between the supervisor's looks at the run
_END = None  # end marker in the queues (in `_ready` also: the dispatcher, look again)
# a throttling reply here is about the recipient's domain, not the relay


@dataclass(frozen=True)
class SendOptions:
    run_id: int
    concurrency: int | None = None  # connections per relay, overriding the job
    limit: int | None = None  # at most this many rows this run
    dry_run: bool = False  # render and count; send nothing
    resend_unknown: bool = True  # delivery.on_unknown == "resend"
    grace: float = 10.0  # seconds in-flight transactions get after a stop request
    tick: float = 0.25  # seconds between progress callbacks


@dataclass(slots=True)
class _Item:
    """A rendered message in the pipeline, with what the outcome rules count of its row."""

    message: RenderedMessage
    tally: Tally
    domain: DomainState
    held: int = FREE  # what it holds of its domain: nothing, a reservation, a started slot
    slot: Slot | None = None  # quota slots held for the transaction under way

    @property
    def claimed(self) -> Claimed:
        return self.tally.claimed

    @property
    def key(self) -> str:
        return self.tally.claimed.key


class Engine:
    """Sends a job's due rows; returns what happened as RunStats."""

    def __init__(
        self,
        job: Job,
        journal: JournalBackend,
        renderer: Renders,
        relays: Sequence[tuple[RelayConfig, RelaySecret | str | None]],
        options: SendOptions,
        on_tick: Callable[[RunStats], None] | None = None,
        suppressions: SuppressionList | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.job = job
        self.journal = journal
        self.renderer = renderer
        self.options = options
        self.stats = RunStats()
        self._on_tick = on_tick
        self._suppressions = suppressions if suppressions is not None else SuppressionList()
        self._policy = job.delivery.retry
        self._pool = _relay_pool(relays, journal, job.delivery.give_up_unreachable)
        # quotas counted per accepted recipient in the journal; `wall` is their clock
        self._quotas = job_quotas(
            job,
            journal,
            [config for config, _ in relays],
            wall=wall,
            sleep=self._nap,
            stopped=lambda: self._stopping,
        )
        self._ready: asyncio.Queue[_Item | None] = asyncio.Queue()
        self._relay_queues: dict[str, asyncio.Queue[_Item | None]] = {}
        self._in_pipeline: set[str] = set()
        self._down: set[str] = set()  # relays whose last connection attempt failed
        self._committer: GroupCommitter | None = None
        self._workers: set[asyncio.Task[None]] = set()
        self._slots: asyncio.Semaphore | None = None
        self._stopping = False
        self._stopped = asyncio.Event()  # set with _stopping: wakes every nap
        # set with _stopping, and when the last message in flight is settled: the producer
        # waiting for retries then looks again at once (a run ends when its work does)
        self._producer_wake = asyncio.Event()
        self._waiting_for_relay = False  # the dispatcher holds a message no relay can take
        self._retry_due: float | None = None  # wall time the producer waits for, if it does
        self._producer_done = False
        self._error_rate = ErrorRate(job.delivery.abort_on)
        self._random = random.Random()
        self._crash: BaseException | None = None
        self._template_errors = TemplateErrors()
        self._limited_to: set[str] = set()  # with --limit: the rows this run took on
        self._limit_left = 0  # with --limit: the rows it could still take when it ended
        self._refused: set[str] = set()  # rows the journal would not mark sending (fenced)
        self._started = time.monotonic()
        # schedule: (dry runs send nothing, so they wait for no window)
        schedule = None if options.dry_run else job.schedule
        self._gate = ScheduleGate(schedule, job.recipients.timezone, wall, RETRY_WAIT_IN_RUN)
        # a dry run skips the rows a real run skips for their time zone
        self._dry_zones = ScheduleGate.zones_only(job.schedule, job.recipients.timezone, wall)
        self._retries_checked_at = 0.0  # when _due_retries last claimed (wall clock)
        self._domains = DomainGate(job.domains, self.stats, time.monotonic)
        self._room = asyncio.Event()  # a domain whose rows were passed over has room again
        # rows whose domain's MX is being looked up (dry runs look nothing up)
        self._mx: MxWaits | None = None
        if self._domains.uses_mx and not options.dry_run:
            lookup = MxLookup(job.delivery.timeouts.connect)
            self._mx = MxWaits(lookup, self._domains, self._room.set)
        self._wake: asyncio.TimerHandle | None = None  # the dispatcher's next look at its held
        self._wake_at = 0.0

    # --- entry points ----------------------------------------------------------------

    async def run(self) -> RunStats:
        """Send everything due (or up to --limit); stop early on request, abort or relay loss."""
        connections = sum(self._connections(r.config) for r in self._pool.relays)
        self._slots = asyncio.Semaphore(max(64, 4 * connections))
        committer = self._committer = GroupCommitter(self.journal, self.options.run_id)
        committer.start()
        if not self.options.dry_run:
            self._quotas.prune()
        background = [
            asyncio.create_task(self._tick(), name="progress"),
            asyncio.create_task(self._watch_journal(), name="journal-watch"),
        ]
        producer = asyncio.create_task(self._produce(), name="producer")
        dispatcher: asyncio.Task[None] | None = None
        if not self.options.dry_run and self._pool.relays:
            self._start_workers()
            dispatcher = asyncio.create_task(self._dispatch(), name="dispatcher")
            background.append(asyncio.create_task(self._supervise(), name="supervisor"))
        try:
            await producer
            if dispatcher is not None:
                await dispatcher
                # a worker cancelled at the end of the grace period (or by a second signal)
                # is not an error; a crash was kept by _worker_exited
                await asyncio.gather(*self._workers, return_exceptions=True)
        finally:
            tasks = [producer, *self._workers, *([dispatcher] if dispatcher else [])]
            await self._wind_up(tasks, background)
        return self._result()

    async def _wind_up(
        self, tasks: list[asyncio.Task[None]], background: list[asyncio.Task[None]]
    ) -> None:
        """Stop every task, close the committer and take the run's last figures."""
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for task in background:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._mx is not None:
            await self._mx.close()  # rows still waiting for a lookup stay due
        assert self._committer is not None
        await self._committer.close()
        # Transactions abandoned after DATA began (grace over, second signal): their
        # rows are in RFC 1047's window, so they become `unknown` now, not on resume.
        self.stats.abandoned = self.journal.recover()
        self.stats.schedule = self._gate.finish(self.journal)  # past not_after: expired
        if self.stats.schedule is not None and self.options.limit is not None:
            self.stats.schedule.limit_unmet = self._gate.cut_short(
                self._limit_left, self._limited_to
            )
        if self.stats.schedule is not None and self.stats.schedule.expired:
            self.stats.outcomes[State.EXPIRED] += self.stats.schedule.expired  # this run's
        if self.stats.stop_reason is None:
            # a shared journal: the job was aborted by another worker, or the lease lost
            self.stats.stop_reason = self.journal.stop_requested()
        self.stats.ended = time.monotonic()
        self.stats.ended_at = time.time()
        self._collect_relay_stats()
        if self._on_tick is not None:
            self._on_tick(self.stats)

    def _result(self) -> RunStats:
        """The stats of a run wound up, or the error it ended with."""
        if self._crash is not None:
            raise self._crash
        failure = self._template_errors.failure()
        if failure is not None:  # every row this run took on failed one way: a bad job
            raise failure
        self.stats.not_sent = len(self._in_pipeline)
        self.stats.waiting = None
        if self.stats.unreachable:
            self.stats.ever_connected = self._pool.ever_connected
        return self.stats

    def request_stop(self, signum: int | None = None, reason: str | None = None) -> None:
        """Stop taking work; in-flight transactions get `grace` seconds, a second call none."""
        if self._stopping:
            if signum is not None:
                for task in list(self._workers):
                    task.cancel()
            return
        self._stopping = True
        self._stopped.set()
        self._producer_wake.set()
        if signum is not None:
            self.stats.signal = signum
            self.stats.stop_reason = "interrupted"
            event(
                logging.WARNING,
                "interrupted",
                f"signal {signum}: finishing what is in flight ({self.options.grace:g} s grace)",
                signal=signum,
            )
        elif reason is not None:
            self.stats.stop_reason = reason
            event(logging.ERROR, "abort", f"stopping: {reason}", reason=reason)
        self._ready.put_nowait(_END)  # wake the dispatcher
        self._drain_relay_queues()  # and unblock it if it waits on a relay's full queue
        asyncio.get_running_loop().call_later(self.options.grace, self._cancel_workers)

    # --- producer --------------------------------------------------------------------

    async def _produce(self) -> None:
        # --limit counts rows, not their retries, nor the seed copies that go with them
        remaining = self.options.limit
        # rows a claim may take beyond --limit: the seed copies right after the last row
        slack = len(self.job.seeds)
        first_pass = True
        try:
            while not self._stopping and await self._window_open():
                self._room.clear()  # from here on, room (or a lookup's end) wakes the nap
                if await self._take_back():  # rows passed over come first, once there is room
                    continue
                batch: list[Claimed] = []
                cut = fresh = False
                if first_pass and (remaining is None or remaining > 0 or slack):
                    size = self._claim_size()
                    size = size if remaining is None else min(size, remaining + slack)
                    batch = await self._off_loop(
                        partial(
                            self.journal.claim, size, include_unknown=self.options.resend_unknown
                        )
                    )
                    first_pass = bool(batch)
                    if remaining is not None:
                        batch, remaining, cut = within_limit(batch, remaining)
                        first_pass = first_pass and not cut
                        self._limited_to.update(c.key for c in batch)
                        fresh = True
                if not batch and (self._domains.skipping or (self._mx and self._mx.busy)):
                    # rows passed over wait for room in their domain's backlog (or for
                    # their domain's MX lookup)
                    await self._nap(0.5, wake=self._room)
                    continue
                if not batch and not self.options.dry_run:
                    batch = await self._due_retries()
                if not batch:
                    batch = self._gate.release()  # rows whose window opened meanwhile
                if not batch:
                    if await self._wait_for_retries():
                        continue
                    break
                for claimed in batch:
                    if self._stopping:
                        break
                    await self._admit(claimed)
                if fresh and remaining is not None and (left := self._gate.left(batch)):
                    # --limit counts the rows taken: new rows left for their window do not
                    rows = [c for c in left if c.seed_of is None]
                    remaining += len(rows)
                    self._limited_to.difference_update(c.key for c in left)
                    first_pass = first_pass or (bool(rows) and not cut)
        finally:
            self._limit_left = remaining or 0
            self._producer_done = True
            self._maybe_finished()

    async def _off_loop(self, call: Callable[[], list[Claimed]]) -> list[Claimed]:
        """A claim: a shared journal's round trip runs in a thread, so the connections
        keep being served meanwhile; a local SQLite claim is quicker than the hand-off."""
        if not self.journal.shared:
            return call()
        return await asyncio.to_thread(call)

    async def _due_retries(self) -> list[Claimed]:
        """Deferred rows due now (with --limit, only this run's rows)."""
        assert self._committer is not None
        self._committer.flush()  # a row deferred a moment ago is not due again yet
        # a copy: the set changes while the thread reads it; held rows wait for their window
        busy = self._in_pipeline | self._gate.held
        self._retries_checked_at = time.time()
        batch = await self._off_loop(
            partial(self.journal.claim_retries, self._claim_size(), busy=busy)
        )
        if self.options.limit is not None:
            batch = [c for c in batch if c.key in self._limited_to]
        return batch

    async def _take_back(self) -> bool:
        """Admit rows passed over earlier whose domain has room now, and rows whose
        domain's MX lookup is over; False: there were none."""
        taken = self._domains.refill(CLAIM_BATCH)
        looked_up = self._mx.take(CLAIM_BATCH) if self._mx is not None else []
        if not taken and not looked_up:
            return False
        keys = [key for _state, key in taken]
        for claimed in await self._off_loop(partial(_find_due, self.journal, keys)):
            if self._stopping:
                break
            await self._admit(claimed, taken_back=True)
        # (a domain known now may have its backlog full: these may be passed over)
        for claimed in await self._off_loop(partial(_find_due, self.journal, looked_up)):
            if self._stopping:
                break
            await self._admit(claimed)
        return True

    async def _admit(self, claimed: Claimed, *, taken_back: bool = False) -> None:
        """Suppress, render and queue one claimed row, if its send window is open (or pass
        it over while its domain's backlog is full: `txsend.delivery.domains`)."""
        try:
            if self.options.dry_run:
                self._dry_zones.admit(claimed)  # (only a time zone that is not one is raised)
            elif not self._gate.admit(claimed):
                return  # its window is closed: it stays due in the journal
        except RowError as exc:  # its time zone is not one
            self._record(Record(claimed.key, State.SKIPPED, reply=exc.reason))
            return
        if self._mx is not None and (lookup := self._domains.needs_mx(claimed.address)):
            self._mx.park(lookup, claimed.key)  # back when its MX is known; others go on
            return
        domain = self._domains.domain_of(claimed.address)
        if not taken_back and not self.options.dry_run and self._domains.skip(domain, claimed.key):
            return
        suppressed = self._suppressions.reason(claimed.address)
        if suppressed is not None:
            self._record(Record(claimed.key, State.SKIPPED, reply=f"suppressed: {suppressed}"))
            return
        row = Row(claimed.row, claimed.key, claimed.address, claimed.data)
        message = self._render(row, claimed.message_id)
        if message is None:
            return
        self.stats.queued += 1
        if self.options.dry_run:
            return
        assert self._slots is not None
        await self._slots.acquire()
        self._in_pipeline.add(claimed.key)
        domain.backlog += 1
        self._ready.put_nowait(_Item(message, Tally(claimed), domain))

    def _render(self, row: Row, message_id: str) -> RenderedMessage | None:
        try:
            message = self.renderer.render(row, message_id)
        except RowFailed as exc:
            self._trust_template()
            self._record(Record(row.key, State.FAILED, reply=exc.reason))
            return None
        except TemplateRowError as exc:
            self._template_error(exc)
            return None
        except RowError as exc:
            self._trust_template()
            self._record(Record(row.key, State.SKIPPED, reply=exc.reason))
            return None
        self._trust_template()
        if len(message.data) > self.job.max_message_size:
            reason = (
                f"message is {len(message.data)} bytes, over max_message_size "
                f"({self.job.max_message_size})"
            )
            self._record(Record(row.key, State.FAILED, reply=reason))
            return None
        return message

    def _template_error(self, exc: TemplateRowError) -> None:
        """Skip the row, unless the run's first rows all fail this way (then stop: 65)."""
        skipped, stop = self._template_errors.failed(exc)
        self._skip_template_errors(skipped)
        if stop is not None and not self._stopping:
            self.request_stop(reason=stop)

    def _trust_template(self) -> None:
        """A row rendered (or failed otherwise): held template errors are the rows' own."""
        self._skip_template_errors(self._template_errors.trust())

    def _skip_template_errors(self, errors: list[TemplateRowError]) -> None:
        """Skip the rows of template errors that are the rows' own."""
        for exc in errors:
            self._record(Record(exc.key or "", State.SKIPPED, reply=exc.reason))

    def _claim_size(self) -> int:
        """Rows per claim: a shared journal gets about a second of this worker's pace."""
        if not self.journal.shared:
            return CLAIM_BATCH
        elapsed = time.monotonic() - self._started
        done = sum(self.stats.outcomes.values())
        pace = done / elapsed if elapsed > 1.0 else 0.0
        connections = sum(self._connections(r.config) for r in self._pool.relays)
        return max(2 * connections, min(CLAIM_BATCH, int(pace)))

    async def _watch_journal(self) -> None:
        """A shared journal: stop when another worker aborted the job or the lease is lost."""
        if not self.journal.shared:
            return
        while not self._stopping:
            reason = self.journal.stop_requested()
            if reason is not None:
                self.request_stop(reason=reason)
                return
            await asyncio.sleep(0.25)

    async def _wait_for_retries(self) -> bool:
        """Nothing is due now: wait for a retry due soon, or say the run is over."""
        if self.options.dry_run or self._stopping:
            return False
        self._producer_wake.clear()  # before looking: a drain from now on wakes the nap
        assert self._committer is not None
        self._committer.flush()  # deferrals recorded a moment ago must be visible
        due = self.journal.next_attempt_at()
        if due is not None and due <= self._retries_checked_at and self._gate.held:
            # the retries due that the claim left are held for their window (or in the
            # pipeline): wait for the others' retry times
            due = self.journal.next_attempt_at(after=self._retries_checked_at)
        wait = None if due is None else due - time.time()
        opens = self._gate.release_in()  # a held row's window opening soon (its own clock)
        if opens is None and self._gate.held:
            opens = self._gate.expires_in()  # rows held past not_after expire as the run ends
        if opens is not None and (wait is None or opens < wait):
            wait, due = opens, time.time() + opens
        if (
            not self._in_pipeline
            and (wait is None or wait > RETRY_WAIT_IN_RUN)
            # other workers' rows come back here if one of them dies: wait for them
            and not self.journal.others_busy()
        ):
            return False
        self._retry_due = due
        try:
            nap = 0.2 if wait is None else min(max(wait, 0.05), 0.5)
            await self._nap(nap, wake=self._producer_wake)
        finally:
            self._retry_due = None
        return True

    async def _window_open(self) -> bool:
        """`schedule:`: True when the run may take rows now; waits for a window that opens
        within RETRY_WAIT_IN_RUN, else says the run takes no more."""
        while not self._stopping:
            wait = self._gate.closed_for()
            if wait <= 0:
                return True
            if wait > RETRY_WAIT_IN_RUN:
                ends = self._gate.expires_in()
                if ends is not None:  # no transaction begins before not_after, which is near:
                    await self._nap(min(ends, 1.0))  # the run ends when it passes, expiring
                    continue  # the rows left
                self._gate.stop_taking()
                return False
            await self._nap(min(wait, 1.0))
        return False

    async def _nap(self, seconds: float, *, wake: asyncio.Event | None = None) -> None:
        """Sleep at most `seconds`; a stop request (or `wake`, which a stop also sets)
        ends the nap at once."""
        if self._stopping or seconds <= 0:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await (wake or self._stopped).wait()

    # --- dispatcher ------------------------------------------------------------------

    async def _dispatch(self) -> None:
        """Give each ready message to a relay; stop when the work is over or relays are.

        With no relay available it waits (the supervisor decides when that is given up)."""
        while True:
            if self._domains.parked and not self._stopping:
                await self._dispatch_held()
            item = await self._ready.get()
            if item is _END:
                if self._stopping or self._finished():
                    break
                continue
            if self._stopping:
                self._drop(item)
                continue
            if not self._gate.may_begin(item.claimed):
                self._out_of_window(item)  # its window closed while it was queued
                continue
            domain = item.domain
            if domain.limited:
                if not self._domains.reserve(domain, time.monotonic()):
                    self._domains.park(domain, item)  # the other domains go on meanwhile
                    continue
                item.held = RESERVED
            await self._to_relay(item)
        self._drain_relay_queues()
        for held in self._domains.drain():
            self._drop(held)
        for relay in self._pool.relays:
            for _ in range(self._connections(relay.config)):
                self._relay_queues[relay.name].put_nowait(_END)
        # what is still ready stays as it is in the journal
        while not self._ready.empty():
            leftover = self._ready.get_nowait()
            if leftover is not None:
                self._drop(leftover)
        if self._wake is not None:
            self._wake.cancel()

    async def _dispatch_held(self) -> None:
        """Give relays the held messages whose domain can start them now; look again when
        the next one's pace allows it (or when a transaction of a held domain ends)."""
        now = time.monotonic()
        if self._gate.active:  # those whose window closed meanwhile go back to the journal
            for item in self._domains.take_out(lambda i: not self._gate.may_begin(i.claimed)):
                self._out_of_window(item)
        for _domain, item in self._domains.ready(now):
            item.held = RESERVED
            await self._to_relay(item)
        wait = self._domains.next_wake(now)
        if wait is None:
            return
        if self._gate.active:
            wait = min(wait, GATE_LOOK)  # a window may close before the pace allows them
        if self._wake is not None:
            if self._wake_at <= now + wait:
                return  # the look already planned comes soon enough
            self._wake.cancel()
        self._wake_at = now + wait
        # call_later: the loop's clock (uvloop's) need not be time.monotonic(), and may fire
        # a hair early by it; the callback forgets the handle, so a new one is planned
        self._wake = asyncio.get_running_loop().call_later(wait, self._look_again)

    def _look_again(self) -> None:
        """The dispatcher's planned look at its held messages."""
        self._wake = None
        self._ready.put_nowait(_END)

    async def _to_relay(self, item: _Item) -> None:
        """Give a message to a relay, waiting while none is available (the supervisor
        decides when that is given up)."""
        relay = self._pool.choose(item.tally.failed_relays)
        while relay is None and not self._stopping:
            self._waiting_for_relay = True
            pause = self._pool.next_change()
            await self._nap(0.5 if pause is None else min(max(pause, 0.05), 1.0))
            relay = self._pool.choose(item.tally.failed_relays)
        self._waiting_for_relay = False
        if relay is None:
            self._drop(item)
            return
        await self._relay_queues[relay.name].put(item)

    # --- the supervisor: the one owner of waiting ------------------------------------

    async def _supervise(self) -> None:
        """Decide when the run gives up on its relays; say what it waits for meanwhile."""
        give_up = self.job.delivery.give_up_unreachable
        shown: str | None = None
        while not self._stopping:
            outlook = self._outlook()
            stop = give_up_reason(outlook, give_up)
            if stop is not None:
                self.stats.unreachable = stop.unreachable
                self.request_stop(reason=stop.reason)
                return
            waiting = waiting_reason(outlook, give_up)
            self.stats.waiting = waiting.words if waiting else None
            if self.stats.watcher is not None:
                # nothing to send (retries not due, the relays' quota spent) is not slowness
                idle = outlook.quota_spent is not None or (
                    waiting is not None and waiting.kind == "retry"
                )
                self.stats.watcher.waiting(idle, outlook.now)
            if waiting is not None and waiting.kind != shown:  # logged when the kind changes
                level = logging.WARNING if waiting.kind == "outage" else logging.INFO
                words = waiting.words
                event(level, "waiting", f"waiting: {words}", reason=words, wait=waiting.kind)
            shown = waiting.kind if waiting else None
            await self._nap(SUPERVISE_TICK)

    def _outlook(self) -> Outlook:
        """The run as the supervisor sees it now."""
        pool = self._pool
        return Outlook(
            pool.relays,
            now=time.monotonic(),
            wall=time.time(),
            outage_since=pool.outage_since(),
            all_dead=pool.all_dead,
            quota_spent=pool.quota_spent_until(),
            quota_notes=pool.quota_notes(),
            next_change=pool.next_change(),
            waiting_for_relay=self._waiting_for_relay,
            retry_due=self._retry_due,
            busy=bool(self._in_pipeline),
        )

    def _drain_relay_queues(self) -> None:
        """Take back messages assigned to relays but not started (a stop leaves them unsent)."""
        for queue in self._relay_queues.values():
            ends = 0
            while not queue.empty():
                if (assigned := queue.get_nowait()) is not None:
                    self._drop(assigned)
                else:
                    ends += 1
            for _ in range(ends):  # end markers stay for the workers
                queue.put_nowait(_END)

    def _finished(self) -> bool:
        return self._producer_done and not self._in_pipeline

    def _maybe_finished(self) -> None:
        if self._finished():
            self._ready.put_nowait(_END)

    def _hand_back(self, item: _Item) -> None:
        """A message its relay could not take: to the dispatcher again."""
        self._let_go(item)
        self._ready.put_nowait(item)

    def _domain_start(self, item: _Item) -> bool:
        """Take the message's domain slot as its transaction begins (never waiting)."""
        if item.held != STARTED and not self._domains.start(
            item.domain, item.held, time.monotonic()
        ):
            item.held = FREE  # a reservation it had is given back
            return False
        item.held = STARTED
        return True

    def _let_go(self, item: _Item) -> None:
        """Give back what the message holds of its domain; the dispatcher looks again at
        that domain's held messages."""
        if item.held != FREE:
            if self._domains.let_go(item.domain, item.held):
                self._ready.put_nowait(_END)
            item.held = FREE

    def _drop(self, item: _Item) -> None:
        """Leave a message unsent this run (its row stays due in the journal).

        A message handed back after failed transactions is deferred with its last reply,
        so that the journal counts those attempts."""
        record = abandoned(item.tally, self._policy, now=time.time(), rng=self._random)
        if record is not None:
            if self.stats.watcher is not None:
                self.stats.watcher.outcome(record.state, None, time.monotonic())
            self._conclude(record, item)
        self._release(item)

    def _release(self, item: _Item) -> None:
        key = item.key
        if key in self._in_pipeline:
            self._let_go(item)
            domain = item.domain
            domain.backlog -= 1
            if domain.skipped and domain.backlog < domain.backlog_cap:
                self._room.set()  # the producer takes back rows it passed over
            self._in_pipeline.discard(key)
            assert self._slots is not None
            self._slots.release()
            if not self._in_pipeline:
                self._producer_wake.set()
            self._maybe_finished()

    # --- workers ---------------------------------------------------------------------

    def _start_workers(self) -> None:
        for relay in self._pool.relays:
            count = self._connections(relay.config)
            self._relay_queues[relay.name] = asyncio.Queue(maxsize=count)
            for n in range(count):
                task = asyncio.create_task(self._worker(relay), name=f"{relay.name}#{n}")
                self._workers.add(task)
                task.add_done_callback(self._worker_exited)

    def _connections(self, relay: RelayConfig) -> int:
        return self.options.concurrency or relay.connections

    async def _worker(self, relay: RelayState) -> None:
        queue = self._relay_queues[relay.name]
        connection = SmtpConnection(relay.config, relay.secret, self.job.delivery.timeouts)
        try:
            item = await queue.get()
            while item is not _END:
                following: _Item | None = None
                if self._stopping:
                    connection.withdraw(item.message)
                    self._drop(item)
                elif suppressed := self._suppressions.reason(item.claimed.address):
                    # a bounce since the row was rendered (rendering runs ahead)
                    connection.withdraw(item.message)
                    self._record(Record(item.key, State.SKIPPED, reply=f"suppressed: {suppressed}"))
                    self._release(item)
                elif not connection.holds(item.message) and not self._gate.may_begin(item.claimed):
                    # its window is closed: no rate slot, no transaction (back to the journal)
                    self._out_of_window(item)
                elif (
                    not connection.holds(item.message)
                    and (ready := await self._ready_to_send(relay, connection, item)) != GO
                ):
                    # (a message whose transaction is open already goes on: it began before
                    # a pause or an open circuit could apply, like one in flight)
                    if ready == CLOSING:
                        self._out_of_window(item)  # its slot comes after its window closes
                    else:
                        self._hand_back(item)
                elif not connection.holds(item.message) and not self._gate.may_begin(item.claimed):
                    # its window closed while it waited: no transaction begins outside it
                    self._out_of_window(item)
                elif not self._domain_start(item):
                    # its domain's slot went meanwhile (a throttling reply): held again
                    self._close_slot(item)
                    self._domains.park(item.domain, item, front=True)
                    self._ready.put_nowait(_END)
                else:
                    try:
                        following = await self._send(relay, connection, item, queue)
                    finally:  # whatever ended the transaction: what was not accepted goes back
                        self._close_slot(item)
                # the message whose commands went out with this one's content comes next
                item = following if following is not None else await queue.get()
        finally:
            await asyncio.shield(connection.close())

    def _following(
        self, relay: RelayState, connection: SmtpConnection, queue: asyncio.Queue[_Item | None]
    ) -> _Item | None:
        """The next message of this relay's queue, when it is already there and the
        connection that sends the current one can carry it too (its commands are then
        announced behind the current message's content).

        Not on a rate-limited relay: a slot is taken just before each transaction, and
        the relay would hold the announced one open while the limiter waits."""
        if (
            self._stopping
            or relay.limiter is not None
            or self._quotas.applies(relay.name)
            or queue.empty()
            # counted with the current one: within messages_per_connection
            or connection.transactions >= relay.config.messages_per_connection
        ):
            return None
        following = queue.get_nowait()
        if following is None:  # the end marker: back where every worker finds one
            queue.put_nowait(_END)
        return following

    def _out_of_window(self, item: _Item) -> None:
        """A message whose send window closed before its transaction could begin: its
        slots are given back and its row stays due in the journal (held for its window)."""
        self._close_slot(item)
        self._gate.hold(item.claimed)
        self._drop(item)

    async def _ready_to_send(
        self, relay: RelayState, connection: SmtpConnection, item: _Item
    ) -> str:
        """Wait out throttling, connect, take a rate slot and the quotas' slots (held in
        `item.slot`): GO; BACK hands the message back; CLOSING: its send window closes
        before a slot frees (no slot is waited for beyond the window)."""
        pause = relay.paused_until - time.monotonic()
        if pause > 0:
            if self._pool.has_other({relay.name}):
                return BACK  # throttled: another relay takes the message meanwhile
            await self._nap(min(pause, max(self._gate.time_left(item.claimed), 0.0)))
            if self._stopping:
                return BACK
            if not self._gate.may_begin(item.claimed):
                return CLOSING  # the window closed during the pause
        if relay.circuit in (Circuit.OPEN, Circuit.DEAD):  # also: it opened during the pause
            return BACK
        if not connection.is_open and self._quotas.applies(relay.name):
            # a cheap read of the ledger first: a relay whose quota is spent is not dialled
            spent = self._quotas.check(relay.name, RATE_MAX_WAIT)
            if spent is not None:
                self._quota_spent(relay, spent)
                return BACK
        if not connection.is_open and not await self._connect(relay, connection):
            return BACK
        if relay.limiter is not None:
            # after connecting: a relay that cannot be reached spends none of its quota
            left = self._gate.time_left(item.claimed)
            wait = await relay.limiter.acquire(
                RATE_MAX_WAIT, within=left, sleep=self._nap, stopped=lambda: self._stopping
            )
            if self._stopping:  # a wait for the pace ends with the run
                return BACK
            if 0 < wait <= RATE_MAX_WAIT:
                self._gate.slot_after_close(item.claimed, wait, "the rate's")
                return CLOSING  # the window closes before the slot comes
            if wait > 0:
                relay.quota_until = time.monotonic() + wait
                relay.events.append(f"rate {relay.config.rate} spent for {wait:.0f} s")
                event(
                    logging.WARNING,
                    "rate_spent",
                    f"relay {relay.name}: rate {relay.config.rate} spent for {wait:.0f} s",
                    relay=relay.name,
                    seconds=wait,
                )
                return BACK
        if self._quotas.applies(relay.name):
            left = self._gate.time_left(item.claimed)
            taken = await self._quotas.acquire(relay.name, RATE_MAX_WAIT, within=left)
            if self._stopping:  # a wait for a slot ends with the run
                if isinstance(taken, Slot):
                    taken.close()
                return BACK
            if isinstance(taken, Spent):
                if taken.wait <= max(RATE_MAX_WAIT, taken.quota.patience()):
                    self._gate.slot_after_close(item.claimed, taken.wait, "the quota's")
                    return CLOSING  # the window closes before the slot comes
                self._quota_spent(relay, taken)
                return BACK
            item.slot = taken
        return GO

    def _quota_spent(self, relay: RelayState, spent: Spent) -> None:
        """A quota has no slot for longer than RATE_MAX_WAIT: stop using its relay (the
        warm-up's: every relay) until it frees one; the rows stay pending."""
        until = time.monotonic() + spent.wait
        note = spent.quota.spent(self._quotas.now())
        warmup = isinstance(spent.quota, WarmupQuota)
        for each in self._pool.relays if warmup else [relay]:
            each.quota_until = max(each.quota_until, until)
            each.quota_note = note
        if note not in relay.events:
            relay.events.append(note)
            event(
                logging.WARNING,
                "rate_spent",
                note,
                relay=None if warmup else relay.name,
                seconds=spent.wait,
            )

    def _close_slot(self, item: _Item) -> None:
        """Give back the quota slots of a transaction that is over, unless accepted."""
        slot, item.slot = item.slot, None
        if slot is not None:
            slot.close()

    async def _connect(self, relay: RelayState, connection: SmtpConnection) -> bool:
        """Open the worker's connection; a failure counts against the relay's health."""
        counters = self.stats.relay(relay.name)
        started = time.perf_counter()
        try:
            await connection.open()
        except RelayDown as exc:
            counters.connect_failures += 1
            if relay.name not in self._down:
                self._down.add(relay.name)
                event(
                    logging.WARNING,
                    "relay_down",
                    f"relay {relay.name} down: {exc}",
                    relay=relay.name,
                    reason=str(exc),
                )
            rule = classify_connect(exc.fault)
            relay.failed(exc.reason, now=time.monotonic(), fatal=rule.permanent)
            relay.hint = rule.hint
            await self._nap(CONNECT_PAUSE)
            return False
        counters.connections += 1
        counters.connect_time.add(time.perf_counter() - started)
        relay.hint = ""
        if relay.name in self._down or not counters.connections - 1:
            self._down.discard(relay.name)
            event(logging.INFO, "relay_up", f"relay {relay.name} up", relay=relay.name)
        relay.ever_connected = True
        return True

    async def _send(
        self,
        relay: RelayState,
        connection: SmtpConnection,
        item: _Item,
        queue: asyncio.Queue[_Item | None],
    ) -> _Item | None:
        """One transaction for `item`. Returns the message taken from `queue` to follow it
        on this connection (its commands went out with `item`'s content), if any."""
        if item.message.smtputf8 and not connection.offers_smtputf8:
            # RFC 6531 section 3.2: such a message is not sent without SMTPUTF8.
            connection.withdraw(item.message)
            reason = (
                f"the message needs SMTPUTF8 (a non-ASCII address or header field); "
                f"relay {relay.name} does not offer it"
            )
            self._record(Record(item.key, State.FAILED, reply=reason, relay=relay.name))
            self._release(item)
            return None
        taken: list[_Item] = []

        def announce() -> RenderedMessage | None:
            following = self._following(relay, connection, queue)
            if following is None:
                return None
            taken.append(following)
            if (
                (following.message.smtputf8 and not connection.offers_smtputf8)
                # not even a RCPT to an address a bounce has suppressed since
                or self._suppressions.reason(following.claimed.address) is not None
                or not self._gate.may_begin(following.claimed)  # nor outside its window
                # nor one its domain could not start now (the worker holds it back then)
                or not self._domain_start(following)
            ):
                return None
            return following.message

        started = time.perf_counter()
        result = await connection.send(
            item.message, partial(self._mark_sending, item.key, item.slot), announce
        )
        following = taken[0] if taken else None
        self._let_go(item)
        item.tally.count(result.phase)
        if item.key in self._refused:
            # the row is no longer this worker's: nothing sent, nothing to record
            self._refused.discard(item.key)
            if item.slot is not None:
                item.slot.accepted = False
            self._release(item)
            return following
        verdict = classify(result.phase, result.code, result.text)
        latency = time.perf_counter() - started
        self._count_transaction(relay, item, result, latency)
        self._settle(item, Transaction(result, verdict, relay.name), relay, latency)
        if verdict.reconnect or connection.transactions >= relay.config.messages_per_connection:
            await connection.close()
        return following

    async def _mark_sending(self, key: str, slot: Slot | None = None) -> bool:
        """Record `sending` before DATA (the journal counts the attempt); False: the
        message must not be sent. The quotas count it as accepted from here on: a run
        killed now leaves the row `unknown`, and the relay may have taken it."""
        assert self._committer is not None
        if slot is not None:
            slot.sending()
        if not self.journal.may_start_data() or not await self._committer.mark_sending(key):
            # a shared journal: this worker's lease may have lapsed, or did (fencing)
            self._refused.add(key)
            if not self._stopping:
                self.request_stop(
                    reason=self.journal.stop_requested()
                    or "the journal's lease could not be renewed in time"
                )
            return False
        return True

    def _worker_exited(self, task: asyncio.Task[None]) -> None:
        self._workers.discard(task)
        if not task.cancelled() and task.exception() is not None and self._crash is None:
            self._crash = task.exception()  # a bug: re-raised when the run is wound up
            if not self._stopping:
                self.request_stop(reason="internal error")

    def _cancel_workers(self) -> None:
        for task in list(self._workers):
            task.cancel()

    # --- outcomes --------------------------------------------------------------------

    def _settle(
        self, item: _Item, transaction: Transaction, relay: RelayState, latency: float
    ) -> None:
        """Apply one transaction's outcome: the relay's health, then a hand-back (failover,
        or a new connection) or the row's journal record (`txsend.delivery.outcomes`)."""
        self._judge_relay(relay, transaction, item.domain)
        tally = item.tally
        # failover: another relay that failed neither this message nor this transaction
        failover = self._pool.has_other(tally.failed_relays | {relay.name})
        # a stopping run hands nothing back: what it cannot send now is settled
        if not self._stopping and may_hand_back(
            tally, transaction, relay, self._policy, failover=failover
        ):
            if item.slot is not None:
                item.slot.accepted = False
            tally.hand_back(transaction)
            self._hand_back(item)
            return
        record = settle(tally, transaction, self._policy, now=time.time(), rng=self._random)
        accepted = record.state is State.SENT
        if item.slot is not None:  # `unknown`: it may have gone, and counts
            item.slot.accepted = record.state in (State.SENT, State.UNKNOWN)
        if accepted:
            self.stats.latency.add(latency)
        if (watcher := self.stats.watcher) is not None:
            watcher.outcome(record.state, latency if accepted else None, time.monotonic())
        self._conclude(record, item)
        self._release(item)
        self._judge_error_rate(record.state)

    def _judge_relay(
        self, relay: RelayState, transaction: Transaction, domain: DomainState
    ) -> None:
        """A transaction's outcome for its relay: throttled, failing, or working.

        A throttling reply to a recipient (RCPT, DATA) slows the recipient's domain only and
        does not count against the relay; one to the session (greeting, EHLO, MAIL, a 421
        that closes it) pauses the relay and counts as its failure."""
        now = time.monotonic()
        verdict = transaction.verdict
        if verdict.slow_down:
            if throttles_relay(transaction):
                relay.throttled(now)
            else:
                self._domains.throttled(domain, relay.name, now)
        if blames_relay(transaction):
            relay.failed(relay_error(transaction), now=now)
        else:
            relay.succeeded()

    def _conclude(self, record: Record, item: _Item) -> None:
        """Write a settled row: its relay's and domain's counts, a hard bounce's
        suppression, the journal."""
        assert record.relay is not None and record.address is not None
        self.stats.relay(record.relay).outcomes[record.state] += 1
        item.domain.stats.outcomes[record.state] += 1
        if record.suppress is not None:
            self._suppressions.add(record.address, record.suppress)
        self._record(record)

    def _judge_error_rate(self, state: State) -> None:
        """delivery.abort_on: stop taking work when the recent failure rate is too high."""
        reason = self._error_rate.judge(state)
        if reason is not None and not self._stopping:
            self.journal.abort(reason)  # every worker of a shared journal stops claiming
            self.request_stop(reason=reason)

    def _record(self, record: Record) -> None:
        """Write one row's outcome through the group committer, and count it."""
        assert self._committer is not None
        self._committer.record(record)
        self.stats.outcomes[record.state] += 1
        self.stats.timeline.add(record.state, time.monotonic())
        if LOGGER.isEnabledFor(logging.DEBUG):
            reply = record.reply
            event(
                logging.DEBUG,
                "message",
                f"{record.key}: {record.state.value}" + (f" ({reply})" if reply else ""),
                key=record.key,
                address=record.address,
                state=record.state.value,
                code=record.code,
                reply=reply,
                relay=record.relay,
            )

    def _count_transaction(
        self, relay: RelayState, item: _Item, result: SendResult, latency: float
    ) -> None:
        """Per-transaction figures for the report: attempts, retries, errors, replies."""
        stats = self.stats
        counters = stats.relay(relay.name)
        counters.attempts += 1
        item.domain.stats.attempts += 1
        counters.latency.add(latency)
        if item.tally.retried:
            stats.retries += 1
        stats.reply_codes.add(result.code, result.text)
        klass = error_class(result)
        if klass is not None:
            stats.errors[klass] += 1
            counters.errors[klass] += 1

    def _collect_relay_stats(self) -> None:
        for relay in self._pool.relays:
            counters = self.stats.relay(relay.name)
            counters.last_error = relay.last_error
            counters.events = list(relay.events)
            counters.circuit = relay.circuit.value

    async def _tick(self) -> None:
        if self._on_tick is None:
            return
        while True:
            self.stats.queue_depth = self._ready.qsize() + sum(
                q.qsize() for q in self._relay_queues.values()
            )
            self._collect_relay_stats()
            self._on_tick(self.stats)
            await asyncio.sleep(self.options.tick)


def within_limit(batch: list[Claimed], remaining: int) -> tuple[list[Claimed], int, bool]:
    """The rows of a claim that --limit lets this run take, what is left of the limit, and
    whether the claim reached a row beyond it (cut: the run takes no more).

    Seed copies (`Claimed.seed_of`) do not count: those that come before the first row
    over the limit go with the rows taken (they follow the row they copy in data order)."""
    taken: list[Claimed] = []
    for claimed in batch:
        if claimed.seed_of is None:
            if remaining == 0:
                return taken, 0, True
            remaining -= 1
        taken.append(claimed)
    return taken, remaining, False


def _relay_pool(
    relays: Sequence[tuple[RelayConfig, RelaySecret | str | None]],
    journal: JournalBackend,
    give_up_unreachable: float,
) -> RelayPool:
    """The run's relays, each with its rate limiter (kept in a shared journal, if any)."""
    max_cool_down = cool_down_cap(give_up_unreachable)
    return RelayPool(
        [
            RelayState(
                config,
                secret,
                limiter_for(config, shared=journal if journal.shared else None),
                max_cool_down=max_cool_down,
            )
            for config, secret in relays
        ]
    )


def _find_due(journal: JournalBackend, keys: list[str]) -> list[Claimed]:
    """Rows passed over earlier, as they stand now, if still due."""
    found = (journal.find(key) for key in keys)
    return [c for c in found if c is not None and c.state in _DUE]


_DUE = frozenset({State.PENDING, State.DEFERRED, State.UNKNOWN})
