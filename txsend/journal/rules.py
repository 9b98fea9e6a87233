"""Rules both journal backends apply the same way.

Which skips are errors, which rows may be rendered again, which rows are problems, how a
job's changes are described, how data is stored, how stored rows read back, and what a
report that came back after sending (a late bounce, a delay) does to a row, and how the
suppression store keeps addresses. The SQL
fragments here are the same text in SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import TYPE_CHECKING, Any, TypeVar

from txsend.addresses import comparable_address
from txsend.journal.records import Claimed, FeedbackEntry, FeedbackRow, IngestStats

if TYPE_CHECKING:
    from txsend.journal.api import Suppression
from txsend.models import RunInfo, State

__all__ = [
    "DELAY_SEEN",
    "ENDED_IN_DATA",
    "FEEDBACK_COLUMNS",
    "FEEDBACK_COUNTS",
    "FEEDBACK_COUNT_NAMES",
    "FEEDBACK_KINDS",
    "LATE_BOUNCE",
    "OUTCOME_COLUMNS",
    "POLICY_SKIPS",
    "PROBLEMS_NOTED",
    "PROBLEM_STATES",
    "REDOABLE",
    "SEED_MARK",
    "STORE_CHUNK",
    "STORE_KINDS",
    "FeedbackChange",
    "FeedbackPlan",
    "chunks",
    "claimed",
    "describe_changes",
    "encode_data",
    "error_skip_sql",
    "feedback_change",
    "feedback_event",
    "feedback_values",
    "final_counts",
    "has_seeds",
    "merge_values",
    "message_id_range",
    "normal_address",
    "note_problem",
    "plan_feedback",
    "run_info",
    "unique_events",
    "unique_rows",
]

# Reasons a row is skipped on purpose; any other skip (an invalid address, a template
# error, header injection from data) is an error, which makes the run's exit code 1.
POLICY_SKIPS = ("suppressed", "duplicate key", "no longer in the data file")

# Rows whose message was never accepted by a relay and may be rendered again from new data:
# not yet sent, or refused by txsend itself (render error, too large) rather than a relay.
REDOABLE = (
    "(state IN ('pending', 'deferred', 'unknown', 'skipped') "
    "OR (state = 'failed' AND code IS NULL))"
)

# what reports and --failed-csv list
PROBLEM_STATES = ("failed", "bounced", "unknown", "expired")
# a row as `outcomes()` gives it (`txsend send` shows every recipient's)
OUTCOME_COLUMNS = ("key", "address", "state", "code", "reply", "attempts", "relay")

# The reply of a row a run left in `sending`: DATA may or may not have been delivered.
ENDED_IN_DATA = "run ended after DATA started, before the reply was recorded"

PROBLEMS_NOTED = 20  # skip reasons an ingest keeps for display

# Seed copies (`txsend.job.seeds`): an ingest of a job with seeds marks, in `seed_of`, each
# row keyed `seed:<its address>:<key>` where `key` is another row of the same data row
# number (the row it copies). No data row can look so: a data row has one key and one
# number. The SET and WHERE of the same UPDATE in both backends, `m` the messages table
# and `s` the row copied; `{prefix}` selects keys starting `seed:` (SQLite: a range of
# its primary key; PostgreSQL, whose collation may not sort so: `left(m.key, 5)`).
SEED_MARK = (
    "seed_of = substr(m.key, length(m.address) + 7) "
    "WHERE m.seed_of IS NULL AND {prefix} "
    "AND substr(m.key, 1, length(m.address) + 6) = 'seed:' || m.address || ':' "
    "AND EXISTS (SELECT 1 FROM {table} s WHERE {same_job}"
    "s.key = substr(m.key, length(m.address) + 7) AND s.row = m.row)"
)

# One encoder for every row's data (json.dumps would build one per call).
encode_data = json.JSONEncoder(ensure_ascii=False, default=str).encode


def merge_values(groups: Iterable[tuple[Any, int]], limit: int) -> list[tuple[str | None, int]]:
    """`due_values`: grouped raw values as text, stripped (empty: None), counts merged,
    most rows first (then by value), up to `limit`."""
    merged: dict[str | None, int] = {}
    for value, count in groups:
        text = None if value is None else str(value).strip() or None
        merged[text] = merged.get(text, 0) + int(count)
    ordered = sorted(merged.items(), key=lambda item: (-item[1], item[0] or ""))
    return ordered[:limit]


def error_skip_sql(column: str, *, wildcard: str = "%") -> str:
    """An SQL condition, true when the skip reason in `column` is not a policy skip
    (`wildcard="%%"` where the driver formats parameters with %s)."""
    return " AND ".join(f"{column} NOT LIKE '{reason}{wildcard}'" for reason in POLICY_SKIPS)


def describe_changes(stored: dict[str, str], fingerprint: dict[str, str]) -> list[str]:
    """What differs between a stored job fingerprint and this one (empty: the same job)."""
    changes = []
    renamed = _renamed(stored, fingerprint)
    for name in sorted(set(stored) | set(fingerprint)):
        if name in renamed:
            continue
        if name not in stored:
            changes.append(f"{name} was added")
        elif name not in fingerprint:
            changes.append(f"{name} is no longer used")
        elif stored[name] != fingerprint[name]:
            changes.append(f"{name} changed")
    return changes


def _renamed(stored: dict[str, str], fingerprint: dict[str, str]) -> set[str]:
    """Names of parts seen under another name with the same hash (a template named by
    the path the job was given by: "text template /tmp/x/job.yaml:4" and "text template
    job.yaml:4"): the same part, no change."""
    added = {name for name in fingerprint if name not in stored}
    gone = {name for name in stored if name not in fingerprint}
    renamed: set[str] = set()
    for new in sorted(added):
        kind = new.split(" template ", 1)[0] if " template " in new else None
        for old in sorted(gone - renamed):
            if (
                kind is not None
                and old.startswith(f"{kind} template ")
                and stored[old] == fingerprint[new]
            ):
                renamed.update((new, old))
                break
    return renamed


def has_seeds(rows: object) -> bool:
    """Whether rows to ingest carry seed copies (`txsend.job.seeds.SeededRows`), so that
    the ingest marks them (`SEED_MARK`); other ingests skip that UPDATE."""
    return bool(getattr(rows, "seeds", ()))


def note_problem(stats: IngestStats, problem: str) -> None:
    """Keep a skip reason for display, up to `PROBLEMS_NOTED` of them."""
    if len(stats.problems) < PROBLEMS_NOTED:
        stats.problems.append(problem)


def claimed(
    values: tuple[Any, ...], decode: Callable[[str], dict[str, Any]] = json.loads
) -> Claimed:
    """A row read back as (key, row, address, data, message_id, attempts, state, first,
    seed_of); `decode` reads the stored data (the SQLite journal's also reads its compact
    rows)."""
    key, row, address, data, message_id, attempts, state, first, seed_of = values
    return Claimed(
        key, row, address, decode(data), message_id, attempts, State(state), first, seed_of
    )


def run_info(values: tuple[Any, ...]) -> RunInfo:
    """A run read back as (id, command, started_at, ended_at, exit_code, counts JSON)."""
    run_id, command, started, ended, code, counts = values
    return RunInfo(run_id, command, started, ended, code, json.loads(counts or "{}"))


def final_counts(counts: Mapping[State, int]) -> str:
    """The counts a finished run stores: the states that hold rows, as JSON."""
    return json.dumps({s.value: n for s, n in counts.items() if n})


# --- what came back after sending ----------------------------------------------------

FEEDBACK_KINDS = ("failed", "delayed", "complaint", "delivered")

# The reply of a row a report turned `bounced` after the relay had accepted it.
LATE_BOUNCE = "accepted, then bounced: "
# The reply of an `unknown` row a delay report proved accepted (the relay took it).
DELAY_SEEN = "accepted (a delay report came back): "

# The columns of a recorded event, in this order in both backends (`feedback_values`,
# `feedback_event`); `outcome` is "applied" (the row's state changed) or "noted".
FEEDBACK_COLUMNS = (
    "event_id",
    "kind",
    "key",
    "matched_by",
    "recipient",
    "status",
    "code",
    "diagnostic",
    "reporting_mta",
    "source",
    "detector",
    "occurred_at",
    "suppress",
    "unmatched_reason",
    "outcome",
    "state_before",
    "state_after",
    "recorded_at",
)

# feedback_counts, over the events table (`{table}`): "late_bounced" counts rows (distinct
# keys) a report turned bounced, the others count reports.
FEEDBACK_COUNTS = (
    "SELECT count(DISTINCT CASE WHEN outcome = 'applied' AND state_after = 'bounced' "
    "THEN key END), "
    "count(CASE WHEN kind = 'delayed' THEN 1 END), "
    "count(CASE WHEN kind = 'complaint' THEN 1 END), "
    "count(CASE WHEN state_before IS NULL THEN 1 END), count(*) FROM {table}"
)
FEEDBACK_COUNT_NAMES = ("late_bounced", "delayed", "complaints", "unmatched", "events")

_MESSAGE_HEX = re.compile(r"[0-9a-f]{32}")


@dataclass(frozen=True)
class FeedbackChange:
    """What a report does to its row: the new state and reply, and the code when it sets
    one (a late bounce keeps the report's SMTP code; a delay leaves the row's code)."""

    state: State
    reply: str
    sets_code: bool
    code: int | None = None
    sent: bool = False  # the row was accepted after all: set its sent_at if it has none


def feedback_change(entry: FeedbackEntry, state: State | None) -> FeedbackChange | None:
    """The rule: a permanent failure turns a `sent` or `unknown` row `bounced` (it was
    accepted, then bounced); a delay turns an `unknown` row `sent` (the relay took it);
    anything else changes no state. `state` is the row's now, None when there is no row.

    Raises ValueError for a kind that is not one of `FEEDBACK_KINDS` (the caller's bug;
    the batch it is in is rolled back).
    """
    if entry.kind not in FEEDBACK_KINDS:
        raise ValueError(f"feedback event {entry.event_id!r}: unknown kind {entry.kind!r}")
    detail = " ".join(part for part in (entry.status, entry.diagnostic) if part)
    if entry.kind == "failed" and state in (State.SENT, State.UNKNOWN):
        reply = LATE_BOUNCE + (detail or "the report gave no status")
        return FeedbackChange(State.BOUNCED, reply, sets_code=True, code=entry.code)
    if entry.kind == "delayed" and state is State.UNKNOWN:
        return FeedbackChange(State.SENT, DELAY_SEEN + (detail or "delayed"), False, sent=True)
    return None


def unique_events(entries: Sequence[FeedbackEntry]) -> list[bool]:
    """For each entry, False when an earlier entry of the batch has its event id (a
    duplicate whatever the journal holds); ValueError for an empty event id."""
    seen: set[str] = set()
    first = []
    for entry in entries:
        if not isinstance(entry.event_id, str) or not entry.event_id:
            raise ValueError(f"feedback event without an event id: {entry!r}")
        first.append(entry.event_id not in seen)
        seen.add(entry.event_id)
    return first


def feedback_values(
    entry: FeedbackEntry,
    outcome: str,
    before: State | None,
    after: State | None,
    now: float,
) -> tuple[Any, ...]:
    """An event as stored, in the order of `FEEDBACK_COLUMNS`."""
    return (
        entry.event_id,
        entry.kind,
        entry.key,
        entry.matched_by,
        entry.recipient,
        entry.status,
        entry.code,
        entry.diagnostic,
        entry.reporting_mta,
        entry.source,
        entry.detector,
        entry.occurred_at,
        entry.suppress,
        entry.unmatched_reason,
        outcome,
        None if before is None else before.value,
        None if after is None else after.value,
        now,
    )


def feedback_event(values: Sequence[Any]) -> dict[str, Any]:
    """An event read back (the columns of `FEEDBACK_COLUMNS`), for reports."""
    return dict(zip(FEEDBACK_COLUMNS, values, strict=True))


def message_id_range(message_hex: str) -> tuple[str, str] | None:
    """The Message-IDs `<hex@...>` lie in [low, high) in byte order; None when `message_hex`
    is not 32 hex digits (no Message-ID txsend made has it)."""
    hexed = message_hex.lower()
    if _MESSAGE_HEX.fullmatch(hexed) is None:
        return None
    return f"<{hexed}@", f"<{hexed}A"  # "A" follows "@" in ASCII


@dataclass
class FeedbackPlan:
    """What one batch of reports writes, in one transaction: the rows' changes (one per
    key, the batch's changes to it merged), the suppressions, the events, and the
    answer for each entry ("applied", "noted" or "duplicate")."""

    results: list[str]
    changes: dict[str, FeedbackChange]
    suppressions: list[tuple[str, str]]  # (address, lowercased; reason)
    events: list[tuple[Any, ...]]  # `FEEDBACK_COLUMNS`


def plan_feedback(
    entries: Sequence[FeedbackEntry],
    recorded: Collection[str],
    rows: Mapping[str, FeedbackRow],
    now: float,
) -> FeedbackPlan:
    """Apply the rule (`feedback_change`) to a batch, in order.

    `recorded`: the batch's event ids the journal holds already (duplicates: they change
    nothing); `rows`: the rows the entries' keys name, as they are now (a key without a
    row is unmatched). Two reports about one row in a batch apply one after the other.
    """
    plan = FeedbackPlan([], {}, [], [])
    states = {key: row.state for key, row in rows.items()}
    for entry, first in zip(entries, unique_events(entries), strict=True):
        if not first or entry.event_id in recorded:
            plan.results.append("duplicate")
            continue
        row = None if entry.key is None else rows.get(entry.key)
        before = None if row is None else states[row.key]
        change = feedback_change(entry, before)
        if row is not None and change is not None:
            states[row.key] = change.state
            plan.changes[row.key] = _merged(plan.changes.get(row.key), change)
        address = row.address if row is not None else entry.recipient
        if entry.suppress and address:
            plan.suppressions.append((address.lower(), entry.suppress))
        outcome = "noted" if change is None else "applied"
        after = None if change is None else change.state
        plan.events.append(feedback_values(entry, outcome, before, after, now))
        plan.results.append(outcome)
    return plan


def _merged(earlier: FeedbackChange | None, later: FeedbackChange) -> FeedbackChange:
    """Two changes of one row in a batch as one write: the later state and reply, the code
    of the last that set one, sent_at if either set it."""
    if earlier is None:
        return later
    return FeedbackChange(
        later.state,
        later.reply,
        sets_code=earlier.sets_code or later.sets_code,
        code=later.code if later.sets_code else earlier.code,
        sent=earlier.sent or later.sent,
    )


# --- the suppression store ------------------------------------------------------------

STORE_KINDS = ("bounce", "complaint", "manual", "import")
STORE_CHUNK = 10_000  # addresses per transaction: other writers wait for one chunk at most
_T = TypeVar("_T")


def chunks(items: Iterable[_T], size: int = STORE_CHUNK) -> Iterator[list[_T]]:
    """The items, `size` at a time (itertools.batched is Python 3.12)."""
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


def normal_address(address: str) -> str:
    """An address as the store keeps and compares it (lowercase, the domain in A-labels)."""
    return comparable_address(address)


def unique_rows(
    entries: Iterable[Suppression], now: float
) -> list[tuple[str, str, str, str | None, float]]:
    """(address, kind, reason, source, now) per address of a chunk, the last one winning;
    ValueError for an empty address or a kind not in STORE_KINDS (the caller checks its input)."""
    rows: dict[str, tuple[str, str, str, str | None, float]] = {}
    for entry in entries:
        address = normal_address(entry.address)
        if not address:
            raise ValueError(f"suppression without an address: {entry!r}")
        if entry.kind not in STORE_KINDS:
            raise ValueError(f"suppression of {address}: unknown kind {entry.kind!r}")
        rows.pop(address, None)  # the latest also takes the latest place
        rows[address] = (address, entry.kind, entry.reason, entry.source, now)
    return list(rows.values())
