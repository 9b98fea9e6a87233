"""The connections of one PostgreSQL journal object: a small pool, opened after one direct
attempt that fails fast and says why, and what a lost database means (exit 75).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
import psycopg_pool

from txsend.errors import TemporaryError
from txsend.job.location import redact_url
from txsend.journal.postgres.url import connect_kwargs, refused

__all__ = ["Database"]

_UNREACHABLE_HINT = "check the URL, that the server runs, and TXSEND_PG_PASSWORD or PGPASSFILE"


class Database:
    """A pool of connections to the journal database; each statement gets one briefly."""

    def __init__(self, url: str, pool: psycopg_pool.ConnectionPool[Any]) -> None:
        self._url = url
        self._pool = pool

    @classmethod
    def connect(cls, url: str) -> Database:
        """Check the URL, connect once directly, then open the pool."""
        kwargs = connect_kwargs(url)
        try:  # one direct attempt first: it fails fast, and says why
            psycopg.connect(url, **kwargs).close()
        except psycopg.Error as exc:
            refusal = refused(url, exc)
            if refusal is not None:
                raise refusal from None  # waiting does not fix it: no "try again" (75)
            raise TemporaryError(
                f"cannot reach the journal database {redact_url(url)}: {_first_line(exc)}",
                hint=_UNREACHABLE_HINT,
            ) from None
        pool: psycopg_pool.ConnectionPool[Any] = psycopg_pool.ConnectionPool(
            url, kwargs=kwargs, min_size=1, max_size=4, open=False, name="txsend"
        )
        try:
            pool.open(wait=True, timeout=15)
        except psycopg_pool.PoolTimeout:
            pool.close()
            raise TemporaryError(
                f"cannot reach the journal database {redact_url(url)}: timed out",
                hint=_UNREACHABLE_HINT,
            ) from None
        return cls(url, pool)

    @property
    def location(self) -> str:
        """The URL without its password, for messages."""
        return redact_url(self._url)

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection; a lost database is a TemporaryError (exit 75), not a bug."""
        try:
            with self._pool.connection(timeout=30) as conn:
                yield conn
        except (psycopg.OperationalError, psycopg_pool.PoolTimeout) as exc:
            raise TemporaryError(
                f"lost the journal database {self.location}: {_first_line(exc)}",
                hint="rows this worker had in DATA become unknown when its lease runs out; "
                "once the database is back: txsend resume JOB --journal URL",
            ) from None

    def one(
        self, query: str, params: Sequence[Any] | Mapping[str, Any] = ()
    ) -> tuple[Any, ...] | None:
        """The first row of a query, or None."""
        with self.connection() as conn:
            found: tuple[Any, ...] | None = conn.execute(query, params).fetchone()
            return found

    def all(
        self, query: str, params: Sequence[Any] | Mapping[str, Any] = ()
    ) -> list[tuple[Any, ...]]:
        """Every row of a query."""
        with self.connection() as conn:
            rows: list[tuple[Any, ...]] = conn.execute(query, params).fetchall()
            return rows

    def close(self) -> None:
        """Close every connection of the pool."""
        self._pool.close()


def _first_line(exc: BaseException) -> str:
    """The first line of a driver's message (they run to several), or the exception's repr."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else repr(exc)
