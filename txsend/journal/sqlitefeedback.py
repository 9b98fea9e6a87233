"""The SQLite journal's record of what came back after sending: late bounces, delays,
complaints (the `feedback` table of schema 3), and the VERP secret.

A batch of reports is one `BEGIN IMMEDIATE` transaction: the events, the rows' changes
and the suppressions commit together or not at all, so a process killed between two
batches loses none and a re-run of a batch finds each of its events recorded (duplicate)
and changes nothing. The rule is `txsend.journal.rules.plan_feedback`, shared with the
PostgreSQL journal.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import time
from collections.abc import Iterator, Sequence
from typing import Any

from txsend.journal import sqliteschema
from txsend.journal.records import FeedbackEntry, FeedbackRow
from txsend.journal.rules import (
    FEEDBACK_COLUMNS,
    FEEDBACK_COUNT_NAMES,
    FEEDBACK_COUNTS,
    feedback_event,
    message_id_range,
    plan_feedback,
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

_SECRET = "verp_secret"
_ROW_COLUMNS = "key, address, message_id, state, sent_at"
_INSERT_EVENT = "INSERT INTO feedback({}) VALUES ({})".format(
    ", ".join(FEEDBACK_COLUMNS), ", ".join("?" * len(FEEDBACK_COLUMNS))
)
_CHANGE_ROW = (
    "UPDATE messages SET state = ?1, reply = ?2, code = CASE WHEN ?3 THEN ?4 ELSE code END, "
    "sent_at = CASE WHEN ?5 THEN coalesce(sent_at, ?6) ELSE sent_at END, updated_at = ?6 "
    "WHERE key = ?7"
)


def verp_secret(conn: sqlite3.Connection) -> bytes:
    """The journal's VERP secret: 32 random bytes made on first call, the same ever after."""
    stored = sqliteschema.get_meta(conn, _SECRET)
    if stored is None:
        with conn:
            conn.execute(
                "INSERT INTO meta(name, value) VALUES (?, ?) ON CONFLICT(name) DO NOTHING",
                (_SECRET, secrets.token_hex(32)),
            )
        stored = sqliteschema.get_meta(conn, _SECRET)
        assert stored is not None
    return bytes.fromhex(stored)


def prepare_feedback(conn: sqlite3.Connection) -> None:
    """Make the indexes the lookups by Message-ID and by address use (once)."""
    with conn:
        for ddl in sqliteschema.FEEDBACK_INDEXES:
            conn.execute(ddl)


def feedback_rows(
    conn: sqlite3.Connection,
    *,
    key: str | None,
    message_hex: str | None,
    address: str | None,
    limit: int,
) -> list[FeedbackRow]:
    """The rows one key, one Message-ID's hex, or one address (any case) names."""
    if sum(value is not None for value in (key, message_hex, address)) != 1:
        raise ValueError("feedback_rows takes exactly one of key, message_hex, address")
    params: tuple[str, ...]
    if key is not None:
        where, params = "key = ?", (key,)
    elif message_hex is not None:
        bounds = message_id_range(message_hex)
        if bounds is None:
            return []
        where, params = "message_id >= ? AND message_id < ?", bounds
    else:
        where, params = "address = ? COLLATE NOCASE", (str(address),)
    cur = conn.execute(
        f"SELECT {_ROW_COLUMNS} FROM messages WHERE {where} ORDER BY row LIMIT ?",
        (*params, limit),
    )
    return [_row(values) for values in cur]


def recorded_feedback(conn: sqlite3.Connection, event_ids: Sequence[str]) -> set[str]:
    """Which of these event ids the journal has recorded already."""
    if not event_ids:
        return set()
    found = conn.execute(
        "SELECT event_id FROM feedback WHERE event_id IN (SELECT value FROM json_each(?))",
        (json.dumps(list(event_ids)),),
    )
    return {event_id for (event_id,) in found}


def record_feedback(conn: sqlite3.Connection, entries: Sequence[FeedbackEntry]) -> list[str]:
    """Record a batch of reports in one transaction; per entry "applied", "noted" or
    "duplicate" (`txsend.journal.rules.plan_feedback`)."""
    if not entries:
        return []
    now = time.time()
    with conn:
        conn.execute("BEGIN IMMEDIATE")  # the write lock first: what is read stays true
        event_ids = json.dumps([entry.event_id for entry in entries])
        recorded = {
            event_id
            for (event_id,) in conn.execute(
                "SELECT event_id FROM feedback WHERE event_id IN (SELECT value FROM json_each(?))",
                (event_ids,),
            )
        }
        keys = json.dumps(sorted({e.key for e in entries if e.key is not None}))
        rows = {
            row.key: row
            for row in map(
                _row,
                conn.execute(
                    f"SELECT {_ROW_COLUMNS} FROM messages "
                    "WHERE key IN (SELECT value FROM json_each(?))",
                    (keys,),
                ),
            )
        }
        plan = plan_feedback(entries, recorded, rows, now)
        conn.executemany(
            _CHANGE_ROW,
            [
                (c.state.value, c.reply, c.sets_code, c.code, c.sent, now, key)
                for key, c in plan.changes.items()
            ],
        )
        conn.executemany(
            "INSERT OR IGNORE INTO suppressions(address, reason, created_at) VALUES (?, ?, ?)",
            [(address, reason, now) for address, reason in plan.suppressions],
        )
        conn.executemany(_INSERT_EVENT, plan.events)
    return plan.results


def feedback_counts(conn: sqlite3.Connection) -> dict[str, int]:
    """Late bounces (rows), delays, complaints, unmatched reports and all events."""
    values = conn.execute(FEEDBACK_COUNTS.format(table="feedback")).fetchone()
    return {name: int(n) for name, n in zip(FEEDBACK_COUNT_NAMES, values, strict=True)}


def feedback_events(conn: sqlite3.Connection, limit: int) -> Iterator[dict[str, Any]]:
    """The recorded events, newest first."""
    cur = conn.execute(
        f"SELECT {', '.join(FEEDBACK_COLUMNS)} FROM feedback ORDER BY id DESC LIMIT ?",
        (limit,),
    )
    for values in cur:
        yield feedback_event(values)


def _row(values: tuple[Any, ...]) -> FeedbackRow:
    key, address, message_id, state, sent_at = values
    return FeedbackRow(key, address, message_id, State(state), sent_at)
