"""Ingest into the PostgreSQL journal: the job's rows go in once, by whoever comes first.

The job's row is locked (`FOR UPDATE`) for the ingest. A job's first ingest COPYs its
rows straight into the messages table (binary); a later one (`--force` on a changed job)
COPYs them into a temporary table and then `INSERT … ON CONFLICT DO NOTHING`. A process
arriving meanwhile waits for the lock and finds the job ingested (`IngestStats.by_other`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import psycopg
from psycopg.copy import QueuedLibpqWriter

from txsend.errors import JobError, RowError
from txsend.journal.postgres.database import Database
from txsend.journal.records import IngestStats
from txsend.journal.rules import REDOABLE, SEED_MARK, encode_data, has_seeds, note_problem

__all__ = ["ingest"]

_MESSAGES_REDOABLE = REDOABLE.replace("state", "m.state")
_MARK_SEEDS = "UPDATE txsend_messages m SET " + SEED_MARK.format(
    prefix="m.job = %(job)s AND left(m.key, 5) = 'seed:'",
    table="txsend_messages",
    same_job="s.job = %(job)s AND ",
)

# A data row that could not be read: (job, row, key, reason, created_at).
_Invalid = tuple[str, int | None, str | None, str, float]


def ingest(
    db: Database,
    job: str,
    rows: Iterable[Any],
    new_message_id: Callable[[], str],
    *,
    refresh: bool = False,
) -> IngestStats:
    """Add the job's rows once, whoever comes first; idempotent.

    With refresh (`--force` on a changed job), undelivered rows take the new data and
    rows that left the data file are skipped, as in the SQLite journal.
    """
    stats = IngestStats()
    now = time.time()
    with db.connection() as conn, conn.transaction():
        locked = conn.execute(
            "SELECT ingest_complete FROM txsend_jobs WHERE name = %s FOR UPDATE", (job,)
        ).fetchone()
        if locked is None:
            raise JobError(f"internal: job {job!r} is not bound in {db.location}")
        if locked[0] and not refresh:
            stats.by_other = True  # ingested while this process waited for the lock
            (stats.existing,) = conn.execute(
                "SELECT count(*) FROM txsend_messages WHERE job = %s", (job,)
            ).fetchone() or (0,)
            return stats
        (has_rows,) = conn.execute(
            "SELECT EXISTS (SELECT 1 FROM txsend_messages WHERE job = %s)", (job,)
        ).fetchone() or (False,)
        if not has_rows and not refresh:  # the common case: straight into the table
            with conn.cursor() as cur:
                _ingest_first(cur, job, rows, new_message_id, stats, now)
            _mark_seeds(conn, job, rows, stats)
            _analyze(conn, stats)
            conn.execute("UPDATE txsend_jobs SET ingest_complete = true WHERE name = %s", (job,))
            return stats
        conn.execute(
            "CREATE TEMP TABLE txsend_ingest (row integer, key text, address text, "
            "data text, message_id text) ON COMMIT DROP"
        )
        with conn.cursor() as cur:
            invalid = _copy(cur, job, rows, new_message_id, stats, now)
            _skip_invalid(cur, job, invalid, refresh=refresh)
            _skip_duplicates(cur, job, stats, now)
            _insert_new(cur, job, stats, now)
            if refresh:
                _refresh(cur, job, now)
        _mark_seeds(conn, job, rows, stats)
        _analyze(conn, stats)
        conn.execute("UPDATE txsend_jobs SET ingest_complete = true WHERE name = %s", (job,))
    return stats


def _mark_seeds(
    conn: psycopg.Connection[Any], job: str, rows: Iterable[Any], stats: IngestStats
) -> None:
    """Mark the seed copies among the job's rows (`txsend.journal.rules.SEED_MARK`)."""
    if has_seeds(rows):
        stats.seeds = conn.execute(_MARK_SEEDS, {"job": job}).rowcount


def _analyze(conn: psycopg.Connection[Any], stats: IngestStats) -> None:
    """Statistics of the columns the plans of the send cycle depend on, before it starts.

    The plans are generic (`txsend.journal.postgres.url`): without statistics PostgreSQL
    takes `job = $1` for a selective condition and a key for one of a few rows, and the
    batched writes would read the job's every row (through the (job, state) index, or a
    scan) instead of looking their keys up in the primary key. Autovacuum takes them only
    after its next nap. These columns, from a sample of 3000 rows (the plans need to know
    only that few rows have a job's key, and many its name), take a tenth of the time of
    a whole ANALYZE; autovacuum's next one takes the usual sample.
    """
    if stats.new:
        conn.execute("SET LOCAL default_statistics_target = 10")
        conn.execute("ANALYZE txsend_messages (job, key, state, owner_epoch)")


_NEW_ROW_COLUMNS = (
    "job, key, row, address, data, message_id, state, attempts, created_at, updated_at"
)
_NEW_ROW_TYPES = ["text", "text", "int4", "text", "text", "text", "text", "int4"]
_NEW_ROW_TYPES += ["float8", "float8"]
_SEEN_BITS = 1 << 26  # 8 MiB: a key's hash seen before; a few percent at a million keys


def _ingest_first(
    cur: psycopg.Cursor[Any],
    job: str,
    rows: Iterable[Any],
    new_message_id: Callable[[], str],
    stats: IngestStats,
    now: float,
) -> None:
    """A job's first ingest: COPY the rows straight into the messages table.

    A key may be in the data file twice (its first row is the one kept): a row whose
    key's hash was seen before (a duplicate, or another key of the same hash bucket) waits
    and is decided once the others are in, by looking its key up.
    """
    seen = bytearray(_SEEN_BITS // 8)
    invalid: list[_Invalid] = []
    suspects: list[Any] = []

    def readable() -> Iterator[tuple[Any, ...]]:
        for item in rows:
            if isinstance(item, RowError):
                invalid.append(_invalid(job, item, stats, now))
                continue
            bucket = hash(item.key) % _SEEN_BITS
            if seen[bucket >> 3] & (1 << (bucket & 7)):
                suspects.append(item)
                continue
            seen[bucket >> 3] |= 1 << (bucket & 7)
            yield _new_row(job, item, new_message_id, now)

    stats.new += _copy_new(cur, readable())
    _skip_invalid(cur, job, invalid, refresh=False)
    if not suspects:
        return
    cur.execute(
        "SELECT key, row FROM txsend_messages WHERE job = %s AND key = ANY(%s)",
        (job, list({item.key for item in suspects})),
    )
    first: dict[str, int] = dict(cur.fetchall())
    new: list[tuple[Any, ...]] = []
    duplicates: list[tuple[int, str, str]] = []
    for item in suspects:  # in data order
        if item.key in first:
            reason = f"duplicate key (first seen in row {first[item.key]})"
            duplicates.append((item.number, item.key, reason))
        else:
            first[item.key] = item.number
            new.append(_new_row(job, item, new_message_id, now))
    stats.new += _copy_new(cur, iter(new))
    if duplicates:
        cur.execute(
            "INSERT INTO txsend_skipped_rows(job, row, key, reason, created_at) "
            "SELECT %s, row, key, reason, %s FROM unnest(%s::int[], %s::text[], %s::text[]) "
            "AS d(row, key, reason) ON CONFLICT DO NOTHING RETURNING row, key, reason",
            (job, now, *(list(column) for column in zip(*duplicates, strict=True))),
        )
        _count_duplicates(cur, stats)


def _copy_new(cur: psycopg.Cursor[Any], values: Iterator[tuple[Any, ...]]) -> int:
    """COPY (binary) new rows into the messages table; returns how many."""
    count = 0
    sql = f"COPY txsend_messages ({_NEW_ROW_COLUMNS}) FROM STDIN (FORMAT BINARY)"
    # the rows are encoded here while a thread hands the previous ones to the server
    with cur.copy(sql, writer=QueuedLibpqWriter(cur)) as copy:
        copy.set_types(_NEW_ROW_TYPES)
        for row in values:
            copy.write_row(row)
            count += 1
    return count


def _new_row(job: str, item: Any, new_message_id: Callable[[], str], now: float) -> tuple[Any, ...]:
    """A `pending` row of the messages table for a data row."""
    data = encode_data(item.data)
    return (
        job,
        item.key,
        item.number,
        item.address,
        data,
        new_message_id(),
        "pending",
        0,
        now,
        now,
    )


def _copy(
    cur: psycopg.Cursor[Any],
    job: str,
    rows: Iterable[Any],
    new_message_id: Callable[[], str],
    stats: IngestStats,
    now: float,
) -> list[_Invalid]:
    """COPY the readable rows into the temporary table; returns the unreadable ones."""
    invalid: list[_Invalid] = []
    with cur.copy("COPY txsend_ingest (row, key, address, data, message_id) FROM STDIN") as copy:
        for item in rows:
            if isinstance(item, RowError):
                invalid.append(_invalid(job, item, stats, now))
                continue
            copy.write_row(
                (item.number, item.key, item.address, encode_data(item.data), new_message_id())
            )
    return invalid


def _skip_invalid(
    cur: psycopg.Cursor[Any], job: str, invalid: list[_Invalid], *, refresh: bool
) -> None:
    """Record the unreadable rows (a refresh records the current data file's only)."""
    if refresh:
        cur.execute("DELETE FROM txsend_skipped_rows WHERE job = %s", (job,))
    cur.executemany(
        "INSERT INTO txsend_skipped_rows(job, row, key, reason, created_at) "
        "VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
        invalid,
    )


def _skip_duplicates(cur: psycopg.Cursor[Any], job: str, stats: IngestStats, now: float) -> None:
    """Record every row whose key an earlier row of the data file has."""
    cur.execute("CREATE INDEX ON txsend_ingest (key, row)")
    cur.execute(
        "INSERT INTO txsend_skipped_rows(job, row, key, reason, created_at) "
        "SELECT %s, row, key, 'duplicate key (first seen in row ' || first || ')', %s "
        "FROM (SELECT row, key, min(row) OVER (PARTITION BY key) AS first "
        "FROM txsend_ingest) d WHERE row <> first ON CONFLICT DO NOTHING "
        "RETURNING row, key, reason",
        (job, now),
    )
    _count_duplicates(cur, stats)


def _invalid(job: str, item: RowError, stats: IngestStats, now: float) -> _Invalid:
    """Count an unreadable row; its `skipped_rows` values."""
    stats.invalid += 1
    note_problem(stats, str(item))
    return (job, item.row, item.key, item.reason, now)


def _count_duplicates(cur: psycopg.Cursor[Any], stats: IngestStats) -> None:
    """Count the duplicate rows an INSERT … RETURNING row, key, reason recorded."""
    for row, key, reason in cur.fetchall():
        stats.duplicates += 1
        note_problem(stats, f"row {row}: key {key!r}: {reason}")


def _insert_new(cur: psycopg.Cursor[Any], job: str, stats: IngestStats, now: float) -> None:
    """Add the keys the journal does not have yet, as `pending` rows; count the others."""
    cur.execute(
        "INSERT INTO txsend_messages(job, key, row, address, data, message_id, "
        "state, attempts, created_at, updated_at) "
        "SELECT DISTINCT ON (key) %s, key, row, address, data, message_id, "
        "'pending', 0, %s, %s FROM txsend_ingest ORDER BY key, row "
        "ON CONFLICT (job, key) DO NOTHING",
        (job, now, now),
    )
    stats.new = cur.rowcount
    (distinct,) = cur.execute("SELECT count(DISTINCT key) FROM txsend_ingest").fetchone() or (0,)
    stats.existing = distinct - stats.new


def _refresh(cur: psycopg.Cursor[Any], job: str, now: float) -> None:
    """--force on a changed job: undelivered rows take the new data (see the SQLite Journal)."""
    cur.execute(
        "UPDATE txsend_messages m SET row = t.row, address = t.address, data = t.data, "
        "state = CASE WHEN m.state IN ('skipped', 'failed') THEN 'pending' ELSE m.state END, "
        "updated_at = %s FROM (SELECT DISTINCT ON (key) * FROM txsend_ingest "
        "ORDER BY key, row) t "
        f"WHERE m.job = %s AND m.key = t.key AND {_MESSAGES_REDOABLE}",
        (now, job),
    )
    cur.execute(
        "UPDATE txsend_messages m SET state = 'skipped', updated_at = %s, "
        "reply = 'no longer in the data file' "
        f"WHERE m.job = %s AND {_MESSAGES_REDOABLE} "
        "AND NOT EXISTS (SELECT 1 FROM txsend_ingest t WHERE t.key = m.key)",
        (now, job),
    )
