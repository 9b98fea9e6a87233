"""Rate limits every worker of a PostgreSQL journal shares, on the server's clock.

A relay's pace is one GCRA row per relay (`tat`, the theoretical arrival time); a worker
reserves several slots per round trip. Hour and day quotas are counter rows per window,
taken atomically.
"""

from __future__ import annotations

from txsend.journal.postgres.database import Database
from txsend.journal.postgres.schema import NOW

__all__ = ["reserve_slots", "take_from_window"]


def take_from_window(db: Database, relay: str, window_start: float, limit: float) -> bool:
    """Count one message in a quota window shared by every worker, if there is room."""
    row = db.one(
        "INSERT INTO txsend_rate_windows(relay, window_start, count) "
        "VALUES (%s, %s, 1) ON CONFLICT (relay, window_start) DO UPDATE "
        "SET count = txsend_rate_windows.count + 1 "
        "WHERE txsend_rate_windows.count < %s RETURNING count",
        (relay, window_start, limit),
    )
    return row is not None


def reserve_slots(db: Database, relay: str, emission: float, n: int) -> float:
    """GCRA over every worker: n slots from the relay's row; seconds to the first."""
    row = db.one(
        f"INSERT INTO txsend_rates(relay, tat) VALUES (%(relay)s, {NOW} + %(span)s) "
        "ON CONFLICT (relay) DO UPDATE SET tat = "
        f"greatest(txsend_rates.tat, {NOW}) + %(span)s "
        f"RETURNING tat - %(span)s - {NOW}",
        {"relay": relay, "span": emission * n},
    )
    assert row is not None
    return float(row[0])
