"""What every journal backend offers the engine and the commands.

Two backends implement `JournalBackend`: `txsend.journal.sqlite.Journal` (one SQLite file,
one process at a time, the default) and `txsend.journal.postgres.journal.PgJournal` (PostgreSQL,
several worker processes on several hosts working one job). The engine and the
commands only use this interface; `open_journal` picks the backend from the location.

The narrow core is ingest, claim, write (record) and counts (summary); the rest is
reading for reports, the job binding, runs, rate-limit state shared by all workers,
and the multi-worker hooks (abort, lease) that a single-process backend answers
trivially.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from txsend.errors import ConfigError
from txsend.models import State


@dataclass(frozen=True)
class Claimed:
    """A row taken from the journal to be rendered and sent."""

    key: str
    row: int
    address: str
    data: dict[str, Any]
    message_id: str
    attempts: int
    state: State  # state before the claim: pending, deferred or unknown
    first_attempt_at: float | None = None  # wall clock, for delivery.retry.max_age


@dataclass(frozen=True)
class Record:
    """An outcome to write for one key."""

    key: str
    state: State
    code: int | None = None
    reply: str | None = None
    relay: str | None = None
    next_attempt_at: float | None = None
    attempt: int = 0  # transactions the journal has not counted yet (ended before DATA)
    suppress: str | None = None  # add the address to the job's suppressions (a hard bounce)
    address: str | None = None


# Reasons a row is skipped on purpose; any other skip (an invalid address, a template
# error, header injection from data) is an error, which makes the run's exit code 1.
POLICY_SKIPS = ("suppressed", "duplicate key", "no longer in the data file")


def error_skip_sql(column: str, *, wildcard: str = "%") -> str:
    """An SQL condition, true when the skip reason in `column` is not a policy skip
    (`wildcard="%%"` where the driver formats parameters with %s)."""
    return " AND ".join(f"{column} NOT LIKE '{reason}{wildcard}'" for reason in POLICY_SKIPS)


@dataclass
class IngestStats:
    new: int = 0
    existing: int = 0
    duplicates: int = 0
    invalid: int = 0
    problems: list[str] = field(default_factory=list)  # first few skip reasons, for display
    by_other: bool = False  # another worker had ingested the job already (shared journal)


@dataclass(frozen=True)
class RunInfo:
    id: int
    command: str
    started_at: float
    ended_at: float | None
    exit_code: int | None
    counts: dict[str, int]


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

    # the job
    def bind_job(
        self, job_name: str, fingerprint: dict[str, str], spec: dict[str, Any]
    ) -> None: ...
    def changes_since(self, fingerprint: dict[str, str]) -> list[str]: ...
    def job_spec(self) -> dict[str, Any] | None: ...

    # ingest
    def ingest(
        self, rows: Iterable[Any], new_message_id: Callable[[], str], *, refresh: bool = False
    ) -> IngestStats: ...
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

    # summary and reading
    def counts(self) -> dict[State, int]: ...
    def skipped_by_error(self) -> int:
        """Skipped rows that were not skipped by policy (see `POLICY_SKIPS`)."""
        ...

    def next_attempt_at(self) -> float | None: ...
    def skipped_rows(self, limit: int = 1000) -> Iterator[dict[str, Any]]: ...
    def find(self, key: str) -> Claimed | None: ...
    def suppressed(self) -> Iterator[tuple[str, str]]: ...
    def problems(self, limit: int = 1000) -> tuple[int, list[dict[str, Any]]]: ...
    def iter_problems(
        self,
    ) -> Iterator[tuple[dict[str, Any], str, int | None, str | None]]: ...
    def relay_outcomes(self) -> dict[str, dict[str, int]]: ...
    def reply_codes(self) -> list[tuple[int | None, str, int]]: ...

    # runs
    def start_run(self, command: str) -> int: ...
    def finish_run(self, run_id: int, exit_code: int) -> None: ...
    def runs(self) -> list[RunInfo]: ...
    def last_run(self) -> RunInfo | None: ...

    # rate limits shared by every process sending through a relay
    def take_from_window(self, relay: str, window_start: float, limit: float) -> bool: ...
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


def describe_changes(stored: dict[str, str], fingerprint: dict[str, str]) -> list[str]:
    """What differs between a stored job fingerprint and this one (empty: the same job)."""
    changes = []
    for name in sorted(set(stored) | set(fingerprint)):
        if name not in stored:
            changes.append(f"{name} was added")
        elif name not in fingerprint:
            changes.append(f"{name} is no longer used")
        elif stored[name] != fingerprint[name]:
            changes.append(f"{name} changed")
    return changes


_PG = re.compile(r"\s*postgres(ql)?:/", re.IGNORECASE)  # ":/" too: a URL typed wrong is no path


def is_postgres(location: str | Path) -> bool:
    """True for a postgresql:// (or postgres://) journal URL."""
    return isinstance(location, str) and _PG.match(location) is not None


def open_journal(
    location: str | Path,
    *,
    create: bool = True,
    job_name: str | None = None,
    lease: float | None = None,
) -> JournalBackend:
    """The journal at a file path (SQLite) or a postgresql:// URL (PostgreSQL)."""
    if is_postgres(location):
        assert isinstance(location, str)
        try:
            from txsend.journal.postgres.journal import PgJournal  # psycopg is needed only for this
        except ModuleNotFoundError as exc:
            if exc.name not in ("psycopg", "psycopg_pool"):
                raise
            raise ConfigError(
                f"a PostgreSQL journal needs psycopg, which is not installed ({exc})",
                hint="pip install 'txsend[postgresql]'",
            ) from None
        return PgJournal.open(location, create=create, job_name=job_name, lease=lease)
    from txsend.journal.sqlite import Journal

    return Journal.open(Path(location), create=create)
