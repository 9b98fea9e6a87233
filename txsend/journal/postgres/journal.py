"""The PostgreSQL journal: one job worked by several processes on several hosts.

The only importer of psycopg. It implements `txsend.journal.api.JournalBackend` with
the same crash protocol as the SQLite journal (`sending` committed before DATA, `sent`
after the 250), plus what several workers need:

* **Ingest** by whoever comes first: the job's row is locked (`FOR UPDATE`) for the
  ingest, rows go in by COPY into a temporary table and then `INSERT … ON CONFLICT DO
  NOTHING`; a process arriving meanwhile waits for the lock and finds the job ingested.
* **Claims** take a batch with `SELECT … FOR UPDATE SKIP LOCKED` in a materialised CTE
  feeding `UPDATE … RETURNING` (the Oban / graphile-worker / pg-boss pattern). A claimed
  row stays in its state (`pending`, `deferred`, `unknown`) and carries its owner's lease
  epoch; no other worker takes it.
* **Leases and fencing.** Each process holds a lease row with a unique epoch (the
  fencing token), renewed by a heartbeat thread every `lease / 4` seconds. Every state
  write names the epoch and is refused unless the lease is still live and the row still
  belongs to it. The heartbeat also reaps expired leases: their claimed rows become
  free again, their `sending` rows become `unknown` (never resent automatically: SMTP
  has no idempotency key). A worker whose last renewal is older than 60% of its lease
  starts no DATA on its own (`may_start_data`), so a paused process cannot race the
  reaper.
* **Shared rate limits.** A relay's pace is one GCRA row per relay (`tat`, the
  theoretical arrival time, on the server's clock); a worker reserves several slots per
  round trip. Hour and day quotas are counter rows per window, taken atomically.
* **Abort.** The error-rate abort writes the job's `abort_reason`; claims check it, and
  every worker's heartbeat (at most every second) reads it and stops its run.

Times are epoch seconds (float8). Leases, GCRA and reaping use the server's clock, so
hosts' clock skew does not matter for them; retry times use the worker's wall clock.
"""

from __future__ import annotations

import getpass
import json
import logging
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import psycopg_pool
from psycopg.conninfo import conninfo_to_dict

from txsend.errors import ConfigError, JobError, MissingInputError, RowError, TemporaryError
from txsend.journal.api import (
    Claimed,
    IngestStats,
    Record,
    RunInfo,
    describe_changes,
    error_skip_sql,
)
from txsend.logs import event
from txsend.models import State

SCHEMA_VERSION = 1
DEFAULT_LEASE = 30.0  # seconds a worker may stay silent before its rows are reaped
DATA_MARGIN = 0.6  # no new DATA once the last renewal is older than this share of the lease
ABORT_POLL = 1.0  # seconds between reads of the job's abort flag (the 2 s promise)
BUSY_CACHE = 0.25  # seconds an others_busy() answer is reused (the engine asks every 0.2 s)
_NOW = "extract(epoch from clock_timestamp())"
_PROBLEM_STATES = ("failed", "bounced", "unknown")
_REDOABLE = (
    "(state IN ('pending', 'deferred', 'unknown', 'skipped') "
    "OR (state = 'failed' AND code IS NULL))"
)

# Autovacuum: the messages table is updated two or three times per row in a run; vacuum
# it after 2% of it changed instead of 20%, and leave room on each page (fillfactor) for
# a row's next versions. README "Scaling out with PostgreSQL" documents these.
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS txsend_meta (name text PRIMARY KEY, value text NOT NULL);
CREATE TABLE IF NOT EXISTS txsend_jobs (
    name text PRIMARY KEY,
    fingerprint text,
    spec text,
    bundle bytea,
    ingest_complete boolean NOT NULL DEFAULT false,
    abort_reason text,
    created_at float8 NOT NULL DEFAULT {_NOW}
);
CREATE TABLE IF NOT EXISTS txsend_messages (
    job text NOT NULL,
    key text NOT NULL,
    row integer NOT NULL,
    address text NOT NULL,
    data text NOT NULL,
    message_id text NOT NULL,
    state text NOT NULL,
    attempts integer NOT NULL DEFAULT 0,
    code integer,
    reply text,
    relay text,
    run_id bigint,
    created_at float8,
    updated_at float8,
    sent_at float8,
    first_attempt_at float8,
    next_attempt_at float8,
    owner text,
    owner_epoch bigint,
    PRIMARY KEY (job, key)
) WITH (fillfactor = 80, autovacuum_vacuum_scale_factor = 0.02,
        autovacuum_analyze_scale_factor = 0.02, autovacuum_vacuum_cost_delay = 1);
CREATE INDEX IF NOT EXISTS txsend_messages_due ON txsend_messages (job, row)
    WHERE owner_epoch IS NULL AND state IN ('pending', 'deferred', 'unknown');
CREATE INDEX IF NOT EXISTS txsend_messages_owner ON txsend_messages (owner_epoch)
    WHERE owner_epoch IS NOT NULL;
CREATE INDEX IF NOT EXISTS txsend_messages_state ON txsend_messages (job, state);
CREATE TABLE IF NOT EXISTS txsend_skipped_rows (
    job text NOT NULL, row integer NOT NULL, key text, reason text, created_at float8,
    PRIMARY KEY (job, row)
);
CREATE TABLE IF NOT EXISTS txsend_suppressions (
    job text NOT NULL, address text NOT NULL, reason text, created_at float8,
    PRIMARY KEY (job, address)
);
CREATE TABLE IF NOT EXISTS txsend_runs (
    id bigserial PRIMARY KEY, job text NOT NULL, command text NOT NULL, host text, pid integer,
    worker text, started_at float8 NOT NULL, ended_at float8, exit_code integer,
    fingerprint text, counts text
);
CREATE SEQUENCE IF NOT EXISTS txsend_lease_epoch;
CREATE TABLE IF NOT EXISTS txsend_workers (
    epoch bigint PRIMARY KEY, worker text NOT NULL, job text NOT NULL, host text, pid integer,
    started_at float8 NOT NULL, renewed_at float8 NOT NULL, expires_at float8 NOT NULL,
    state text NOT NULL
);
CREATE INDEX IF NOT EXISTS txsend_workers_active ON txsend_workers (job)
    WHERE state = 'active';
CREATE TABLE IF NOT EXISTS txsend_rates (relay text PRIMARY KEY, tat float8 NOT NULL);
CREATE TABLE IF NOT EXISTS txsend_rate_windows (
    relay text NOT NULL, window_start float8 NOT NULL, count integer NOT NULL,
    PRIMARY KEY (relay, window_start)
);
"""
_SCHEMA_LOCK = 0x7478_7365_6E64  # advisory lock id: "txsend", for concurrent first use

_CLAIM_COLUMNS = (
    "m.key, m.row, m.address, m.data, m.message_id, m.attempts, m.state, m.first_attempt_at"
)


def redact(url: str) -> str:
    """The URL without a password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}" if user else netloc))


def _connect_kwargs(url: str) -> dict[str, Any]:
    """Check the URL and add the password from TXSEND_PG_PASSWORD (PGPASSFILE: libpq)."""
    try:
        params = conninfo_to_dict(url)
    except psycopg.ProgrammingError as exc:
        raise ConfigError(f"journal URL {redact(url)}: {exc}") from None
    if params.get("password"):
        raise ConfigError(
            f"journal URL {redact(url)}: a password in the URL ends up in shell history and "
            "process lists",
            hint="put it in TXSEND_PG_PASSWORD or a PGPASSFILE, and leave it out of the URL",
        )
    # Statements are prepared at their first use (no parsing again), but always planned
    # for their parameters: PostgreSQL's generic plan for the batched writes (keys in an
    # array) scans the job's whole (job, state) index instead of its primary key, so the
    # database's time per message would grow with the job (2.6 ms a commit at 40 000 rows).
    # autocommit: a single statement is its own transaction (one round trip, no BEGIN and
    # COMMIT); statements that must commit together run in `conn.transaction()`.
    options = f"{params.get('options', '')} -c plan_cache_mode=force_custom_plan".strip()
    kwargs: dict[str, Any] = {
        "application_name": "txsend",
        "connect_timeout": 10,
        "prepare_threshold": 1,
        "options": options,
        "autocommit": True,
    }
    password = os.environ.get("TXSEND_PG_PASSWORD")
    if password:
        kwargs["password"] = password
    return kwargs


# What the server says when it refuses a connection for good: the connection attempt has
# no SQLSTATE in psycopg 3 (exc.sqlstate is None: libpq keeps only the message), so these
# match the server's (English) messages; anything else (no server, timeout, too many
# connections, starting up) stays temporary.
_AUTH_FAILED = re.compile(r'(\S+) authentication failed for user "([^"]*)"')  # 28P01, 28000
_NO_PASSWORD = re.compile(r"no password supplied")  # libpq: the server asked for one
_NO_ROLE = re.compile(r'role "([^"]*)" does not exist')  # 28000
_NO_DATABASE = re.compile(r'database "([^"]*)" does not exist')  # 3D000
_REJECTED = re.compile(  # 28000 (pg_hba.conf), 42501 (CONNECT privilege), 28000 (NOLOGIN)
    r"no pg_hba\.conf entry for [^\n]*|pg_hba\.conf rejects connection[^\n]*"
    r'|permission denied for database "[^"]*"|role "[^"]*" is not permitted to log in'
)


def _refused(url: str, exc: psycopg.Error) -> ConfigError | None:
    """A ConfigError (78) when the server refused the connection for good, else None.

    The message names the database user and where the password came from, never the
    password itself.
    """
    message = str(exc)
    where = redact(url)
    user = _user(url, exc)
    auth = _AUTH_FAILED.search(message)
    if auth is not None and auth.group(1).lower() == "password":
        source = _password_source(url, given=True)
        return ConfigError(
            f"the journal database {where} refused the password of user "
            f'"{auth.group(2)}" ({source})',
            hint="correct the password in TXSEND_PG_PASSWORD or the PGPASSFILE, or the user "
            "in the URL",
        )
    if auth is not None:
        return ConfigError(
            f'the journal database {where} refused user "{auth.group(2)}": '
            f"{auth.group(1)} authentication failed",
            hint="check the user in the URL and the server's pg_hba.conf",
        )
    if _NO_PASSWORD.search(message):
        return ConfigError(
            f'the journal database {where} asks user "{user}" for a password, and '
            f"{_password_source(url, given=False)}",
            hint="set TXSEND_PG_PASSWORD, or add the server to a PGPASSFILE",
        )
    role = _NO_ROLE.search(message)
    if role is not None:
        return ConfigError(
            f'the journal database {where} has no user "{role.group(1)}" (role does not exist)',
            hint="correct the user in the URL, or create the role on the server",
        )
    database = _NO_DATABASE.search(message)
    if database is not None:
        return ConfigError(
            f'the journal database {where} cannot be opened as user "{user}": '
            f'database "{database.group(1)}" does not exist',
            hint=f"correct the database name in the URL, or create it: createdb -O {user} "
            f"{database.group(1)}",
        )
    rejected = _REJECTED.search(message)
    if rejected is not None:
        return ConfigError(
            f'the journal database {where} refused user "{user}": {rejected.group(0)}',
            hint="check the user and database in the URL, and the server's pg_hba.conf",
        )
    return None


def _user(url: str, exc: psycopg.Error) -> str:
    """The database user of the failed connection attempt (as libpq resolved it)."""
    pgconn = getattr(exc, "pgconn", None)
    user = getattr(pgconn, "user", None)
    if user:
        return bytes(user).decode("utf-8", "replace")
    try:
        named = conninfo_to_dict(url).get("user")
    except psycopg.ProgrammingError:
        named = None
    if named:
        return str(named)
    try:
        return os.environ.get("PGUSER") or getpass.getuser()
    except (KeyError, OSError):
        return "(unknown)"


def _password_source(url: str, *, given: bool) -> str:
    """Where the password of a refused connection came from (given: one was sent)."""
    if given and os.environ.get("TXSEND_PG_PASSWORD"):
        return "the password came from TXSEND_PG_PASSWORD"
    if given and os.environ.get("PGPASSWORD"):
        return "the password came from PGPASSWORD"
    try:
        named = conninfo_to_dict(url).get("passfile")
    except psycopg.ProgrammingError:
        named = None
    explicit = str(named) if named else os.environ.get("PGPASSFILE")
    path = Path(explicit or "~/.pgpass").expanduser()
    label = "PGPASSFILE" if explicit else "libpq's default PGPASSFILE"
    if path.is_file():
        if given:
            return f"the password came from the {label} {path}"
        return f"no password was given: the {label} {path} has no entry for this server and user"
    if explicit:
        return f"no password was given: the PGPASSFILE {path} does not exist"
    if given:  # from somewhere else libpq looks (a service file?)
        return "the password came from libpq's settings, not TXSEND_PG_PASSWORD or a PGPASSFILE"
    return "no password was given (neither TXSEND_PG_PASSWORD nor a PGPASSFILE)"


class PgJournal:
    """One job's rows in a shared PostgreSQL database."""

    def __init__(
        self, url: str, pool: psycopg_pool.ConnectionPool[Any], job: str | None, lease: float
    ) -> None:
        self._url = url
        self._pool = pool
        self.job = job
        self.lease = lease
        self.worker = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.epoch: int | None = None  # the lease's fencing token once joined
        self._renewed_at = 0.0  # monotonic time the last successful renewal was sent
        self._lost: str | None = None  # why the lease is gone
        self._aborted: str | None = None  # another worker's abort reason
        self._stop = threading.Event()
        self._flags = threading.Lock()  # orders the heartbeat's reads with clear_abort
        self._heartbeat: threading.Thread | None = None
        self._busy_checked = (float("-inf"), False)  # (monotonic time, others_busy answer)

    # --- opening -------------------------------------------------------------------

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
        url = url.strip()
        kwargs = _connect_kwargs(url)
        try:  # one direct attempt first: it fails fast, and says why
            psycopg.connect(url, **kwargs).close()
        except psycopg.Error as exc:
            refused = _refused(url, exc)
            if refused is not None:
                raise refused from None  # waiting does not fix it: no "try again" (75)
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
            raise TemporaryError(
                f"cannot reach the journal database {redact(url)}: {reason}",
                hint="check the URL, that the server runs, and TXSEND_PG_PASSWORD or PGPASSFILE",
            ) from None
        pool: psycopg_pool.ConnectionPool[Any] = psycopg_pool.ConnectionPool(
            url, kwargs=kwargs, min_size=1, max_size=4, open=False, name="txsend"
        )
        try:
            pool.open(wait=True, timeout=15)
        except psycopg_pool.PoolTimeout:
            pool.close()
            raise TemporaryError(
                f"cannot reach the journal database {redact(url)}: timed out",
                hint="check the URL, that the server runs, and TXSEND_PG_PASSWORD or PGPASSFILE",
            ) from None
        journal = cls(url, pool, job_name, DEFAULT_LEASE if lease is None else lease)
        try:
            journal._migrate()
            if not create and job_name is not None and not journal._job_exists():
                raise MissingInputError(
                    f"no job {job_name!r} in the journal {journal.location}",
                    hint="run the job first: txsend run JOB --journal URL",
                )
        except BaseException:
            pool.close()
            raise
        return journal

    @property
    def location(self) -> str:
        return redact(self._url)

    @property
    def shared(self) -> bool:
        return True

    def _migrate(self) -> None:
        with self._conn() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
            conn.execute(_SCHEMA)  # a constant of several statements
            found = conn.execute("SELECT value FROM txsend_meta WHERE name = 'schema'").fetchone()
            if found is None:
                conn.execute(
                    "INSERT INTO txsend_meta(name, value) VALUES ('schema', %s)",
                    (str(SCHEMA_VERSION),),
                )
            elif int(found[0]) > SCHEMA_VERSION:
                raise ConfigError(
                    f"journal {self.location} was written by a newer txsend (schema {found[0]})",
                    hint="upgrade txsend",
                )

    def _job_exists(self) -> bool:
        row = self._one("SELECT 1 FROM txsend_jobs WHERE name = %s", (self._job(),))
        return row is not None

    def _job(self) -> str:
        if self.job is None:
            raise ConfigError("internal: the PostgreSQL journal is not bound to a job")
        return self.job

    def jobs(self) -> list[tuple[str, int]]:
        """Every job in the database with its count of rows not yet final."""
        with self._conn() as conn:
            rows = conn.execute(
                "SELECT j.name, count(m.key) FILTER (WHERE m.state IN "
                "('pending', 'deferred', 'sending')) FROM txsend_jobs j "
                "LEFT JOIN txsend_messages m ON m.job = j.name GROUP BY j.name ORDER BY j.name"
            ).fetchall()
        return [(name, int(n)) for name, n in rows]

    def workers(self, stopped: int = 5) -> list[dict[str, Any]]:
        """The job's live workers, then the last `stopped` others, newest first."""
        rows = self._all(
            "SELECT w.worker, w.host, w.pid, CASE WHEN w.state = 'active' AND w.expires_at < "
            f"{_NOW} THEN 'expired' ELSE w.state END, w.started_at, w.renewed_at, "
            "count(m.key) FILTER (WHERE m.state <> 'sending'), "
            "count(m.key) FILTER (WHERE m.state = 'sending') "
            "FROM txsend_workers w LEFT JOIN txsend_messages m ON m.job = w.job "
            "AND m.owner_epoch = w.epoch WHERE w.job = %s GROUP BY w.epoch "
            "ORDER BY w.state = 'active' DESC, w.epoch DESC",
            (self._job(),),
        )
        live = [r for r in rows if r[3] in ("active", "expired")]
        ended = [r for r in rows if r[3] not in ("active", "expired")][:stopped]
        return [
            {
                "worker": worker,
                "host": host,
                "pid": pid,
                "state": state,
                "started_at": started,
                "renewed_at": renewed,
                "rows_claimed": int(claimed),
                "rows_in_data": int(in_data),
            }
            for worker, host, pid, state, started, renewed, claimed, in_data in live + ended
        ]

    def stored_job(self) -> tuple[dict[str, Any] | None, bytes | None]:
        """The job's definition as stored at ingest: its spec and the bundle of its files."""
        row = self._one("SELECT spec, bundle FROM txsend_jobs WHERE name = %s", (self._job(),))
        if row is None:
            return None, None
        spec, bundle = row
        return (None if spec is None else dict(json.loads(spec))), (
            None if bundle is None else bytes(bundle)
        )

    def store_bundle(self, bundle: bytes | None) -> None:
        """Keep the job's files, so that `txsend worker` can join without them."""
        with self._conn() as conn:
            conn.execute(
                "UPDATE txsend_jobs SET bundle = %s WHERE name = %s", (bundle, self._job())
            )

    def close(self) -> None:
        """Give up the lease (releasing its rows) and close the connections."""
        self._stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join(timeout=5)
        if self.epoch is not None and self._lost is None:
            try:
                self._release_own()
                with self._conn() as conn:
                    conn.execute(
                        "UPDATE txsend_workers SET state = 'stopped' WHERE epoch = %s",
                        (self.epoch,),
                    )
            except (psycopg.Error, TemporaryError):
                pass  # the lease expires and the others reap it
        self._pool.close()

    # --- small helpers -------------------------------------------------------------

    @contextmanager
    def _conn(self) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection; a lost database is a TemporaryError (exit 75), not a bug."""
        try:
            with self._pool.connection(timeout=30) as conn:
                yield conn
        except (psycopg.OperationalError, psycopg_pool.PoolTimeout) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
            raise TemporaryError(
                f"lost the journal database {self.location}: {first}",
                hint="rows this worker had in DATA become unknown when its lease runs out; "
                "once the database is back: txsend resume JOB --journal URL",
            ) from None

    def _one(
        self, query: str, params: Sequence[Any] | Mapping[str, Any] = ()
    ) -> tuple[Any, ...] | None:
        with self._conn() as conn:
            found: tuple[Any, ...] | None = conn.execute(query, params).fetchone()
            return found

    def _all(self, query: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._conn() as conn:
            rows: list[tuple[Any, ...]] = conn.execute(query, params).fetchall()
            return rows

    # --- the job ---------------------------------------------------------------------

    def bind_job(self, job_name: str, fingerprint: dict[str, str], spec: dict[str, Any]) -> None:
        """Scope the journal to a job; the first process stores its definition."""
        self.job = job_name
        with self._conn() as conn:
            conn.execute(
                "INSERT INTO txsend_jobs(name, fingerprint, spec) VALUES (%s, %s, %s) "
                "ON CONFLICT (name) DO UPDATE SET fingerprint = excluded.fingerprint, "
                "spec = excluded.spec",
                (job_name, json.dumps(fingerprint, sort_keys=True), json.dumps(spec)),
            )

    def changes_since(self, fingerprint: dict[str, str]) -> list[str]:
        row = self._one("SELECT fingerprint FROM txsend_jobs WHERE name = %s", (self._job(),))
        if row is None or row[0] is None:
            return []
        stored: dict[str, str] = json.loads(row[0])
        return describe_changes(stored, fingerprint)

    def job_spec(self) -> dict[str, Any] | None:
        return self.stored_job()[0]

    # --- ingest ----------------------------------------------------------------------

    def ingest(
        self, rows: Iterable[Any], new_message_id: Callable[[], str], *, refresh: bool = False
    ) -> IngestStats:
        """Add the job's rows once, whoever comes first; idempotent (see the module doc)."""
        job = self._job()
        stats = IngestStats()
        now = time.time()
        encode = json.JSONEncoder(ensure_ascii=False, default=str).encode
        with self._conn() as conn, conn.transaction():
            locked = conn.execute(
                "SELECT ingest_complete FROM txsend_jobs WHERE name = %s FOR UPDATE", (job,)
            ).fetchone()
            if locked is None:
                raise JobError(f"internal: job {job!r} is not bound in {self.location}")
            if locked[0] and not refresh:
                stats.by_other = True  # ingested while this process waited for the lock
                (stats.existing,) = conn.execute(
                    "SELECT count(*) FROM txsend_messages WHERE job = %s", (job,)
                ).fetchone() or (0,)
                return stats
            conn.execute(
                "CREATE TEMP TABLE txsend_ingest (row integer, key text, address text, "
                "data text, message_id text) ON COMMIT DROP"
            )
            invalid: list[tuple[str, int | None, str | None, str, float]] = []
            with conn.cursor() as cur:
                with cur.copy(
                    "COPY txsend_ingest (row, key, address, data, message_id) FROM STDIN"
                ) as copy:
                    for item in rows:
                        if isinstance(item, RowError):
                            stats.invalid += 1
                            invalid.append((job, item.row, item.key, item.reason, now))
                            _note(stats, str(item))
                            continue
                        copy.write_row(
                            (
                                item.number,
                                item.key,
                                item.address,
                                encode(item.data),
                                new_message_id(),
                            )
                        )
                if refresh:
                    cur.execute("DELETE FROM txsend_skipped_rows WHERE job = %s", (job,))
                cur.executemany(
                    "INSERT INTO txsend_skipped_rows(job, row, key, reason, created_at) "
                    "VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                    invalid,
                )
                cur.execute("CREATE INDEX ON txsend_ingest (key, row)")
                cur.execute(
                    "INSERT INTO txsend_skipped_rows(job, row, key, reason, created_at) "
                    "SELECT %s, row, key, 'duplicate key (first seen in row ' || first || ')', %s "
                    "FROM (SELECT row, key, min(row) OVER (PARTITION BY key) AS first "
                    "FROM txsend_ingest) d WHERE row <> first ON CONFLICT DO NOTHING "
                    "RETURNING row, key, reason",
                    (job, now),
                )
                for row, key, reason in cur.fetchall():
                    stats.duplicates += 1
                    _note(stats, f"row {row}: key {key!r}: {reason}")
                cur.execute(
                    "INSERT INTO txsend_messages(job, key, row, address, data, message_id, "
                    "state, attempts, created_at, updated_at) "
                    "SELECT DISTINCT ON (key) %s, key, row, address, data, message_id, "
                    "'pending', 0, %s, %s FROM txsend_ingest ORDER BY key, row "
                    "ON CONFLICT (job, key) DO NOTHING",
                    (job, now, now),
                )
                stats.new = cur.rowcount
                (distinct,) = cur.execute(
                    "SELECT count(DISTINCT key) FROM txsend_ingest"
                ).fetchone() or (0,)
                stats.existing = distinct - stats.new
                if refresh:
                    self._refresh(cur, job, now)
            conn.execute("UPDATE txsend_jobs SET ingest_complete = true WHERE name = %s", (job,))
        return stats

    @staticmethod
    def _refresh(cur: psycopg.Cursor[Any], job: str, now: float) -> None:
        """--force on a changed job: undelivered rows take the new data (see Journal)."""
        cur.execute(
            "UPDATE txsend_messages m SET row = t.row, address = t.address, data = t.data, "
            "state = CASE WHEN m.state IN ('skipped', 'failed') THEN 'pending' ELSE m.state END, "
            "updated_at = %s FROM (SELECT DISTINCT ON (key) * FROM txsend_ingest "
            "ORDER BY key, row) t "
            f"WHERE m.job = %s AND m.key = t.key AND {_REDOABLE.replace('state', 'm.state')}",
            (now, job),
        )
        cur.execute(
            "UPDATE txsend_messages m SET state = 'skipped', updated_at = %s, "
            "reply = 'no longer in the data file' "
            f"WHERE m.job = %s AND {_REDOABLE.replace('state', 'm.state')} "
            "AND NOT EXISTS (SELECT 1 FROM txsend_ingest t WHERE t.key = m.key)",
            (now, job),
        )

    def ingest_complete(self) -> bool:
        row = self._one("SELECT ingest_complete FROM txsend_jobs WHERE name = %s", (self._job(),))
        return bool(row and row[0])

    # --- leases ----------------------------------------------------------------------

    def join(self) -> None:
        """Take a lease for this process and start renewing it (before claiming)."""
        if self.epoch is not None:
            return
        with self._conn() as conn:
            sent = time.monotonic()
            row = conn.execute(
                "INSERT INTO txsend_workers(epoch, worker, job, host, pid, started_at, "
                f"renewed_at, expires_at, state) VALUES (nextval('txsend_lease_epoch'), "
                f"%s, %s, %s, %s, {_NOW}, {_NOW}, {_NOW} + %s, 'active') RETURNING epoch, "
                "(SELECT abort_reason FROM txsend_jobs WHERE name = %s)",
                (
                    self.worker,
                    self._job(),
                    socket.gethostname(),
                    os.getpid(),
                    self.lease,
                    self._job(),
                ),
            ).fetchone()
        assert row is not None
        self.epoch = int(row[0])
        self._aborted = row[1]
        self._renewed_at = sent
        self._heartbeat = threading.Thread(target=self._beat, name="txsend-lease", daemon=True)
        self._heartbeat.start()

    def _beat(self) -> None:
        interval = min(self.lease / 4.0, ABORT_POLL)
        while not self._stop.wait(interval):
            try:
                self._renew()
                self.reap()
            except (psycopg.Error, TemporaryError) as exc:
                # a database that cannot be reached: may_start_data() turns False as the
                # lease ages, and the run stops when the lease is lost
                event(logging.WARNING, "lease_renewal_failed", f"lease renewal failed: {exc}")

    def _renew(self) -> None:
        with self._flags:
            self._renew_locked()

    def _renew_locked(self) -> None:
        job = self._job()
        with self._conn() as conn:
            sent = time.monotonic()
            row = conn.execute(
                f"UPDATE txsend_workers SET renewed_at = {_NOW}, expires_at = {_NOW} + %s "
                f"WHERE epoch = %s AND state = 'active' AND expires_at > {_NOW} "
                "RETURNING (SELECT abort_reason FROM txsend_jobs WHERE name = %s)",
                (self.lease, self.epoch, job),
            ).fetchone()
        if row is None:
            self._lost = (
                f"this worker's lease ({self.lease:g} s) expired and its rows were handed "
                "to the others"
            )
            event(logging.ERROR, "lease_lost", self._lost, worker=self.worker, epoch=self.epoch)
            self._stop.set()
            return
        self._renewed_at = sent
        self._aborted = row[0]

    def reap(self) -> int:
        """Free the rows of workers whose lease expired; their `sending` rows → `unknown`.

        Returns how many rows became `unknown`.
        """
        job = self._job()
        now = time.time()
        with self._conn() as conn, conn.transaction():
            dead = conn.execute(
                "UPDATE txsend_workers SET state = 'reaped' "
                f"WHERE job = %s AND state = 'active' AND expires_at < {_NOW} "
                "RETURNING epoch, worker",
                (job,),
            ).fetchall()
            if not dead:
                return 0
            params = {
                "job": job,
                "now": now,
                "epochs": [epoch for epoch, _ in dead],
                "workers": [worker for _, worker in dead],
            }
            unknown = conn.execute(
                "UPDATE txsend_messages m SET state = 'unknown', owner = NULL, "
                "owner_epoch = NULL, updated_at = %(now)s, reply = 'worker ' || d.worker || "
                "' stopped renewing its lease after DATA started, before the reply was "
                "recorded' FROM unnest(%(epochs)s::bigint[], %(workers)s::text[]) "
                "AS d(epoch, worker) WHERE m.job = %(job)s AND m.owner_epoch = d.epoch "
                "AND m.state = 'sending'",
                params,
            ).rowcount
            freed = conn.execute(
                "UPDATE txsend_messages SET owner = NULL, owner_epoch = NULL "
                "WHERE job = %(job)s AND owner_epoch = ANY(%(epochs)s::bigint[])",
                params,
            ).rowcount
        event(
            logging.WARNING,
            "reaped",
            f"{len(dead)} workers lost their lease: {freed} claimed rows freed, "
            f"{unknown} rows in DATA made unknown",
            workers=params["workers"],
            freed=freed,
            unknown=unknown,
        )
        return int(unknown)

    def _release_own(self) -> int:
        """At the end of a run: this worker's claimed rows go back; `sending` → `unknown`."""
        now = time.time()
        with self._conn() as conn:
            cur = conn.execute(
                "UPDATE txsend_messages SET owner = NULL, owner_epoch = NULL, updated_at = %s, "
                "state = CASE WHEN state = 'sending' THEN 'unknown' ELSE state END, "
                "reply = CASE WHEN state = 'sending' THEN 'run ended after DATA started, "
                "before the reply was recorded' ELSE reply END "
                "WHERE job = %s AND owner_epoch = %s RETURNING state",
                (now, self._job(), self.epoch),
            )
            return sum(1 for (state,) in cur.fetchall() if state == State.UNKNOWN.value)

    def may_start_data(self) -> bool:
        if self._lost is not None:
            return False
        return time.monotonic() - self._renewed_at < self.lease * DATA_MARGIN

    def stop_requested(self) -> str | None:
        if self._lost is not None:
            return self._lost
        if self._aborted is not None:
            return f"another worker stopped the job: {self._aborted}"
        return None

    def others_busy(self) -> bool:
        """True while other workers' live leases hold rows of the job (claimed or in DATA).

        Asked of the database when the engine finds nothing to claim (a worker that just
        joined must not take "no free row" for "done" while the others still work), and
        answered again from that reading for BUSY_CACHE seconds. Rows held by a lease that
        expired are reaped here, as the heartbeat would: they are free to claim now (True,
        so the caller looks again), and keep no worker waiting after that.
        """
        at, busy = self._busy_checked
        now = time.monotonic()
        if now - at < BUSY_CACHE:
            return busy
        held = (
            "EXISTS (SELECT 1 FROM txsend_workers w JOIN txsend_messages m "
            "ON m.owner_epoch = w.epoch AND m.job = w.job WHERE w.job = %(job)s "
            "AND w.state = 'active' AND w.epoch IS DISTINCT FROM %(epoch)s "
            f"AND w.expires_at {{}} {_NOW})"
        )
        row = self._one(
            f"SELECT {held.format('>')}, {held.format('<=')}",
            {"job": self._job(), "epoch": self.epoch},
        )
        live, expired = (bool(row[0]), bool(row[1])) if row else (False, False)
        if expired:
            self.reap()  # their claimed rows are free again: the caller looks again
            self._busy_checked = (float("-inf"), False)  # and asks afresh next time
            return True
        self._busy_checked = (now, live)
        return live

    def abort(self, reason: str) -> None:
        with self._conn() as conn:
            conn.execute(
                "UPDATE txsend_jobs SET abort_reason = %s WHERE name = %s AND abort_reason IS NULL",
                (f"{reason} (worker {self.worker})", self._job()),
            )

    def clear_abort(self) -> None:
        """`txsend resume`: the job may be worked again."""
        with self._flags, self._conn() as conn:
            conn.execute(
                "UPDATE txsend_jobs SET abort_reason = NULL WHERE name = %s", (self._job(),)
            )
            self._aborted = None

    # --- the send cycle --------------------------------------------------------------

    def recover(self) -> int:
        """Reap dead workers' rows, and release this worker's own (at the end of a run)."""
        reaped = self.reap()
        return reaped + (self._release_own() if self.epoch is not None else 0)

    def claim(
        self, limit: int, *, include_unknown: bool, now: float | None = None
    ) -> list[Claimed]:
        """Take up to limit free rows due now, in data order, for this worker's lease."""
        states = ["pending", "deferred"] + (["unknown"] if include_unknown else [])
        return self._claim(limit, states, now, ())

    def claim_retries(
        self, limit: int, *, busy: Collection[str], now: float | None = None
    ) -> list[Claimed]:
        """Free rows that became due: deferred ones, and rows a dead worker let go."""
        return self._claim(limit, ["pending", "deferred"], now, busy)

    def _claim(
        self, limit: int, states: list[str], now: float | None, busy: Collection[str]
    ) -> list[Claimed]:
        self.join()
        if self._lost is not None:
            return []  # the query refuses too; the abort flag is checked by the query
        job = self._job()
        with self._conn() as conn:
            rows = conn.execute(
                "WITH picked AS MATERIALIZED (SELECT key FROM txsend_messages "
                "WHERE job = %(job)s AND owner_epoch IS NULL AND state = ANY(%(states)s) "
                "AND (next_attempt_at IS NULL OR next_attempt_at <= %(now)s) "
                "AND NOT key = ANY(%(busy)s::text[]) "
                "ORDER BY row LIMIT %(limit)s FOR UPDATE SKIP LOCKED) "
                "UPDATE txsend_messages m SET owner = %(worker)s, owner_epoch = %(epoch)s "
                "FROM picked WHERE m.job = %(job)s AND m.key = picked.key "
                "AND EXISTS (SELECT 1 FROM txsend_workers w WHERE w.epoch = %(epoch)s "
                f"AND w.state = 'active' AND w.expires_at > {_NOW}) "
                "AND NOT EXISTS (SELECT 1 FROM txsend_jobs j WHERE j.name = %(job)s "
                f"AND j.abort_reason IS NOT NULL) RETURNING {_CLAIM_COLUMNS}",
                {
                    "job": job,
                    "states": states,
                    "now": time.time() if now is None else now,
                    "limit": limit,
                    "busy": list(busy),
                    "worker": self.worker,
                    "epoch": self.epoch,
                },
            ).fetchall()
        rows.sort(key=lambda r: r[1])
        return [_claimed(r) for r in rows]

    def write(self, sending: Sequence[tuple[str, int]], records: Sequence[Record]) -> set[str]:
        """Commit `sending` rows and outcomes in one transaction; refuse what is not ours."""
        job = self._job()
        now = time.time()
        asked = {key for key, _ in sending} | {r.key for r in records}
        done: set[str] = set()
        live = (
            "EXISTS (SELECT 1 FROM txsend_workers w WHERE w.epoch = %(epoch)s "
            f"AND w.state = 'active' AND w.expires_at > {_NOW})"
        )
        # one statement commits by itself; two (sending and outcomes) commit together
        together = (bool(sending) and bool(records)) or any(r.suppress for r in records)
        with self._conn() as conn, conn.transaction() if together else nullcontext():
            if sending:
                cur = conn.execute(
                    "UPDATE txsend_messages m SET state = 'sending', attempts = attempts + 1, "
                    "first_attempt_at = coalesce(first_attempt_at, %(now)s), run_id = s.run, "
                    "updated_at = %(now)s FROM unnest(%(keys)s::text[], %(runs)s::bigint[]) "
                    "AS s(key, run) WHERE m.job = %(job)s AND m.key = s.key "
                    f"AND m.owner_epoch = %(epoch)s AND {live} RETURNING m.key",
                    {
                        "now": now,
                        "keys": [key for key, _ in sending],
                        "runs": [run for _, run in sending],
                        "job": job,
                        "epoch": self.epoch,
                    },
                )
                done.update(key for (key,) in cur.fetchall())
            if records:
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
                    f"AND m.owner_epoch = %(epoch)s AND {live} RETURNING m.key",
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
                        "epoch": self.epoch,
                    },
                )
                written = {key for (key,) in cur.fetchall()}
                done.update(written)
                suppress = [
                    (job, r.address.lower(), r.suppress, now)
                    for r in records
                    if r.suppress and r.address and r.key in written
                ]
                if suppress:
                    with conn.cursor() as scur:
                        scur.executemany(
                            "INSERT INTO txsend_suppressions(job, address, reason, created_at) "
                            "VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
                            suppress,
                        )
        return asked - done

    # --- reading ---------------------------------------------------------------------

    def counts(self) -> dict[State, int]:
        job = self._job()
        counts = dict.fromkeys(State, 0)
        with self._conn() as conn:
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

    def next_attempt_at(self) -> float | None:
        row = self._one(
            "SELECT min(next_attempt_at) FROM txsend_messages WHERE job = %s "
            "AND state = 'deferred'",
            (self._job(),),
        )
        return None if row is None or row[0] is None else float(row[0])

    def skipped_by_error(self) -> int:
        """Skipped rows whose reason is not a policy skip (an invalid row, a template)."""
        job = self._job()
        row = self._one(
            "SELECT (SELECT count(*) FROM txsend_messages WHERE job = %s AND state = 'skipped' "
            f"AND {error_skip_sql('coalesce(reply, chr(32))', wildcard='%%')}) + (SELECT "
            f"count(*) FROM txsend_skipped_rows WHERE job = %s AND "
            f"{error_skip_sql('reason', wildcard='%%')})",
            (job, job),
        )
        return int(row[0]) if row else 0

    def skipped_rows(self, limit: int = 1000) -> Iterator[dict[str, Any]]:
        for row, key, reason in self._all(
            "SELECT row, key, reason FROM txsend_skipped_rows WHERE job = %s ORDER BY row LIMIT %s",
            (self._job(), limit),
        ):
            yield {"row": row, "key": key, "reason": reason}

    def find(self, key: str) -> Claimed | None:
        row = self._one(
            f"SELECT {_CLAIM_COLUMNS} FROM txsend_messages m WHERE m.job = %s AND m.key = %s",
            (self._job(), key),
        )
        return None if row is None else _claimed(row)

    def suppressed(self) -> Iterator[tuple[str, str]]:
        yield from (
            (str(a), str(r))
            for a, r in self._all(
                "SELECT address, reason FROM txsend_suppressions WHERE job = %s", (self._job(),)
            )
        )

    def problems(self, limit: int = 1000) -> tuple[int, list[dict[str, Any]]]:
        job = self._job()
        row = self._one(
            "SELECT count(*) FROM txsend_messages WHERE job = %s AND state = ANY(%s)",
            (job, list(_PROBLEM_STATES)),
        )
        rows = [
            {"key": key, "address": address, "state": state, "code": code, "reply": reply}
            for key, address, state, code, reply in self._all(
                "SELECT key, address, state, code, reply FROM txsend_messages "
                "WHERE job = %s AND state = ANY(%s) ORDER BY row LIMIT %s",
                (job, list(_PROBLEM_STATES), limit),
            )
        ]
        return (int(row[0]) if row else 0), rows

    def iter_problems(self) -> Iterator[tuple[dict[str, Any], str, int | None, str | None]]:
        with (
            self._conn() as conn,
            conn.transaction(),  # a server-side cursor lives in a transaction
            conn.cursor(name="txsend_problems") as cur,
        ):
            cur.execute(
                "SELECT data, state, code, reply FROM txsend_messages "
                "WHERE job = %s AND state = ANY(%s) ORDER BY row",
                (self._job(), list(_PROBLEM_STATES)),
            )
            for data, state, code, reply in cur:
                yield json.loads(data), state, code, reply

    def relay_outcomes(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for relay, state, n in self._all(
            "SELECT relay, state, count(*) FROM txsend_messages WHERE job = %s "
            "AND relay IS NOT NULL GROUP BY relay, state",
            (self._job(),),
        ):
            out.setdefault(relay, {})[state] = int(n)
        return out

    def reply_codes(self) -> list[tuple[int | None, str, int]]:
        rows = self._all(
            "SELECT code, min(reply), count(*) FROM txsend_messages WHERE job = %s "
            "AND reply IS NOT NULL GROUP BY code, CASE WHEN reply ~ '^[245][0-9][0-9] [245]\\.' "
            "THEN split_part(reply, ' ', 2) ELSE '' END ORDER BY count(*) DESC",
            (self._job(),),
        )
        return [(code, reply, int(n)) for code, reply, n in rows]

    # --- rate limits -----------------------------------------------------------------

    def take_from_window(self, relay: str, window_start: float, limit: float) -> bool:
        """Count one message in a quota window shared by every worker, if there is room."""
        with self._conn() as conn:
            row = conn.execute(
                "INSERT INTO txsend_rate_windows(relay, window_start, count) "
                "VALUES (%s, %s, 1) ON CONFLICT (relay, window_start) DO UPDATE "
                "SET count = txsend_rate_windows.count + 1 "
                "WHERE txsend_rate_windows.count < %s RETURNING count",
                (relay, window_start, limit),
            ).fetchone()
        return row is not None

    def reserve_slots(self, relay: str, emission: float, n: int) -> float:
        """GCRA over every worker: n slots from the relay's row; seconds to the first."""
        with self._conn() as conn:
            row = conn.execute(
                f"INSERT INTO txsend_rates(relay, tat) VALUES (%(relay)s, {_NOW} + %(span)s) "
                "ON CONFLICT (relay) DO UPDATE SET tat = "
                f"greatest(txsend_rates.tat, {_NOW}) + %(span)s "
                f"RETURNING tat - %(span)s - {_NOW}",
                {"relay": relay, "span": emission * n},
            ).fetchone()
        assert row is not None
        return float(row[0])

    # --- runs ------------------------------------------------------------------------

    def start_run(self, command: str) -> int:
        self.join()
        row = self._one(
            "INSERT INTO txsend_runs(job, command, host, pid, worker, started_at, fingerprint) "
            "VALUES (%s, %s, %s, %s, %s, %s, (SELECT fingerprint FROM txsend_jobs "
            "WHERE name = %s)) RETURNING id",
            (
                self._job(),
                command,
                socket.gethostname(),
                os.getpid(),
                self.worker,
                time.time(),
                self._job(),
            ),
        )
        assert row is not None
        return int(row[0])

    def finish_run(self, run_id: int, exit_code: int) -> None:
        counts = {s.value: n for s, n in self.counts().items() if n}
        with self._conn() as conn:
            conn.execute(
                "UPDATE txsend_runs SET ended_at = %s, exit_code = %s, counts = %s WHERE id = %s",
                (time.time(), exit_code, json.dumps(counts), run_id),
            )

    def runs(self) -> list[RunInfo]:
        return [
            RunInfo(i, c, s, e, x, json.loads(n or "{}"))
            for i, c, s, e, x, n in self._all(
                "SELECT id, command, started_at, ended_at, exit_code, counts FROM txsend_runs "
                "WHERE job = %s ORDER BY id",
                (self._job(),),
            )
        ]

    def last_run(self) -> RunInfo | None:
        runs = self._all(
            "SELECT id, command, started_at, ended_at, exit_code, counts FROM txsend_runs "
            "WHERE job = %s ORDER BY id DESC LIMIT 1",
            (self._job(),),
        )
        if not runs:
            return None
        i, c, s, e, x, n = runs[0]
        return RunInfo(i, c, s, e, x, json.loads(n or "{}"))


def _claimed(values: tuple[Any, ...]) -> Claimed:
    key, row, address, data, message_id, attempts, state, first = values
    return Claimed(key, row, address, json.loads(data), message_id, attempts, State(state), first)


def _note(stats: IngestStats, problem: str) -> None:
    if len(stats.problems) < 20:
        stats.problems.append(problem)
