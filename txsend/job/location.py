"""Where a job's journal lives: one SQLite file, or a PostgreSQL database several hosts share.

`JournalLocation` is the one type for it from the command line (`--journal`) and the job
file (`journal:`) to `txsend.journal.opening.open_journal`; nothing else tells a path from a URL.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from txsend.job.paths import absolute

__all__ = ["JournalLocation", "default_journal", "redact_url"]

_PG = re.compile(r"\s*postgres(ql)?:/", re.IGNORECASE)  # ":/" too: a URL typed wrong is no path


def redact_url(url: str) -> str:
    """The URL without a password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}" if user else netloc))


def default_journal(source: Path) -> Path:
    """Where a job's journal lives unless the job or --journal says otherwise."""
    return source.parent / f"{source.stem}.journal.db"


@dataclass(frozen=True)
class JournalLocation:
    """A SQLite journal file (`path`) or a postgresql:// URL (`url`); exactly one is set."""

    path: Path | None = None
    url: str | None = None

    def __post_init__(self) -> None:
        if (self.path is None) == (self.url is None):
            raise ValueError("a journal location is a file or a URL")

    @classmethod
    def parse(cls, value: str | Path, base: Path | None = None) -> JournalLocation:
        """A location as written: a postgresql:// URL, or a path (relative to `base`)."""
        if isinstance(value, str) and _PG.match(value):
            return cls(url=value.strip())
        return cls(path=absolute(Path(value) if base is None else base / value))

    @property
    def shared(self) -> bool:
        """True for a PostgreSQL journal, which several worker processes may share."""
        return self.url is not None

    @property
    def display(self) -> str:
        """The location for messages: the path, or the URL without any password."""
        return redact_url(self.url) if self.url is not None else str(self.path)

    def exists(self) -> bool:
        """A shared journal always may exist; a file one exists when its file does."""
        return self.url is not None or (self.path is not None and self.path.exists())

    def __str__(self) -> str:
        return self.display
