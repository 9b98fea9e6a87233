"""The suppression store shared by jobs: which one a job names, and `txsend suppress`.

A job names a store with ``suppress: {store: ...}``: a SQLite file, a postgresql:// URL,
or ``true`` for the default (the database of the job's PostgreSQL journal, else
`txsend.journal.store.default_store_path`). `txsend run` skips every address in it;
`txsend bounces` and the run's own hard bounces add to it; `txsend suppress` manages it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from txsend.addresses import envelope_address, split_mailbox
from txsend.app.jobs import load
from txsend.errors import UsageError
from txsend.job.loading import DEFAULT_STORE
from txsend.job.spec import Job, JobOverrides
from txsend.job.suppression import SuppressionList, load_suppressions
from txsend.journal.store import StoreEntry, SuppressionStore, open_store

__all__ = [
    "KINDS",
    "StoreRef",
    "add",
    "import_file",
    "job_store_location",
    "listing",
    "open_job_store",
    "remove",
]

KINDS = ("bounce", "complaint", "manual", "import")


def job_store_location(job: Job) -> str | None:
    """Where the job's suppression store is, or None when it names none."""
    if job.suppress_store is None:
        return None
    if job.suppress_store != DEFAULT_STORE:
        return job.suppress_store
    return job.journal.url  # a PostgreSQL journal's database, else None: the default file


def open_job_store(job: Job) -> SuppressionStore | None:
    """The job's suppression store, opened (made on first use); None when it names none."""
    if job.suppress_store is None:
        return None
    return open_store(job_store_location(job))


def add_to_run(job: Job, suppressions: SuppressionList) -> SuppressionStore | None:
    """Put the store's addresses into a run's suppressions; the store, for the run's bounces."""
    store = open_job_store(job)
    if store is not None:
        for entry in store.entries():
            suppressions.add(entry.address, f"{entry.reason} (suppression store)")
    return store


@dataclass(frozen=True)
class StoreRef:
    """`txsend suppress`'s choice of store: --store, or the store of --job, or the default."""

    store: str | None = None
    job: Path | None = None

    def open(self) -> SuppressionStore:
        if self.store is not None and self.job is not None:
            raise UsageError("pass --store or --job, not both")
        if self.job is not None:
            job = load(self.job, JobOverrides())
            if job.suppress_store is None:
                raise UsageError(
                    f"job {self.job} names no suppression store",
                    hint="add suppress: {store: true} to the job, or pass --store",
                )
            return open_store(job_store_location(job))
        return open_store(self.store)


def add(ref: StoreRef, addresses: list[str], reason: str, kind: str = "manual") -> tuple[int, str]:
    """Suppress addresses; (how many were new, the store's location). UsageError, and
    nothing added, when one of them is not an address ("Name <addr>" is read as addr)."""
    addresses = [split_mailbox(a)[1] for a in addresses]
    bad = [a for a in addresses if not _is_address(a)]
    if bad:
        shown = ", ".join(repr(a) for a in bad[:5]) + (" ..." if len(bad) > 5 else "")
        raise UsageError(
            f"not an email address: {shown}", hint="nothing was added; pass whole addresses"
        )
    store = ref.open()
    try:
        new = store.add(StoreEntry(a, kind, reason, "txsend suppress add") for a in addresses)
        return new, store.location
    finally:
        store.close()


def remove(ref: StoreRef, addresses: list[str]) -> tuple[int, str]:
    """Stop suppressing addresses; (how many were there, the store's location)."""
    store = ref.open()
    try:
        return store.remove(addresses), store.location
    finally:
        store.close()


def listing(ref: StoreRef, kind: str | None) -> Iterator[dict[str, Any]]:
    """Every suppressed address (of one kind), sorted, as plain data."""
    store = ref.open()
    try:
        for entry in store.entries(kind):
            yield _plain(entry)
    finally:
        store.close()


def import_file(ref: StoreRef, path: Path, reason: str | None) -> tuple[int, int, str]:
    """Import a suppression list (plain or CSV, as `suppress:` files); (read, new, store)."""
    listed = load_suppressions([path])
    why = reason or f"imported from {path.name} on {time.strftime('%Y-%m-%d')}"
    store = ref.open()
    try:
        new = store.add(StoreEntry(a, "import", why, str(path)) for a in listed.addresses())
        return len(listed), new, store.location
    finally:
        store.close()


def _is_address(text: str) -> bool:
    """Whether `text` is an address txsend could send to (the renderer's rule)."""
    try:
        envelope_address(text)
    except ValueError:
        return False
    return True


def _plain(entry: StoreEntry) -> dict[str, Any]:
    return {
        "address": entry.address,
        "kind": entry.kind,
        "reason": entry.reason,
        "source": entry.source,
        "created_at": entry.created_at,
        "updated_at": entry.updated_at,
    }
