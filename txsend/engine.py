"""The async pipeline: journal → render → bounded queue → relay connections → journal.

One producer claims rows from the journal and renders them into a bounded queue, so
memory stays flat for any list size. Each relay gets `connections` workers; each worker
keeps one SMTP connection for up to `messages_per_connection` transactions. Every
outcome is classified in one place (`_settle`) and written through the group committer.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

from txsend.committer import GroupCommitter
from txsend.errors import RowError
from txsend.journal import Journal, Record
from txsend.models import Job, RelayConfig, RenderedMessage, Row, State
from txsend.render import Renderer
from txsend.stats import RunStats
from txsend.transport import Phase, RelayDown, SendResult, SmtpConnection

CLAIM_BATCH = 256
CONNECT_ATTEMPTS = 3  # per worker, before it gives its relay up
CONNECT_BACKOFF = 0.5  # seconds, doubled per attempt
LOST_BEFORE_DATA_RETRIES = 2  # a message whose connection drops before DATA is retried


@dataclass(frozen=True)
class SendOptions:
    run_id: int
    concurrency: int | None = None  # connections per relay, overriding the job
    limit: int | None = None  # at most this many rows this run
    dry_run: bool = False  # render and count; send nothing
    resend_unknown: bool = True  # delivery.on_unknown == "resend"
    grace: float = 10.0  # seconds in-flight transactions get after a stop request
    tick: float = 0.25  # seconds between progress callbacks


@dataclass
class _Item:
    key: str
    message: RenderedMessage
    tries: int = 0


class Engine:
    """Sends a job's due rows once; returns what happened as RunStats."""

    def __init__(
        self,
        job: Job,
        journal: Journal,
        renderer: Renderer,
        relays: Sequence[tuple[RelayConfig, str | None]],
        options: SendOptions,
        on_tick: Callable[[RunStats], None] | None = None,
    ) -> None:
        self.job = job
        self.journal = journal
        self.renderer = renderer
        self.options = options
        self.stats = RunStats()
        self._on_tick = on_tick
        self._tiers = _priority_tiers(relays)
        self._queue: asyncio.Queue[_Item | None] = asyncio.Queue()
        self._returned: deque[_Item] = deque()
        self._committer: GroupCommitter | None = None
        self._workers: set[asyncio.Task[None]] = set()
        self._dead_relays: set[str] = set()
        self._stopping = False
        self._abandoned = 0  # rendered rows dropped from the queue by a stop
        self._queued_items = 0  # messages (not end markers) in the queue
        self._producer_done = False
        self._all_done = asyncio.Event()

    # --- entry points ----------------------------------------------------------------

    async def run(self) -> RunStats:
        """Send everything due (or up to --limit); stop early on request or relay loss."""
        first_tier = self._tiers[0] if self._tiers else []
        size = max(64, 4 * sum(self._connections(r) for r, _ in first_tier))
        self._queue = asyncio.Queue(maxsize=size)
        committer = self._committer = GroupCommitter(self.journal, self.options.run_id)
        committer.start()
        ticker = asyncio.create_task(self._tick(), name="progress")
        producer = asyncio.create_task(self._produce(), name="producer")
        try:
            if not self.options.dry_run and self._tiers:
                self._start_tier()
                await producer
                await self._all_done.wait()
            else:
                await producer
        finally:
            producer.cancel()
            for task in list(self._workers):
                task.cancel()
            await asyncio.gather(producer, *self._workers, return_exceptions=True)
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
            await committer.close()
            self.stats.ended = time.monotonic()
            if self._on_tick is not None:
                self._on_tick(self.stats)
        self._drain_queue()
        self.stats.not_sent = self._abandoned + len(self._returned)
        if self.stats.stop_reason == "no relay reachable":
            self.stats.unreachable = True
        return self.stats

    def request_stop(self, signum: int | None = None) -> None:
        """Stop taking work; in-flight transactions get `grace` seconds, a second call none."""
        loop = asyncio.get_running_loop()
        if self._stopping:
            for task in list(self._workers):
                task.cancel()
            return
        self._stopping = True
        if signum is not None:
            self.stats.signal = signum
            self.stats.stop_reason = "interrupted"
        self._drain_queue()
        loop.call_later(self.options.grace, self._cancel_workers)

    # --- producer --------------------------------------------------------------------

    async def _produce(self) -> None:
        remaining = self.options.limit
        try:
            while not self._stopping and (remaining is None or remaining > 0):
                size = CLAIM_BATCH if remaining is None else min(CLAIM_BATCH, remaining)
                batch = self.journal.claim(size, include_unknown=self.options.resend_unknown)
                if not batch:
                    break
                if remaining is not None:
                    remaining -= len(batch)
                for claimed in batch:
                    if self._stopping:
                        break
                    row = Row(claimed.row, claimed.key, claimed.address, claimed.data)
                    message = self._render(row, claimed.message_id)
                    if message is None:
                        continue
                    self.stats.queued += 1
                    if self.options.dry_run:
                        continue
                    self._queued_items += 1
                    await self._queue.put(_Item(claimed.key, message))
            await self._queue.put(None)
        finally:
            self._producer_done = True
            self._check_done()

    def _render(self, row: Row, message_id: str) -> RenderedMessage | None:
        try:
            message = self.renderer.render(row, message_id)
        except RowError as exc:
            self._record(row.key, State.SKIPPED, reply=exc.reason)
            return None
        if len(message.data) > self.job.max_message_size:
            self._record(
                row.key,
                State.FAILED,
                reply=f"message is {len(message.data)} bytes, over max_message_size "
                f"({self.job.max_message_size})",
            )
            return None
        return message

    # --- workers ---------------------------------------------------------------------

    def _start_tier(self) -> bool:
        """Start the workers of the most preferred priority whose relays are not dead."""
        for tier in self._tiers:
            live = [(r, p) for r, p in tier if r.url not in self._dead_relays]
            if not live:
                continue
            for relay, password in live:
                for n in range(self._connections(relay)):
                    task = asyncio.create_task(
                        self._worker(relay, password), name=f"{relay.name}#{n}"
                    )
                    self._workers.add(task)
                    task.add_done_callback(self._worker_exited)
            return True
        return False

    def _connections(self, relay: RelayConfig) -> int:
        return self.options.concurrency or relay.connections

    async def _worker(self, relay: RelayConfig, password: str | None) -> None:
        connection = SmtpConnection(relay, password, self.job.delivery.timeouts)
        counters = self.stats.relay(relay.name)
        try:
            while not self._stopping:
                item = await self._next()
                if item is None:
                    return
                if not await self._connect(connection, item):
                    return
                started = time.perf_counter()
                result = await connection.send(item.message, partial(self._mark_sending, item.key))
                self._settle(item, result, relay, time.perf_counter() - started)
                if connection.transactions >= relay.messages_per_connection:
                    await connection.close()
        finally:
            counters.workers_exited += 1
            await asyncio.shield(connection.close())

    async def _connect(self, connection: SmtpConnection, item: _Item) -> bool:
        """Open the connection if needed; on giving up, hand the item back and say False."""
        relay = connection.relay
        counters = self.stats.relay(relay.name)
        delay = CONNECT_BACKOFF
        attempt = 0
        while not connection.is_open:
            if relay.url in self._dead_relays or self._stopping:
                self._returned.append(item)
                return False
            attempt += 1
            try:
                await connection.open()
            except RelayDown as exc:
                counters.connect_failures += 1
                counters.last_error = str(exc)
                if exc.auth or attempt >= CONNECT_ATTEMPTS:
                    self._dead_relays.add(relay.url)
                    self._returned.append(item)
                    return False
                await asyncio.sleep(delay)
                delay *= 2
                continue
            counters.connections += 1
        return True

    async def _next(self) -> _Item | None:
        """The next message to send: a handed-back one first; None when the work is over."""
        while not self._stopping:
            if self._returned:
                return self._returned.popleft()
            item = await self._queue.get()
            if item is None:
                self._queue.put_nowait(None)  # the end marker stays for the other workers
                if not self._returned:
                    return None
                continue
            self._queued_items -= 1
            if self._stopping:
                self._abandoned += 1
                return None
            return item
        return None

    async def _mark_sending(self, key: str) -> None:
        assert self._committer is not None
        await self._committer.mark_sending(key)

    def _worker_exited(self, task: asyncio.Task[None]) -> None:
        self._workers.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.stats.stop_reason = f"internal error: {task.exception()!r}"
            self._stopping = True
        if self._workers:
            return
        work_left = bool(self._returned) or not self._producer_done or self._queued_items > 0
        if work_left and not self._stopping and self._start_tier():
            return
        if work_left and not self._stopping:
            self.stats.stop_reason = "no relay reachable"
            self._stopping = True
            self._drain_queue()
        self._check_done()

    def _check_done(self) -> None:
        if self._producer_done and not self._workers:
            self._all_done.set()

    def _drain_queue(self) -> None:
        """Empty the queue (its rows stay as they are in the journal) and wake idle workers."""
        while not self._queue.empty():
            if self._queue.get_nowait() is not None:
                self._abandoned += 1
                self._queued_items -= 1
        self._queue.put_nowait(None)

    def _cancel_workers(self) -> None:
        for task in list(self._workers):
            task.cancel()

    # --- outcomes --------------------------------------------------------------------

    def _settle(self, item: _Item, result: SendResult, relay: RelayConfig, latency: float) -> None:
        """Classify one transaction's result and record it (the only place that does)."""
        counters = self.stats.relay(relay.name)
        if result.accepted:
            state = State.SENT
        elif result.code is None and result.phase is Phase.DATA_END:
            state = State.UNKNOWN  # the message may have been delivered (RFC 1047)
        elif result.code is None:
            item.tries += 1
            if item.tries <= LOST_BEFORE_DATA_RETRIES and not self._stopping:
                self._returned.append(item)
                counters.last_error = result.reply
                return
            state = State.DEFERRED
        elif result.code >= 500:
            state = State.BOUNCED
        else:
            state = State.DEFERRED
        if state is State.SENT:
            self.stats.latency.add(latency)
        counters.outcomes[state] += 1
        if state is not State.SENT:
            counters.last_error = result.reply
        self._record(
            item.key,
            state,
            code=result.code,
            reply=result.reply,
            relay=relay.name,
            next_attempt_at=time.time() if state is State.DEFERRED else None,
        )

    def _record(
        self,
        key: str,
        state: State,
        *,
        code: int | None = None,
        reply: str | None = None,
        relay: str | None = None,
        next_attempt_at: float | None = None,
    ) -> None:
        assert self._committer is not None
        self._committer.record(Record(key, state, code, reply, relay, next_attempt_at))
        self.stats.outcomes[state] += 1

    async def _tick(self) -> None:
        if self._on_tick is None:
            return
        while True:
            self._on_tick(self.stats)
            await asyncio.sleep(self.options.tick)


def _priority_tiers(
    relays: Sequence[tuple[RelayConfig, str | None]],
) -> list[list[tuple[RelayConfig, str | None]]]:
    """Relays grouped by priority, most preferred (lowest number) first."""
    tiers: dict[int, list[tuple[RelayConfig, str | None]]] = {}
    for relay, password in relays:
        tiers.setdefault(relay.priority, []).append((relay, password))
    return [tiers[p] for p in sorted(tiers)]
