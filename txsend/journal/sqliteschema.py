"""The SQLite journal's tables, its migrations, and how a row's stored data reads back.

Plain `sqlite3` and explicit DDL (no schema library on the start-up path). The DDL is
the schema that schema 1 journals were made with: the same tables, column names, types,
primary keys, NOT NULL constraints and defaults, so that either kind opens the same way.

Schema 2 adds `data_headers`: a CSV file's header, stored once. A message's `data` is
then either a JSON object (schema 1, JSONL rows, rows given as `Row` objects) or a JSON
array `[header id, value, ...]`: the values of a CSV row in the order of its header.
Migrating a schema 1 journal adds the table; its rows keep their objects.

Schema 3 adds `feedback`: the reports that came back after sending (late bounces, delays,
complaints), one row per event id, so that reading a mailbox twice counts once. The VERP
secret is a `meta` value. Migrating from schema 1 or 2 adds the table; nothing else
changes. The indexes the reports' lookups need (`FEEDBACK_INDEXES`) are made by the
first `txsend bounces`, not at ingest: the send path does not pay for them.

Schema 4 adds `messages.seed_of`: the key of the row a seed copy copies (NULL for every
other row; `txsend.job.seeds`), and a partial index of the seed rows by state for the
counts. Migrating from an older schema adds the column (NULL: no seeds) and the index.

Schema 5 replaces `rate_windows` (messages per relay per clock-aligned hour or day) with
the quota ledger (`txsend.journal.sqliteledger`): `rate_buckets`, accepted recipients per
account per time bucket of any width, and `rate_holds`, the send slots held for
transactions under way. Migrating copies each window of the last two days into a bucket
(a window starting at a UTC midnight as a day's, any other as an hour's: a count is
never lost, at worst an hourly quota counts a midnight window for the whole day) and
drops `rate_windows`.
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
from collections.abc import Sequence
from json.encoder import encode_basestring
from pathlib import Path
from typing import Any

from txsend.errors import ConfigError

__all__ = [
    "FEEDBACK_INDEXES",
    "SCHEMA_VERSION",
    "STATE_INDEX",
    "ArrayEncoder",
    "DataDecoder",
    "column_groups",
    "get_meta",
    "header_id",
    "migrate",
    "set_meta",
]

SCHEMA_VERSION = 5

_TABLES = (
    """CREATE TABLE IF NOT EXISTS "messages" (
   "key" TEXT PRIMARY KEY,
   "row" INTEGER NOT NULL,
   "address" TEXT NOT NULL,
   "data" TEXT NOT NULL,
   "message_id" TEXT NOT NULL,
   "state" TEXT NOT NULL,
   "attempts" INTEGER NOT NULL DEFAULT 0,
   "code" INTEGER,
   "reply" TEXT,
   "relay" TEXT,
   "run_id" INTEGER,
   "created_at" REAL,
   "updated_at" REAL,
   "sent_at" REAL,
   "first_attempt_at" REAL,
   "next_attempt_at" REAL
)""",
    """CREATE TABLE IF NOT EXISTS "skipped_rows" (
   "row" INTEGER PRIMARY KEY,
   "key" TEXT,
   "reason" TEXT,
   "created_at" REAL
)""",
    """CREATE TABLE IF NOT EXISTS "suppressions" (
   "address" TEXT PRIMARY KEY,
   "reason" TEXT,
   "created_at" REAL
)""",
    """CREATE TABLE IF NOT EXISTS "runs" (
   "id" INTEGER PRIMARY KEY,
   "command" TEXT,
   "pid" INTEGER,
   "started_at" REAL,
   "ended_at" REAL,
   "exit_code" INTEGER,
   "fingerprint" TEXT,
   "counts" TEXT
)""",
    # schema 2
    """CREATE TABLE IF NOT EXISTS "data_headers" (
   "id" INTEGER PRIMARY KEY,
   "columns" TEXT NOT NULL
)""",
    # schema 3
    """CREATE TABLE IF NOT EXISTS "feedback" (
   "id" INTEGER PRIMARY KEY,
   "event_id" TEXT NOT NULL UNIQUE,
   "kind" TEXT NOT NULL,
   "key" TEXT,
   "matched_by" TEXT,
   "recipient" TEXT,
   "status" TEXT,
   "code" INTEGER,
   "diagnostic" TEXT,
   "reporting_mta" TEXT,
   "source" TEXT,
   "detector" TEXT,
   "occurred_at" REAL,
   "suppress" TEXT,
   "unmatched_reason" TEXT,
   "outcome" TEXT NOT NULL,
   "state_before" TEXT,
   "state_after" TEXT,
   "recorded_at" REAL NOT NULL
)""",
    # schema 5
    """CREATE TABLE IF NOT EXISTS "rate_buckets" (
   "account" TEXT NOT NULL,
   "start" REAL NOT NULL,
   "width" REAL NOT NULL,
   "accepted" INTEGER NOT NULL,
   "keep_until" REAL,
   PRIMARY KEY ("account", "start", "width")
)""",
    """CREATE TABLE IF NOT EXISTS "rate_holds" (
   "id" INTEGER PRIMARY KEY,
   "account" TEXT NOT NULL,
   "expires_at" REAL NOT NULL
)""",
    'CREATE INDEX IF NOT EXISTS "idx_rate_holds_account" ON "rate_holds" ("account")',
)

# schema 5: the fixed windows of schema 1 to 4 become buckets of the ledger
_OLD_WINDOWS = (
    "INSERT OR IGNORE INTO rate_buckets(account, start, width, accepted, keep_until) "
    "SELECT relay, window_start, "
    "CASE WHEN window_start % 86400 = 0 THEN 86400.0 ELSE 3600.0 END, count, "
    "window_start + 2 * 86400 FROM rate_windows WHERE window_start >= ? AND count > 0"
)

_META = """CREATE TABLE IF NOT EXISTS "meta" (
   "name" TEXT PRIMARY KEY,
   "value" TEXT
)"""

# The index the retry and summary queries use. A new journal gets it at the end of its
# first ingest (one sort is cheaper than keeping it up to date row by row); a journal
# that has rows but no index (its first ingest was interrupted) gets it when opened.
STATE_INDEX = (
    'CREATE INDEX IF NOT EXISTS "idx_messages_state_next_attempt_at" '
    'ON "messages" ("state", "next_attempt_at")'
)

# The lookups of `txsend bounces` (a report names a row by its Message-ID or its address).
FEEDBACK_INDEXES = (
    'CREATE INDEX IF NOT EXISTS "idx_messages_message_id" ON "messages" ("message_id")',
    'CREATE INDEX IF NOT EXISTS "idx_messages_address" ON "messages" ("address" COLLATE NOCASE)',
)


# schema 4: the seed copies (ALTER TABLE: the CREATE TABLE above is schema 1's)
SEED_COLUMN = 'ALTER TABLE "messages" ADD COLUMN "seed_of" TEXT'
SEED_INDEX = (
    'CREATE INDEX IF NOT EXISTS "idx_messages_seeds" ON "messages" ("state") '
    'WHERE "seed_of" IS NOT NULL'
)


def get_meta(conn: sqlite3.Connection, name: str) -> str | None:
    """A stored metadata value, or None."""
    row = conn.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
    return None if row is None else str(row[0])


def set_meta(conn: sqlite3.Connection, name: str, value: str) -> None:
    """Store a metadata value (the caller commits)."""
    conn.execute(
        "INSERT INTO meta(name, value) VALUES (?, ?) "
        "ON CONFLICT(name) DO UPDATE SET value = excluded.value",
        (name, value),
    )


def migrate(conn: sqlite3.Connection, path: Path) -> None:
    """Create the tables of a new journal, or bring an older one to `SCHEMA_VERSION`."""
    with conn:
        conn.execute(_META)
        version = get_meta(conn, "schema")
        if version is not None and int(version) > SCHEMA_VERSION:
            raise ConfigError(
                f"journal {path} was written by a newer txsend (schema {version})",
                hint="upgrade txsend",
            )
        for ddl in _TABLES:
            conn.execute(ddl)
        columns = {row[1] for row in conn.execute('PRAGMA table_info("messages")')}
        if "seed_of" not in columns:
            conn.execute(SEED_COLUMN)
        conn.execute(SEED_INDEX)
        if conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'rate_windows'"
        ).fetchone():
            conn.execute(_OLD_WINDOWS, (time.time() - 2 * 86400,))
            conn.execute('DROP TABLE "rate_windows"')
        if conn.execute("SELECT 1 FROM messages LIMIT 1").fetchone() is not None:
            conn.execute(STATE_INDEX)
        if version != str(SCHEMA_VERSION):
            set_meta(conn, "schema", str(SCHEMA_VERSION))


def header_id(conn: sqlite3.Connection, header: list[str]) -> int:
    """The id of a CSV header in `data_headers`, stored now if it is new (committed)."""
    columns = json.dumps(header, ensure_ascii=False)
    with conn:
        found = conn.execute("SELECT id FROM data_headers WHERE columns = ?", (columns,)).fetchone()
        if found is not None:
            return int(found[0])
        cur = conn.execute("INSERT INTO data_headers(columns) VALUES (?)", (columns,))
    assert cur.lastrowid is not None
    return cur.lastrowid


# What a JSON encoder escapes in a string (ensure_ascii=False), but NUL: the separator below.
_ESCAPED = re.compile(r'["\\\x01-\x1f]')


class ArrayEncoder:
    """The stored form of CSV rows' values: `[header id,"value",...]`, a batch at a time.

    The same text as `json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))` gives
    for `[header id, *values]`. A batch whose values hold nothing to escape (the common
    case) is quoted and cut apart by a few string operations over the whole batch.
    """

    def __init__(self, header: int) -> None:
        self._prefix = f"[{header},"
        self._separator = f'"]\x00[{header},"'

    def __call__(self, rows_values: Sequence[list[str]]) -> list[str]:
        if not rows_values:
            return []
        values = "\x00".join(map("\x00".join, rows_values))
        count = sum(map(len, rows_values))
        if values.count("\x00") == count - 1 and _ESCAPED.search(values) is None:
            quoted = self._separator.join(map('","'.join, rows_values))
            return f'{self._prefix}"{quoted}"]'.split("\x00")
        prefix, empty = self._prefix, self._prefix[:-1] + "]"
        return [
            prefix + ",".join(map(encode_basestring, v)) + "]" if v else empty for v in rows_values
        ]


class DataDecoder:
    """A message's stored data as the dict the renderer gets (either stored form)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._headers: dict[int, list[str]] = {}

    def __call__(self, data: str) -> dict[str, Any]:
        value = json.loads(data)
        if not isinstance(value, list):
            return dict(value)
        header = self._headers.get(value[0])
        if header is None:
            header = self._header(value[0])
        # a column without a name is not part of the data (as when read from the file)
        return {name: v for name, v in zip(header, value[1:], strict=True) if name}

    def _header(self, number: int) -> list[str]:
        row = self._conn.execute(
            "SELECT columns FROM data_headers WHERE id = ?", (number,)
        ).fetchone()
        if row is None:
            raise ConfigError(f"journal row refers to a CSV header ({number}) it does not hold")
        header: list[str] = json.loads(row[0])
        self._headers[number] = header
        return header


_DUE = "state IN ('pending', 'deferred')"
_TEXT = "nullif(trim(CAST({} AS TEXT)), '')"  # as text, stripped; empty: NULL


def column_groups(conn: sqlite3.Connection, column: str, limit: int) -> list[tuple[Any, int]]:
    """A data column's raw values among rows still due, grouped, with counts (either stored
    form: the value at the column's place in each CSV header's arrays, the member of the
    objects). Matched as the decoded dict is read: the exact name, else the first name
    equal to it case-insensitively. In SQL: no row is decoded in Python."""
    groups: list[tuple[Any, int]] = []
    for number, columns in conn.execute("SELECT id, columns FROM data_headers"):
        place = _place(json.loads(columns), column)
        prefix = f"[{number}"
        where = f"{_DUE} AND (substr(data, 1, {len(prefix) + 1}) = ? OR data = ?)"
        if place is None:  # every row of this header lacks the column
            (count,) = conn.execute(
                f"SELECT count(*) FROM messages WHERE {where}", (prefix + ",", prefix + "]")
            ).fetchone()
            groups.extend([(None, count)] if count else [])
            continue
        value = _TEXT.format(f"json_extract(data, '$[{place + 1}]')")
        groups += conn.execute(
            f"SELECT {value} AS v, count(*) FROM messages "
            f"WHERE {where} GROUP BY v ORDER BY count(*) DESC LIMIT ?",
            (prefix + ",", prefix + "]", limit),
        ).fetchall()
    exact = (
        "(SELECT e.value FROM json_each(m.data) AS e WHERE e.key = :column)"
        if '"' in column or "\\" in column  # not a label a JSON path can quote
        else "json_extract(m.data, '$.\"' || :column || '\"')"
    )
    groups += conn.execute(
        "SELECT "
        + _TEXT.format(
            f"coalesce({exact}, (SELECT e.value FROM json_each(m.data) AS e "
            "WHERE lower(e.key) = lower(:column) ORDER BY e.id LIMIT 1))"
        )
        + " AS v, count(*) "
        f"FROM messages AS m WHERE {_DUE} AND substr(m.data, 1, 1) = '{{' "
        "GROUP BY v ORDER BY count(*) DESC LIMIT :limit",
        {"column": column, "limit": limit},
    ).fetchall()
    return groups


def _place(header: list[str], column: str) -> int | None:
    """Where a column is in a CSV header, as `DataDecoder`'s dict finds it: the last of
    that exact name (later ones win), else the first of the name in another case."""
    exact = [i for i, name in enumerate(header) if name == column]
    if exact:
        return exact[-1]
    folded = column.casefold()
    return next((i for i, name in enumerate(header) if name and name.casefold() == folded), None)
