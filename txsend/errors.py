"""The txsend exception tree; each class carries the exit code of SPEC.md.

    TxsendError                 70  root; anything unexpected is a bug
    ├── UsageError              64  bad command-line use
    ├── JobError                65  bad job file, template or data (file:line / row key)
    │   ├── JobErrors               several of them at once (each section's first)
    │   └── RowError                one row cannot be rendered: skipped
    │       ├── TemplateRowError    ... because a template failed for it
    │       └── RowFailed           one row's message cannot be built: failed
    ├── MissingInputError       66  an input file does not exist
    ├── UnreachableError        69  no relay reachable, or authentication refused
    ├── TemporaryError          75  deferred rows remain, run aborted, journal locked
    ├── ConfigError             78  missing secret, bad relay URL
    └── Interrupted             130 / 143  SIGINT / SIGTERM

The CLI catches ``TxsendError`` once and turns it into a message and an exit code.
Library code never prints.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Process exit codes (SPEC.md, "Exit codes")."""

    OK = 0
    SOME_FAILED = 1
    USAGE = 64
    DATA = 65
    NO_INPUT = 66
    UNAVAILABLE = 69
    SOFTWARE = 70
    TEMPFAIL = 75
    CONFIG = 78
    SIGINT = 130
    SIGTERM = 143


class TxsendError(Exception):
    """Root of every error txsend reports to a user."""

    exit_code: ExitCode = ExitCode.SOFTWARE

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class UsageError(TxsendError):
    exit_code = ExitCode.USAGE


class JobError(TxsendError):
    """A job file, template or data row is wrong; the message names file:line or row."""

    exit_code = ExitCode.DATA

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        hint: str | None = None,
    ) -> None:
        where = ""
        if file is not None:
            where = f"{file}:{line}: " if line is not None else f"{file}: "
        super().__init__(where + message, hint=hint)
        self.file = file
        self.line = line


class JobErrors(JobError):
    """Several independent problems in a job file (the first of each section), each a
    JobError with its file:line; the message lists them all, one a line."""

    def __init__(self, errors: list[JobError]) -> None:
        super().__init__("\n".join(_with_hint(e) for e in errors))
        self.errors = errors
        self.file = errors[0].file if errors else None
        self.line = errors[0].line if errors else None


def _with_hint(error: JobError) -> str:
    return f"{error.message} (hint: {error.hint})" if error.hint else error.message


class RowError(JobError):
    """One data row cannot be rendered or addressed; that row is skipped, not the job."""

    def __init__(self, message: str, *, row: int | None = None, key: str | None = None) -> None:
        where = []
        if row is not None:
            where.append(f"row {row}")
        if key is not None:
            where.append(f"key {key!r}")
        prefix = (" ".join(where) + ": ") if where else ""
        super().__init__(prefix + message)
        self.reason = message
        self.row = row
        self.key = key


class TemplateRowError(RowError):
    """A template failed for one row (an undefined variable, a filter's error): skipped,
    unless it fails the same way for every row a run starts with, which is the job's fault
    (the run stops with 65 and leaves the rows pending)."""


class RowFailed(RowError):
    """The row's message cannot be built or sent as asked (an attachment missing or outside
    the job's folder, a size over max_message_size): the row is `failed`, not skipped."""


class MissingInputError(TxsendError):
    exit_code = ExitCode.NO_INPUT


class UnreachableError(TxsendError):
    exit_code = ExitCode.UNAVAILABLE


class TemporaryError(TxsendError):
    exit_code = ExitCode.TEMPFAIL


class ConfigError(TxsendError):
    exit_code = ExitCode.CONFIG


class Interrupted(TxsendError):
    """The run was stopped by a signal; the journal is consistent."""

    exit_code = ExitCode.SIGINT

    def __init__(self, message: str, *, signum: int = 2) -> None:
        super().__init__(message, hint="continue with: txsend resume JOB")
        self.exit_code = ExitCode.SIGTERM if signum == 15 else ExitCode.SIGINT
