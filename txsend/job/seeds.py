"""Seed copies: `seeds: [addr, ...]` and `seeds_every: N` in a job file.

A seed is an inbox-monitoring address. It gets a copy of the job's first message and,
with `seeds_every: N`, of every Nth message after it (the 1st, N+1th, 2N+1th, ... message,
counting the data rows that become messages, in data order). Each copy is a row of its
own in the journal, right after the row it copies: key `seed:<address>:<row key>`, the
seed's address, the copied row's number and data. The journal marks such rows as seeds
when it ingests them (`txsend.journal.rules.SEED_PREFIX`), and they are sent, retried and
resumed exactly like any row.

`SeededRows` puts the copies into a job's rows, both as `Row` objects and in the batches
of plain tuples a CSV file gives (`txsend.job.rowbatches`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from txsend.addresses import comparable_address, envelope_address
from txsend.errors import JobError, RowError
from txsend.job.yamlmap import Section
from txsend.models import Row
from txsend.units import describe_value

__all__ = ["SEED_PREFIX", "SeededRows", "job_seeds", "seed_key"]

SEED_PREFIX = "seed:"


def seed_key(address: str, key: str) -> str:
    """The journal key of the copy of row `key` for the seed `address`."""
    return f"{SEED_PREFIX}{address}:{key}"


def job_seeds(root: Section) -> tuple[tuple[str, ...], int | None]:
    """The job file's `seeds` (envelope addresses) and `seeds_every`, checked."""
    seeds: list[str] = []
    seen: dict[str, int] = {}
    for index, (item, line) in enumerate(root.opt_list("seeds")):
        name = f"seeds[{index}]"
        if isinstance(item, bool) or not isinstance(item, str) or not item.strip():
            raise JobError(
                f"{name}: expected an email address, got {describe_value(item)}",
                file=root.display,
                line=line,
                hint="e.g. seeds: [seed-1@monitor.example, seed-2@monitor.example]",
            )
        try:
            address = envelope_address(item.strip())
        except ValueError as exc:
            raise JobError(
                f"{name}: invalid email address {item.strip()!r}: {exc}",
                file=root.display,
                line=line,
                hint="a seed is a bare address, e.g. seed-1@monitor.example",
            ) from None
        same = comparable_address(address)
        if same in seen:
            raise JobError(
                f"{name}: {address} is listed twice (also seeds[{seen[same]}])",
                file=root.display,
                line=line,
            )
        seen[same] = index
        seeds.append(address)
    every = root.opt_int("seeds_every", 1)
    if every is not None and not seeds:
        raise root.error(
            "seeds_every",
            "has no seeds to send copies to",
            hint="add seeds: [addr, ...], or remove seeds_every",
        )
    return tuple(seeds), every


def is_seeded(position: int, every: int | None) -> bool:
    """Whether the message at this 1-based position is copied to the seeds."""
    if every is None:
        return position == 1
    return (position - 1) % every == 0


@dataclass(frozen=True)
class SeededRows:
    """A job's rows (Row or RowError; CSV batches too) with the seed copies put in."""

    rows: Iterable[Any]
    seeds: tuple[str, ...]
    every: int | None = None

    def __iter__(self) -> Iterator[Any]:
        position = 0
        for item in self.rows:
            yield item
            if isinstance(item, RowError):
                continue
            position += 1
            if is_seeded(position, self.every):
                for address in self.seeds:
                    yield Row(item.number, seed_key(address, item.key), address, item.data)

    def csv_batches(self, size: int) -> tuple[list[str], Iterator[list[Any]]] | None:
        """The CSV batches of the rows (`txsend.job.rowbatches`), seed copies put in."""
        batches = getattr(self.rows, "csv_batches", None)
        found = batches(size) if batches is not None else None
        if found is None:
            return None
        header, items = found
        return header, self._seeded_batches(items)

    def _seeded_batches(self, batches: Iterator[list[Any]]) -> Iterator[list[Any]]:
        position = 0
        for batch in batches:
            if not any(isinstance(item, RowError) for item in batch):
                # the common batch: its messages are positions position+1 ... position+len
                first = position + 1
                position += len(batch)
                if not any(is_seeded(p, self.every) for p in self._candidates(first, position)):
                    yield batch
                    continue
            else:
                first = position + 1
                position += sum(not isinstance(item, RowError) for item in batch)
            yield list(self._with_copies(batch, first))

    def _candidates(self, first: int, last: int) -> Iterator[int]:
        """The seeded positions that may lie in first..last (a few, not every one)."""
        if self.every is None:
            if first <= 1 <= last:
                yield 1
            return
        start = first + (-(first - 1)) % self.every  # the first p >= first with (p-1)%N == 0
        if start <= last:
            yield start

    def _with_copies(self, batch: list[Any], position: int) -> Iterator[Any]:
        for item in batch:
            yield item
            if isinstance(item, RowError):
                continue
            if is_seeded(position, self.every):
                number, key, _, values = item
                for address in self.seeds:
                    yield (number, seed_key(address, key), address, values)
            position += 1
