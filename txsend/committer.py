"""Group commit: many connections' journal writes share one SQLite transaction.

`mark_sending` waits until its row is committed (the crash protocol needs `sending`
durable before DATA); every connection waiting at the same moment rides the same commit.
Outcomes are buffered and committed with the next `mark_sending` or within `max_delay`.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Protocol

from txsend.journal import Record


class JournalWriter(Protocol):
    def write(self, sending: list[tuple[str, int]], records: list[Record]) -> None: ...


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
        self._waiters: list[asyncio.Future[None]] = []
        self._wake = asyncio.Event()
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None
        self._error: BaseException | None = None
        self.commits = 0

    def start(self) -> None:
        """Start the background flusher."""
        self._task = asyncio.get_running_loop().create_task(self._run(), name="journal-commit")

    async def mark_sending(self, key: str) -> None:
        """Return once `key` is durably in state `sending`."""
        self._check()
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._sending.append((key, self._run_id))
        self._waiters.append(future)
        self._wake.set()
        # each waiter has its own future: a cancelled worker cancels only its wait
        await future

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
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._flush()
        self._check()

    def _check(self) -> None:
        if self._error is not None:
            raise self._error

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            # let every worker that is ready this turn join the same commit
            await asyncio.sleep(0)
            self._flush()

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        sending, self._sending = self._sending, []
        records, self._records = self._records, []
        waiters, self._waiters = self._waiters, []
        if not sending and not records:
            return
        try:
            self._journal.write(sending, records)
            self.commits += 1
        except BaseException as exc:  # a full disk must stop the run, not hang it
            self._error = exc
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_exception(exc)
            raise
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)
