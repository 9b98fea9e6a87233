"""The SQLite journal: one row per recipient key, in one file, through plain sqlite3.

It implements `txsend.journal.api.JournalBackend`, as the PostgreSQL journal does; one
process works a SQLite journal at a time (`txsend.journal.lock`).

Crash protocol: a row is made `sending` in a committed transaction before its DATA
command is sent, and `sent` after the relay's 250. A process that dies in between leaves
rows in `sending`; `recover()` turns them into `unknown` (RFC 1047's window).

Durability: WAL with synchronous=NORMAL. A committed transaction survives the process
being killed at any moment (it is in the WAL file); only a power loss or kernel crash can
roll back the last few commits.

The tables and their migrations are in `txsend.journal.sqliteschema`, the ingest in
`txsend.journal.sqliteingest`, the reports that came back after sending (late bounces,
complaints) in `txsend.journal.sqlitefeedback`.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from txsend.errors import ConfigError, JobError, MissingInputError
from txsend.journal import sqlitefeedback, sqliteingest, sqliteledger, sqliteschema
from txsend.journal.api import SharedJournal
from txsend.journal.records import (
    Claimed,
    FeedbackEntry,
    FeedbackRow,
    IngestStats,
    LedgerUsage,
    Record,
)
from txsend.journal.rules import (
    ENDED_IN_DATA,
    OUTCOME_COLUMNS,
    PROBLEM_STATES,
    claimed,
    describe_changes,
    error_skip_sql,
    final_counts,
    merge_values,
    run_info,
)
from txsend.models import RunInfo, State

__all__ = ["SCHEMA_VERSION", "Journal"]

SCHEMA_VERSION = sqliteschema.SCHEMA_VERSION
_PROBLEMS = "WHERE state IN ({})".format(", ".join(f"'{s}'" for s in PROBLEM_STATES))


class Journal:
    """A job's journal in one SQLite file."""

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        self.path = path
        self._conn = conn
        self._decode = sqliteschema.DataDecoder(conn)
        self._cursor = 0  # rowid after which the next claim starts
        self._tat: dict[str, float] = {}  # reserve_slots: theoretical arrival time per relay

    @property
    def location(self) -> str:
        return str(self.path)

    @property
    def shared(self) -> bool:
        return False  # one process at a time holds the journal's lock

    def as_shared(self) -> SharedJournal | None:
        return None

    # --- opening -------------------------------------------------------------------

    @classmethod
    def open(cls, path: Path, *, create: bool = True) -> Journal:
        """Open (and with create, make) the journal file at path."""
        if not create and not path.exists():
            raise MissingInputError(
                f"no journal at {path}", hint="run the job first: txsend run JOB"
            )
        existed = path.exists()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if not existed:
                # the journal holds addresses: readable by its owner only
                os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
            conn = sqlite3.connect(str(path))
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=5000")
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError(f"cannot open journal {path}: {exc}") from exc
        journal = cls(path, conn)
        journal._migrate()
        return journal

    def _migrate(self) -> None:
        sqliteschema.migrate(self._conn, self.path)

    def close(self) -> None:
        """Checkpoint and close the database."""
        self._conn.close()

    # --- meta and fingerprint --------------------------------------------------------

    def get_meta(self, name: str) -> str | None:
        """A stored metadata value, or None."""
        return sqliteschema.get_meta(self._conn, name)

    def set_meta(self, name: str, value: str) -> None:
        """Store a metadata value (the caller commits)."""
        sqliteschema.set_meta(self._conn, name, value)

    def bind_job(self, job_name: str, fingerprint: dict[str, str], spec: dict[str, Any]) -> None:
        """Tie a new journal to a job; refuse a journal made for another job name."""
        stored = self.get_meta("job_name")
        if stored is not None and stored != job_name:
            raise JobError(
                f"journal {self.path} belongs to job {stored!r}, not {job_name!r}",
                hint="pass --journal with another path, or keep the job's name",
            )
        with self._conn:
            self.set_meta("job_name", job_name)
            self.set_meta("fingerprint", json.dumps(fingerprint, sort_keys=True))
            self.set_meta("job_spec", json.dumps(spec, sort_keys=True))

    def changes_since(self, fingerprint: dict[str, str]) -> list[str]:
        """What differs between the stored job fingerprint and this one (empty: same job)."""
        stored_text = self.get_meta("fingerprint")
        if stored_text is None:
            return []
        stored: dict[str, str] = json.loads(stored_text)
        return describe_changes(stored, fingerprint)

    def job_spec(self) -> dict[str, Any] | None:
        """How the job was defined when the journal was made (job file path, flags)."""
        text = self.get_meta("job_spec")
        return None if text is None else dict(json.loads(text))

    # --- ingest ----------------------------------------------------------------------

    def ingest(
        self, rows: Iterable[Any], new_message_id: Callable[[], str], *, refresh: bool = False
    ) -> IngestStats:
        """Add rows (Row or RowError) not seen before, in batches; idempotent.

        With refresh (the data or templates changed and the user passed --force), rows not
        yet delivered take the new data and are rendered again, and rows that left the
        data file are skipped. Delivered rows keep what was sent. Rows that come in
        batches (`txsend.journal.sqliteingest.CsvBatches`) are read that way.
        """
        return sqliteingest.ingest(self._conn, rows, new_message_id, refresh=refresh)

    def ingest_complete(self) -> bool:
        """True once every row of the data file has been ingested."""
        return self.get_meta("ingest_complete") == "1"

    # --- the send cycle --------------------------------------------------------------

    def recover(self) -> int:
        """Turn rows a dead run left in `sending` into `unknown`; returns how many."""
        with self._conn:
            cur = self._conn.execute(
                f"UPDATE messages SET state = ?, updated_at = ?, reply = '{ENDED_IN_DATA}' "
                "WHERE state = ?",
                (State.UNKNOWN.value, time.time(), State.SENDING.value),
            )
        return cur.rowcount

    _CLAIM_COLUMNS = (
        "rowid, key, row, address, data, message_id, attempts, state, first_attempt_at, seed_of"
    )

    def claim(
        self, limit: int, *, include_unknown: bool, now: float | None = None
    ) -> list[Claimed]:
        """The next rows due for sending, in data order; each row is claimed once per pass."""
        states = [State.PENDING.value, State.DEFERRED.value]
        if include_unknown:
            states.append(State.UNKNOWN.value)
        marks = ",".join("?" * len(states))
        rows = self._conn.execute(
            # NOT INDEXED: walk rowids from the cursor. With the state index SQLite would
            # sort every pending row on each claim, quadratic in the list size.
            f"SELECT {self._CLAIM_COLUMNS} FROM messages NOT INDEXED "
            f"WHERE rowid > ? AND state IN ({marks}) "
            "AND (next_attempt_at IS NULL OR next_attempt_at <= ?) "
            "ORDER BY rowid LIMIT ?",
            (self._cursor, *states, time.time() if now is None else now, limit),
        ).fetchall()
        if rows:
            self._cursor = rows[-1][0]
        return [self._claimed(values) for values in rows]

    def claim_retries(
        self, limit: int, *, busy: Collection[str], now: float | None = None
    ) -> list[Claimed]:
        """Deferred rows whose retry time has come, except those still in the pipeline."""
        rows = self._conn.execute(
            f"SELECT {self._CLAIM_COLUMNS} FROM messages "
            "WHERE state = 'deferred' AND next_attempt_at <= ? "
            "ORDER BY next_attempt_at, rowid LIMIT ?",
            (time.time() if now is None else now, limit + len(busy)),
        ).fetchall()
        return [self._claimed(values) for values in rows if values[1] not in busy][:limit]

    def write(self, sending: Sequence[tuple[str, int]], records: Sequence[Record]) -> set[str]:
        """Commit, in one transaction, rows entering `sending` (key, run id) and outcomes.

        Returns the keys refused: none, since no other process writes this journal.
        """
        now = time.time()
        with self._conn:
            if sending:
                self._conn.executemany(
                    "UPDATE messages SET state = 'sending', attempts = attempts + 1, "
                    "first_attempt_at = coalesce(first_attempt_at, ?2), "
                    "run_id = ?1, updated_at = ?2 WHERE key = ?3",
                    [(run_id, now, key) for key, run_id in sending],
                )
            if records:
                self._conn.executemany(
                    "UPDATE messages SET state = ?1, code = ?2, reply = ?3, relay = ?4, "
                    "next_attempt_at = ?5, updated_at = ?6, "
                    "attempts = attempts + ?7, "
                    "first_attempt_at = CASE WHEN ?7 THEN coalesce(first_attempt_at, ?6) "
                    "ELSE first_attempt_at END, "
                    "sent_at = CASE WHEN ?1 = 'sent' THEN ?6 ELSE sent_at END WHERE key = ?8",
                    [
                        (
                            r.state.value,
                            r.code,
                            r.reply,
                            r.relay,
                            r.next_attempt_at,
                            now,
                            int(r.attempt),
                            r.key,
                        )
                        for r in records
                    ],
                )
                self._conn.executemany(
                    "INSERT OR IGNORE INTO suppressions(address, reason, created_at) "
                    "VALUES (?, ?, ?)",
                    [
                        (r.address.lower(), r.suppress, now)
                        for r in records
                        if r.suppress and r.address
                    ],
                )
        return set()

    def expire(self, reason: str) -> int:
        """Every pending and deferred row becomes `expired` (schedule.not_after passed)."""
        with self._conn:
            cur = self._conn.execute(
                "UPDATE messages SET state = 'expired', reply = ?, next_attempt_at = NULL, "
                "updated_at = ? WHERE state IN ('pending', 'deferred')",
                (reason, time.time()),
            )
        return cur.rowcount

    # --- reading ---------------------------------------------------------------------

    def counts(self) -> dict[State, int]:
        """Rows per state, skipped data rows included."""
        counts = dict.fromkeys(State, 0)
        for state, n in self._conn.execute("SELECT state, count(*) FROM messages GROUP BY state"):
            counts[State(state)] += n
        (skipped,) = self._conn.execute("SELECT count(*) FROM skipped_rows").fetchone()
        counts[State.SKIPPED] += skipped
        return counts

    def seed_counts(self) -> dict[State, int]:
        """Seed copies per state (`txsend.job.seeds`): a part of `counts()`."""
        counts = dict.fromkeys(State, 0)
        for state, n in self._conn.execute(
            "SELECT state, count(*) FROM messages WHERE seed_of IS NOT NULL GROUP BY state"
        ):
            counts[State(state)] += n
        return counts

    def next_attempt_at(self, after: float | None = None) -> float | None:
        """The earliest retry time among deferred rows (later than `after`, if given)."""
        (value,) = self._conn.execute(
            "SELECT min(next_attempt_at) FROM messages WHERE state = 'deferred' "
            "AND next_attempt_at > ?",
            (-math.inf if after is None else after,),
        ).fetchone()
        return None if value is None else float(value)

    def due_values(self, column: str, limit: int = 100) -> list[tuple[str | None, int]]:
        """Distinct values of a data column among pending and deferred rows, with counts."""
        return merge_values(sqliteschema.column_groups(self._conn, column, limit), limit)

    def skipped_by_error(self) -> int:
        """Skipped rows whose reason is not a policy skip (an invalid row, a template)."""
        (messages,) = self._conn.execute(
            "SELECT count(*) FROM messages WHERE state = 'skipped' AND "
            + error_skip_sql("coalesce(reply, '')")
        ).fetchone()
        (rows,) = self._conn.execute(
            "SELECT count(*) FROM skipped_rows WHERE " + error_skip_sql("reason")
        ).fetchone()
        return int(messages) + int(rows)

    def skipped_rows(self, limit: int = 1000) -> Iterator[dict[str, Any]]:
        """Data rows that never became messages (duplicate key, invalid row)."""
        cur = self._conn.execute(
            "SELECT row, key, reason FROM skipped_rows ORDER BY row LIMIT ?", (limit,)
        )
        for row, key, reason in cur:
            yield {"row": row, "key": key, "reason": reason}

    def find(self, key: str) -> Claimed | None:
        """One row by key."""
        found = self._conn.execute(
            f"SELECT {self._CLAIM_COLUMNS} FROM messages WHERE key = ?", (key,)
        ).fetchone()
        return None if found is None else self._claimed(found)

    def outcomes(self, limit: int = 1000) -> list[dict[str, Any]]:
        """The first `limit` rows in data order, each as it stands."""
        cur = self._conn.execute(
            f"SELECT {', '.join(OUTCOME_COLUMNS)} FROM messages ORDER BY row LIMIT ?", (limit,)
        )
        return [dict(zip(OUTCOME_COLUMNS, values, strict=True)) for values in cur]

    def suppressed(self) -> Iterator[tuple[str, str]]:
        """Addresses this job must not send to again (its own hard bounces), with reasons."""
        yield from self._conn.execute("SELECT address, reason FROM suppressions")

    # --- what came back after sending (`txsend.journal.sqlitefeedback`) ---------------

    def verp_secret(self) -> bytes:
        """The key of this journal's VERP tokens, made on first use and kept."""
        return sqlitefeedback.verp_secret(self._conn)

    def prepare_feedback(self) -> None:
        """Make the indexes the lookups of `feedback_rows` use (on first use only)."""
        sqlitefeedback.prepare_feedback(self._conn)

    def feedback_rows(
        self,
        *,
        key: str | None = None,
        message_hex: str | None = None,
        address: str | None = None,
        limit: int = 5,
    ) -> list[FeedbackRow]:
        """The rows a report names: by key, Message-ID hex, or address (any case)."""
        return sqlitefeedback.feedback_rows(
            self._conn, key=key, message_hex=message_hex, address=address, limit=limit
        )

    def record_feedback(self, entries: Sequence[FeedbackEntry]) -> list[str]:
        """Record a batch of reports in one transaction: "applied", "noted" or "duplicate"."""
        return sqlitefeedback.record_feedback(self._conn, entries)

    def recorded_feedback(self, event_ids: Sequence[str]) -> set[str]:
        """Which of these report event ids are recorded already."""
        return sqlitefeedback.recorded_feedback(self._conn, event_ids)

    def feedback_counts(self) -> dict[str, int]:
        return sqlitefeedback.feedback_counts(self._conn)

    def feedback_events(self, limit: int = 1000) -> Iterator[dict[str, Any]]:
        return sqlitefeedback.feedback_events(self._conn, limit)

    # --- the quota ledger (txsend.delivery.quotas.Ledger) ---------------------------------

    def ledger_hold(
        self, account: str, since: float, limit: int, now: float, expires: float
    ) -> int | None:
        """Hold a send slot if the window [since, now] has room: its id, else None."""
        return sqliteledger.hold(self._conn, account, since, limit, now, expires)

    def ledger_keep(
        self, hold: int, account: str, start: float, width: float, keep_until: float | None
    ) -> None:
        """Turn a held slot into an acceptance counted in the bucket at start."""
        sqliteledger.keep(self._conn, hold, account, start, width, keep_until)

    def ledger_release(self, hold: int) -> None:
        """Give a held slot back: nothing went."""
        sqliteledger.release(self._conn, hold)

    def ledger_give_back(self, account: str, start: float, width: float) -> None:
        """Take one acceptance back out of its bucket."""
        sqliteledger.give_back(self._conn, account, start, width)

    def ledger_usage(self, account: str, since: float, now: float) -> LedgerUsage:
        """The buckets overlapping [since, now] and the live holds."""
        return sqliteledger.usage(self._conn, account, since, now)

    def ledger_first(self, account: str) -> float | None:
        """When the account's earliest counted acceptance's bucket began."""
        return sqliteledger.first(self._conn, account)

    def ledger_seed(self, account: str, buckets: list[tuple[float, float, int]]) -> bool:
        """Count buckets for an account without history (False: it has some)."""
        return sqliteledger.seed(self._conn, account, buckets)

    def sent_days(self) -> list[tuple[float, int]]:
        """The journal's accepted recipients per UTC day (the whole journal is one job)."""
        return sqliteledger.sent_days(self._conn)

    def ledger_prune(self, now: float) -> None:
        """Forget buckets no window needs and every hold (a run prunes holding the lock:
        holds left are a killed run's)."""
        sqliteledger.prune(self._conn, now)

    def reserve_slots(self, relay: str, emission: float, n: int) -> float:
        """GCRA in this process (a SQLite journal has one sender): seconds to the first slot."""
        now = time.monotonic()
        start = max(self._tat.get(relay, now), now)
        self._tat[relay] = start + emission * n
        return start - now

    # --- several workers: one process works a SQLite journal -------------------------

    def abort(self, reason: str) -> None:
        """Nothing to tell: no other worker shares this journal."""

    def stop_requested(self) -> str | None:
        return None

    def may_start_data(self) -> bool:
        return True

    def others_busy(self) -> bool:
        return False

    # --- runs ------------------------------------------------------------------------

    def start_run(self, command: str) -> int:
        """Record the start of a run; returns its id."""
        with self._conn:
            cur = self._conn.execute(
                "INSERT INTO runs(command, pid, started_at, fingerprint) VALUES (?, ?, ?, ?)",
                (command, os.getpid(), time.time(), self.get_meta("fingerprint")),
            )
        assert cur.lastrowid is not None
        return cur.lastrowid

    def finish_run(self, run_id: int, exit_code: int) -> None:
        """Record the end of a run with the journal's counts at that moment."""
        counts = final_counts(self.counts())
        with self._conn:
            self._conn.execute(
                "UPDATE runs SET ended_at = ?, exit_code = ?, counts = ? WHERE id = ?",
                (time.time(), exit_code, counts, run_id),
            )

    def runs(self) -> list[RunInfo]:
        """Every run, oldest first."""
        cur = self._conn.execute(
            "SELECT id, command, started_at, ended_at, exit_code, counts FROM runs ORDER BY id"
        )
        return [run_info(values) for values in cur]

    def problems(self, limit: int = 1000) -> tuple[int, list[dict[str, Any]]]:
        """How many rows are failed, bounced or unknown, and the first `limit` of them."""
        (count,) = self._conn.execute(f"SELECT count(*) FROM messages {_PROBLEMS}").fetchone()
        cur = self._conn.execute(
            f"SELECT key, address, state, code, reply FROM messages {_PROBLEMS} "
            "ORDER BY row LIMIT ?",
            (limit,),
        )
        rows = [
            {"key": key, "address": address, "state": state, "code": code, "reply": reply}
            for key, address, state, code, reply in cur
        ]
        return int(count), rows

    def _claimed(self, values: tuple[Any, ...]) -> Claimed:
        return claimed(values[1:], self._decode)  # the first column is the rowid, for the cursor

    def iter_problems(self) -> Iterator[tuple[dict[str, Any], str, int | None, str | None]]:
        """Every failed, bounced or unknown data row: (original data, state, code, reply).

        Seed copies are not listed: their data is the copied row's, not theirs."""
        cur = self._conn.execute(
            f"SELECT data, state, code, reply FROM messages {_PROBLEMS} "
            "AND seed_of IS NULL ORDER BY row"
        )
        for data, state, code, reply in cur:
            yield self._decode(data), state, code, reply

    def relay_outcomes(self) -> dict[str, dict[str, int]]:
        """Rows per relay and state (the relay of each row's last attempt)."""
        out: dict[str, dict[str, int]] = {}
        cur = self._conn.execute(
            "SELECT relay, state, count(*) FROM messages WHERE relay IS NOT NULL "
            "GROUP BY relay, state"
        )
        for relay, state, n in cur:
            out.setdefault(relay, {})[state] = n
        return out

    def reply_codes(self) -> list[tuple[int | None, str, int]]:
        """(code, one reply text, rows) per code and enhanced status of rows' last replies."""
        # The enhanced status code is the reply's second word when it looks like one.
        cur = self._conn.execute(
            "SELECT code, min(reply), count(*) FROM messages WHERE reply IS NOT NULL "
            "GROUP BY code, CASE WHEN reply GLOB '[245][0-9][0-9] [245].[0-9]*' "
            "THEN substr(reply, 5, instr(substr(reply, 5) || ' ', ' ') - 1) ELSE '' END "
            "ORDER BY count(*) DESC"
        )
        return [(code, reply, n) for code, reply, n in cur]

    def last_run(self) -> RunInfo | None:
        """The most recent run, finished or not."""
        found = self._conn.execute(
            "SELECT id, command, started_at, ended_at, exit_code, counts FROM runs "
            "ORDER BY id DESC LIMIT 1"
        ).fetchone()
        return None if found is None else run_info(found)
