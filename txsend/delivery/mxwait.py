"""Rows waiting for their domain's MX lookup (`domains:` with `mx:`), off the producer's path.

A row whose recipient domain could belong to an `mx:` group, and whose MX hosts are not
known yet, is parked: only its key is kept, as for a row passed over while its domain's
backlog is full. Its domain's lookup runs as a task of its own (at most `CONCURRENT` at
once, each bounded by `MxLookup.timeout`), and the producer goes on with the other rows:
a domain whose resolver never answers holds up nobody else. When a lookup ends, the
domain's match is set in the gate and its parked keys are ready to be taken back
(`MxWaits.take`); `on_done` tells the producer so.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from functools import partial

from txsend.delivery.domains import DomainGate
from txsend.delivery.mx import MxLookup
from txsend.logs import event

__all__ = ["CONCURRENT", "MxWaits"]

CONCURRENT = 16  # MX lookups in flight at once


class MxWaits:
    """The MX lookups under way and the rows that wait for them."""

    def __init__(
        self,
        lookup: MxLookup,
        gate: DomainGate,
        on_done: Callable[[], None],
        concurrent: int = CONCURRENT,
    ) -> None:
        self._lookup = lookup
        self._gate = gate
        self._on_done = on_done
        self._concurrent = concurrent
        self._parked: dict[str, list[str]] = {}  # a domain: keys of rows waiting for it
        self._queued: deque[str] = deque()  # domains whose lookup has not begun yet
        self._tasks: set[asyncio.Task[None]] = set()
        self._ready: deque[str] = deque()  # keys whose domain's lookup has ended
        self._closed = False

    @property
    def busy(self) -> bool:
        """Do rows wait for a lookup, or to be taken back after one?"""
        return bool(self._parked or self._ready)

    @property
    def waiting(self) -> int:
        """Rows parked for a lookup not over yet."""
        return sum(len(keys) for keys in self._parked.values())

    def park(self, domain: str, key: str) -> None:
        """Keep a row's key until its (normalised) domain's MX is known; look it up."""
        keys = self._parked.get(domain)
        if keys is not None:
            keys.append(key)
            return
        self._parked[domain] = [key]
        self._queued.append(domain)
        self._start()

    def take(self, limit: int) -> list[str]:
        """Keys of parked rows whose domain's lookup is over (at most `limit`)."""
        count = min(limit, len(self._ready))
        return [self._ready.popleft() for _ in range(count)]

    async def close(self) -> None:
        """Stop every lookup (the run is over: parked rows stay due in the journal)."""
        self._closed = True
        self._queued.clear()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _start(self) -> None:
        while self._queued and len(self._tasks) < self._concurrent and not self._closed:
            domain = self._queued.popleft()
            task = asyncio.create_task(self._look_up(domain), name=f"mx-lookup {domain}")
            self._tasks.add(task)
            task.add_done_callback(partial(self._ended, domain))

    def _ended(self, domain: str, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            # (MxLookup reports the failures it knows; this is one it did not expect)
            event(
                logging.WARNING,
                "mx_lookup_failed",
                f"MX lookup of {domain} failed ({exc!r}): matched by its name only",
                domain=domain,
                reason=repr(exc),
            )
        self._start()

    async def _look_up(self, domain: str) -> None:
        hosts: list[str] = []
        try:
            hosts = await self._lookup.hosts(domain)
        finally:
            # whatever happened, the rows go on (no MX found: matched by their name only)
            self._gate.set_mx(domain, hosts)
            self._ready.extend(self._parked.pop(domain, ()))
            self._on_done()
