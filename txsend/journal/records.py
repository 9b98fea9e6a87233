"""What goes into a journal and comes out of it: claimed rows, outcomes, ingest counts,
and what came back after a message was sent (late bounces, delays, complaints), and an
entry of the suppression store (`txsend.journal.store`).

Plain data, the same for every backend. A run's record (`RunInfo`) lives in
`txsend.models`, since the reports read it without knowing about journals.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

from txsend.models import State

__all__ = [
    "Claimed",
    "FeedbackEntry",
    "FeedbackRow",
    "IngestStats",
    "LedgerUsage",
    "Record",
    "StoreEntry",
]


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
    seed_of: str | None = None  # a seed copy (`txsend.job.seeds`): the key of the row it copies


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


@dataclass
class IngestStats:
    """What one ingest of the data file found."""

    new: int = 0
    existing: int = 0
    duplicates: int = 0
    invalid: int = 0
    problems: list[str] = field(default_factory=list)  # first few skip reasons, for display
    by_other: bool = False  # another worker had ingested the job already (shared journal)
    seeds: int = 0  # of the new rows, how many are seed copies (`txsend.job.seeds`)


@dataclass(frozen=True)
class FeedbackRow:
    """A row as a report about it is matched: which message it was, and where it stands."""

    key: str
    address: str
    message_id: str
    state: State
    sent_at: float | None


@dataclass(frozen=True)
class FeedbackEntry:
    """One report (a DSN's recipient, an ARF report, a provider's event) to record.

    `kind` is "failed", "delayed", "complaint" or "delivered"; `key` the row it was matched
    to (None: unmatched, with `unmatched_reason`), `matched_by` how ("verp", "envid",
    "message-id", "recipient"). `suppress`, when set, is the reason to add the address to
    the job's suppressions.
    """

    event_id: str
    kind: str
    key: str | None = None
    matched_by: str | None = None
    recipient: str | None = None
    status: str | None = None
    code: int | None = None
    diagnostic: str | None = None
    reporting_mta: str | None = None
    source: str | None = None
    detector: str | None = None
    occurred_at: float | None = None
    suppress: str | None = None
    unmatched_reason: str | None = None


@dataclass(frozen=True)
class StoreEntry:
    """One suppressed address (to add: the times are the store's, given ones are ignored)."""

    address: str
    kind: str  # one of KINDS
    reason: str
    source: str | None = None
    created_at: float = 0.0
    updated_at: float = 0.0


class LedgerUsage(NamedTuple):
    """What a quota's ledger holds in a window: the buckets overlapping it, oldest first,
    as (start, width, accepted), and the expiry times of the send slots held now."""

    buckets: list[tuple[float, float, int]]
    holds: list[float]

    @property
    def accepted(self) -> int:
        return sum(n for _, _, n in self.buckets)
