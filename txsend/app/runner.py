"""Use cases behind the commands: run/resume, validate, preview, status.

Each function takes plain arguments, returns data, and raises TxsendError subclasses;
the CLI only parses flags and prints.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import json
import logging
import os
import signal
import ssl
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from txsend.app import eventloop
from txsend.content.renderer import Renderer, message_id_domain, new_message_id
from txsend.delivery.engine import Engine, SendOptions
from txsend.delivery.smtp.connection import tls_context_for
from txsend.errors import (
    ConfigError,
    JobError,
    MissingInputError,
    RowError,
    TemporaryError,
    TxsendError,
    UsageError,
)
from txsend.job.credentials import relay_password
from txsend.job.loading import LIST_SUFFIXES, JobOverrides, default_journal, load_job
from txsend.job.recipients import iter_rows
from txsend.job.suppression import load_suppressions
from txsend.journal.api import IngestStats, JournalBackend, open_journal
from txsend.journal.lock import journal_lock
from txsend.journal.sqlite import Journal
from txsend.logs import event
from txsend.models import Job, RelayConfig, Row, State
from txsend.reporting.outputs import OutputOptions, RunOutputs, write_atomic
from txsend.reporting.stats import RunStats
from txsend.reporting.summary import (
    PROBLEMS_LISTED,
    Problems,
    Summary,
    decide_exit_code,
    journal_json,
)

JOURNAL_SUFFIXES = (".db", ".sqlite", ".sqlite3")


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


@dataclass(frozen=True)
class Prepared:
    """A job opened for sending: the CLI shows `due` as the progress total."""

    job: Job
    journal: JournalBackend
    ingest: IngestStats | None
    due: int
    recovered: int


def load(target: Path, overrides: JobOverrides) -> Job:
    """Load a job file, a CSV/JSONL alone, or the job a journal file was made for."""
    if target.suffix.lower() in JOURNAL_SUFFIXES and target.exists():
        return job_from_journal(target, overrides)
    if target.suffix.lower() in LIST_SUFFIXES and not _defines_message(overrides):
        # a CSV-alone job run before: its flags are in the journal
        journal = overrides.journal or default_journal(target)
        if journal.exists():
            return job_from_journal(journal, overrides)
    return load_job(target, overrides)


def _defines_message(overrides: JobOverrides) -> bool:
    return any((overrides.from_addr, overrides.subject, overrides.text, overrides.html))


def job_from_journal(path: Path, overrides: JobOverrides) -> Job:
    """Rebuild the job a journal belongs to, from what the journal recorded."""
    journal = Journal.open(path, create=False)
    try:
        spec = journal.job_spec()
    finally:
        journal.close()
    if spec is None:
        raise UsageError(f"{path} is a journal without a job", hint="run the job file instead")
    merged = replace(_with_stored_flags(spec.get("overrides", {}), overrides), journal=path)
    return load_job(Path(spec["source"]), merged)


def _with_stored_flags(stored: dict[str, str], flags: JobOverrides) -> JobOverrides:
    """The flags a job was first run with (stored in its journal), under today's flags."""
    return JobOverrides(
        from_addr=flags.from_addr or stored.get("from"),
        subject=flags.subject or stored.get("subject"),
        text=flags.text or _path(stored.get("text")),
        html=flags.html or _path(stored.get("html")),
        relays=flags.relays or tuple(r for r in stored.get("relay", "").split(",") if r),
        name=flags.name or stored.get("name"),
        abort_on_error_rate=flags.abort_on_error_rate
        if flags.abort_on_error_rate is not None
        else _float(stored.get("abort_on_error_rate")),
    )


def _in_bundle(value: str | None, base: Path, folder: Path, flag: str) -> Path | None:
    """A --text/--html file of a CSV-alone job, as unpacked from its bundle."""
    if value is None:
        return None
    path = Path(value)
    if not path.is_relative_to(base):
        raise UsageError(
            f"the job's --{flag} file {path} lies outside its folder {base}, so it was not "
            "stored with the job",
            hint="keep templates beside the data file, or run `txsend run` on this host",
        )
    return folder / path.relative_to(base)


def _float(value: str | None) -> float | None:
    return None if value is None else float(value)


def _path(value: str | None) -> Path | None:
    return None if value is None else Path(value)


_DEFAULT_CONTENT_SETTINGS: tuple[object, ...] = (True, False, False, None, None, None, None, [])


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
            parts[f"{label} template {tpl.origin}"] = digest(tpl.source)
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
    sha = hashlib.sha256()
    with job.recipients.file.open("rb") as data:
        for block in iter(lambda: data.read(1 << 20), b""):
            sha.update(block)
    parts[f"data file {job.recipients.file.name}"] = sha.hexdigest()[:16]
    return parts


def open_for(job: Job, *, create: bool = False, lease: float | None = None) -> JournalBackend:
    """The job's journal: its SQLite file, or its job in a shared PostgreSQL journal."""
    return open_journal(job.journal_location, create=create, job_name=job.name, lease=lease)


def prepare(job: Job, journal: JournalBackend, request: RunRequest) -> Prepared:
    """Bind, check and ingest the journal; recover rows a dead run left in `sending`."""
    stats = None
    if not request.worker:  # a worker's job came from the journal: nothing to bind
        prints = fingerprint(job)
        changes = journal.changes_since(prints)
        if changes and not request.force:
            raise JobError(
                f"the job changed since its journal {journal.location} was made: "
                + "; ".join(changes),
                hint="pass --force to continue with the changed job, or --journal NEW for "
                "a new one",
            )
        spec = {"source": str(job.source.resolve()), "overrides": job.overrides}
        journal.bind_job(job.name, prints, spec)
        if changes or not journal.ingest_complete():
            domain = message_id_domain(job.from_addr)
            stats = journal.ingest(
                iter_rows(job), lambda: new_message_id(domain), refresh=bool(changes)
            )
            if journal.shared and not stats.by_other:
                _store_bundle(job, journal)
    if journal.shared and request.resume:
        _clear_abort(journal)
    recovered = journal.recover()
    counts = journal.counts()
    due = counts[State.PENDING] + counts[State.DEFERRED]
    if resends_unknown(job, journal, request):
        due += counts[State.UNKNOWN]
    if request.limit is not None:
        due = min(due, request.limit)
    return Prepared(job, journal, stats, due, recovered)


def resends_unknown(job: Job, journal: JournalBackend, request: RunRequest) -> bool:
    """Whether this run sends `unknown` rows again (delivery.on_unknown: resend).

    On a shared journal only `txsend resume` does: while workers run, a row becomes
    `unknown` when its worker died in DATA, and no other worker may resend it on its own.
    """
    if job.delivery.on_unknown != "resend":
        return False
    return not journal.shared or request.resume


def _store_bundle(job: Job, journal: JournalBackend) -> None:
    from txsend.job.bundle import pack
    from txsend.journal.postgres.journal import PgJournal

    assert isinstance(journal, PgJournal)
    bundle, why = pack(job)
    journal.store_bundle(bundle)
    if why is not None:
        event(
            logging.WARNING,
            "job_not_stored",
            f"{why}: it is not stored in the journal, so `txsend worker` cannot join; "
            f"run `txsend run {job.source.name} --journal URL` on each host instead",
        )


def _clear_abort(journal: JournalBackend) -> None:
    from txsend.journal.postgres.journal import PgJournal

    assert isinstance(journal, PgJournal)
    journal.clear_abort()


def relays_with_passwords(job: Job) -> list[tuple[RelayConfig, str | None]]:
    """Each relay with its password; ConfigError (78) before anything is sent."""
    if not job.relays:
        raise ConfigError(
            "no relay to send through",
            hint="add relays: to the job, pass --relay smtp://host:port, or set TXSEND_RELAY",
        )
    for relay in job.relays:
        try:
            tls_context_for(relay)
        except (OSError, ssl.SSLError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise ConfigError(
                f"relay {relay.url}: cannot load ca_file {relay.ca_file}: {reason}",
                hint="ca_file must be a PEM file of CA certificates",
            ) from None
    return [(relay, relay_password(relay)) for relay in job.relays]


def send(
    prepared: Prepared,
    request: RunRequest,
    command: str,
    relays: Sequence[tuple[RelayConfig, str | None]],
    on_tick: Callable[[RunStats], None] | None = None,
) -> Summary:
    """Send what is due through relays (with their passwords); record the run."""
    job, journal = prepared.job, prepared.journal
    renderer = Renderer(job)
    outputs = RunOutputs(request.outputs)
    outputs.start()
    run_id = journal.start_run(command)
    options = SendOptions(
        run_id=run_id,
        concurrency=request.concurrency,
        limit=request.limit,
        dry_run=request.dry_run,
        resend_unknown=resends_unknown(job, journal, request),
        grace=request.grace,
    )
    suppressions = load_suppressions(job.suppress)
    for address, reason in journal.suppressed():
        suppressions.add(address, reason)

    def during(stats: RunStats) -> Summary:
        return Summary(
            job.name, run_id, journal.counts(), stats, None, -1, request.dry_run, command=command
        )

    def tick(stats: RunStats) -> None:
        outputs.tick(lambda: during(stats).to_json())
        if on_tick is not None:
            on_tick(stats)

    engine = Engine(job, journal, renderer, relays, options, tick, suppressions)
    engine.stats.unknown_recovered = prepared.recovered
    event(
        logging.INFO,
        "run_start",
        f"{command} {job.name}: {prepared.due} messages due, run {run_id}",
        job=job.name,
        run_id=run_id,
        command=command,
        due=prepared.due,
        relays=[relay.name for relay, _ in relays],
        dry_run=request.dry_run,
    )
    exit_code = 70  # what the run is recorded with if it ends in an exception
    recorded = False
    try:
        stats = eventloop.run(_run_with_signals(engine))
        counts = journal.counts()
        by_error = journal.skipped_by_error()
        resend = job.delivery.on_unknown == "resend"
        # unknown rows left on a shared journal wait for `resume` as they would on SQLite
        exit_code = decide_exit_code(
            counts,
            stats,
            resend_unknown=resend,
            skipped_by_error=by_error,
            pending_ok=request.dry_run or request.limit is not None,
        )
        journal.finish_run(run_id, exit_code)
        recorded = True
        summary = Summary(
            job.name,
            run_id,
            counts,
            stats,
            journal.next_attempt_at(),
            exit_code,
            request.dry_run,
            tuple(renderer.warnings),
            command=command,
            problems=problems_of(journal, request.target),
            skipped_by_error=by_error,
            resend_unknown=resend,
        )
        outputs.finish(summary.to_json())
    except TxsendError as exc:  # e.g. the template fails the run's first rows: 65
        exit_code = exc.exit_code
        raise
    finally:
        if not recorded:
            journal.finish_run(run_id, exit_code)
        outputs.close()
    event(
        logging.INFO,
        "run_end",
        f"{command} {job.name}: exit {exit_code}",
        job=job.name,
        run_id=run_id,
        exit_code=exit_code,
        counts={s.value: n for s, n in counts.items() if n},
        seconds=round(stats.elapsed, 3),
        messages_per_second=round(stats.rate, 1),
        stop_reason=stats.stop_reason,
    )
    return summary


def problems_of(journal: JournalBackend, target: Path) -> Problems:
    """The journal's failed, bounced and unknown rows for a report."""
    count, rows = journal.problems(PROBLEMS_LISTED)
    return Problems(count, rows, f"txsend report {target} --failed-csv failed.csv")


def report(target: Path, overrides: JobOverrides) -> dict[str, Any]:
    """`txsend report`: the summary of every run so far, from the journal alone."""
    job = load(target, overrides)
    journal = open_for(job)
    try:
        return journal_json(
            job.name,
            journal.counts(),
            journal.runs(),
            journal.relay_outcomes(),
            journal.reply_codes(),
            journal.next_attempt_at(),
            problems_of(journal, target),
        )
    finally:
        journal.close()


def write_html_report(data: Mapping[str, Any], path: Path) -> None:
    """Write the self-contained HTML page of a report."""
    from txsend.reporting.html import render_html_report

    write_atomic(path, render_html_report(data))


FAILED_CSV_EXTRA = ("txsend_state", "txsend_code", "txsend_reply")


def write_failed_csv(target: Path, overrides: JobOverrides, out: Path) -> int:
    """Write the failed, bounced and unknown rows with their data columns; returns how many.

    The columns are the recipient file's own (so the file is itself a recipients file for
    a new job) followed by txsend_state, txsend_code and txsend_reply.
    """
    job = load(target, overrides)
    journal = open_for(job)
    written = 0
    try:
        # Two passes: rows from a JSONL file need not share their keys.
        columns: dict[str, None] = {job.recipients.to: None}
        for data, _state, _code, _reply in journal.iter_problems():
            columns.update(dict.fromkeys(c for c in data if c not in FAILED_CSV_EXTRA))
        tmp = out.with_name(f".{out.name}.tmp")
        try:
            with tmp.open("w", newline="", encoding="utf-8") as handle:
                writer = csv.DictWriter(handle, fieldnames=[*columns, *FAILED_CSV_EXTRA])
                writer.writeheader()
                for data, state, code, reply in journal.iter_problems():
                    row = {c: _csv_value(data.get(c)) for c in columns}
                    row.update(
                        txsend_state=state,
                        txsend_code="" if code is None else str(code),
                        txsend_reply=reply or "",
                    )
                    writer.writerow(row)
                    written += 1
            os.replace(tmp, out)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise UsageError(f"cannot write {out}: {exc.strerror or exc}") from None
    finally:
        journal.close()
    return written


def _csv_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


async def _run_with_signals(engine: Engine) -> RunStats:
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, engine.request_stop, signum)
    try:
        return await engine.run()
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


def run(
    request: RunRequest,
    command: str,
    on_prepared: Callable[[Prepared], None] | None = None,
    on_tick: Callable[[RunStats], None] | None = None,
    job: Job | None = None,
) -> Summary:
    """`txsend run` / `resume` / `worker`: everything from the job to the summary."""
    if job is None:
        job = load(request.target, request.overrides)
    if request.resume and job.journal_url is None and not job.journal.exists():
        raise UsageError(
            f"no journal at {job.journal} to resume", hint=f"start it: txsend run {request.target}"
        )
    # a missing secret is reported before any work, and each password is read once
    relays = [] if request.dry_run else relays_with_passwords(job)
    eventloop.loop_factory()  # a bad TXSEND_LOOP too
    if job.journal_url is not None:  # shared: other processes work the job beside this one
        return _run_on(
            job,
            open_for(job, create=True, lease=request.lease),
            request,
            command,
            relays,
            on_prepared,
            on_tick,
        )
    with journal_lock(job.journal):
        return _run_on(
            job, open_for(job, create=True), request, command, relays, on_prepared, on_tick
        )


def _run_on(
    job: Job,
    journal: JournalBackend,
    request: RunRequest,
    command: str,
    relays: Sequence[tuple[RelayConfig, str | None]],
    on_prepared: Callable[[Prepared], None] | None,
    on_tick: Callable[[RunStats], None] | None,
) -> Summary:
    try:
        prepared = prepare(job, journal, request)
        if on_prepared is not None:
            on_prepared(prepared)
        return send(prepared, request, command, relays, on_tick)
    finally:
        journal.close()


def load_stored_job(url: str, job_name: str | None, overrides: JobOverrides) -> tuple[Job, Path]:
    """`txsend worker`: the job a shared journal holds, unpacked into a private folder.

    Returns the job and the folder to remove afterwards.
    """
    import shutil

    from txsend.job.bundle import unpack
    from txsend.journal.postgres.journal import PgJournal

    journal = PgJournal.open(url, create=False, job_name=job_name)
    try:
        if job_name is None:
            open_jobs = [name for name, due in journal.jobs() if due]
            if len(open_jobs) != 1:
                listed = ", ".join(open_jobs) or "none"
                raise UsageError(
                    f"{len(open_jobs)} jobs with rows to send in {journal.location} "
                    f"({listed}); name one with --job NAME",
                    hint="a job is stored there by `txsend run JOB --journal URL`",
                )
            journal.job = open_jobs[0]
        name = journal.job
        assert name is not None
        spec, bundle = journal.stored_job()
        ingested = spec is not None and journal.ingest_complete()
    finally:
        journal.close()
    if spec is None:
        raise MissingInputError(
            f"no job {name!r} in {journal.location}",
            hint="start it on one host: txsend run JOB --journal URL",
        )
    if not ingested:
        raise TemporaryError(
            f"job {name!r} in {journal.location} is still being ingested",
            hint="start the worker again in a moment",
        )
    if bundle is None:
        raise UsageError(
            f"job {name!r} in {journal.location} was stored without its files",
            hint=f"run `txsend run {Path(spec['source']).name} --journal URL` on this host",
        )
    path = unpack(bundle, Path(spec["source"]).name)
    stored = spec.get("overrides", {})
    templates = {
        flag: _in_bundle(stored.get(flag), Path(spec["source"]).parent, path.parent, flag)
        for flag in ("text", "html")
    }
    merged = replace(
        _with_stored_flags(stored, overrides),
        text=templates["text"],
        html=templates["html"],
        name=name,
        journal_url=url,
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


def status(target: Path, overrides: JobOverrides) -> Summary:
    """Counts per state, the last run and the next retry time, from the journal only."""
    job = load(target, overrides)
    journal = open_for(job)
    try:
        last = journal.last_run()
        return Summary(
            job.name,
            last.id if last else None,
            journal.counts(),
            None,
            journal.next_attempt_at(),
            last.exit_code if last and last.exit_code is not None else 0,
            command="status",
            problems=problems_of(journal, target),
            workers=_workers(journal),
        )
    finally:
        journal.close()


def _workers(journal: JournalBackend) -> tuple[dict[str, Any], ...]:
    if not journal.shared:
        return ()
    from txsend.journal.postgres.journal import PgJournal

    assert isinstance(journal, PgJournal)
    return tuple(journal.workers())


@dataclass
class ValidationReport:
    rows: int = 0
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    largest: int = 0
    total_bytes: int = 0
    over_1mb: int = 0  # messages over 1 MB: many mailbox providers clip or refuse them
    long_lines: int = 0  # messages with text lines over 998 octets (sent quoted-printable)
    attachments: list[tuple[str, int]] = field(default_factory=list)  # fixed: name, size
    largest_row_attachment: int = 0


def validate(target: Path, overrides: JobOverrides, max_listed: int = 200) -> ValidationReport:
    """Render every row without sending; list each problem with its row and key."""
    job = load(target, overrides)
    renderer = Renderer(job)
    report = ValidationReport()
    seen: dict[bytes, int] = {}
    domain = message_id_domain(job.from_addr)
    for item in iter_rows(job):
        if isinstance(item, RowError):
            _note(report.problems, str(item), max_listed)
            continue
        report.rows += 1
        digest = hashlib.blake2b(item.key.encode(), digest_size=8).digest()
        first = seen.setdefault(digest, item.number)
        if first != item.number:
            _note(
                report.warnings,
                f"row {item.number}: key {item.key!r}: duplicate of row {first}; "
                "it will be skipped",
                max_listed,
            )
            continue
        try:
            message = renderer.render(item, new_message_id(domain))
        except RowError as exc:
            _note(report.problems, str(exc), max_listed)
            continue
        size = len(message.data)
        report.total_bytes += size
        report.largest = max(report.largest, size)
        report.over_1mb += size > 1024 * 1024
        if size > job.max_message_size:
            _note(
                report.problems,
                f"row {item.number}: key {item.key!r}: message is {size} bytes, over "
                f"max_message_size ({job.max_message_size})",
                max_listed,
            )
    _content_warnings(job, renderer, report)
    if not job.relays:
        report.warnings.append("no relay configured: pass --relay or set TXSEND_RELAY when sending")
    return report


BULK_SENDER_LINE = 5000  # Gmail's bulk-sender rules apply from 5 000 messages a day


def _content_warnings(job: Job, renderer: Renderer, report: ValidationReport) -> None:
    """What the bulk-sender rules and mailbox providers would object to."""
    report.warnings.extend(renderer.warnings)
    report.attachments = renderer.fixed_attachments
    report.largest_row_attachment = renderer.largest_row_attachment
    report.long_lines = renderer.long_line_messages
    warnings = report.warnings
    if report.over_1mb:
        warnings.append(
            f"{report.over_1mb} messages over 1 MB: mailbox providers may clip or refuse them; "
            "link to large files instead of attaching them, or compress: zip"
        )
    if report.long_lines:
        warnings.append(
            f"{report.long_lines} messages have lines over 998 characters: they are sent "
            "quoted-printable encoded (RFC 5322 limit); break the lines in the template"
        )
    if not renderer.has_text_part:
        warnings.append(
            "no text part: spam filters score HTML-only mail; remove auto_text: false or add text:"
        )
    content = job.content
    if report.rows > BULK_SENDER_LINE and content.unsubscribe is None and not content.transactional:
        warnings.append(
            f"no unsubscribe on a job of {report.rows} recipients: Gmail and Yahoo require "
            "one-click unsubscribe from bulk senders; add unsubscribe: {url: ..., "
            "one_click: true}, or transactional: true if this is not marketing"
        )


def _note(items: list[str], text: str, limit: int) -> None:
    if len(items) < limit:
        items.append(text)
    elif len(items) == limit:
        items.append("... more problems not listed")


def preview(
    target: Path,
    overrides: JobOverrides,
    *,
    row_number: int | None = None,
    key: str | None = None,
    part: str | None = None,
) -> bytes:
    """One fully rendered message (raw RFC 5322), or one part of it."""
    job = load(target, overrides)
    renderer = Renderer(job)
    row = _find_row(job, row_number, key)
    if part is not None:
        return renderer.render_part(row, part).encode()
    message_id = None
    if job.journal_url is not None or job.journal.exists():
        journal = open_for(job)
        try:
            found = journal.find(row.key)
        finally:
            journal.close()
        message_id = found.message_id if found else None
    message_id = message_id or new_message_id(message_id_domain(job.from_addr))
    return renderer.render(row, message_id).data


def _find_row(job: Job, row_number: int | None, key: str | None) -> Row:
    wanted = row_number if row_number is not None or key is not None else 1
    for item in iter_rows(job):
        if isinstance(item, RowError):
            if item.row == wanted and key is None:
                raise item
            continue
        if (key is not None and item.key == key) or (key is None and item.number == wanted):
            return item
    what = f"key {key!r}" if key is not None else f"row {wanted}"
    raise UsageError(f"{job.recipients.file}: no {what}")
