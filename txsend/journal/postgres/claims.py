"""The send cycle on a PostgreSQL journal: claiming rows under a lease, and fenced writes.

Claims take a batch with `SELECT … FOR UPDATE SKIP LOCKED` in a materialised CTE feeding
`UPDATE … RETURNING` (the Oban / graphile-worker / pg-boss pattern). A claimed row stays
in its state (`pending`, `deferred`, `unknown`) and carries its owner's lease epoch; no
other worker takes it. Every write names the epoch and is refused unless the lease still
holds (`txsend.journal.postgres.leases.LEASE_HOLDS`) and the row still belongs to it.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Sequence
from contextlib import nullcontext
from typing import Any

import psycopg

from txsend.journal.postgres.database import Database
from txsend.journal.postgres.leases import LEASE_HOLDS, Lease
from txsend.journal.records import Claimed, Record
from txsend.journal.rules import claimed

__all__ = ["CLAIM_COLUMNS", "claim", "write"]

CLAIM_COLUMNS = (
    "m.key, m.row, m.address, m.data, m.message_id, m.attempts, m.state, m.first_attempt_at"
)


def claim(
    db: Database,
    job: str,
    lease: Lease,
    limit: int,
    states: list[str],
    *,
    now: float | None,
    busy: Collection[str],
) -> list[Claimed]:
    """Take up to limit free rows due now, in data order, for the lease (joined first)."""
    lease.join(job)
    if lease.lost:
        return []  # the query refuses too; the abort flag is checked by the query
    with db.connection() as conn:
        rows = conn.execute(
            "WITH picked AS MATERIALIZED (SELECT key FROM txsend_messages "
            "WHERE job = %(job)s AND owner_epoch IS NULL AND state = ANY(%(states)s) "
            "AND (next_attempt_at IS NULL OR next_attempt_at <= %(now)s) "
            "AND NOT key = ANY(%(busy)s::text[]) "
            "ORDER BY row LIMIT %(limit)s FOR UPDATE SKIP LOCKED) "
            "UPDATE txsend_messages m SET owner = %(worker)s, owner_epoch = %(epoch)s "
            "FROM picked WHERE m.job = %(job)s AND m.key = picked.key "
            f"AND {LEASE_HOLDS} "
            "AND NOT EXISTS (SELECT 1 FROM txsend_jobs j WHERE j.name = %(job)s "
            f"AND j.abort_reason IS NOT NULL) RETURNING {CLAIM_COLUMNS}",
            {
                "job": job,
                "states": states,
                "now": time.time() if now is None else now,
                "limit": limit,
                "busy": list(busy),
                "worker": lease.worker,
                "epoch": lease.epoch,
            },
        ).fetchall()
    rows.sort(key=lambda r: r[1])
    return [claimed(r) for r in rows]


def write(
    db: Database,
    job: str,
    epoch: int | None,
    sending: Sequence[tuple[str, int]],
    records: Sequence[Record],
) -> set[str]:
    """Commit `sending` rows and outcomes in one transaction; returns the keys refused."""
    now = time.time()
    asked = {key for key, _ in sending} | {r.key for r in records}
    done: set[str] = set()
    # one statement commits by itself; two (sending and outcomes) commit together
    together = (bool(sending) and bool(records)) or any(r.suppress for r in records)
    with db.connection() as conn, conn.transaction() if together else nullcontext():
        if sending:
            done.update(_mark_sending(conn, job, epoch, sending, now))
        if records:
            written = _record(conn, job, epoch, records, now)
            done.update(written)
            _suppress(conn, job, records, written, now)
    return asked - done


def _mark_sending(
    conn: psycopg.Connection[Any],
    job: str,
    epoch: int | None,
    sending: Sequence[tuple[str, int]],
    now: float,
) -> set[str]:
    """Rows entering DATA (key, run id): one attempt more each; returns the keys written."""
    cur = conn.execute(
        "UPDATE txsend_messages m SET state = 'sending', attempts = attempts + 1, "
        "first_attempt_at = coalesce(first_attempt_at, %(now)s), run_id = s.run, "
        "updated_at = %(now)s FROM unnest(%(keys)s::text[], %(runs)s::bigint[]) "
        "AS s(key, run) WHERE m.job = %(job)s AND m.key = s.key "
        f"AND m.owner_epoch = %(epoch)s AND {LEASE_HOLDS} RETURNING m.key",
        {
            "now": now,
            "keys": [key for key, _ in sending],
            "runs": [run for _, run in sending],
            "job": job,
            "epoch": epoch,
        },
    )
    return {key for (key,) in cur.fetchall()}


def _record(
    conn: psycopg.Connection[Any],
    job: str,
    epoch: int | None,
    records: Sequence[Record],
    now: float,
) -> set[str]:
    """Outcomes; each row goes back to no owner. Returns the keys written."""
    cur = conn.execute(
        "UPDATE txsend_messages m SET state = r.state, code = r.code, "
        "reply = r.reply, relay = r.relay, next_attempt_at = r.next_at, "
        "updated_at = %(now)s, attempts = attempts + r.attempt, "
        "first_attempt_at = CASE WHEN r.attempt > 0 "
        "THEN coalesce(first_attempt_at, %(now)s) ELSE first_attempt_at END, "
        "sent_at = CASE WHEN r.state = 'sent' THEN %(now)s ELSE sent_at END, "
        "owner = NULL, owner_epoch = NULL "
        "FROM unnest(%(keys)s::text[], %(states)s::text[], %(codes)s::int[], "
        "%(replies)s::text[], %(relays)s::text[], %(next)s::float8[], "
        "%(attempts)s::int[]) AS r(key, state, code, reply, relay, next_at, attempt) "
        "WHERE m.job = %(job)s AND m.key = r.key "
        f"AND m.owner_epoch = %(epoch)s AND {LEASE_HOLDS} RETURNING m.key",
        {
            "now": now,
            "keys": [r.key for r in records],
            "states": [r.state.value for r in records],
            "codes": [r.code for r in records],
            "replies": [r.reply for r in records],
            "relays": [r.relay for r in records],
            "next": [r.next_attempt_at for r in records],
            "attempts": [int(r.attempt) for r in records],
            "job": job,
            "epoch": epoch,
        },
    )
    return {key for (key,) in cur.fetchall()}


def _suppress(
    conn: psycopg.Connection[Any],
    job: str,
    records: Sequence[Record],
    written: set[str],
    now: float,
) -> None:
    """Add hard-bounced addresses to the job's suppressions (for outcomes written only)."""
    suppress = [
        (job, r.address.lower(), r.suppress, now)
        for r in records
        if r.suppress and r.address and r.key in written
    ]
    if suppress:
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO txsend_suppressions(job, address, reason, created_at) "
                "VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
                suppress,
            )
