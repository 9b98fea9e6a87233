"""Opening a journal: the backend follows from the location (a file, or a postgresql:// URL).

The one place that names the backends; everything else works through
`txsend.journal.api.JournalBackend`.
"""

from __future__ import annotations

from txsend.errors import ConfigError
from txsend.job.location import JournalLocation
from txsend.journal.api import JournalBackend
from txsend.journal.sqlite import Journal

__all__ = ["open_journal"]


def open_journal(
    location: JournalLocation,
    *,
    create: bool = True,
    job_name: str | None = None,
    lease: float | None = None,
) -> JournalBackend:
    """The journal at a location: a SQLite file, or a PostgreSQL database (shared)."""
    if location.url is not None:
        try:
            # Imported here: psycopg is an optional extra, needed only for a shared journal.
            from txsend.journal.postgres.journal import PgJournal
        except ModuleNotFoundError as exc:
            if exc.name not in ("psycopg", "psycopg_pool"):
                raise
            raise ConfigError(
                f"a PostgreSQL journal needs psycopg, which is not installed ({exc})",
                hint="pip install 'txsend[postgresql]'",
            ) from None
        return PgJournal.open(location.url, create=create, job_name=job_name, lease=lease)
    assert location.path is not None
    return Journal.open(location.path, create=create)
