"""The PostgreSQL journal: one job worked by several processes on several hosts.

`PgJournal` implements `txsend.journal.api.JournalBackend` and `SharedJournal` with the
same crash protocol as the SQLite journal (`sending` committed before DATA, `sent` after
the 250), plus what several workers need. Each part has its module in this package:

* `url`: the connection parameters, and why a server refused a connection;
* `database`: the pool, and a lost database as a TemporaryError;
* `schema`: the tables, created on first use;
* `ingest`: the job's rows, ingested once by whoever comes first (COPY);
* `claims`: claims with `FOR UPDATE SKIP LOCKED`, and writes fenced by the lease epoch;
* `leases`: each worker's lease, its heartbeat, reaping the dead, the abort flag;
* `rates`: the GCRA pace and the quota ledger every worker (and job) shares;
* `feedback`: what came back after sending (late bounces, complaints), the VERP secret;
* `store`: the suppression store every job of the database shares (not part of a journal).

This module keeps the job binding, the reading for reports, and the runs. Times are
epoch seconds (float8). Leases, GCRA and reaping use the server's clock, so hosts' clock
skew does not matter for them; retry times use the worker's wall clock.
"""

from __future__ import annotations

import json
import math
import os
import socket
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from typing import Any

from txsend.errors import ConfigError, MissingInputError
from txsend.journal.api import SharedJournal
from txsend.journal.postgres import claims, feedback, leases, rates
from txsend.journal.postgres.claims import CLAIM_COLUMNS
from txsend.journal.postgres.database import Database
from txsend.journal.postgres.ingest import ingest
from txsend.journal.postgres.leases import DEFAULT_LEASE, Lease
from txsend.journal.postgres.schema import migrate
from txsend.journal.records import (
    Claimed,
    FeedbackEntry,
    FeedbackRow,
    IngestStats,
    LedgerUsage,
    Record,
)
from txsend.journal.rules import (
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

__all__ = ["PgJournal"]


class PgJournal:
    """One job's rows in a shared PostgreSQL database."""

    def __init__(self, db: Database, job: str | None, lease: float) -> None:
        self._db = db
        self.job = job
        self.lease = Lease(db, lease)

    @classmethod
    def open(
        cls,
        url: str,
        *,
        create: bool = True,
        job_name: str | None = None,
        lease: float | None = None,
    ) -> PgJournal:
        """Connect, create the tables on first use, and scope to job_name (may come later)."""
        db = Database.connect(url.strip())
        try:
            migrate(db)
            if not create and job_name is not None and not _job_exists(db, job_name):
                raise MissingInputError(
                    f"no job {job_name!r} in the journal {db.location}",
                    hint="run the job first: txsend run JOB --journal URL",
                )
        except BaseException:
            db.close()
            raise
        return cls(db, job_name, DEFAULT_LEASE if lease is None else lease)

    @property
    def location(self) -> str:
        return self._db.location

    @property
    def shared(self) -> bool:
        return True

    def as_shared(self) -> SharedJournal:
        return self

    def close(self) -> None:
        """Give up the lease (releasing its rows) and close the connections."""
        self.lease.end()
        self._db.close()

    def _job(self) -> str:
        if self.job is None:
            raise ConfigError("internal: the PostgreSQL journal is not bound to a job")
        return self.job

    # --- the job ---------------------------------------------------------------------

    def bind_job(self, job_name: str, fingerprint: dict[str, str], spec: dict[str, Any]) -> None:
        """Scope the journal to a job; the first process stores its definition."""
        self.job = job_name
        with self._db.connection() as conn:
            conn.execute(
                "INSERT INTO txsend_jobs(name, fingerprint, spec) VALUES (%s, %s, %s) "
                "ON CONFLICT (name) DO UPDATE SET fingerprint = excluded.fingerprint, "
                "spec = excluded.spec",
                (job_name, json.dumps(fingerprint, sort_keys=True), json.dumps(spec)),
            )

    def changes_since(self, fingerprint: dict[str, str]) -> list[str]:
        row = self._db.one("SELECT fingerprint FROM txsend_jobs WHERE name = %s", (self._job(),))
        if row is None or row[0] is None:
            return []
        stored: dict[str, str] = json.loads(row[0])
        return describe_changes(stored, fingerprint)

    def job_spec(self) -> dict[str, Any] | None:
        row = self._db.one("SELECT spec FROM txsend_jobs WHERE name = %s", (self._job(),))
        return None if row is None or row[0] is None else dict(json.loads(row[0]))

    def jobs(self) -> list[tuple[str, int, bool]]:
        """Every job in the database with its count of rows not yet final, and whether it
        is ready to join (ingested, its files stored)."""
        rows = self._db.all(
            "SELECT j.name, count(m.key) FILTER (WHERE m.state IN "
            "('pending', 'deferred', 'sending')), "
            "bool_and(j.ingest_complete AND j.bundle IS NOT NULL) FROM txsend_jobs j "
            "LEFT JOIN txsend_messages m ON m.job = j.name GROUP BY j.name ORDER BY j.name"
        )
        return [(name, int(n), bool(ready)) for name, n, ready in rows]

    def stored_job(self) -> tuple[dict[str, Any] | None, bytes | None]:
        """The job's definition as stored at ingest: its spec and the bundle of its files
        (None until stored; empty when its files could not be packed)."""
        row = self._db.one("SELECT spec, bundle FROM txsend_jobs WHERE name = %s", (self._job(),))
        if row is None:
            return None, None
        spec, bundle = row
        return (None if spec is None else dict(json.loads(spec))), (
            None if bundle is None else bytes(bundle)
        )

    def store_bundle(self, bundle: bytes) -> None:
        """Keep the job's files, so that `txsend worker` can join without them (empty:
        they could not be packed, and a worker waits for them no longer)."""
        with self._db.connection() as conn:
            conn.execute(
                "UPDATE txsend_jobs SET bundle = %s WHERE name = %s", (bundle, self._job())
            )

    def has_bundle(self) -> bool:
        """Whether the job's files were stored (or found impossible to pack)."""
        row = self._db.one(
            "SELECT bundle IS NOT NULL FROM txsend_jobs WHERE name = %s", (self._job(),)
        )
        return bool(row and row[0])

    # --- ingest ----------------------------------------------------------------------

    def ingest(
        self, rows: Iterable[Any], new_message_id: Callable[[], str], *, refresh: bool = False
    ) -> IngestStats:
        """Add the job's rows once, whoever comes first (`txsend.journal.postgres.ingest`)."""
        return ingest(self._db, self._job(), rows, new_message_id, refresh=refresh)

    def ingest_complete(self) -> bool:
        row = self._db.one(
            "SELECT ingest_complete FROM txsend_jobs WHERE name = %s", (self._job(),)
        )
        return bool(row and row[0])

    # --- the send cycle --------------------------------------------------------------

    def recover(self) -> int:
        """Reap dead workers' rows, and release this worker's own (at the end of a run)."""
        reaped = self.reap()
        return reaped + self.lease.release_own()

    def reap(self) -> int:
        """Free the rows of workers whose lease expired; how many became `unknown`."""
        return self.lease.reap(self._job())

    def claim(
        self, limit: int, *, include_unknown: bool, now: float | None = None
    ) -> list[Claimed]:
        """Take up to limit free rows due now, in data order, for this worker's lease."""
        states = ["pending", "deferred"] + (["unknown"] if include_unknown else [])
        return claims.claim(self._db, self._job(), self.lease, limit, states, now=now, busy=())

    def claim_retries(
        self, limit: int, *, busy: Collection[str], now: float | None = None
    ) -> list[Claimed]:
        """Free rows that became due: deferred ones, and rows a dead worker let go."""
        states = ["pending", "deferred"]
        return claims.claim(self._db, self._job(), self.lease, limit, states, now=now, busy=busy)

    def write(self, sending: Sequence[tuple[str, int]], records: Sequence[Record]) -> set[str]:
        """Commit `sending` rows and outcomes in one transaction; refuse what is not ours."""
        return claims.write(self._db, self._job(), self.lease.epoch, sending, records)

    def expire(self, reason: str) -> int:
        """Free rows pending or deferred become `expired`; rows a live worker holds are
        left to it (it expires them itself at the end of its run)."""
        self.reap()
        with self._db.connection() as conn:
            cur = conn.execute(
                "UPDATE txsend_messages SET state = 'expired', reply = %s, "
                "next_attempt_at = NULL, updated_at = %s WHERE job = %s "
                "AND state IN ('pending', 'deferred') AND owner_epoch IS NULL",
                (reason, time.time(), self._job()),
            )
            return int(cur.rowcount)

    # --- several workers on one job ----------------------------------------------------

    def abort(self, reason: str) -> None:
        self.lease.abort(self._job(), reason)

    def clear_abort(self) -> None:
        """`txsend resume`: the job may be worked again."""
        self.lease.clear_abort(self._job())

    def stop_requested(self) -> str | None:
        return self.lease.stop_requested()

    def may_start_data(self) -> bool:
        return self.lease.may_start_data()

    def others_busy(self) -> bool:
        return self.lease.others_busy(self._job())

    def workers(self, stopped: int = 5) -> list[dict[str, Any]]:
        """The job's live workers, then the last `stopped` others, newest first."""
        return leases.workers(self._db, self._job(), stopped)

    # --- what came back after sending (`txsend.journal.postgres.feedback`) -----------

    def verp_secret(self) -> bytes:
        """The key of this job's VERP tokens, made on first use and kept with the job."""
        return feedback.verp_secret(self._db, self._job())

    def prepare_feedback(self) -> None:
        """Make the indexes the lookups of `feedback_rows` use (on first use only)."""
        feedback.prepare_feedback(self._db)

    def feedback_rows(
        self,
        *,
        key: str | None = None,
        message_hex: str | None = None,
        address: str | None = None,
        limit: int = 5,
    ) -> list[FeedbackRow]:
        """The job's rows a report names: by key, Message-ID hex, or address (any case)."""
        return feedback.feedback_rows(
            self._db, self._job(), key=key, message_hex=message_hex, address=address, limit=limit
        )

    def record_feedback(self, entries: Sequence[FeedbackEntry]) -> list[str]:
        """Record a batch of reports in one transaction: "applied", "noted" or "duplicate"."""
        return feedback.record_feedback(self._db, self._job(), entries)

    def recorded_feedback(self, event_ids: Sequence[str]) -> set[str]:
        """Which of these report event ids are recorded already."""
        return feedback.recorded_feedback(self._db, self._job(), event_ids)

    def feedback_counts(self) -> dict[str, int]:
        return feedback.feedback_counts(self._db, self._job())

    def feedback_events(self, limit: int = 1000) -> Iterator[dict[str, Any]]:
        return feedback.feedback_events(self._db, self._job(), limit)

    # --- rate limits -----------------------------------------------------------------

    def ledger_hold(
        self, account: str, since: float, limit: int, now: float, expires: float
    ) -> int | None:
        """Hold a send slot if the window has room (every job and worker shares it), owned
        by this worker's lease (once it has one): freed at once if the lease ends."""
        epoch = self.lease.epoch
        owner = None if epoch is None else (self.lease.worker, epoch)
        return rates.hold(self._db, account, since, limit, now, expires, owner)

    def ledger_keep(
        self, hold: int, account: str, start: float, width: float, keep_until: float | None
    ) -> None:
        """Turn a held slot into an acceptance counted in the bucket at start."""
        rates.keep(self._db, hold, account, start, width, keep_until)

    def ledger_release(self, hold: int) -> None:
        """Give a held slot back: nothing went."""
        rates.release(self._db, hold)

    def ledger_give_back(self, account: str, start: float, width: float) -> None:
        """Take one acceptance back out of its bucket."""
        rates.give_back(self._db, account, start, width)

    def ledger_usage(self, account: str, since: float, now: float) -> LedgerUsage:
        """The buckets overlapping [since, now] and the live holds."""
        return rates.usage(self._db, account, since, now)

    def ledger_first(self, account: str) -> float | None:
        """When the account's earliest counted acceptance's bucket began."""
        return rates.first(self._db, account)

    def ledger_seed(self, account: str, buckets: list[tuple[float, float, int]]) -> bool:
        """Count buckets for an account without history (False: it has some)."""
        return rates.seed(self._db, account, buckets)

    def sent_days(self) -> list[tuple[float, int]]:
        """The job's accepted recipients per UTC day (its own rows)."""
        return rates.sent_days(self._db, self._job())

    def ledger_prune(self, now: float) -> None:
        """Forget buckets no window needs, lapsed holds and those of workers gone."""
        rates.prune(self._db, now)

    def reserve_slots(self, relay: str, emission: float, n: int) -> float:
        """GCRA over every worker: n slots from the relay's row; seconds to the first."""
        return rates.reserve_slots(self._db, relay, emission, n)

    # --- reading ---------------------------------------------------------------------

    def counts(self) -> dict[State, int]:
        job = self._job()
        counts = dict.fromkeys(State, 0)
        with self._db.connection() as conn:
            for state, n in conn.execute(
                "SELECT state, count(*) FROM txsend_messages WHERE job = %s GROUP BY state",
                (job,),
            ):
                counts[State(state)] += n
            row = conn.execute(
                "SELECT count(*) FROM txsend_skipped_rows WHERE job = %s", (job,)
            ).fetchone()
        counts[State.SKIPPED] += row[0] if row else 0
        return counts

    def seed_counts(self) -> dict[State, int]:
        """Seed copies per state (`txsend.job.seeds`): a part of `counts()`."""
        counts = dict.fromkeys(State, 0)
        for state, n in self._db.all(
            "SELECT state, count(*) FROM txsend_messages WHERE job = %s "
            "AND seed_of IS NOT NULL GROUP BY state",
            (self._job(),),
        ):
            counts[State(state)] += n
        return counts

    def next_attempt_at(self, after: float | None = None) -> float | None:
        row = self._db.one(
            "SELECT min(next_attempt_at) FROM txsend_messages WHERE job = %s "
            "AND state = 'deferred' AND next_attempt_at > %s",
            (self._job(), -math.inf if after is None else after),
        )
        return None if row is None or row[0] is None else float(row[0])

    def due_values(self, column: str, limit: int = 100) -> list[tuple[str | None, int]]:
        """Distinct values of a data column among pending and deferred rows, with counts."""
        groups = self._db.all(
            "SELECT nullif(btrim(coalesce(d ->> %s::text, (SELECT e.value FROM "
            "jsonb_each_text(d) AS e WHERE lower(e.key) = lower(%s::text) LIMIT 1))), '') "
            "AS v, count(*) FROM (SELECT "
            "data::jsonb AS d FROM txsend_messages WHERE job = %s "
            "AND state IN ('pending', 'deferred')) AS m GROUP BY v ORDER BY count(*) DESC LIMIT %s",
            (column, column, self._job(), limit),
        )
        return merge_values(groups, limit)

    def skipped_by_error(self) -> int:
        """Skipped rows whose reason is not a policy skip (an invalid row, a template)."""
        job = self._job()
        row = self._db.one(
            "SELECT (SELECT count(*) FROM txsend_messages WHERE job = %s AND state = 'skipped' "
            f"AND {error_skip_sql('coalesce(reply, chr(32))', wildcard='%%')}) + (SELECT "
            f"count(*) FROM txsend_skipped_rows WHERE job = %s AND "
            f"{error_skip_sql('reason', wildcard='%%')})",
            (job, job),
        )
        return int(row[0]) if row else 0

    def skipped_rows(self, limit: int = 1000) -> Iterator[dict[str, Any]]:
        for row, key, reason in self._db.all(
            "SELECT row, key, reason FROM txsend_skipped_rows WHERE job = %s ORDER BY row LIMIT %s",
            (self._job(), limit),
        ):
            yield {"row": row, "key": key, "reason": reason}

    def find(self, key: str) -> Claimed | None:
        row = self._db.one(
            f"SELECT {CLAIM_COLUMNS} FROM txsend_messages m WHERE m.job = %s AND m.key = %s",
            (self._job(), key),
        )
        return None if row is None else claimed(row)

    def outcomes(self, limit: int = 1000) -> list[dict[str, Any]]:
        rows = self._db.all(
            f"SELECT {', '.join(OUTCOME_COLUMNS)} FROM txsend_messages WHERE job = %s "
            "ORDER BY row LIMIT %s",
            (self._job(), limit),
        )
        return [dict(zip(OUTCOME_COLUMNS, values, strict=True)) for values in rows]

    def suppressed(self) -> Iterator[tuple[str, str]]:
        yield from (
            (str(a), str(r))
            for a, r in self._db.all(
                "SELECT address, reason FROM txsend_suppressions WHERE job = %s", (self._job(),)
            )
        )

    def problems(self, limit: int = 1000) -> tuple[int, list[dict[str, Any]]]:
        job = self._job()
        row = self._db.one(
            "SELECT count(*) FROM txsend_messages WHERE job = %s AND state = ANY(%s)",
            (job, list(PROBLEM_STATES)),
        )
        rows = [
            {"key": key, "address": address, "state": state, "code": code, "reply": reply}
            for key, address, state, code, reply in self._db.all(
                "SELECT key, address, state, code, reply FROM txsend_messages "
                "WHERE job = %s AND state = ANY(%s) ORDER BY row LIMIT %s",
                (job, list(PROBLEM_STATES), limit),
            )
        ]
        return (int(row[0]) if row else 0), rows

    def iter_problems(self) -> Iterator[tuple[dict[str, Any], str, int | None, str | None]]:
        with (
            self._db.connection() as conn,
            conn.transaction(),  # a server-side cursor lives in a transaction
            conn.cursor(name="txsend_problems") as cur,
        ):
            cur.execute(
                "SELECT data, state, code, reply FROM txsend_messages "
                "WHERE job = %s AND state = ANY(%s) AND seed_of IS NULL ORDER BY row",
                (self._job(), list(PROBLEM_STATES)),
            )
            for data, state, code, reply in cur:
                yield json.loads(data), state, code, reply

    def relay_outcomes(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for relay, state, n in self._db.all(
            "SELECT relay, state, count(*) FROM txsend_messages WHERE job = %s "
            "AND relay IS NOT NULL GROUP BY relay, state",
            (self._job(),),
        ):
            out.setdefault(relay, {})[state] = int(n)
        return out

    def reply_codes(self) -> list[tuple[int | None, str, int]]:
        rows = self._db.all(
            "SELECT code, min(reply), count(*) FROM txsend_messages WHERE job = %s "
            "AND reply IS NOT NULL GROUP BY code, CASE WHEN reply ~ '^[245][0-9][0-9] [245]\\.' "
            "THEN split_part(reply, ' ', 2) ELSE '' END ORDER BY count(*) DESC",
            (self._job(),),
        )
        return [(code, reply, int(n)) for code, reply, n in rows]

    # --- runs ------------------------------------------------------------------------

    def start_run(self, command: str) -> int:
        self.lease.join(self._job())
        row = self._db.one(
            "INSERT INTO txsend_runs(job, command, host, pid, worker, started_at, fingerprint) "
            "VALUES (%s, %s, %s, %s, %s, %s, (SELECT fingerprint FROM txsend_jobs "
            "WHERE name = %s)) RETURNING id",
            (
                self._job(),
                command,
                socket.gethostname(),
                os.getpid(),
                self.lease.worker,
                time.time(),
                self._job(),
            ),
        )
        assert row is not None
        return int(row[0])

    def finish_run(self, run_id: int, exit_code: int) -> None:
        counts = final_counts(self.counts())
        with self._db.connection() as conn:
            conn.execute(
                "UPDATE txsend_runs SET ended_at = %s, exit_code = %s, counts = %s WHERE id = %s",
                (time.time(), exit_code, counts, run_id),
            )

    def runs(self) -> list[RunInfo]:
        return [
            run_info(values)
            for values in self._db.all(
                "SELECT id, command, started_at, ended_at, exit_code, counts FROM txsend_runs "
                "WHERE job = %s ORDER BY id",
                (self._job(),),
            )
        ]

    def last_run(self) -> RunInfo | None:
        runs = self._db.all(
            "SELECT id, command, started_at, ended_at, exit_code, counts FROM txsend_runs "
            "WHERE job = %s ORDER BY id DESC LIMIT 1",
            (self._job(),),
        )
        return run_info(runs[0]) if runs else None


def _job_exists(db: Database, job: str) -> bool:
    return db.one("SELECT 1 FROM txsend_jobs WHERE name = %s", (job,)) is not None
