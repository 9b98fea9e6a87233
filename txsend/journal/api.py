"""What every journal backend offers the engine and the commands: the protocols.

Two backends implement `JournalBackend`: `txsend.journal.sqlite.Journal` (one SQLite file,
one process at a time, the default) and `txsend.journal.postgres.journal.PgJournal` (PostgreSQL,
several worker processes on several hosts working one job). The engine and the
commands only use this interface; `txsend.journal.opening.open_journal` picks the
backend from the location.

The narrow core is ingest, claim, write (record) and counts (summary); the rest is
reading for reports, the job binding, runs, rate-limit state shared by all workers,
what came back after sending (late bounces, delays, complaints: `record_feedback`), and
the multi-worker hooks (abort, lease) that a single-process backend answers trivially.
What only a journal shared by several workers offers (the stored job, the list of
workers) is `SharedJournal`, reached through `JournalBackend.as_shared`.

The suppression store shared by jobs (`SuppressionStore`: a SQLite file, or a table of
a PostgreSQL journal's database) is not a journal; `txsend.journal.store.open_store`
opens one.

The records passed through these protocols live in `txsend.journal.records`.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from typing import Any, Protocol

from txsend.journal.records import (
    Claimed,
    FeedbackEntry,
    FeedbackRow,
    IngestStats,
    LedgerUsage,
    Record,
    StoreEntry,
)
from txsend.models import RunInfo, State

__all__ = ["JournalBackend", "SharedJournal", "Suppression", "SuppressionStore"]


class JournalBackend(Protocol):
    """A job's journal; see the module docstring for the two implementations."""

    @property
    def location(self) -> str:
        """Where the journal is, for messages (a PostgreSQL URL without its password)."""
        ...

    @property
    def shared(self) -> bool:
        """True when other processes may work the same job at the same time."""
        ...

    def close(self) -> None: ...

    def as_shared(self) -> SharedJournal | None:
        """This journal's multi-worker operations; None for a journal of one process."""
        ...

    # the job
    def bind_job(
        self, job_name: str, fingerprint: dict[str, str], spec: dict[str, Any]
    ) -> None: ...
    def changes_since(self, fingerprint: dict[str, str]) -> list[str]: ...
    def job_spec(self) -> dict[str, Any] | None: ...

    # ingest
    def ingest(
        self, rows: Iterable[Any], new_message_id: Callable[[], str], *, refresh: bool = False
    ) -> IngestStats:
        """Add the rows (Row or RowError) not seen before; idempotent. Rows that carry seed
        copies (`txsend.job.seeds.SeededRows`) have those marked: `Claimed.seed_of`."""
        ...

    def ingest_complete(self) -> bool: ...

    # the send cycle
    def recover(self) -> int: ...
    def claim(
        self, limit: int, *, include_unknown: bool, now: float | None = None
    ) -> list[Claimed]: ...
    def claim_retries(
        self, limit: int, *, busy: Collection[str], now: float | None = None
    ) -> list[Claimed]: ...
    def write(self, sending: Sequence[tuple[str, int]], records: Sequence[Record]) -> set[str]:
        """Commit rows entering `sending` and outcomes; returns the keys refused (fenced)."""
        ...

    def expire(self, reason: str) -> int:
        """schedule.not_after has passed: every `pending` and `deferred` row becomes
        `expired` with `reason` as its reply; returns how many. `unknown` rows stay as they
        are; a shared journal leaves the rows other live workers hold to them."""
        ...

    # summary and reading
    def counts(self) -> dict[State, int]: ...
    def seed_counts(self) -> dict[State, int]:
        """The seed copies (`txsend.job.seeds`) per state: a part of `counts()`."""
        ...

    def skipped_by_error(self) -> int:
        """Skipped rows that were not skipped by policy (`txsend.journal.rules.POLICY_SKIPS`)."""
        ...

    def next_attempt_at(self, after: float | None = None) -> float | None:
        """The earliest retry time among deferred rows (later than `after`, if given)."""
        ...

    def due_values(self, column: str, limit: int = 100) -> list[tuple[str | None, int]]:
        """The distinct values of a data column among rows still due (`pending` and
        `deferred`), each with its count, most rows first, up to `limit` values. The column
        is matched as `txsend.job.scheduling.row_zone` matches it (exactly, else
        case-insensitively); a value is text, stripped; None: missing or empty."""
        ...

    def skipped_rows(self, limit: int = 1000) -> Iterator[dict[str, Any]]: ...
    def find(self, key: str) -> Claimed | None: ...
    def outcomes(self, limit: int = 1000) -> list[dict[str, Any]]:
        """The first `limit` rows in data order, each as it stands: key, address, state,
        code, reply (the last one), attempts, relay (`txsend send` lists every recipient)."""
        ...

    def suppressed(self) -> Iterator[tuple[str, str]]: ...
    def problems(self, limit: int = 1000) -> tuple[int, list[dict[str, Any]]]: ...
    def iter_problems(
        self,
    ) -> Iterator[tuple[dict[str, Any], str, int | None, str | None]]: ...
    def relay_outcomes(self) -> dict[str, dict[str, int]]: ...
    def reply_codes(self) -> list[tuple[int | None, str, int]]: ...

    # what came back after sending: late bounces, delays, complaints
    def verp_secret(self) -> bytes:
        """The key of the job's VERP tokens: 32 random bytes made on first call, kept in the
        journal (per job in PostgreSQL) and the same ever after. Never to be printed."""
        ...

    def prepare_feedback(self) -> None:
        """Make the indexes `feedback_rows` uses (Message-ID, address) if they are missing.

        Not made at ingest, so that sending does not pay for them."""
        ...

    def feedback_rows(
        self,
        *,
        key: str | None = None,
        message_hex: str | None = None,
        address: str | None = None,
        limit: int = 5,
    ) -> list[FeedbackRow]:
        """The rows (in data order, up to limit) a report names, by exactly one of: a key;
        the 32 hex digits of a Message-ID `<hex@domain>`; an address (any case)."""
        ...

    def record_feedback(self, entries: Sequence[FeedbackEntry]) -> list[str]:
        """Record a batch of reports in ONE transaction (events, rows' changes, suppressions).

        Per entry: "duplicate" when its event id is recorded already (nothing changes);
        "applied" when the rule (`txsend.journal.rules.feedback_change`) changed its row's
        state (failed: sent|unknown -> bounced; delayed: unknown -> sent); else "noted".
        An entry's `suppress` adds its row's address (else its recipient) to the job's
        suppressions. ValueError (nothing recorded) for an entry of an unknown kind.
        """
        ...

    def recorded_feedback(self, event_ids: Sequence[str]) -> set[str]:
        """Which of these report event ids the journal has recorded already."""
        ...

    def feedback_counts(self) -> dict[str, int]:
        """{"late_bounced": rows a report turned bounced, "delayed", "complaints",
        "unmatched" (no row): reports, "events": every report recorded}."""
        ...

    def feedback_events(self, limit: int = 1000) -> Iterator[dict[str, Any]]:
        """Recorded reports, newest first: `txsend.journal.rules.FEEDBACK_COLUMNS` each."""
        ...

    # runs
    def start_run(self, command: str) -> int: ...
    def finish_run(self, run_id: int, exit_code: int) -> None: ...
    def runs(self) -> list[RunInfo]: ...
    def last_run(self) -> RunInfo | None: ...

    # rate limits shared by every process sending through a relay
    # the quota ledger (`txsend.delivery.quotas`): accepted recipients per account
    def ledger_hold(
        self, account: str, since: float, limit: int, now: float, expires: float
    ) -> int | None:
        """Atomically hold a send slot if the acceptances in buckets overlapping
        [since, now] and the live holds count fewer than limit: its id, else None. A hold
        is live until it expires; on a shared journal it is owned by this worker's lease,
        and the holds of workers whose lease is over are not live (freed)."""
        ...

    def ledger_keep(
        self, hold: int, account: str, start: float, width: float, keep_until: float | None
    ) -> None:
        """Turn a hold into an acceptance in the bucket [start, start + width), kept until
        keep_until (None: for good)."""
        ...

    def ledger_release(self, hold: int) -> None: ...
    def ledger_give_back(self, account: str, start: float, width: float) -> None: ...
    def ledger_usage(self, account: str, since: float, now: float) -> LedgerUsage: ...
    def ledger_first(self, account: str) -> float | None: ...
    def ledger_prune(self, now: float) -> None:
        """Forget buckets no window needs and the holds no live run can own (as a run
        starts): SQLite's every hold, PostgreSQL's lapsed ones and those of workers gone."""
        ...

    def ledger_seed(self, account: str, buckets: list[tuple[float, float, int]]) -> bool:
        """Count buckets (start, width, accepted; kept for good) for an account that has
        none yet, atomically; False, writing nothing, when it has one (idempotent)."""
        ...

    def sent_days(self) -> list[tuple[float, int]]:
        """The job's accepted recipients (rows with a `sent_at`) per UTC day, as (day's
        start, count), oldest first: SQLite's whole journal, PostgreSQL's job's rows."""
        ...

    def reserve_slots(self, relay: str, emission: float, n: int) -> float:
        """Reserve n send slots `emission` seconds apart (GCRA); seconds until the first."""
        ...

    # several workers on one job
    def abort(self, reason: str) -> None:
        """Tell every worker of the job to stop claiming (the error-rate abort)."""
        ...

    def stop_requested(self) -> str | None:
        """Why another worker stopped the job, or why this one lost its lease; else None."""
        ...

    def may_start_data(self) -> bool:
        """False once this worker cannot be sure its lease still holds."""
        ...

    def others_busy(self) -> bool:
        """True while rows due are held by other live workers (they may come back)."""
        ...


class SharedJournal(JournalBackend, Protocol):
    """A journal several worker processes share: what only it offers beyond a journal.

    `shared` is True for it; `as_shared()` returns it.
    """

    # The job it is scoped to: set by bind_job, or by `txsend worker` once it has
    # picked one of `jobs()`.
    job: str | None

    def jobs(self) -> list[tuple[str, int, bool]]:
        """Every job in the journal with its count of rows not yet final, and whether it
        is ready to join (ingested, its files stored)."""
        ...

    def store_bundle(self, bundle: bytes) -> None:
        """Keep the job's files, so that `txsend worker` can join without them (empty:
        they could not be packed, and a worker waits for them no longer)."""
        ...

    def has_bundle(self) -> bool:
        """Whether the job's files were stored (or found impossible to pack)."""
        ...

    def stored_job(self) -> tuple[dict[str, Any] | None, bytes | None]:
        """The job's definition as stored at ingest: its spec and the bundle of its files
        (None until stored; empty when its files could not be packed)."""
        ...

    def clear_abort(self) -> None:
        """`txsend resume`: the job may be worked again after an abort."""
        ...

    def workers(self, stopped: int = 5) -> list[dict[str, Any]]:
        """The job's live workers, then the last `stopped` others, newest first."""
        ...


class Suppression(Protocol):
    """What `SuppressionStore.add` takes: a `StoreEntry`, or anything with these four."""

    @property
    def address(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def reason(self) -> str: ...
    @property
    def source(self) -> str | None: ...


class SuppressionStore(Protocol):
    """Addresses no job sends to again, with why; see the module docstring."""

    @property
    def location(self) -> str:
        """The file, or the URL without its password, for messages."""
        ...

    def add(self, entries: Iterable[Suppression]) -> int:
        """Store the addresses; returns how many were new. An address stored already keeps
        its created_at and takes the latest kind, reason and source."""
        ...

    def remove(self, addresses: Iterable[str]) -> int:
        """Forget the addresses; returns how many were stored."""
        ...

    def __contains__(self, address: object) -> bool: ...

    def reason(self, address: str) -> str | None:
        """Why the address is suppressed, or None when it is not."""
        ...

    def entries(self, kind: str | None = None) -> Iterator[StoreEntry]:
        """Every entry (of one kind), sorted by address."""
        ...

    def count(self) -> dict[str, int]:
        """Entries per kind (every kind of KINDS, 0 included)."""
        ...

    def close(self) -> None: ...
