"""The commands that look without sending: status and report (from the journal), validate
and preview (from the job), and how each prints what it found."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from txsend.cli.console import local_time, stderr_console, stdout_console
from txsend.cli.options import (
    JobArg,
    JournalOpt,
    JsonOpt,
    MessageFlags,
    ReportHtmlOpt,
    journal_overrides,
    takes,
)
from txsend.cli.verdict import feedback_line, print_summary
from txsend.errors import ExitCode, UsageError
from txsend.job.schedule import status_lines
from txsend.job.zonestatus import zone_lines
from txsend.reporting.quotas import quota_line

if TYPE_CHECKING:
    from rich.console import Console

    from txsend.app.inspection import ValidationReport

FailedCsvOpt = Annotated[
    Path | None,
    typer.Option(
        "--failed-csv",
        metavar="FILE",
        help="Write the failed, bounced and unknown rows to FILE: their data columns, "
        "then txsend_state, txsend_code, txsend_reply (a recipients file itself).",
    ),
]
RowOpt = Annotated[int | None, typer.Option(min=1, help="Data row number (1 = first).")]
KeyOpt = Annotated[str | None, typer.Option(help="Row key.")]
PartOpt = Annotated[
    str | None,
    typer.Option(
        help="Print only this part as sent: text (made from the HTML if the job has none),"
        " html (Markdown rendered, CSS inlined) or subject.",
        show_default=False,
    ),
]


def status(job: JobArg, journal: JournalOpt = None, json_out: JsonOpt = False) -> None:
    """Counts per state from the journal, the last run, the next retry time, and each
    quota's use now (the warm-up: its day and today's cap).

    With a schedule: in the job, whether its send window is open now, when it closes or
    opens, and not_after; with recipients.timezone, also which zones of the rows still due
    are open, how many rows they hold, and the next opening among the closed ones."""
    from txsend.app import inspection  # loaded when the command runs, not for --help

    summary = inspection.status(job, journal_overrides(journal))
    if json_out:
        sys.stdout.write(json.dumps(summary.to_json(), indent=2) + "\n")
        return
    console = stdout_console()
    print_summary(console, summary)
    if summary.workers:
        _print_workers(console, summary.workers)
    _print_quotas(console, summary.quotas)
    if summary.next_attempt_at:
        console.print(f"next retry due {local_time(summary.next_attempt_at)}")
    if summary.schedule is not None:
        now = time.time()
        for line in status_lines(summary.schedule, now):
            console.print(line, markup=False)
        zones = summary.schedule.get("zones")
        for line in zone_lines(zones, now) if zones else ():
            console.print(line, markup=False)


def _print_quotas(console: Console, quotas: Sequence[Mapping[str, Any]]) -> None:
    """Each quota's window now: used of its limit, held slots, when a spent one frees."""
    for entry in quotas:
        console.print(quota_line(entry), markup=False)


def _print_workers(console: Console, workers: tuple[dict[str, Any], ...]) -> None:
    """A shared journal's workers: who holds which rows, and how fresh each lease is."""
    from rich.table import Table

    table = Table(title="workers", title_justify="left")
    for name, justify in (
        ("worker", "left"),
        ("state", "left"),
        ("claimed", "right"),
        ("in DATA", "right"),
        ("renewed", "right"),
    ):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    now = time.time()
    for w in workers:
        table.add_row(
            w["worker"],
            w["state"],
            str(w["rows_claimed"]),
            str(w["rows_in_data"]),
            f"{now - w['renewed_at']:.0f} s ago",
        )
    console.print(table)


def report(
    job: JobArg,
    journal: JournalOpt = None,
    json_out: JsonOpt = False,
    failed_csv: FailedCsvOpt = None,
    report_html: ReportHtmlOpt = None,
) -> None:
    """The summary of every run so far, from the journal alone (schema 1 with --json)."""
    from txsend.app import inspection  # loaded when the command runs, not for --help

    overrides = journal_overrides(journal)
    data = inspection.report(job, overrides)
    console = stderr_console()
    if failed_csv is not None:
        written = inspection.write_failed_csv(job, overrides, failed_csv)
        console.print(f"{written} rows written to {failed_csv}", markup=False)
    if report_html is not None:
        inspection.write_html_report(data, report_html)
        console.print(f"report written to {report_html}", markup=False)
    if json_out:
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
        return
    _print_journal_report(stdout_console(), data)


def _print_journal_report(console: Console, data: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(title=f"txsend: {data['job']} (all runs)", title_justify="left")
    table.add_column("state")
    table.add_column("rows", justify="right")
    seeds = data.get("seeds")
    if seeds:
        table.add_column("of which seeds", justify="right")
    for state, count in data["counts"].items():
        if count:
            table.add_row(state, str(count), *([str(seeds[state])] if seeds else []))
    console.print(table)
    if data.get("feedback"):
        console.print(feedback_line(data["feedback"]), markup=False)
    for run in data["runs"]:
        code = "running or killed" if run["exit_code"] is None else f"exit {run['exit_code']}"
        console.print(
            f"run {run['run_id']}: {run['command']} {run['started_at']} .. "
            f"{run['ended_at'] or '-'} ({code})",
            markup=False,
        )
    for name, relay in data["relays"].items():
        outcomes = ", ".join(f"{n} {state}" for state, n in relay["outcomes"].items())
        console.print(f"relay {name}: {outcomes}", markup=False)
    _print_quotas(console, data.get("quotas", ()))
    if data["reply_codes"]:
        console.print("last reply of each row, by code (rows, an example):")
    for reply in data["reply_codes"][:10]:
        console.print(f"{reply['count']:>8}  {reply['example']}", markup=False)
    problems = data["problems"]
    if problems["count"]:
        console.print(
            f"{problems['count']} rows failed, bounced or unknown; export them with: "
            f"{problems['export']}",
            markup=False,
        )
    if data["next_attempt_at"]:
        console.print(f"next retry due {local_time(data['next_attempt_at'])}")


@takes("message", MessageFlags)
def validate(job: JobArg, message: MessageFlags, json_out: JsonOpt = False) -> None:
    """Load and render every row without sending; list every problem (exit 65 if any)."""
    from txsend.app import inspection  # loaded when the command runs, not for --help

    report = inspection.validate(job, message.overrides())
    if json_out:
        sys.stdout.write(json.dumps(_validation_json(report), indent=2) + "\n")
    console = stderr_console()
    for problem in report.problems:
        console.print(f"error: {problem}", markup=False)
    for warning in report.warnings:
        console.print(f"warning: {warning}", markup=False)
    for name, size in report.attachments:
        console.print(f"attachment {name}: {_size(size)}", markup=False)
    if report.largest_row_attachment:
        console.print(f"largest per-recipient attachment {_size(report.largest_row_attachment)}")
    console.print(
        f"{job}: {report.rows} rows, {len(report.problems)} problems, "
        f"{_size(report.total_bytes)} in all, largest message {_size(report.largest)}",
        markup=False,
    )
    raise typer.Exit(ExitCode.DATA if report.problems else ExitCode.OK)


def _validation_json(report: ValidationReport) -> dict[str, Any]:
    return {
        "rows": report.rows,
        "problems": report.problems,
        "warnings": report.warnings,
        "largest_message_bytes": report.largest,
        "total_bytes": report.total_bytes,
        "messages_over_1mb": report.over_1mb,
        "messages_with_long_lines": report.long_lines,
        "attachments": [{"file": name, "bytes": size} for name, size in report.attachments],
        "largest_row_attachment_bytes": report.largest_row_attachment,
    }


def _size(size: int) -> str:
    """Bytes for people: 512 bytes, 879 KB, 1.2 MB (powers of 1024, as max_message_size)."""
    if size < 1024:
        return f"{size} bytes"
    if size < 1024 * 1024:
        return f"{size / 1024:.0f} KB"
    return f"{size / 1024 / 1024:.1f} MB"


@takes("message", MessageFlags)
def preview(
    job: JobArg,
    row: RowOpt = None,
    key: KeyOpt = None,
    part: PartOpt = None,
    *,
    message: MessageFlags,
) -> None:
    """Print one fully rendered message (raw RFC 5322) or one of its parts on stdout."""
    from txsend.app import inspection  # loaded when the command runs, not for --help

    if row is not None and key is not None:
        raise UsageError("pass --row or --key, not both")
    if part is not None and part not in ("text", "html", "subject"):
        raise UsageError(f"--part must be text, html or subject, not {part!r}")
    data = inspection.preview(job, message.overrides(), row_number=row, key=key, part=part)
    sys.stdout.buffer.write(data if data.endswith(b"\n") else data + b"\n")
    sys.stdout.flush()
