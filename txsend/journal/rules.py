"""Rules both journal backends apply the same way.

Which skips are errors, which rows may be rendered again, which rows are problems, how a
job's changes are described, how data is stored, and how stored rows read back. The SQL
fragments here are the same text in SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from txsend.journal.records import Claimed, IngestStats
from txsend.models import RunInfo, State

__all__ = [
    "ENDED_IN_DATA",
    "POLICY_SKIPS",
    "PROBLEMS_NOTED",
    "PROBLEM_STATES",
    "REDOABLE",
    "claimed",
    "describe_changes",
    "encode_data",
    "error_skip_sql",
    "final_counts",
    "note_problem",
    "run_info",
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

PROBLEM_STATES = ("failed", "bounced", "unknown")  # what reports and --failed-csv list

# The reply of a row a run left in `sending`: DATA may or may not have been delivered.
ENDED_IN_DATA = "run ended after DATA started, before the reply was recorded"

PROBLEMS_NOTED = 20  # skip reasons an ingest keeps for display

# One encoder for every row's data (json.dumps would build one per call).
encode_data = json.JSONEncoder(ensure_ascii=False, default=str).encode


def error_skip_sql(column: str, *, wildcard: str = "%") -> str:
    """An SQL condition, true when the skip reason in `column` is not a policy skip
    (`wildcard="%%"` where the driver formats parameters with %s)."""
    return " AND ".join(f"{column} NOT LIKE '{reason}{wildcard}'" for reason in POLICY_SKIPS)


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


def note_problem(stats: IngestStats, problem: str) -> None:
    """Keep a skip reason for display, up to `PROBLEMS_NOTED` of them."""
    if len(stats.problems) < PROBLEMS_NOTED:
        stats.problems.append(problem)


def claimed(
    values: tuple[Any, ...], decode: Callable[[str], dict[str, Any]] = json.loads
) -> Claimed:
    """A row read back as (key, row, address, data, message_id, attempts, state, first);
    `decode` reads the stored data (the SQLite journal's also reads its compact rows)."""
    key, row, address, data, message_id, attempts, state, first = values
    return Claimed(key, row, address, decode(data), message_id, attempts, State(state), first)


def run_info(values: tuple[Any, ...]) -> RunInfo:
    """A run read back as (id, command, started_at, ended_at, exit_code, counts JSON)."""
    run_id, command, started, ended, code, counts = values
    return RunInfo(run_id, command, started, ended, code, json.loads(counts or "{}"))


def final_counts(counts: Mapping[State, int]) -> str:
    """The counts a finished run stores: the states that hold rows, as JSON."""
    return json.dumps({s.value: n for s, n in counts.items() if n})
