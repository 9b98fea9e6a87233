"""Ingest into the SQLite journal: data rows become `pending` messages, batch by batch.

Every batch is one transaction. A batch goes one of two ways, with the same result:

- into a fresh journal (no messages when the ingest began, no refresh), with no key twice
  in the batch: one `executemany` of plain tuples, no lookup of existing keys. A key that
  an earlier batch of the same ingest stored makes the INSERT fail on the primary key;
  the batch's transaction is then rolled back and the batch goes the other way, with the
  Message-IDs it had drawn, so that the rows are those an existing journal would get.
- otherwise: the keys of the batch are looked up first (known, seen in a refresh pass,
  or a duplicate of an earlier row).

Rows that come from `csv_batches` (`txsend.job.rowbatches.RecipientRows` of a CSV
file) are stored as a JSON array of their values after the id of their header
(`txsend.journal.sqliteschema`); any other row as the JSON object of its data.

Crash safety: each batch commits under the journal's own settings (WAL,
synchronous=NORMAL; no PRAGMA is changed for an ingest), so a committed batch survives
kill -9 like any other commit. An ingest that dies midway leaves `ingest_complete`
unset, and the next run ingests again: batches already stored are recognised by their
keys. (A larger page cache and fewer checkpoints during a fresh ingest were measured:
no gain, and a larger resident set.)
"""

from __future__ import annotations

import gc
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from itertools import islice, repeat
from typing import Any, Protocol, runtime_checkable

from txsend.errors import RowError
from txsend.journal.records import IngestStats
from txsend.journal.rules import REDOABLE, SEED_MARK, encode_data, has_seeds, note_problem
from txsend.journal.sqliteschema import STATE_INDEX, ArrayEncoder, header_id, set_meta

__all__ = ["INGEST_BATCH", "CsvBatches", "ingest"]

INGEST_BATCH = 5000

_INSERT = (
    "INSERT INTO messages(key, row, address, data, message_id, state, attempts, "
    "created_at, updated_at) VALUES (?, ?, ?, ?, ?, 'pending', 0, ?, ?)"
)
_MARK_SEEDS = "UPDATE messages AS m SET " + SEED_MARK.format(
    prefix="m.key >= 'seed:' AND m.key < 'seed;'", table="messages", same_job=""
)
_SKIP = "INSERT OR IGNORE INTO skipped_rows(row, key, reason, created_at) VALUES (?, ?, ?, ?)"

Item = tuple[int, str, str, Any]  # row number, key, address, data (to be encoded)
Encode = Callable[[Sequence[Any]], list[str]]  # the stored form of each row's data


@runtime_checkable
class CsvBatches(Protocol):
    """Rows that a CSV file can give in batches (`txsend.job.rowbatches.RecipientRows`)."""

    def csv_batches(self, size: int) -> tuple[list[str], Iterator[list[Any]]] | None: ...


def ingest(
    conn: sqlite3.Connection,
    rows: Iterable[Any],
    new_message_id: Callable[[], str],
    *,
    refresh: bool,
) -> IngestStats:
    """Add rows not seen before (see `txsend.journal.sqlite.Journal.ingest`)."""
    stats = IngestStats()
    if refresh:
        with conn:
            # a negative row number marks "not seen yet in this pass"
            conn.execute("UPDATE messages SET row = -row WHERE row > 0")
            conn.execute("DELETE FROM skipped_rows")
            set_meta(conn, "ingest_complete", "0")
    fresh = not refresh and conn.execute("SELECT 1 FROM messages LIMIT 1").fetchone() is None
    ids = _Ids(new_message_id)
    with _no_cycle_collector():
        encode, batches = _batches(conn, rows)
        for batch in batches:
            if not (fresh and _insert_fresh(conn, batch, encode, ids, stats)):
                _ingest_batch(conn, batch, encode, ids, stats)
    with conn:
        if refresh:
            conn.execute(
                "UPDATE messages SET state = 'skipped', updated_at = ?, "
                "reply = 'no longer in the data file' "
                f"WHERE row < 0 AND {REDOABLE}",
                (time.time(),),
            )
            conn.execute("UPDATE messages SET row = -row WHERE row < 0")
        if has_seeds(rows):
            stats.seeds = conn.execute(_MARK_SEEDS).rowcount
        conn.execute(STATE_INDEX)
        set_meta(conn, "ingest_complete", "1")
    return stats


class _Ids:
    """Message-IDs from the job's generator, in order; ids drawn but not used come first.

    A generator with a `many(n)` method (`txsend.content.ids.MessageIds`) is asked for
    a batch's ids in one call.
    """

    def __init__(self, new: Callable[[], str]) -> None:
        self._new = new
        self._many: Callable[[int], list[str]] | None = getattr(new, "many", None)
        self._spare: list[str] = []

    def take(self, n: int) -> list[str]:
        out = self._spare[:n]
        del self._spare[:n]
        n -= len(out)
        if self._many is not None and n > 1:
            out += self._many(n)
        else:
            new = self._new
            out += [new() for _ in range(n)]
        return out

    def give_back(self, ids: list[str]) -> None:
        self._spare[:0] = ids


@contextmanager
def _no_cycle_collector() -> Iterator[None]:
    """The cyclic garbage collector off: an ingest makes no cycles, only short-lived lists
    and tuples by the million, which would set off collections that find nothing."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _batches(
    conn: sqlite3.Connection, rows: Iterable[Any]
) -> tuple[Encode, Iterator[list[Item | RowError]]]:
    """How data is encoded, and the rows in batches of items and RowErrors."""
    compact = rows.csv_batches(INGEST_BATCH) if isinstance(rows, CsvBatches) else None
    if compact is None:
        return _encode_objects, _row_batches(rows)
    header, batches = compact
    return ArrayEncoder(header_id(conn, header)), batches


def _encode_objects(datas: Sequence[dict[str, Any]]) -> list[str]:
    return list(map(encode_data, datas))


def _row_batches(rows: Iterable[Any]) -> Iterator[list[Item | RowError]]:
    iterator = iter(rows)
    while batch := list(islice(iterator, INGEST_BATCH)):
        yield [
            item if isinstance(item, RowError) else (item.number, item.key, item.address, item.data)
            for item in batch
        ]


def _insert_fresh(
    conn: sqlite3.Connection,
    batch: list[Item | RowError],
    encode: Encode,
    ids: _Ids,
    stats: IngestStats,
) -> bool:
    """Store a batch with no lookups; False (nothing stored) if a key is already there."""
    items = [item for item in batch if type(item) is tuple]
    numbers, keys, addresses, datas = zip(*items, strict=True) if items else ((),) * 4
    if len(set(keys)) != len(keys):
        return False  # a key twice in the batch: the other way says which row was first
    now = time.time()
    message_ids = ids.take(len(items))
    values = zip(keys, numbers, addresses, encode(datas), message_ids, repeat(now), repeat(now))
    errors = [item for item in batch if isinstance(item, RowError)]
    try:
        with conn:
            conn.executemany(_INSERT, values)
            conn.executemany(_SKIP, [(e.row, e.key, e.reason, now) for e in errors])
    except sqlite3.IntegrityError:  # a key an earlier batch stored: rolled back
        ids.give_back(message_ids)
        return False
    stats.new += len(items)
    for error in errors:
        stats.invalid += 1
        note_problem(stats, str(error))
    return True


def _ingest_batch(
    conn: sqlite3.Connection,
    batch: list[Item | RowError],
    encode: Encode,
    ids: _Ids,
    stats: IngestStats,
) -> None:
    now = time.time()
    keys = [item[1] for item in batch if not isinstance(item, RowError)]
    known: dict[str, int] = {}
    for start in range(0, len(keys), 500):
        chunk = keys[start : start + 500]
        marks = ",".join("?" * len(chunk))
        for key, row in conn.execute(
            f"SELECT key, row FROM messages WHERE key IN ({marks})", chunk
        ):
            known[key] = row
    new_rows = []
    refreshed = []
    skipped = []
    for item in batch:
        if isinstance(item, RowError):
            stats.invalid += 1
            skipped.append((item.row, item.key, item.reason, now))
            note_problem(stats, str(item))
            continue
        number, key, address, data = item
        first = known.get(key)
        if first is None:
            (message_id,) = ids.take(1)
            new_rows.append((key, number, address, encode([data])[0], message_id, now, now))
            stats.new += 1
        elif first < 0:  # refresh pass: first sight of a known key
            refreshed.append((number, address, encode([data])[0], now, key))
            stats.existing += 1
        elif first == number:
            stats.existing += 1
        else:
            stats.duplicates += 1
            reason = f"duplicate key (first seen in row {first})"
            skipped.append((number, key, reason, now))
            note_problem(stats, f"row {number}: key {key!r}: {reason}")
            continue
        known[key] = number
    with conn:
        conn.executemany(_INSERT, new_rows)
        conn.executemany(
            "UPDATE messages SET row = ?1, "
            f"address = CASE WHEN {REDOABLE} THEN ?2 ELSE address END, "
            f"data = CASE WHEN {REDOABLE} THEN ?3 ELSE data END, "
            f"state = CASE WHEN {REDOABLE} AND state IN ('skipped', 'failed') "
            "THEN 'pending' ELSE state END, "
            "updated_at = ?4 WHERE key = ?5",
            refreshed,
        )
        conn.executemany(_SKIP, skipped)
