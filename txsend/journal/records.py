"""What goes into a journal and comes out of it: claimed rows, outcomes, ingest counts.

Plain data, the same for every backend. A run's record (`RunInfo`) lives in
`txsend.models`, since the reports read it without knowing about journals.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from txsend.models import State

__all__ = ["Claimed", "IngestStats", "Record"]


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


@dataclass
class IngestStats:
    """What one ingest of the data file found."""

    new: int = 0
    existing: int = 0
    duplicates: int = 0
    invalid: int = 0
    problems: list[str] = field(default_factory=list)  # first few skip reasons, for display
    by_other: bool = False  # another worker had ingested the job already (shared journal)
