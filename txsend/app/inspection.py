"""The use cases that read a job without sending: status, report, validate, preview.

They take plain arguments, return data, and raise TxsendError subclasses; the command
line prints what they return.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from txsend.app.jobs import load, open_for
from txsend.content.ids import message_id_domain, new_message_id
from txsend.content.renderer import Renderer
from txsend.delivery.mx import dns_problem
from txsend.delivery.quotas import job_quotas
from txsend.errors import (
    RowError,
    UsageError,
)
from txsend.job.recipients import iter_rows
from txsend.job.schedule import reach_warnings, schedule_status
from txsend.job.scheduling import row_zone, row_zone_problem
from txsend.job.spec import Job, JobOverrides
from txsend.job.zonestatus import ZONES_LISTED, zones_status
from txsend.journal.api import JournalBackend
from txsend.models import Row, State
from txsend.reporting.outputs import write_atomic
from txsend.reporting.summary import (
    PROBLEMS_LISTED,
    Problems,
    Summary,
    journal_json,
)


def problems_of(journal: JournalBackend, target: Path) -> Problems:
    """The journal's failed, bounced and unknown rows for a report."""
    count, rows = journal.problems(PROBLEMS_LISTED)
    return Problems(count, rows, f"txsend report {target} --failed-csv failed.csv")


def report(target: Path, overrides: JobOverrides) -> dict[str, Any]:
    """`txsend report`: the summary of every run so far, from the journal alone."""
    job = load(target, overrides, read_only=True)
    journal = open_for(job)
    try:
        schedule = schedule_now(job, journal)
        data = journal_json(
            job.name,
            journal.counts(),
            journal.runs(),
            journal.relay_outcomes(),
            journal.reply_codes(),
            journal.next_attempt_at(),
            problems_of(journal, target),
            journal.feedback_counts(),
            journal.seed_counts(),
            quotas_now(job, journal),
        )
    finally:
        journal.close()
    if job.schedule is not None:  # the same member as `status --json` gives
        data["schedule"] = schedule
    return data


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
    job = load(target, overrides, read_only=True)
    journal = open_for(job)
    written = 0
    try:
        spec = journal.job_spec()
        if spec is not None and spec.get("test_send"):
            # its rows carry the intended recipients' data: as a recipients file for a new
            # job it would mail them what only a reviewer was sent
            raise UsageError(
                f"{journal.location} is the journal of a test send: its rows are reviewers' "
                "copies, not the job's recipients",
                hint=f"export the job's own journal: txsend report {job.source.name} "
                "--failed-csv FILE",
            )
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


def status(target: Path, overrides: JobOverrides) -> Summary:
    """Counts per state, the last run and the next retry time, from the journal only."""
    job = load(target, overrides, read_only=True)
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
            feedback=journal.feedback_counts(),
            seeds=journal.seed_counts(),
            quotas=quotas_now(job, journal),
            schedule=schedule_now(job, journal),
        )
    finally:
        journal.close()


def schedule_now(job: Job, journal: JournalBackend) -> dict[str, Any] | None:
    """The job's schedule now, as status and report show it; with `recipients.timezone`,
    also the zones of the rows still due (`zones`): a run sends to those open now."""
    if job.schedule is None:
        return None
    now = time.time()
    counts = journal.counts()
    data = schedule_status(job.schedule, now, counts[State.EXPIRED])
    column = job.recipients.timezone
    if column is not None:
        data["zones"] = zones_status(
            job.schedule,
            column,
            journal.due_values(column, ZONES_LISTED),
            counts[State.PENDING] + counts[State.DEFERRED],
            now,
        )
    return data


def quotas_now(job: Job, journal: JournalBackend) -> tuple[dict[str, Any], ...]:
    """The job's quotas (its relays' and its warm-up's) as the journal's ledger counts them
    now: reads only, on either journal."""
    return tuple(usage.to_json() for usage in job_quotas(job, journal, job.relays).usage())


def _workers(journal: JournalBackend) -> tuple[dict[str, Any], ...]:
    shared = journal.as_shared()
    return () if shared is None else tuple(shared.workers())


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
    zones: set[str | None] = set()  # the rows' time zones (recipients.timezone)
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
        zone_problem = _zone_problem(job, item)
        if zone_problem is not None:  # a run skips the row: it has no send window
            _note(
                report.problems, f"row {item.number}: key {item.key!r}: {zone_problem}", max_listed
            )
            continue
        if job.recipients.timezone is not None and len(zones) < ZONES_LISTED:
            zones.add(row_zone(item.data, job.recipients.timezone))
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
    if job.schedule is not None:
        report.warnings.extend(reach_warnings(job.schedule, zones, time.time()))
    if job.recipients.timezone is not None and job.schedule is None:
        report.warnings.append(
            f"recipients.timezone ({job.recipients.timezone!r}) has no effect without "
            "schedule: windows; add schedule: {windows: [...]} or leave it out"
        )
    if not job.relays:
        report.warnings.append("no relay configured: pass --relay or set TXSEND_RELAY when sending")
    if any(rule.mx for rule in job.domains) and (dns := dns_problem()) is not None:
        report.problems.append(f"{dns} (a run refuses it: exit 78)")
    return report


def _zone_problem(job: Job, row: Row) -> str | None:
    """Why the row's `recipients.timezone` is not a time zone (with a schedule), or None."""
    column = job.recipients.timezone
    if column is None or job.schedule is None:
        return None
    return row_zone_problem(row.data, column)


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
    if job.journal.exists():
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
