"""Group commit: many connections' journal writes share one transaction.

`mark_sending` waits until its row is committed (the crash protocol needs `sending`
durable before DATA); every connection waiting at the same moment rides the same commit.
Outcomes are buffered and committed with the next `mark_sending` or within `max_delay`.

A shared journal (PostgreSQL) is written from a thread, so the event loop keeps serving
connections during the round trip, and whatever queues up meanwhile rides the next
commit. Such a journal may refuse keys that no longer belong to this worker (fencing):
`mark_sending` then answers False and the message must not be sent.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Protocol

from txsend.journal.records import Record


class JournalWriter(Protocol):
    @property
    def shared(self) -> bool: ...

    def write(self, sending: list[tuple[str, int]], records: list[Record]) -> set[str]: ...


class GroupCommitter:
    """Batches journal writes from concurrent workers on one event loop."""

    def __init__(
        self, journal: JournalWriter, run_id: int, *, max_delay: float = 0.05, max_batch: int = 512
    ) -> None:
        self._journal = journal
        self._run_id = run_id
        self._max_delay = max_delay
        self._max_batch = max_batch
        self._sending: list[tuple[str, int]] = []
        self._records: list[Record] = []
        self._waiters: list[tuple[str, asyncio.Future[bool]]] = []
        self._wake = asyncio.Event()
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None
        self._error: BaseException | None = None
        self._threaded = journal.shared
        self._closing = False
        self.commits = 0
        self.refused = 0  # records the journal refused (another worker owns the row now)

    def start(self) -> None:
        """Start the background flusher."""
        self._task = asyncio.get_running_loop().create_task(self._run(), name="journal-commit")

    async def mark_sending(self, key: str) -> bool:
        """Return once `key` is durably in state `sending`; False if the journal refused."""
        self._check()
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._sending.append((key, self._run_id))
        self._waiters.append((key, future))
        self._wake.set()
        # each waiter has its own future: a cancelled worker cancels only its wait
        return await future

    def record(self, record: Record) -> None:
        """Queue an outcome; committed within max_delay."""
        self._check()
        self._records.append(record)
        if len(self._records) >= self._max_batch:
            self._wake.set()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._max_delay, self._wake.set)

    def flush(self) -> None:
        """Commit everything queued now (before reading the journal back)."""
        self._flush()

    async def close(self) -> None:
        """Commit everything queued and stop the flusher."""
        if self._task is not None:
            self._closing = True
            self._wake.set()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task  # it ends after the commit in flight
            self._task = None
        self._flush()
        self._check()

    def _check(self) -> None:
        if self._error is not None:
            raise self._error

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._closing:
            await self._wake.wait()
            self._wake.clear()
            # let every worker that is ready this turn join the same commit
            await asyncio.sleep(0)
            batch = self._take()
            if batch is None:
                continue
            sending, records, waiters = batch
            if not self._threaded:
                self._commit(sending, records, waiters)
                continue
            try:
                refused = await loop.run_in_executor(None, self._journal.write, sending, records)
            except Exception as exc:  # a lost database must stop the run, not hang it
                self._fail(exc, waiters)
                return
            self._done(refused, records, waiters)

    def _take(
        self,
    ) -> tuple[list[tuple[str, int]], list[Record], list[tuple[str, asyncio.Future[bool]]]] | None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        sending, self._sending = self._sending, []
        records, self._records = self._records, []
        waiters, self._waiters = self._waiters, []
        if not sending and not records:
            return None
        return sending, records, waiters

    def _flush(self) -> None:
        batch = self._take()
        if batch is not None:
            self._commit(*batch)

    def _commit(
        self,
        sending: list[tuple[str, int]],
        records: list[Record],
        waiters: list[tuple[str, asyncio.Future[bool]]],
    ) -> None:
        try:
            refused = self._journal.write(sending, records)
        except BaseException as exc:  # a full disk must stop the run, not hang it
            self._fail(exc, waiters)
            raise
        self._done(refused, records, waiters)

    def _fail(self, exc: BaseException, waiters: list[tuple[str, asyncio.Future[bool]]]) -> None:
        self._error = exc
        for _, waiter in waiters:
            if not waiter.done():
                waiter.set_exception(exc)

    def _done(
        self,
        refused: set[str],
        records: list[Record],
        waiters: list[tuple[str, asyncio.Future[bool]]],
    ) -> None:
        self.commits += 1
        if refused:
            self.refused += sum(1 for r in records if r.key in refused)
        for key, waiter in waiters:
            if not waiter.done():
                waiter.set_result(key not in refused)
