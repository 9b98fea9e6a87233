"""What a send command asks of the app, and what it gets back once the job is open.

Light on purpose: the command line builds a `RunRequest` and reads a `Prepared` without
loading the delivery engine, which `txsend.app.sending` imports only when a run starts.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from txsend.job.spec import Job, JobOverrides
from txsend.journal.api import JournalBackend
from txsend.journal.records import IngestStats
from txsend.reporting.outputs import OutputOptions

__all__ = ["DEFAULT_TEST_ROWS", "Prepared", "RunRequest", "SendRequest", "TestSend"]

# One message per reviewer by default: a test send is for a person to read, and the first
# row shows the template; --rows N shows more rows (personalisation, other data).
DEFAULT_TEST_ROWS = 1


@dataclass(frozen=True)
class RunRequest:
    """What `txsend run` / `txsend resume` were asked to do."""

    target: Path
    overrides: JobOverrides = field(default_factory=JobOverrides)
    resume: bool = False
    force: bool = False
    dry_run: bool = False
    limit: int | None = None
    concurrency: int | None = None
    grace: float = 10.0  # seconds in-flight transactions get after SIGINT/SIGTERM
    outputs: OutputOptions = field(default_factory=OutputOptions)
    lease: float | None = None  # shared journal: seconds a silent worker keeps its rows
    worker: bool = False  # `txsend worker`: the job comes from the journal, already ingested
    # the wall clock `schedule:` is read on (tests run "at" another moment)
    wall: Callable[[], float] = time.time


@dataclass(frozen=True)
class Prepared:
    """A job opened for sending: the CLI shows `due` as the progress total."""

    job: Job
    journal: JournalBackend
    ingest: IngestStats | None
    due: int
    recovered: int


@dataclass(frozen=True)
class TestSend:
    """`txsend run JOB --test-to ADDR [--rows N]`: the addresses (checked), rows >= 1."""

    __test__ = False  # not a pytest test class

    to: tuple[str, ...]
    rows: int = DEFAULT_TEST_ROWS


@dataclass(frozen=True)
class SendRequest:
    """What `txsend send` was asked to do: one message, from flags or ready on stdin."""

    to: tuple[str, ...] = ()  # each an address list: "Ann <a@x>, b@y"
    cc: tuple[str, ...] = ()
    bcc: tuple[str, ...] = ()
    from_addr: str | None = None
    reply_to: str | None = None
    subject: str | None = None
    text: Path | None = None  # Path("-"): read from stdin
    html: Path | None = None
    markdown: Path | None = None
    attachments: tuple[Path, ...] = ()
    ready: bool = False  # --stdin: a complete RFC 5322 message on stdin
    relays: tuple[str, ...] = ()
    idempotency_key: str | None = None
    on_unknown: str = "resend"
    timeout: float | None = None  # seconds: connect, each command, the final dot
    give_up: float | None = None  # seconds with no relay reachable (give_up_unreachable)
    retry_backoff: float | None = None  # seconds before a deferred recipient is tried again
    max_size: int = 10 * 1024 * 1024
    grace: float = 10.0
