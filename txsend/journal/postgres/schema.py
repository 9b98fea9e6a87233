"""The PostgreSQL journal's tables: their definition, and their creation on first use.

Every job shares one set of tables, keyed by the job's name. `migrate` creates what is
missing under an advisory lock (several workers may start at once on a new database) and
refuses a database written by a newer txsend.

Schema 2 adds `txsend_feedback` (the reports that came back after sending, keyed by job
and event id) and each job's VERP secret (`txsend_jobs.verp_secret`); a schema 1
database gets them when a txsend of schema 2 first opens it. The indexes the reports'
lookups use (`FEEDBACK_INDEXES`) are made by the first `txsend bounces`, not here.

Schema 3 adds `txsend_messages.seed_of`: the key of the row a seed copy copies (NULL for
every other row; `txsend.job.seeds`), with a partial index of the seed rows by state.

Schema 4 replaces `txsend_rate_windows` (messages per relay per UTC hour or day) with the
quota ledger (`txsend.journal.postgres.rates`): `txsend_rate_buckets`, accepted recipients
per account per time bucket, and `txsend_rate_holds`, the send slots held for
transactions under way, each with its owner (the worker and its lease epoch, NULL for a
journal that took no lease) so that the holds of a worker that died are freed as soon as
its lease expires. Migrating copies the windows of the last two days into buckets
(one starting at a UTC midnight as a day's, any other as an hour's) and drops the old
table.
"""

from __future__ import annotations

from txsend.errors import ConfigError
from txsend.journal.postgres.database import Database

__all__ = ["FEEDBACK_INDEXES", "NOW", "SCHEMA", "SCHEMA_LOCK", "SCHEMA_VERSION", "migrate"]

SCHEMA_VERSION = 4

# The server's clock, in epoch seconds: leases, the shared GCRA and reaping use it, so
# clock skew between the workers' hosts does not matter to them.
NOW = "extract(epoch from clock_timestamp())"

# Autovacuum: the messages table is updated two or three times per row in a run; vacuum
# it after 2% of it changed instead of 20%, and leave room on each page (fillfactor) for
# a row's next versions. README "Scaling out with PostgreSQL" documents these.
SCHEMA = f"""
CREATE TABLE IF NOT EXISTS txsend_meta (name text PRIMARY KEY, value text NOT NULL);
CREATE TABLE IF NOT EXISTS txsend_jobs (
    name text PRIMARY KEY,
    fingerprint text,
    spec text,
    bundle bytea,
    ingest_complete boolean NOT NULL DEFAULT false,
    abort_reason text,
    created_at float8 NOT NULL DEFAULT {NOW}
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
CREATE TABLE IF NOT EXISTS txsend_rate_buckets (
    account text NOT NULL, start float8 NOT NULL, width float8 NOT NULL,
    accepted integer NOT NULL, keep_until float8,
    PRIMARY KEY (account, start, width)
);
CREATE TABLE IF NOT EXISTS txsend_rate_holds (
    id bigserial PRIMARY KEY, account text NOT NULL, expires_at float8 NOT NULL,
    owner text, owner_epoch bigint
);
CREATE INDEX IF NOT EXISTS txsend_rate_holds_account ON txsend_rate_holds (account);
CREATE TABLE IF NOT EXISTS txsend_feedback (
    job text NOT NULL,
    event_id text NOT NULL,
    id bigserial NOT NULL,
    kind text NOT NULL,
    key text,
    matched_by text,
    recipient text,
    status text,
    code integer,
    diagnostic text,
    reporting_mta text,
    source text,
    detector text,
    occurred_at float8,
    suppress text,
    unmatched_reason text,
    outcome text NOT NULL,
    state_before text,
    state_after text,
    recorded_at float8 NOT NULL,
    PRIMARY KEY (job, event_id)
);
"""
# Schema 2's change of a table schema 1 made, run when the stored schema is older (an ALTER
# TABLE locks the table out, even when IF NOT EXISTS finds the column: not on every open).
TO_SCHEMA_2 = "ALTER TABLE txsend_jobs ADD COLUMN IF NOT EXISTS verp_secret bytea"
# Schema 3's: the seed copies (`txsend.job.seeds`)
TO_SCHEMA_3 = """
ALTER TABLE txsend_messages ADD COLUMN IF NOT EXISTS seed_of text;
CREATE INDEX IF NOT EXISTS txsend_messages_seeds ON txsend_messages (job, state)
    WHERE seed_of IS NOT NULL;
"""
# Schema 4's: the fixed windows become buckets of the quota ledger
TO_SCHEMA_4 = f"""
DO $$ BEGIN
IF to_regclass('txsend_rate_windows') IS NOT NULL THEN
    INSERT INTO txsend_rate_buckets(account, start, width, accepted, keep_until)
    SELECT relay, window_start,
           CASE WHEN window_start::bigint % 86400 = 0 THEN 86400 ELSE 3600 END,
           count, window_start + 2 * 86400
    FROM txsend_rate_windows WHERE window_start >= {NOW} - 2 * 86400 AND count > 0
    ON CONFLICT DO NOTHING;
    DROP TABLE txsend_rate_windows;
END IF;
END $$;
"""

# The lookups of `txsend bounces`: a report names a row by its Message-ID (a prefix,
# compared byte-wise: text_pattern_ops) or by its address (any case).
FEEDBACK_INDEXES = """
CREATE INDEX IF NOT EXISTS txsend_messages_message_id
    ON txsend_messages (job, message_id text_pattern_ops);
CREATE INDEX IF NOT EXISTS txsend_messages_address ON txsend_messages (job, lower(address));
"""
SCHEMA_LOCK = 0x7478_7365_6E64  # advisory lock id: "txsend", for concurrent first use


def migrate(db: Database) -> None:
    """Create the tables on first use; refuse a database written by a newer txsend."""
    with db.connection() as conn, conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
        conn.execute(SCHEMA)  # a constant of several statements
        found = conn.execute("SELECT value FROM txsend_meta WHERE name = 'schema'").fetchone()
        if found is not None and int(found[0]) > SCHEMA_VERSION:
            raise ConfigError(
                f"journal {db.location} was written by a newer txsend (schema {found[0]})",
                hint="upgrade txsend",
            )
        if found is None or int(found[0]) < SCHEMA_VERSION:
            conn.execute(TO_SCHEMA_2)
            conn.execute(TO_SCHEMA_3)  # a constant of two statements
            conn.execute(TO_SCHEMA_4)
            conn.execute(
                "INSERT INTO txsend_meta(name, value) VALUES ('schema', %s) "
                "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                (str(SCHEMA_VERSION),),
            )
