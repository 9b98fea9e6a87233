"""The first problem of each independent part of a job file, reported together.

A job file's sections (relays, domains, warmup, schedule, delivery, recipients, ...) are
read one after the other; a problem in one does not hide those in the next: the loader
reads each through `JobProblems.take`, which keeps the section's first error, and
`JobProblems.check` raises them all at once (`JobErrors`, exit 65), ordered by line.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar, cast

from txsend.errors import JobError, JobErrors

__all__ = ["JobProblems"]

T = TypeVar("T")


class JobProblems:
    """The errors of a job file's sections, collected while it is read."""

    def __init__(self) -> None:
        self.errors: list[JobError] = []

    def take(self, read: Callable[[], T]) -> T:
        """What `read` returns; when it raises a JobError, the error is kept and the
        value is a placeholder (None) that must not be used: `check` raises first."""
        try:
            return read()
        except JobErrors as exc:
            self.errors.extend(exc.errors)
        except JobError as exc:
            self.errors.append(exc)
        return cast(T, None)

    @property
    def failed(self) -> bool:
        return bool(self.errors)

    def check(self) -> None:
        """Raise what was collected: the error itself when there is one, else all of
        them (JobErrors), in the order of their lines."""
        if not self.errors:
            return
        if len(self.errors) == 1:
            raise self.errors[0]
        errors = sorted(self.errors, key=lambda e: (e.line is None, e.line or 0))
        raise JobErrors(errors)
