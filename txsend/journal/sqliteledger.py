"""The SQLite journal's quota ledger (schema 5): accepted recipients per time bucket, and
the send slots held for transactions under way.

A quota (`txsend.delivery.quotas`) keys its rows by account: a relay's URL without
password, or `warmup:<domain>`. A bucket row counts the recipients accepted in
[start, start + width); `keep_until` is when no window needs it any more (NULL: kept, the
warm-up's history). A hold is one send slot taken before a transaction; it counts like an
acceptance until it is kept (turned into one), released, or lapses at `expires_at` (a
process killed mid-transaction cannot leak it).

One process works a SQLite journal at a time (`txsend.journal.lock`) and calls these from
its event loop's thread, so a hold's count and insert are not split by another taker.
"""

from __future__ import annotations

import sqlite3

from txsend.journal.records import LedgerUsage

__all__ = ["first", "give_back", "hold", "keep", "prune", "release", "seed", "sent_days", "usage"]

_ACCEPTED = (
    "SELECT coalesce(sum(accepted), 0) FROM rate_buckets WHERE account = ? AND start + width > ?"
)
_HELD = "SELECT count(*) FROM rate_holds WHERE account = ? AND expires_at > ?"


def hold(
    conn: sqlite3.Connection, account: str, since: float, limit: int, now: float, expires: float
) -> int | None:
    """A new hold if the buckets overlapping [since, now] and the live holds count fewer
    than limit; its id, or None (nothing taken)."""
    with conn:
        accepted = int(conn.execute(_ACCEPTED, (account, since)).fetchone()[0])
        held = int(conn.execute(_HELD, (account, now)).fetchone()[0])
        if accepted + held >= limit:
            return None
        cur = conn.execute(
            "INSERT INTO rate_holds(account, expires_at) VALUES (?, ?)", (account, expires)
        )
    assert cur.lastrowid is not None
    return cur.lastrowid


def keep(
    conn: sqlite3.Connection,
    hold_id: int,
    account: str,
    start: float,
    width: float,
    keep_until: float | None,
) -> None:
    """Turn a hold into an acceptance counted in the bucket [start, start + width)."""
    with conn:
        conn.execute("DELETE FROM rate_holds WHERE id = ?", (hold_id,))
        conn.execute(
            "INSERT INTO rate_buckets(account, start, width, accepted, keep_until) "
            "VALUES (?, ?, ?, 1, ?) ON CONFLICT(account, start, width) DO UPDATE SET "
            "accepted = accepted + 1, keep_until = CASE WHEN keep_until IS NULL "
            "OR excluded.keep_until IS NULL THEN NULL "
            "ELSE max(keep_until, excluded.keep_until) END",
            (account, start, width, keep_until),
        )


def release(conn: sqlite3.Connection, hold_id: int) -> None:
    """Give a hold back: nothing went."""
    with conn:
        conn.execute("DELETE FROM rate_holds WHERE id = ?", (hold_id,))


def give_back(conn: sqlite3.Connection, account: str, start: float, width: float) -> None:
    """Take one acceptance back out of its bucket (the relay refused the message after all)."""
    with conn:
        conn.execute(
            "UPDATE rate_buckets SET accepted = accepted - 1 "
            "WHERE account = ? AND start = ? AND width = ? AND accepted > 0",
            (account, start, width),
        )


def usage(conn: sqlite3.Connection, account: str, since: float, now: float) -> LedgerUsage:
    """The buckets overlapping [since, now], oldest first, and the live holds' expiries."""
    buckets = conn.execute(
        "SELECT start, width, accepted FROM rate_buckets "
        "WHERE account = ? AND start + width > ? AND accepted > 0 ORDER BY start + width",
        (account, since),
    ).fetchall()
    holds = conn.execute(
        "SELECT expires_at FROM rate_holds WHERE account = ? AND expires_at > ? "
        "ORDER BY expires_at",
        (account, now),
    ).fetchall()
    return LedgerUsage(
        [(float(s), float(w), int(n)) for s, w, n in buckets], [float(e) for (e,) in holds]
    )


def first(conn: sqlite3.Connection, account: str) -> float | None:
    """The start of the account's earliest bucket that holds an acceptance."""
    row = conn.execute(
        "SELECT min(start) FROM rate_buckets WHERE account = ? AND accepted > 0", (account,)
    ).fetchone()
    return None if row is None or row[0] is None else float(row[0])


def sent_days(conn: sqlite3.Connection) -> list[tuple[float, int]]:
    """The journal's accepted recipients per UTC day (the rows with a `sent_at`: sent, or
    bounced later by feedback), oldest first: the whole journal is one job."""
    rows = conn.execute(
        "SELECT CAST(sent_at / 86400 AS INTEGER) * 86400.0 AS day, count(*) FROM messages "
        "WHERE sent_at IS NOT NULL GROUP BY day ORDER BY day"
    ).fetchall()
    return [(float(day), int(n)) for day, n in rows]


def seed(conn: sqlite3.Connection, account: str, buckets: list[tuple[float, float, int]]) -> bool:
    """Count `buckets` (start, width, accepted; kept for good) for an account that has no
    bucket yet; False (nothing written) when it has one: idempotent."""
    with conn:
        if conn.execute(
            "SELECT 1 FROM rate_buckets WHERE account = ? LIMIT 1", (account,)
        ).fetchone():
            return False
        conn.executemany(
            "INSERT INTO rate_buckets(account, start, width, accepted, keep_until) "
            "VALUES (?, ?, ?, ?, NULL)",
            [(account, start, width, n) for start, width, n in buckets if n > 0],
        )
    return True


def prune(conn: sqlite3.Connection, now: float) -> None:
    """Delete buckets no window needs any more, and every hold: a run prunes as it
    starts, holding the journal's lock, so no other process can have a transaction
    under way (the holds left are a killed run's; waiting for them to lapse would stall
    the run for minutes)."""
    with conn:
        conn.execute("DELETE FROM rate_buckets WHERE keep_until <= ?", (now,))
        conn.execute("DELETE FROM rate_holds")
