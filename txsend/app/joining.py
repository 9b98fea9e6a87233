"""`txsend worker` arriving while the first host is still storing the job: it waits.

The first host's `txsend run JOB --journal URL` binds the job (its row appears), stores
the job's files (its bundle), ingests the rows and marks the ingest complete. A worker
started beside it ("at the same time or later") may arrive at any of these steps: it
waits, polling every half second, for the job it joins to be bound, ingested and stored,
up to a bound (the caller's: twice the worker's --lease), saying once what it waits for.
Past the bound it exits 75 (try again) while the job is still being ingested, or with the
error it would have had without waiting (no such job: 66; no job to join: 64).

A bundle is NULL until it is stored, and empty when the first host could not pack the
job's files (`txsend.app.sending`): that job never gets them, and the worker says so.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

from txsend.errors import MissingInputError, TemporaryError, TxsendError, UsageError
from txsend.journal.api import SharedJournal

POLL = 0.5  # seconds between two looks at the job


@dataclass(frozen=True)
class StoredJob:
    """A job ready to join: its name, its spec, and the bundle of its files (never empty)."""

    name: str
    spec: dict[str, Any]
    bundle: bytes


class _NotYet(Exception):
    """The job is not ready yet: what the worker waits for, and the error past the bound."""

    def __init__(self, waits_for: str, error: TxsendError) -> None:
        super().__init__(waits_for)
        self.waits_for = waits_for
        self.error = error


def wait_for_job(
    journal: SharedJournal,
    job_name: str | None,
    bound: float,
    on_wait: Callable[[str], None] | None = None,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> StoredJob:
    """The job to join (`job_name`, or the only one open), once it is ready.

    Sets `journal.job`. Waits up to `bound` seconds while it is not; `on_wait` is told
    once what the worker waits for.
    """
    deadline = clock() + bound
    told = False
    while True:
        try:
            return _ready(journal, job_name)
        except _NotYet as not_yet:
            if clock() >= deadline:
                raise not_yet.error from None
            if not told and on_wait is not None:
                on_wait(f"waiting up to {bound:g}s for {not_yet.waits_for}")
            told = True
        sleep(min(POLL, max(0.0, deadline - clock())))


def _ready(journal: SharedJournal, job_name: str | None) -> StoredJob:
    """The job if it can be joined now; UsageError if it never can; else _NotYet."""
    name = job_name if job_name is not None else _only_open_job(journal)
    journal.job = name
    if not journal.ingest_complete():
        if journal.job_spec() is None:
            raise _NotYet(
                f"job {name!r} to be stored in {journal.location}",
                MissingInputError(
                    f"no job {name!r} in {journal.location}",
                    hint="start it on one host: txsend run JOB --journal URL",
                ),
            )
        raise _NotYet(f"job {name!r} to be ingested by its first host", _still_ingested(journal))
    spec, bundle = journal.stored_job()
    if spec is None:  # deleted under the worker: as if never stored
        raise _NotYet(f"job {name!r} to be stored in {journal.location}", _still_ingested(journal))
    if bundle is None:
        raise _NotYet(f"job {name!r}'s files to be stored", _still_ingested(journal))
    if not bundle:
        source = PurePath(spec.get("source", "JOB")).name
        raise UsageError(
            f"job {name!r} in {journal.location} was stored without its files "
            "(its first host could not pack them: see its warning)",
            hint=f"run `txsend run {source} --journal URL` on this host",
        )
    return StoredJob(name, spec, bundle)


def _only_open_job(journal: SharedJournal) -> str:
    """The one job with rows to send or still being stored; UsageError if several."""
    open_jobs = [name for name, due, ready in journal.jobs() if due or not ready]
    if len(open_jobs) == 1:
        return open_jobs[0]
    error = UsageError(
        f"{len(open_jobs)} jobs with rows to send in {journal.location} "
        f"({', '.join(open_jobs) or 'none'}); name one with --job NAME",
        hint="a job is stored there by `txsend run JOB --journal URL`",
    )
    if open_jobs:
        raise error
    raise _NotYet(f"a job to be stored in {journal.location}", error)


def _still_ingested(journal: SharedJournal) -> TemporaryError:
    return TemporaryError(
        f"job {journal.job!r} in {journal.location}: the job is still being ingested: try again",
        hint="start the worker again once its first host has ingested it (a worker waits "
        "for that up to twice its --lease)",
    )
