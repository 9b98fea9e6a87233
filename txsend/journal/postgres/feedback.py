"""The PostgreSQL journal's record of what came back after sending: late bounces, delays,
complaints (`txsend_feedback`, keyed by job and event id), and each job's VERP secret.

A batch of reports is one transaction: the events, the rows' changes and the suppressions
commit together or not at all. Batches of one job are serialized by an advisory lock
(two `txsend bounces` reading the same mailbox: the second finds the first's events and
changes nothing), and the rows a batch changes are locked (`FOR UPDATE`) while it
decides. A row a report changes goes back to no owner, so that a worker holding it (an
`unknown` row claimed again) has its writes refused instead of sending it once more.
The rule is `txsend.journal.rules.plan_feedback`, shared with the SQLite journal.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator, Sequence
from typing import Any

from txsend.errors import MissingInputError
from txsend.journal.postgres.database import Database
from txsend.journal.postgres.schema import FEEDBACK_INDEXES, SCHEMA_LOCK
from txsend.journal.records import FeedbackEntry, FeedbackRow
from txsend.journal.rules import (
    FEEDBACK_COLUMNS,
    FEEDBACK_COUNT_NAMES,
    FEEDBACK_COUNTS,
    feedback_event,
    message_id_range,
    plan_feedback,
    unique_events,
)
from txsend.models import State

__all__ = [
    "feedback_counts",
    "feedback_events",
    "feedback_rows",
    "prepare_feedback",
    "record_feedback",
    "verp_secret",
]

FEEDBACK_LOCK = 0x7478_6662  # advisory lock class "txfb", with the job's hash as the key
_ROW_COLUMNS = "key, address, message_id, state, sent_at"
_INSERT_EVENT = "INSERT INTO txsend_feedback(job, {}) VALUES (%s, {})".format(
    ", ".join(FEEDBACK_COLUMNS), ", ".join(["%s"] * len(FEEDBACK_COLUMNS))
)
_CHANGE_ROWS = (
    "UPDATE txsend_messages m SET state = c.state, reply = c.reply, "
    "code = CASE WHEN c.sets_code THEN c.code ELSE m.code END, "
    "sent_at = CASE WHEN c.sent THEN coalesce(m.sent_at, %(now)s) ELSE m.sent_at END, "
    "updated_at = %(now)s, owner = NULL, owner_epoch = NULL "
    "FROM unnest(%(keys)s::text[], %(states)s::text[], %(replies)s::text[], "
    "%(sets)s::bool[], %(codes)s::int[], %(sent)s::bool[]) "
    "AS c(key, state, reply, sets_code, code, sent) "
    "WHERE m.job = %(job)s AND m.key = c.key"
)


def verp_secret(db: Database, job: str) -> bytes:
    """The job's VERP secret: 32 random bytes made on first call, the same ever after."""
    found = db.one("SELECT verp_secret FROM txsend_jobs WHERE name = %s", (job,))
    if found is not None and found[0] is not None:
        return bytes(found[0])
    found = db.one(
        "UPDATE txsend_jobs SET verp_secret = coalesce(verp_secret, %s) WHERE name = %s "
        "RETURNING verp_secret",
        (secrets.token_bytes(32), job),
    )
    if found is None:
        raise MissingInputError(
            f"no job {job!r} in the journal {db.location}",
            hint="run the job first: txsend run JOB --journal URL",
        )
    return bytes(found[0])


def prepare_feedback(db: Database) -> None:
    """Make the indexes the lookups by Message-ID and by address use, if they are missing
    (building one locks writers of the table out for a moment: only once)."""
    with db.connection() as conn, conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
        found = conn.execute(
            "SELECT to_regclass('txsend_messages_message_id') IS NOT NULL "
            "AND to_regclass('txsend_messages_address') IS NOT NULL"
        ).fetchone()
        if not (found and found[0]):
            conn.execute(FEEDBACK_INDEXES)


def feedback_rows(
    db: Database,
    job: str,
    *,
    key: str | None,
    message_hex: str | None,
    address: str | None,
    limit: int,
) -> list[FeedbackRow]:
    """The job's rows one key, one Message-ID's hex, or one address (any case) names."""
    if sum(value is not None for value in (key, message_hex, address)) != 1:
        raise ValueError("feedback_rows takes exactly one of key, message_hex, address")
    params: tuple[Any, ...]
    if key is not None:
        where, params = "key = %s", (key,)
    elif message_hex is not None:
        bounds = message_id_range(message_hex)
        if bounds is None:
            return []
        # the pattern operators compare byte-wise, as the index's text_pattern_ops
        where, params = "message_id ~>=~ %s AND message_id ~<~ %s", bounds
    else:
        where, params = "lower(address) = lower(%s)", (address,)
    rows = db.all(
        f"SELECT {_ROW_COLUMNS} FROM txsend_messages WHERE job = %s AND {where} "
        "ORDER BY row LIMIT %s",
        (job, *params, limit),
    )
    return [_row(values) for values in rows]


def record_feedback(db: Database, job: str, entries: Sequence[FeedbackEntry]) -> list[str]:
    """Record a batch of reports in one transaction; per entry "applied", "noted" or
    "duplicate" (`txsend.journal.rules.plan_feedback`)."""
    if not entries:
        return []
    unique_events(entries)  # every entry has an event id, before anything is asked
    now = time.time()
    with db.connection() as conn, conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (FEEDBACK_LOCK, job))
        recorded = {
            event_id
            for (event_id,) in conn.execute(
                "SELECT event_id FROM txsend_feedback WHERE job = %s "
                "AND event_id = ANY(%s::text[])",
                (job, [entry.event_id for entry in entries]),
            )
        }
        keys = sorted({entry.key for entry in entries if entry.key is not None})
        rows = {
            row.key: row
            for row in map(
                _row,
                conn.execute(
                    f"SELECT {_ROW_COLUMNS} FROM txsend_messages WHERE job = %s "
                    "AND key = ANY(%s::text[]) ORDER BY key FOR UPDATE",
                    (job, keys),
                ),
            )
        }
        plan = plan_feedback(entries, recorded, rows, now)
        changes = list(plan.changes.items())
        if changes:
            conn.execute(
                _CHANGE_ROWS,
                {
                    "now": now,
                    "job": job,
                    "keys": [key for key, _ in changes],
                    "states": [c.state.value for _, c in changes],
                    "replies": [c.reply for _, c in changes],
                    "sets": [c.sets_code for _, c in changes],
                    "codes": [c.code for _, c in changes],
                    "sent": [c.sent for _, c in changes],
                },
            )
        with conn.cursor() as cur:
            if plan.suppressions:
                cur.executemany(
                    "INSERT INTO txsend_suppressions(job, address, reason, created_at) "
                    "VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
                    [(job, address, reason, now) for address, reason in plan.suppressions],
                )
            if plan.events:
                cur.executemany(_INSERT_EVENT, [(job, *values) for values in plan.events])
    return plan.results


def recorded_feedback(db: Database, job: str, event_ids: Sequence[str]) -> set[str]:
    """Which of these event ids the job's journal has recorded already."""
    if not event_ids:
        return set()
    found = db.all(
        "SELECT event_id FROM txsend_feedback WHERE job = %s AND event_id = ANY(%s::text[])",
        (job, list(event_ids)),
    )
    return {event_id for (event_id,) in found}


def feedback_counts(db: Database, job: str) -> dict[str, int]:
    """Late bounces (rows), delays, complaints, unmatched reports and all events."""
    values = db.one(FEEDBACK_COUNTS.format(table="txsend_feedback WHERE job = %s"), (job,))
    assert values is not None
    return {name: int(n) for name, n in zip(FEEDBACK_COUNT_NAMES, values, strict=True)}


def feedback_events(db: Database, job: str, limit: int) -> Iterator[dict[str, Any]]:
    """The job's recorded events, newest first."""
    rows = db.all(
        f"SELECT {', '.join(FEEDBACK_COLUMNS)} FROM txsend_feedback WHERE job = %s "
        "ORDER BY id DESC LIMIT %s",
        (job, limit),
    )
    for values in rows:
        yield feedback_event(values)


def _row(values: tuple[Any, ...]) -> FeedbackRow:
    key, address, message_id, state, sent_at = values
    return FeedbackRow(key, address, message_id, State(state), sent_at)
