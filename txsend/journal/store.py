"""The suppression store: addresses no job sends to again, shared by every job that names it.

Bounces and complaints that `txsend bounces` finds, addresses added by hand and provider
lists imported (`txsend suppress`) live here with their kind, reason, source and dates;
each job that names the store (`suppress: {store: ...}`) skips them. Unlike a journal's
`suppressions` (one job's own hard bounces) it outlives jobs.

Two backends with one protocol, `SuppressionStore` (in `txsend.journal.api`, exported here
with the entries' record, `StoreEntry`): a SQLite file (`SqliteStore`, the
default at `default_store_path()`), or, for a postgresql:// location, the table
`txsend_suppression_store` of that database, shared by every job there
(`txsend.journal.postgres.store`). `open_store` picks one.

Several processes use one SQLite store at once (two `txsend bounces` on different jobs,
a run reading it): WAL, a busy timeout, and short transactions (`BEGIN IMMEDIATE`, a
chunk of addresses each). Addresses are compared case-insensitively: stored lowercased,
an internationalised domain as its A-labels (as it went out in RCPT TO, and as reports
name it).
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from txsend.errors import ConfigError, TemporaryError
from txsend.job.location import JournalLocation
from txsend.journal.api import Suppression, SuppressionStore
from txsend.journal.records import StoreEntry
from txsend.journal.rules import STORE_KINDS, chunks, normal_address, unique_rows

__all__ = [
    "KINDS",
    "SqliteStore",
    "StoreEntry",
    "Suppression",
    "SuppressionStore",
    "default_store_path",
    "open_store",
]

KINDS = STORE_KINDS
BUSY_TIMEOUT = 30.0  # seconds another process's transaction may keep the store locked
_APPLICATION_ID = 0x7478_7373  # "txss": PRAGMA application_id of a suppression store
_PAGE = 1000  # rows per read of `entries`: no read transaction held while the caller works


def default_store_path(env: Mapping[str, str] = os.environ) -> Path:
    """$XDG_STATE_HOME/txsend/suppressions.db, else ~/.local/state/txsend/suppressions.db."""
    state = env.get("XDG_STATE_HOME", "")
    if not os.path.isabs(state):  # the XDG spec: a relative value is to be ignored
        home = env.get("HOME") or str(Path.home())
        state = os.path.join(home, ".local", "state")
    return Path(state) / "txsend" / "suppressions.db"


def open_store(location: str | Path | None) -> SuppressionStore:
    """The store at a location: None for the default file, a postgresql:// URL, or a path."""
    where = JournalLocation.parse(default_store_path() if location is None else location)
    if where.url is not None:
        try:
            # Imported here: psycopg is an optional extra, needed only for PostgreSQL.
            from txsend.journal.postgres.store import PgStore
        except ModuleNotFoundError as exc:
            if exc.name not in ("psycopg", "psycopg_pool"):
                raise
            raise ConfigError(
                f"a PostgreSQL suppression store needs psycopg, which is not installed ({exc})",
                hint="pip install 'txsend[postgresql]'",
            ) from None
        return PgStore.open(where.url)
    assert where.path is not None
    return SqliteStore.open(where.path.expanduser())


_TABLE = """CREATE TABLE IF NOT EXISTS "suppression_store" (
   "address" TEXT PRIMARY KEY,
   "kind" TEXT NOT NULL,
   "reason" TEXT NOT NULL,
   "source" TEXT,
   "created_at" REAL NOT NULL,
   "updated_at" REAL NOT NULL
) WITHOUT ROWID"""
_COLUMNS = "address, kind, reason, source, created_at, updated_at"
_UPSERT = (
    f"INSERT INTO suppression_store({_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?5) "
    "ON CONFLICT(address) DO UPDATE SET kind = excluded.kind, reason = excluded.reason, "
    "source = excluded.source, updated_at = excluded.updated_at"
)
_NEW = (
    "SELECT count(*) FROM json_each(?) AS j WHERE NOT EXISTS "
    "(SELECT 1 FROM suppression_store s WHERE s.address = j.value)"
)
_HINT = "move the file away, or name another file in the job's suppress: store"


class SqliteStore:
    """The suppression store in one SQLite file (created 0600, its new folder 0700)."""

    def __init__(
        self, path: Path, conn: sqlite3.Connection, clock: Callable[[], float] = time.time
    ) -> None:
        self.path = path
        self._conn = conn
        self._clock = clock

    @property
    def location(self) -> str:
        return str(self.path)

    @classmethod
    def open(cls, path: Path, *, clock: Callable[[], float] = time.time) -> SqliteStore:
        """Open the store at path, making the file (and its folder) when missing."""
        try:
            if not path.parent.exists():
                path.parent.parent.mkdir(parents=True, exist_ok=True)
                path.parent.mkdir(mode=0o700, exist_ok=True)  # it lists addresses
            if not path.exists():
                os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
            conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError(f"cannot open the suppression store {path}: {exc}") from None
        try:
            _prepare(conn, path)
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise ConfigError(
                f"the suppression store {path} is not a SQLite database, or is damaged ({exc})",
                hint=_HINT,
            ) from None
        except BaseException:
            conn.close()
            raise
        return cls(path, conn, clock)

    def close(self) -> None:
        self._conn.close()

    def add(self, entries: Iterable[Suppression]) -> int:
        new = 0
        for chunk in chunks(entries):
            rows = unique_rows(chunk, self._clock())
            with self._transaction():
                (count,) = self._conn.execute(
                    _NEW, (json.dumps([row[0] for row in rows]),)
                ).fetchone()
                self._conn.executemany(_UPSERT, rows)
            new += int(count)
        return new

    def remove(self, addresses: Iterable[str]) -> int:
        removed = 0
        for chunk in chunks(addresses):
            with self._transaction():
                cur = self._conn.executemany(
                    "DELETE FROM suppression_store WHERE address = ?",
                    [(normal_address(a),) for a in chunk],
                )
            removed += cur.rowcount
        return removed

    def __contains__(self, address: object) -> bool:
        return isinstance(address, str) and self.reason(address) is not None

    def reason(self, address: str) -> str | None:
        with self._errors():
            found = self._conn.execute(
                "SELECT reason FROM suppression_store WHERE address = ?",
                (normal_address(address),),
            ).fetchone()
        return None if found is None else str(found[0])

    def entries(self, kind: str | None = None) -> Iterator[StoreEntry]:
        after = ""
        while True:
            with self._errors():
                page = self._conn.execute(
                    f"SELECT {_COLUMNS} FROM suppression_store WHERE address > ? "
                    "AND (?2 IS NULL OR kind = ?2) ORDER BY address LIMIT ?3",
                    (after, kind, _PAGE),
                ).fetchall()
            yield from (StoreEntry(*values) for values in page)
            if len(page) < _PAGE:
                return
            after = page[-1][0]

    def count(self) -> dict[str, int]:
        counts = dict.fromkeys(KINDS, 0)
        with self._errors():
            for kind, n in self._conn.execute(
                "SELECT kind, count(*) FROM suppression_store GROUP BY kind"
            ):
                counts[kind] = int(n)
        return counts

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """A write transaction, its lock taken first (so that the busy timeout applies)."""
        with self._errors():
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.OperationalError as exc:  # locked past the timeout, disk full, ...
            raise TemporaryError(
                f"the suppression store {self.path} cannot be used now: {exc}",
                hint="another process may hold it; try again",
            ) from None
        except sqlite3.DatabaseError as exc:
            raise ConfigError(
                f"the suppression store {self.path} is damaged ({exc})", hint=_HINT
            ) from None


def _prepare(conn: sqlite3.Connection, path: Path) -> None:
    """Check that the file is a store (or empty), switch to WAL, and make the table."""
    conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT * 1000)}")
    (application,) = conn.execute("PRAGMA application_id").fetchone()
    if application != _APPLICATION_ID:
        (tables,) = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        if application != 0 or tables:
            raise ConfigError(
                f"{path} is a SQLite database, but not a suppression store", hint=_HINT
            )
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    if application != _APPLICATION_ID:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(_TABLE)
        conn.execute(f"PRAGMA application_id = {_APPLICATION_ID}")
        conn.execute("COMMIT")
