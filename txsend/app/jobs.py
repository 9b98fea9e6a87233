"""Finding the job a command names: a job file, a list alone, a journal, or a shared job.

Every command starts here: `load` reads a job file or a CSV/JSONL alone, or rebuilds the
job a journal file was made for from the flags the journal kept; `load_stored_job` unpacks
the job a shared journal holds for `txsend worker`; `fingerprint` names what defines the
messages, so a changed job is described before anything is sent again.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path, PurePath

from txsend.app.joining import wait_for_job
from txsend.errors import MissingInputError, UsageError
from txsend.job.bundle import unpack
from txsend.job.loading import LIST_SUFFIXES, load_job
from txsend.job.location import JournalLocation, default_journal
from txsend.job.spec import Job, JobOverrides
from txsend.journal.api import JournalBackend
from txsend.journal.opening import open_journal
from txsend.models import RecipientsSpec, Template

JOURNAL_SUFFIXES = (".db", ".sqlite", ".sqlite3")


SEND_SOURCE = Path("txsend send")  # the job's source in the journal of a `txsend send`
SEND_JOB = "send"  # and its name


def load(target: Path, overrides: JobOverrides, *, read_only: bool = False) -> Job:
    """Load a job file, a CSV/JSONL alone, or the job a journal file was made for
    (`read_only`: for status and report, which also read the journal of a `txsend send`)."""
    if target.suffix.lower() in JOURNAL_SUFFIXES and target.exists():
        return job_from_journal(target, overrides, read_only=read_only)
    if target.suffix.lower() in LIST_SUFFIXES and not overrides.defines_message:
        # a CSV-alone job run before: its flags are in the journal
        journal = overrides.journal or JournalLocation(path=default_journal(target))
        if journal.path is not None and journal.path.exists():
            return job_from_journal(journal.path, overrides)
    return load_job(target, overrides)


def job_from_journal(path: Path, overrides: JobOverrides, *, read_only: bool = False) -> Job:
    """Rebuild the job a journal belongs to, from what the journal recorded."""
    location = JournalLocation(path=path)
    journal = open_journal(location, create=False)
    try:
        spec = journal.job_spec()
    finally:
        journal.close()
    if spec is None:
        raise UsageError(f"{path} is a journal without a job", hint="run the job file instead")
    if spec.get("source") == str(SEND_SOURCE):
        return _send_journal(path, read_only=read_only)
    stored = JobOverrides.from_stored(spec.get("overrides", {}))
    return load_job(Path(spec["source"]), replace(overrides.over(stored), journal=location))


def _send_journal(path: Path, *, read_only: bool) -> Job:
    """The journal of `txsend send --idempotency-key`: readable by status and report; its
    message lives in the command that made it, so that command alone continues it."""
    if not read_only:
        raise UsageError(
            f"{path} is the journal of a `txsend send` with an idempotency key: only that "
            "command knows its message",
            hint="run the same txsend send command (same message, same key) again to send "
            "what is left; txsend status and txsend report read this journal",
        )
    return Job(
        name=SEND_JOB,
        source=SEND_SOURCE,
        base_dir=path.parent,
        from_addr="",
        subject=Template("", origin=str(SEND_SOURCE), literal=True),
        recipients=RecipientsSpec(file=SEND_SOURCE, to="address"),
        journal=JournalLocation(path=path),
    )


def _in_bundle(path: Path | None, base: Path, folder: Path, flag: str) -> Path | None:
    """A --text/--html file of a CSV-alone job, as unpacked from its bundle."""
    if path is None:
        return None
    if not path.is_relative_to(base):
        raise UsageError(
            f"the job's --{flag} file {path} lies outside its folder {base}, so it was not "
            "stored with the job",
            hint="keep templates beside the data file, or run `txsend run` on this host",
        )
    return folder / path.relative_to(base)


def load_stored_job(
    url: str,
    job_name: str | None,
    overrides: JobOverrides,
    *,
    wait: float = 0.0,
    on_wait: Callable[[str], None] | None = None,
) -> tuple[Job, Path]:
    """`txsend worker`: the job a shared journal holds, unpacked into a private folder.

    Waits up to `wait` seconds for a job still being stored (`txsend.app.joining`).
    Returns the job and the folder to remove afterwards.
    """
    journal = open_journal(JournalLocation(url=url), create=False).as_shared()
    assert journal is not None  # a PostgreSQL journal is always shared
    try:
        stored_job = wait_for_job(journal, job_name, wait, on_wait)
    finally:
        journal.close()
    name, spec, bundle = stored_job.name, stored_job.spec, stored_job.bundle
    path = unpack(bundle, Path(spec["source"]).name)
    stored = JobOverrides.from_stored(spec.get("overrides", {}))
    base = Path(spec["source"]).parent
    merged = replace(
        overrides.over(stored),
        text=_in_bundle(stored.text, base, path.parent, "text"),
        html=_in_bundle(stored.html, base, path.parent, "html"),
        name=name,
        journal=JournalLocation(url=url),
    )
    try:
        return load_job(path, merged), path.parent
    except MissingInputError as exc:
        shutil.rmtree(path.parent, ignore_errors=True)
        raise MissingInputError(
            f"job {name!r} from {journal.location}: {exc.message}",
            hint="secrets (a DKIM key, password files) are never stored in the journal: "
            "run the worker from a folder holding them at the same relative path as beside "
            "the job (e.g. keys/dkim.pem), or run `txsend run JOB --journal URL` here",
        ) from None


def fingerprint(job: Job) -> dict[str, str]:
    """Hashes of what defines the messages, by name, so a change can be described."""

    def digest(text: str) -> str:
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    parts = {
        "from": digest(job.from_addr),
        "reply_to": digest(job.reply_to or ""),
        "subject": digest(job.subject.source),
        "headers": digest(repr(sorted(job.headers.items()))),
        "recipients settings": digest(
            repr((job.recipients.to, job.recipients.name, job.recipients.key))
        ),
    }
    content = job.content
    for label, tpl in (("text", job.text), ("html", job.html), ("markdown", content.markdown)):
        if tpl is not None:
            parts[f"{label} template {_stable_origin(tpl)}"] = digest(tpl.source)
    # What else changes the bytes of a message; attachment files are named, not hashed
    # (they may be large), and a DKIM key does not change what a message says.
    settings = (
        content.auto_text,
        content.inline_css,
        content.transactional,
        content.auto_submitted,
        content.precedence,
        content.feedback_id,
        content.unsubscribe,
        [
            (a.path, a.content_type, a.filename, a.compress, a.compress_over)
            for a in content.attachments
        ],
    )
    if settings != _DEFAULT_CONTENT_SETTINGS:
        parts["content settings"] = digest(repr(settings))
    if job.seeds:  # named only when set: a journal made before seeds existed stays the same
        parts["seeds"] = digest(repr((job.seeds, job.seeds_every)))
    sha = hashlib.sha256()
    with job.recipients.file.open("rb") as data:
        for block in iter(lambda: data.read(1 << 20), b""):
            sha.update(block)
    parts[f"data file {job.recipients.file.name}"] = sha.hexdigest()[:16]
    return parts


def _stable_origin(tpl: Template) -> str:
    """A template's origin as the fingerprint names it, whatever path the job was given
    by: an inline template ("/tmp/x/job.yaml:4", as the job was named) by the job file's
    name and line ("job.yaml:4"); a template file by its path beside the job."""
    if tpl.path is not None:
        return tpl.origin
    where, colon, line = tpl.origin.rpartition(":")
    if not colon or not line.isdigit():
        return tpl.origin
    return f"{PurePath(where).name}:{line}"


_DEFAULT_CONTENT_SETTINGS: tuple[object, ...] = (True, False, False, None, None, None, None, [])


def open_for(job: Job, *, create: bool = False, lease: float | None = None) -> JournalBackend:
    """The job's journal: its SQLite file, or its job in a shared PostgreSQL journal."""
    return open_journal(job.journal, create=create, job_name=job.name, lease=lease)
