"""The SQLite journal's ingest paths and schema: a fresh journal's bulk path gives the rows
an existing journal gets, CSV rows stored compactly read back the same, schema 1 journals
open, migrate and resume."""

from __future__ import annotations

import itertools
import json
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from txsend.errors import ConfigError, RowError
from txsend.job.loading import load_job
from txsend.job.recipients import iter_rows
from txsend.job.rowbatches import RecipientRows
from txsend.job.spec import Job
from txsend.journal.records import FeedbackEntry, Record
from txsend.journal.sqlite import SCHEMA_VERSION, Journal
from txsend.journal.sqliteingest import INGEST_BATCH
from txsend.journal.sqliteschema import ArrayEncoder
from txsend.models import Row, State


def ids(prefix: str = "m") -> Callable[[], str]:
    counter = itertools.count()
    return lambda: f"<{prefix}.{next(counter)}@example.com>"


class ManyIds:
    """A Message-ID generator that also draws a batch's ids at once (as MessageIds does)."""

    def __init__(self) -> None:
        self._counter = itertools.count()

    def __call__(self) -> str:
        return f"<m.{next(self._counter)}@example.com>"

    def many(self, n: int) -> list[str]:
        return [self() for _ in range(n)]


def stored(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Everything ingest wrote, without times, as read by a plain connection."""
    with closing(sqlite3.connect(path)) as conn:
        return {
            "messages": conn.execute(
                "SELECT key, row, address, data, message_id, state, attempts FROM messages "
                "WHERE key != 'older@example.com' ORDER BY key"
            ).fetchall(),
            "skipped": conn.execute(
                "SELECT row, key, reason FROM skipped_rows ORDER BY row"
            ).fetchall(),
        }


def has_state_index(path: Path) -> bool:
    with closing(sqlite3.connect(path)) as conn:
        found = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE name = 'idx_messages_state_next_attempt_at'"
        ).fetchone()
    return found is not None


def mixed_rows() -> list[Row | RowError]:
    """More than two batches: an error, duplicates within a batch and across batches."""
    n = 2 * INGEST_BATCH + 10
    rows: list[Row | RowError] = [
        Row(i, f"k{i}@example.com", f"k{i}@example.com", {"n": i, "ü": "é"}) for i in range(1, n)
    ]
    rows[5] = RowError("missing address (no value in 'email')", row=6, key="k6")
    rows[10] = Row(11, "k3@example.com", "k3@example.com", {"n": "dup in batch"})
    rows[INGEST_BATCH + 7] = Row(INGEST_BATCH + 8, "k2@example.com", "x@example.com", {})
    return rows


@pytest.mark.parametrize("new_ids", [ids, ManyIds])
def test_fresh_and_existing_journals_get_the_same_rows(
    tmp_path: Path, new_ids: Callable[[], Callable[[], str]]
) -> None:
    data = mixed_rows()
    with closing(Journal.open(tmp_path / "fresh.db")) as fresh:
        fresh_stats = fresh.ingest(data, new_ids())
    with closing(Journal.open(tmp_path / "existing.db")) as existing:
        existing.ingest([Row(1, "older@example.com", "older@example.com", {})], ids("o"))
        existing_stats = existing.ingest(data, new_ids())
    assert (fresh_stats.new, fresh_stats.duplicates, fresh_stats.invalid) == (len(data) - 3, 2, 1)
    assert fresh_stats == existing_stats
    assert stored(tmp_path / "fresh.db") == stored(tmp_path / "existing.db")
    assert len(stored(tmp_path / "fresh.db")["messages"]) == len(data) - 3


def test_ingest_again_after_an_interrupted_first_ingest(tmp_path: Path) -> None:
    data = mixed_rows()

    def dies_midway() -> Iterator[Row | RowError]:
        yield from data[: INGEST_BATCH + 100]
        raise KeyboardInterrupt

    path = tmp_path / "j.db"
    with closing(Journal.open(path)) as journal, pytest.raises(KeyboardInterrupt):
        journal.ingest(dies_midway(), ids())
    assert not has_state_index(path)  # made at the end of the first ingest
    with closing(Journal.open(path)) as journal:
        assert has_state_index(path)  # or when a journal with rows opens without it
        assert not journal.ingest_complete()
        journal.ingest(data, ids("again"))
        assert journal.ingest_complete()
        assert journal.counts()[State.PENDING] == len(data) - 3
    with closing(Journal.open(tmp_path / "once.db")) as once:
        once.ingest(data, ids())
    first, redone = stored(tmp_path / "once.db"), stored(path)
    assert redone["skipped"] == first["skipped"]
    # rows of the stored batch keep their first ids; the rest were drawn by the second run
    assert [m[:4] for m in redone["messages"]] == [m[:4] for m in first["messages"]]


def csv_job(folder: Path, content: str) -> Job:
    (folder / "list.csv").write_text(content, encoding="utf-8")
    (folder / "job.yaml").write_text(
        "from: noreply@acme.example\nsubject: Hi\ntext_inline: x\n"
        "recipients:\n  file: list.csv\n  key: id\n"
    )
    return load_job(folder / "job.yaml")


CSV = (
    "id,email,name,\n"
    "1,a@example.com,Ada,x\n"
    '2,b@example.com,"Quote ""me"", \\\\ and\nbreak",\n'
    "3,bad address,C,\n"
    "1,c@example.com,Dup,\n"
    "4,jürgen@bücher.example,Jürgen \u2028 ☃,\n"
)


def test_csv_rows_in_batches_read_back_as_rows_do(tmp_path: Path) -> None:
    job = csv_job(tmp_path, CSV)
    with closing(Journal.open(tmp_path / "batches.db")) as journal:
        batched = journal.ingest(RecipientRows(job), ids())
        claimed = journal.claim(10, include_unknown=False)
    with closing(Journal.open(tmp_path / "rows.db")) as journal:
        one_by_one = journal.ingest(list(iter_rows(job)), ids())
        expected = journal.claim(10, include_unknown=False)
    assert batched == one_by_one
    assert (batched.new, batched.duplicates, batched.invalid) == (3, 1, 1)
    assert claimed == expected
    assert claimed[1].data == {
        "id": "2",
        "email": "b@example.com",
        "name": 'Quote "me", \\\\ and\nbreak',
    }
    with closing(sqlite3.connect(tmp_path / "batches.db")) as conn:
        (data,) = conn.execute("SELECT data FROM messages WHERE key = '1'").fetchone()
        assert data == '[1,"1","a@example.com","Ada","x"]'  # the header is stored once
    assert stored(tmp_path / "batches.db")["skipped"] == stored(tmp_path / "rows.db")["skipped"]


def test_a_changed_header_keeps_what_delivered_rows_were_sent(tmp_path: Path) -> None:
    job = csv_job(tmp_path, "id,email,name\n1,a@example.com,Ada\n2,b@example.com,Bob\n")
    path = tmp_path / "j.db"
    with closing(Journal.open(path)) as journal:
        journal.ingest(RecipientRows(job), ids())
        journal.write([], [Record("1", State.SENT, 250, "ok")])
    job = csv_job(tmp_path, "email,id,city\na@example.com,1,Rome\nb@example.com,2,Oslo\n")
    with closing(Journal.open(path)) as journal:
        journal.ingest(RecipientRows(job), ids(), refresh=True)
        sent, pending = journal.find("1"), journal.find("2")
        assert sent is not None and pending is not None
        assert sent.data == {"id": "1", "email": "a@example.com", "name": "Ada"}
        assert pending.data == {"email": "b@example.com", "id": "2", "city": "Oslo"}
        assert [data for data, *_ in journal.iter_problems()] == []


# --- the schema -------------------------------------------------------------------

# The tables as txsend made them with schema 1 (through sqlite-utils).
SCHEMA_1 = [
    'CREATE TABLE "meta" (\n   "name" TEXT PRIMARY KEY,\n   "value" TEXT\n)',
    'CREATE TABLE "messages" (\n   "key" TEXT PRIMARY KEY,\n   "row" INTEGER NOT NULL,\n'
    '   "address" TEXT NOT NULL,\n   "data" TEXT NOT NULL,\n   "message_id" TEXT NOT NULL,\n'
    '   "state" TEXT NOT NULL,\n   "attempts" INTEGER NOT NULL DEFAULT 0,\n'
    '   "code" INTEGER,\n   "reply" TEXT,\n   "relay" TEXT,\n   "run_id" INTEGER,\n'
    '   "created_at" REAL,\n   "updated_at" REAL,\n   "sent_at" REAL,\n'
    '   "first_attempt_at" REAL,\n   "next_attempt_at" REAL\n)',
    'CREATE INDEX "idx_messages_state_next_attempt_at"\n'
    '    ON "messages" ("state", "next_attempt_at")',
    'CREATE TABLE "skipped_rows" (\n   "row" INTEGER PRIMARY KEY,\n   "key" TEXT,\n'
    '   "reason" TEXT,\n   "created_at" REAL\n)',
    'CREATE TABLE "suppressions" (\n   "address" TEXT PRIMARY KEY,\n   "reason" TEXT,\n'
    '   "created_at" REAL\n)',
    'CREATE TABLE "rate_windows" (\n   "relay" TEXT,\n   "window_start" REAL,\n'
    '   "count" INTEGER,\n   PRIMARY KEY ("relay", "window_start")\n)',
    'CREATE TABLE "runs" (\n   "id" INTEGER PRIMARY KEY,\n   "command" TEXT,\n'
    '   "pid" INTEGER,\n   "started_at" REAL,\n   "ended_at" REAL,\n'
    '   "exit_code" INTEGER,\n   "fingerprint" TEXT,\n   "counts" TEXT\n)',
]


def schema_1_journal(path: Path) -> None:
    """A journal as schema 1 wrote it: two rows ingested, the first one sent."""
    with closing(sqlite3.connect(path)) as conn, conn:
        for ddl in SCHEMA_1:
            conn.execute(ddl)
        conn.execute("INSERT INTO meta VALUES ('schema', '1'), ('ingest_complete', '1')")
        conn.executemany(
            "INSERT INTO messages(key, row, address, data, message_id, state, attempts, "
            "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, 1.0, 1.0)",
            [
                ("k1@example.com", 1, "k1@example.com", '{"n": 1}', "<a@x>", "sent", 1),
                ("k2@example.com", 2, "k2@example.com", '{"n": 2}', "<b@x>", "pending", 0),
            ],
        )


def columns(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    with closing(sqlite3.connect(path)) as conn:
        tables = [
            name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        ]
        return {t: conn.execute(f"PRAGMA table_info({t})").fetchall() for t in tables}


def test_a_new_journal_has_the_tables_of_schema_1(tmp_path: Path) -> None:
    schema_1_journal(tmp_path / "old.db")
    with closing(Journal.open(tmp_path / "new.db")) as journal:
        journal.ingest([Row(1, "a@example.com", "a@example.com", {})], ids())
    new, old = columns(tmp_path / "new.db"), columns(tmp_path / "old.db")
    assert new.pop("data_headers") == [
        (0, "id", "INTEGER", 0, None, 1),
        (1, "columns", "TEXT", 1, None, 0),
    ]
    assert [column[1] for column in new.pop("feedback")][:3] == ["id", "event_id", "kind"]
    # schema 4 adds the seed copies' column after schema 1's
    assert new["messages"].pop() == (16, "seed_of", "TEXT", 0, None, 0)
    # schema 5 replaces the fixed rate windows with the quota ledger
    assert [column[1] for column in old.pop("rate_windows")] == ["relay", "window_start", "count"]
    assert [column[1] for column in new.pop("rate_buckets")] == [
        "account",
        "start",
        "width",
        "accepted",
        "keep_until",
    ]
    assert [column[1] for column in new.pop("rate_holds")] == ["id", "account", "expires_at"]
    assert new == old
    # the lookups of `txsend bounces` are not indexed at ingest: sending does not pay
    assert indexes(tmp_path / "new.db") == [
        "idx_messages_seeds",
        "idx_messages_state_next_attempt_at",
    ]


def indexes(path: Path) -> list[str]:
    """The indexes made by name (not the automatic ones of keys and UNIQUE) on messages."""
    with closing(sqlite3.connect(path)) as conn:
        found = conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'messages' "
            "AND sql IS NOT NULL ORDER BY name"
        ).fetchall()
    return [name for (name,) in found]


def test_a_schema_1_journal_opens_migrates_and_resumes(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    schema_1_journal(path)
    with closing(Journal.open(path)) as journal:
        assert journal.get_meta("schema") == str(SCHEMA_VERSION) == "5"
        stats = journal.ingest(
            [Row(i, f"k{i}@example.com", f"k{i}@example.com", {"n": i}) for i in (1, 2, 3)],
            ids(),
        )
        assert (stats.new, stats.existing) == (1, 2)
        claimed = journal.claim(10, include_unknown=False)
        assert [(c.key, c.data, c.message_id) for c in claimed] == [
            ("k2@example.com", {"n": 2}, "<b@x>"),
            ("k3@example.com", {"n": 3}, "<m.0@example.com>"),
        ]
        assert journal.counts()[State.SENT] == 1


# What schema 2 added to schema 1 (the DDL of the txsend that wrote schema 2).
DATA_HEADERS_2 = (
    'CREATE TABLE "data_headers" (\n   "id" INTEGER PRIMARY KEY,\n   "columns" TEXT NOT NULL\n)'
)


def schema_2_journal(path: Path) -> None:
    """A journal as schema 2 wrote it: a JSON row sent, a compact CSV row pending."""
    schema_1_journal(path)
    with closing(sqlite3.connect(path)) as conn, conn:
        conn.execute(DATA_HEADERS_2)
        conn.execute("UPDATE meta SET value = '2' WHERE name = 'schema'")
        conn.execute("INSERT INTO data_headers VALUES (1, ?)", ('["email", "name"]',))
        conn.execute(
            "INSERT INTO messages(key, row, address, data, message_id, state, attempts, "
            "created_at, updated_at) VALUES (?, 3, ?, ?, ?, 'pending', 0, 1.0, 1.0)",
            ("k3@example.com", "k3@example.com", '[1,"k3@example.com","Ada"]', f"<{'c' * 32}@x>"),
        )


def test_a_schema_2_journal_opens_migrates_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "two.db"
    schema_2_journal(path)
    with closing(Journal.open(path)) as journal:
        assert journal.get_meta("schema") == "5"
        assert journal.counts()[State.SENT] == 1
        pending = journal.find("k3@example.com")
        assert pending is not None
        assert pending.data == {"email": "k3@example.com", "name": "Ada"}
        secret = journal.verp_secret()
        entry = FeedbackEntry("e1", "failed", "k1@example.com", "verp", status="5.1.1")
        assert journal.record_feedback([entry]) == ["applied"]
        assert journal.feedback_counts()["late_bounced"] == 1
        assert indexes(path) == ["idx_messages_seeds", "idx_messages_state_next_attempt_at"]
        journal.prepare_feedback()
        found = journal.feedback_rows(message_hex="c" * 32)
        assert [(r.key, r.state) for r in found] == [("k3@example.com", State.PENDING)]
    assert indexes(path) == [
        "idx_messages_address",
        "idx_messages_message_id",
        "idx_messages_seeds",
        "idx_messages_state_next_attempt_at",
    ]
    with closing(Journal.open(path)) as journal:
        assert journal.verp_secret() == secret
        sent = journal.find("k1@example.com")
        assert sent is not None and sent.state is State.BOUNCED


def test_a_schema_4_journal_carries_its_rate_windows_into_the_ledger(tmp_path: Path) -> None:
    """The fixed windows of the last two days become buckets (a count is never lost);
    older ones, which no quota counts any more, are left behind with the table."""
    path = tmp_path / "four.db"
    schema_1_journal(path)
    hour = time.time() // 3600 * 3600
    with closing(sqlite3.connect(path)) as conn, conn:
        conn.execute('ALTER TABLE "messages" ADD COLUMN "seed_of" TEXT')
        conn.execute("UPDATE meta SET value = '4' WHERE name = 'schema'")
        conn.executemany(
            "INSERT INTO rate_windows VALUES (?, ?, ?)",
            [("smtp://u@r:587", hour, 4), ("smtp://u@r:587", hour - 30 * 86400, 9)],
        )
    with closing(Journal.open(path)) as journal:
        assert journal.get_meta("schema") == "5"
        width = 86400.0 if hour % 86400 == 0 else 3600.0
        usage = journal.ledger_usage("smtp://u@r:587", 0.0, time.time())
        assert usage.buckets == [(hour, width, 4)]
    assert "rate_windows" not in columns(path)


def test_a_journal_of_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    Journal.open(path).close()
    with closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("UPDATE meta SET value = ? WHERE name = 'schema'", (SCHEMA_VERSION + 1,))
    with pytest.raises(ConfigError, match="newer txsend"):
        Journal.open(path)


def test_opening_a_journal_does_not_import_sqlite_utils() -> None:
    code = "import sys, txsend.journal.sqlite; print('sqlite_utils' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def reference_encoding(header: int, rows: list[list[str]]) -> list[str]:
    return [json.dumps([header, *r], ensure_ascii=False, separators=(",", ":")) for r in rows]


@pytest.mark.parametrize(
    "rows",
    [
        [["a@example.com", "Ada"], ["b@example.com", ""]],
        [['say "hi"', "back\\slash"], ["tab\there", "nul\x00", "\x1f\n"]],
        [["ü☃\u2028\x7f"], []],
        [],
    ],
)
def test_array_encoder_is_json(rows: list[list[str]]) -> None:
    assert ArrayEncoder(7)(rows) == reference_encoding(7, rows)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.text(max_size=8), max_size=4), max_size=6))
def test_array_encoder_is_json_for_any_text(rows: list[list[str]]) -> None:
    assert ArrayEncoder(1)(rows) == reference_encoding(1, rows)
