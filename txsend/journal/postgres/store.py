"""The suppression store in PostgreSQL: `txsend_suppression_store`, in the database of a
PostgreSQL journal and shared by every job there (no job in its key).

The same protocol as the SQLite store (`txsend.journal.api.SuppressionStore`). Each
chunk of addresses is one statement (one transaction): an upsert that says which rows
it inserted, so that concurrent adders count each new address once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator

from txsend.journal.api import Suppression
from txsend.journal.postgres.database import Database
from txsend.journal.postgres.schema import SCHEMA_LOCK
from txsend.journal.records import StoreEntry
from txsend.journal.rules import STORE_KINDS, chunks, normal_address, unique_rows

__all__ = ["STORE_SCHEMA", "PgStore"]

STORE_SCHEMA = """
CREATE TABLE IF NOT EXISTS txsend_suppression_store (
    address text COLLATE "C" PRIMARY KEY,
    kind text NOT NULL,
    reason text NOT NULL,
    source text,
    created_at float8 NOT NULL,
    updated_at float8 NOT NULL
)
"""
_COLUMNS = "address, kind, reason, source, created_at, updated_at"
# (xmax = 0): the row was inserted by this statement, not updated
_UPSERT = (
    f"INSERT INTO txsend_suppression_store({_COLUMNS}) "
    "SELECT a, k, r, s, t, t FROM unnest(%(addresses)s::text[], %(kinds)s::text[], "
    "%(reasons)s::text[], %(sources)s::text[], %(times)s::float8[]) AS n(a, k, r, s, t) "
    "ON CONFLICT (address) DO UPDATE SET kind = excluded.kind, reason = excluded.reason, "
    "source = excluded.source, updated_at = excluded.updated_at RETURNING (xmax = 0)"
)
_PAGE = 1000


class PgStore:
    """The suppression store of a PostgreSQL database."""

    def __init__(self, db: Database, clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self._clock = clock

    @classmethod
    def open(cls, url: str, *, clock: Callable[[], float] = time.time) -> PgStore:
        """Connect, and create the table on first use."""
        db = Database.connect(url.strip())
        try:
            with db.connection() as conn, conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
                conn.execute(STORE_SCHEMA)
        except BaseException:
            db.close()
            raise
        return cls(db, clock)

    @property
    def location(self) -> str:
        return self._db.location

    def close(self) -> None:
        self._db.close()

    def add(self, entries: Iterable[Suppression]) -> int:
        new = 0
        for chunk in chunks(entries):
            rows = unique_rows(chunk, self._clock())
            params = {
                name: [row[i] for row in rows]
                for i, name in enumerate(("addresses", "kinds", "reasons", "sources", "times"))
            }
            inserted = self._db.all(_UPSERT, params)
            new += sum(1 for (was_new,) in inserted if was_new)
        return new

    def remove(self, addresses: Iterable[str]) -> int:
        removed = 0
        for chunk in chunks(addresses):
            found = self._db.one(
                "WITH gone AS (DELETE FROM txsend_suppression_store "
                "WHERE address = ANY(%s::text[]) RETURNING 1) SELECT count(*) FROM gone",
                ([normal_address(a) for a in chunk],),
            )
            removed += int(found[0]) if found else 0
        return removed

    def __contains__(self, address: object) -> bool:
        return isinstance(address, str) and self.reason(address) is not None

    def reason(self, address: str) -> str | None:
        found = self._db.one(
            "SELECT reason FROM txsend_suppression_store WHERE address = %s",
            (normal_address(address),),
        )
        return None if found is None else str(found[0])

    def entries(self, kind: str | None = None) -> Iterator[StoreEntry]:
        after = ""
        while True:
            # the addresses are COLLATE "C": the order of the SQLite store (bytes)
            page = self._db.all(
                f"SELECT {_COLUMNS} FROM txsend_suppression_store WHERE address > %(after)s "
                "AND (%(kind)s::text IS NULL OR kind = %(kind)s) "
                "ORDER BY address LIMIT %(page)s",
                {"after": after, "kind": kind, "page": _PAGE},
            )
            yield from (StoreEntry(*values) for values in page)
            if len(page) < _PAGE:
                return
            after = page[-1][0]

    def count(self) -> dict[str, int]:
        counts = dict.fromkeys(STORE_KINDS, 0)
        for kind, n in self._db.all(
            "SELECT kind, count(*) FROM txsend_suppression_store GROUP BY kind"
        ):
            counts[kind] = int(n)
        return counts
