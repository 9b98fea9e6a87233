"""One run per journal: an flock on a lock file beside it, naming its holder."""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from txsend.errors import TemporaryError


def lock_path(journal: Path) -> Path:
    """The lock file of a journal."""
    return journal.with_name(journal.name + ".lock")


@contextmanager
def journal_lock(journal: Path) -> Iterator[None]:
    """Hold the journal's lock for the duration; TemporaryError (75) if another run has it."""
    path = lock_path(journal)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            raise TemporaryError(
                f"another run holds the journal {journal} ({holder})",
                hint="wait for it to finish, then run txsend resume",
            ) from None
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}, started {stamp}\n".encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
