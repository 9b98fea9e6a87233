"""Rate limits every worker of a PostgreSQL journal shares.

A relay's pace is one GCRA row per relay (`tat`, the theoretical arrival time, on the
server's clock); a worker reserves several slots per round trip.

Quotas are the ledger (schema 4, as `txsend.journal.sqliteledger` for SQLite): accepted
recipients per account per time bucket (`txsend_rate_buckets`) and the send slots held
for transactions under way (`txsend_rate_holds`). The tables have no job column: every
job and worker using the database shares an account's quota. A hold takes a transaction
advisory lock on its account, so two workers counting at once cannot both take the last
slot. Quota times are the callers' wall clocks (injectable in tests).

A hold names its owner: the worker and its lease epoch (`txsend.journal.postgres.leases`).
The holds of an owner whose lease expired or ended (a worker killed mid-transaction, or
one that stopped without giving them back) count for nothing: they are left out of
`usage`, deleted by `prune` as a run starts, and deleted by `hold` when the window is full
(a wait for them would last until they lapse, minutes later). A live worker's holds are
never touched. A hold without an owner (taken without a lease) lapses at its expiry.
"""

from __future__ import annotations

import logging

from txsend.journal.postgres.database import Database
from txsend.journal.postgres.schema import NOW
from txsend.journal.records import LedgerUsage
from txsend.logs import event

__all__ = [
    "first",
    "give_back",
    "hold",
    "keep",
    "prune",
    "release",
    "reserve_slots",
    "seed",
    "sent_days",
    "usage",
]

_LEDGER_LOCK = 0x7478_6C67  # advisory lock class of a ledger account ("txlg")

# True for a hold (as h) whose owner's lease is over: expired (on the server's clock, as
# `leases.LEASE_HOLDS`), reaped or stopped
_OWNER_GONE = (
    "(h.owner_epoch IS NOT NULL AND NOT EXISTS (SELECT 1 FROM txsend_workers w "
    f"WHERE w.epoch = h.owner_epoch AND w.state = 'active' AND w.expires_at > {NOW}))"
)
_COUNTED = (
    "SELECT (SELECT coalesce(sum(accepted), 0) FROM txsend_rate_buckets "
    "        WHERE account = %(a)s AND start + width > %(since)s) "
    "     + (SELECT count(*) FROM txsend_rate_holds "
    "        WHERE account = %(a)s AND expires_at > %(now)s)"
)


def hold(
    db: Database,
    account: str,
    since: float,
    limit: int,
    now: float,
    expires: float,
    owner: tuple[str, int] | None = None,
) -> int | None:
    """A new hold for `owner` (worker, lease epoch) if the window [since, now] has room,
    under the account's lock; a full window first frees the holds of owners gone."""
    params = {"a": account, "since": since, "now": now}
    with db.connection() as conn, conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (_LEDGER_LOCK, account))
        row = conn.execute(_COUNTED, params).fetchone()
        assert row is not None
        if int(row[0]) >= limit:
            gone = conn.execute(
                f"DELETE FROM txsend_rate_holds h WHERE account = %s AND {_OWNER_GONE} "
                "RETURNING owner",
                (account,),
            ).fetchall()
            if not gone:
                return None
            _freed(gone, account)
            row = conn.execute(_COUNTED, params).fetchone()
            assert row is not None
            if int(row[0]) >= limit:
                return None
        worker, epoch = owner if owner is not None else (None, None)
        made = conn.execute(
            "INSERT INTO txsend_rate_holds(account, expires_at, owner, owner_epoch) "
            "VALUES (%s, %s, %s, %s) RETURNING id",
            (account, expires, worker, epoch),
        ).fetchone()
        assert made is not None
        return int(made[0])


def _freed(gone: list[tuple[str | None]], account: str | None = None) -> None:
    """Say that the holds of workers whose lease is over were freed."""
    owners = sorted({owner for (owner,) in gone if owner is not None})
    where = f" of {account}" if account is not None else ""
    event(
        logging.WARNING,
        "quota_holds_freed",
        f"{len(gone)} held slot{'' if len(gone) == 1 else 's'}{where} freed: "
        f"{'their worker' if len(owners) == 1 else 'their workers'} "
        f"({', '.join(owners)}) stopped or lost the lease",
        account=account,
        freed=len(gone),
        workers=owners,
    )


def keep(
    db: Database, hold_id: int, account: str, start: float, width: float, keep_until: float | None
) -> None:
    """Turn a hold into an acceptance counted in the bucket [start, start + width)."""
    with db.connection() as conn, conn.transaction():
        conn.execute("DELETE FROM txsend_rate_holds WHERE id = %s", (hold_id,))
        conn.execute(
            "INSERT INTO txsend_rate_buckets(account, start, width, accepted, keep_until) "
            "VALUES (%s, %s, %s, 1, %s) ON CONFLICT (account, start, width) DO UPDATE SET "
            "accepted = txsend_rate_buckets.accepted + 1, "
            "keep_until = CASE WHEN txsend_rate_buckets.keep_until IS NULL "
            "OR excluded.keep_until IS NULL THEN NULL "
            "ELSE greatest(txsend_rate_buckets.keep_until, excluded.keep_until) END",
            (account, start, width, keep_until),
        )


def release(db: Database, hold_id: int) -> None:
    """Give a hold back: nothing went."""
    with db.connection() as conn:
        conn.execute("DELETE FROM txsend_rate_holds WHERE id = %s", (hold_id,))


def give_back(db: Database, account: str, start: float, width: float) -> None:
    """Take one acceptance back out of its bucket."""
    with db.connection() as conn:
        conn.execute(
            "UPDATE txsend_rate_buckets SET accepted = accepted - 1 "
            "WHERE account = %s AND start = %s AND width = %s AND accepted > 0",
            (account, start, width),
        )


def usage(db: Database, account: str, since: float, now: float) -> LedgerUsage:
    """The buckets overlapping [since, now], oldest first, and the live holds' expiries."""
    buckets = db.all(
        "SELECT start, width, accepted FROM txsend_rate_buckets "
        "WHERE account = %s AND start + width > %s AND accepted > 0 ORDER BY start + width",
        (account, since),
    )
    holds = db.all(
        "SELECT expires_at FROM txsend_rate_holds h WHERE account = %s AND expires_at > %s "
        f"AND NOT {_OWNER_GONE} ORDER BY expires_at",
        (account, now),
    )
    return LedgerUsage(
        [(float(s), float(w), int(n)) for s, w, n in buckets], [float(e) for (e,) in holds]
    )


def first(db: Database, account: str) -> float | None:
    """The start of the account's earliest bucket that holds an acceptance."""
    row = db.one(
        "SELECT min(start) FROM txsend_rate_buckets WHERE account = %s AND accepted > 0",
        (account,),
    )
    return None if row is None or row[0] is None else float(row[0])


def sent_days(db: Database, job: str) -> list[tuple[float, int]]:
    """A job's accepted recipients per UTC day (its rows with a `sent_at`), oldest first.
    The From address is not stored per job: the job's own rows are its sender's."""
    rows = db.all(
        "SELECT floor(sent_at / 86400) * 86400 AS day, count(*) FROM txsend_messages "
        "WHERE job = %s AND sent_at IS NOT NULL GROUP BY day ORDER BY day",
        (job,),
    )
    return [(float(day), int(n)) for day, n in rows]


def seed(db: Database, account: str, buckets: list[tuple[float, float, int]]) -> bool:
    """Count `buckets` (kept for good) for an account that has no bucket yet, under the
    account's lock; False (nothing written) when it has one: idempotent."""
    with db.connection() as conn, conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (_LEDGER_LOCK, account))
        found = conn.execute(
            "SELECT 1 FROM txsend_rate_buckets WHERE account = %s LIMIT 1", (account,)
        ).fetchone()
        if found is not None:
            return False
        for start, width, n in buckets:
            if n > 0:
                conn.execute(
                    "INSERT INTO txsend_rate_buckets(account, start, width, accepted, "
                    "keep_until) VALUES (%s, %s, %s, %s, NULL)",
                    (account, start, width, n),
                )
    return True


def prune(db: Database, now: float) -> None:
    """Delete buckets no window needs any more, holds that have lapsed, and the holds of
    owners whose lease is over (a worker killed mid-transaction: not waited for)."""
    with db.connection() as conn, conn.transaction():
        conn.execute("DELETE FROM txsend_rate_buckets WHERE keep_until <= %s", (now,))
        conn.execute("DELETE FROM txsend_rate_holds WHERE expires_at <= %s", (now,))
        gone = conn.execute(
            f"DELETE FROM txsend_rate_holds h WHERE {_OWNER_GONE} RETURNING owner"
        ).fetchall()
    if gone:
        _freed(gone)


def reserve_slots(db: Database, relay: str, emission: float, n: int) -> float:
    """GCRA over every worker: n slots from the relay's row; seconds to the first."""
    row = db.one(
        f"INSERT INTO txsend_rates(relay, tat) VALUES (%(relay)s, {NOW} + %(span)s) "
        "ON CONFLICT (relay) DO UPDATE SET tat = "
        f"greatest(txsend_rates.tat, {NOW}) + %(span)s "
        f"RETURNING tat - %(span)s - {NOW}",
        {"relay": relay, "span": emission * n},
    )
    assert row is not None
    return float(row[0])
