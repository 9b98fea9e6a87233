"""The send cycle on a PostgreSQL journal: claiming rows under a lease, and fenced writes.

Claims take a batch with `SELECT … FOR UPDATE SKIP LOCKED` in a sub-select feeding
`UPDATE … RETURNING` (the Oban / graphile-worker / pg-boss pattern). A claimed row stays
in its state (`pending`, `deferred`, `unknown`) and carries its owner's lease epoch; no
other worker takes it. Every write names the epoch and is refused unless the lease still
holds (`txsend.journal.postgres.leases.LEASE_HOLDS`) and the row still belongs to it.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Sequence
from typing import Any

import psycopg

from txsend.journal.postgres.database import Database
from txsend.journal.postgres.leases import LEASE_HOLDS, Lease
from txsend.journal.records import Claimed, Record
from txsend.journal.rules import claimed
from txsend.models import State

__all__ = ["CLAIM_COLUMNS", "claim", "write"]

CLAIM_COLUMNS = (
    "m.key, m.row, m.address, m.data, m.message_id, m.attempts, m.state, m.first_attempt_at, "
    "m.seed_of"
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
    # The plan is generic (`txsend.journal.postgres.url`): the states are literals, so that
    # it may use the partial index of free rows, and the rows picked are looked up by key
    # (`= ANY(ARRAY(...))`), not joined (a generic plan expects a tenth of the table).
    listed = ", ".join(f"'{State(state).value}'" for state in states)
    with db.connection() as conn:
        rows = conn.execute(
            "UPDATE txsend_messages m SET owner = %(worker)s, owner_epoch = %(epoch)s "
            "WHERE m.job = %(job)s AND m.key = ANY(ARRAY(SELECT key FROM txsend_messages "
            f"WHERE job = %(job)s AND owner_epoch IS NULL AND state IN ({listed}) "
            "AND (next_attempt_at IS NULL OR next_attempt_at <= %(now)s) "
            "AND NOT key = ANY(%(busy)s::text[]) "
            "ORDER BY row LIMIT %(limit)s FOR UPDATE SKIP LOCKED)) "
            f"AND {LEASE_HOLDS} "
            "AND NOT EXISTS (SELECT 1 FROM txsend_jobs j WHERE j.name = %(job)s "
            f"AND j.abort_reason IS NOT NULL) RETURNING {CLAIM_COLUMNS}",
            {
                "job": job,
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
    """Commit `sending` rows and outcomes in one transaction; returns the keys refused.

    One statement (`WRITE` for both, or the one that is needed: one round trip, one
    commit) unless a key is in both, or a hard bounce adds a suppression: then one
    transaction of several.
    """
    now = time.time()
    asked = {key for key, _ in sending} | {r.key for r in records}
    if not asked:
        return set()
    params = _write_params(job, epoch, sending, records, now)
    overlap = len(asked) < len(sending) + len(records)
    suppress = any(r.suppress for r in records)
    with db.connection() as conn:
        if not overlap and not suppress:
            query = WRITE if sending and records else MARK_SENDING if sending else RECORD
            done = {key for (key,) in conn.execute(query, params).fetchall()}
            return asked - done
        with conn.transaction():
            done = set()
            if sending:
                done.update(key for (key,) in conn.execute(MARK_SENDING, params).fetchall())
            if records:
                written = {key for (key,) in conn.execute(RECORD, params).fetchall()}
                done.update(written)
                _suppress(conn, job, records, written, now)
    return asked - done


# Rows entering DATA (key, run id): one attempt more each. These statements are planned
# once per connection (a generic plan: `txsend.journal.postgres.url`), which must stay a
# look-up of each of the batch's keys in the primary key: with the statistics an ingest
# leaves (`txsend.journal.postgres.ingest`), and with the owner compared through coalesce
# (epochs start at 1), so that the owner index, which statistics taken before the run
# find very selective (every owner NULL), is not used to walk the worker's claimed rows.
MARK_SENDING = (
    "UPDATE txsend_messages m SET state = 'sending', attempts = m.attempts + 1, "
    "first_attempt_at = coalesce(m.first_attempt_at, %(now)s), run_id = s.run, "
    "updated_at = %(now)s FROM unnest(%(keys)s::text[], %(runs)s::bigint[]) "
    "AS s(key, run) WHERE m.job = %(job)s "
    "AND m.key = s.key AND coalesce(m.owner_epoch, 0) = %(epoch)s "
    f"AND {LEASE_HOLDS} RETURNING m.key"
)
# Outcomes; each row goes back to no owner.
RECORD = (
    "UPDATE txsend_messages m SET state = r.state, code = r.code, "
    "reply = r.reply, relay = r.relay, next_attempt_at = r.next_at, "
    "updated_at = %(now)s, attempts = m.attempts + r.attempt, "
    "first_attempt_at = CASE WHEN r.attempt > 0 "
    "THEN coalesce(m.first_attempt_at, %(now)s) ELSE m.first_attempt_at END, "
    "sent_at = CASE WHEN r.state = 'sent' THEN %(now)s ELSE m.sent_at END, "
    "owner = NULL, owner_epoch = NULL "
    "FROM unnest(%(rkeys)s::text[], %(states)s::text[], %(codes)s::int[], "
    "%(replies)s::text[], %(relays)s::text[], %(next)s::float8[], "
    "%(attempts)s::int[]) AS r(key, state, code, reply, relay, next_at, attempt) "
    "WHERE m.job = %(job)s AND m.key = r.key "
    f"AND coalesce(m.owner_epoch, 0) = %(epoch)s AND {LEASE_HOLDS} RETURNING m.key"
)
# Both at once, for keys that are in one of them only (a statement updates a row once).
WRITE = (
    f"WITH marked AS ({MARK_SENDING}), recorded AS ({RECORD}) "
    "SELECT key FROM marked UNION ALL SELECT key FROM recorded"
)


def _write_params(
    job: str,
    epoch: int | None,
    sending: Sequence[tuple[str, int]],
    records: Sequence[Record],
    now: float,
) -> dict[str, Any]:
    return {
        "now": now,
        "job": job,
        "epoch": epoch,
        "keys": [key for key, _ in sending],
        "runs": [run for _, run in sending],
        "rkeys": [r.key for r in records],
        "states": [r.state.value for r in records],
        "codes": [r.code for r in records],
        "replies": [r.reply for r in records],
        "relays": [r.relay for r in records],
        "next": [r.next_attempt_at for r in records],
        "attempts": [int(r.attempt) for r in records],
    }


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
