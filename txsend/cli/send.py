"""The commands that send: run, resume and worker, and the one way all three drive a run
and show it (progress, ingest and recovery lines, the summary, the final line)."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

from txsend import logs
from txsend.app import requests
from txsend.cli.console import PlainLines, Printer, ProgressView, stderr_console, stderr_line
from txsend.cli.options import JobArg, MessageFlags, RowsOpt, SendFlags, TestToOpt, takes
from txsend.cli.testsend import test_flags, test_send
from txsend.cli.verdict import (
    final_and_next,
    job_argument,
    log_summary,
    print_summary,
    resume_argument,
)
from txsend.errors import UsageError
from txsend.job.spec import Job
from txsend.journal.records import IngestStats

if TYPE_CHECKING:
    from rich.console import Console

    from txsend.reporting.stats import RunStats

_Result = TypeVar("_Result")

# `run` shows --dry-run before --limit, where it has always been in its --help
_RUN_OPTIONS = (
    "relay",
    "journal",
    "dry_run",
    "limit",
    "concurrency",
    "force",
    "abort_on_error_rate",
    "json_out",
    "quiet",
    "report",
    "report_html",
    "metrics_file",
    "metrics_port",
    "log_format",
    "log_level",
    "grace",
    "lease",
)
# a worker joins a stored job as it is: no --force, --dry-run or --limit, its own --journal
_WORKER_OPTIONS = tuple(
    name for name in _RUN_OPTIONS if name not in ("journal", "dry_run", "limit", "force")
)

WorkerJournalOpt = Annotated[
    str,
    typer.Option(
        metavar="URL",
        help="The shared journal: postgresql://[user@]host[:port]/db "
        "(password from $TXSEND_PG_PASSWORD or a PGPASSFILE).",
    ),
]
WorkerJobOpt = Annotated[
    str | None,
    typer.Option(
        "--job",
        metavar="NAME",
        help="The job to work (default: the only one with rows due or being ingested).",
    ),
]


@takes("message", MessageFlags)
@takes("flags", SendFlags, _RUN_OPTIONS)
def run(
    job: JobArg,
    message: MessageFlags,
    flags: SendFlags,
    test_to: TestToOpt = None,
    rows: RowsOpt = None,
) -> None:
    """Ingest the recipients into the journal and send every row not yet done.

    With --journal postgresql://..., run it on several hosts at once: the first ingests,
    all of them send, none sends a row twice.

    With a schedule: in the job, a message begins only inside its row's send window and
    before not_after: outside every window the run sends nothing and exits 75, saying when
    the next window opens (resume then, e.g. from cron); after not_after the rows left
    become expired.

    With --test-to ADDRESS, send a test instead: the job's first --rows rows to ADDRESS
    only, marked as a test, in a journal of its own; the job's journal is not touched."""
    logs.use_format(flags.log_format)  # an error from here on is a JSON line too

    test = test_flags(test_to, rows)
    if test is not None:
        test_send(flags.request(job, flags.overrides(message)), test, flags, shown_run)
        return
    send(flags.request(job, flags.overrides(message)), "run", flags)


@takes("flags", SendFlags)
def resume(job: JobArg, flags: SendFlags) -> None:
    """Continue a job's journal: pending rows, deferred ones that are due, and unknown ones
    (delivery.on_unknown: resend). On a PostgreSQL journal it also lifts an error-rate
    abort, so that other hosts can join again."""
    logs.use_format(flags.log_format)
    send(flags.request(job, flags.overrides(), resume=True), "resume", flags)


@takes("flags", SendFlags, _WORKER_OPTIONS)
def worker(journal: WorkerJournalOpt, job_name: WorkerJobOpt = None, *, flags: SendFlags) -> None:
    """Join a job stored in a PostgreSQL journal and send its rows beside the other hosts.

    The job (its file, templates and attachments) was stored by `txsend run JOB
    --journal URL` on another host. Secrets are not stored: relay passwords come from
    this host's environment as the job's relays say, and a DKIM key from the current
    directory at the path the job gives (e.g. keys/dkim.pem).

    Started while that host is still ingesting the job, it waits up to twice its --lease
    for the ingest, then exits 75 if it has not ended."""
    flags = dataclasses.replace(flags, journal=journal)  # the worker's own, required, --journal
    logs.use_format(flags.log_format)
    overrides = flags.overrides()
    if overrides.journal is None or overrides.journal.url is None:
        raise UsageError(
            "--journal must be a postgresql:// URL: a worker joins a shared journal",
            hint="a job with a journal file runs with: txsend run JOB",
        )
    from txsend.app import jobs  # loaded when the command runs: --help never loads it

    stored, folder = jobs.load_stored_job(
        overrides.journal.url,
        job_name,
        overrides,
        wait=2 * flags.lease_seconds(),  # for a job its first host is still storing
        on_wait=None if flags.quiet else _say_waiting(flags),
    )
    request = flags.request(stored.source, overrides, worker=True)
    try:
        send(request, "worker", flags, job=stored)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _say_waiting(flags: SendFlags) -> Callable[[str], None]:
    """How a worker says what it waits for before it can join (a line on stderr)."""

    def say(what: str) -> None:
        if flags.log_format == "json":
            logs.output_event(stderr_line, "info", "worker_waits", what)
        else:
            stderr_line(what)

    return say


def send(
    request: requests.RunRequest, command: str, flags: SendFlags, job: Job | None = None
) -> None:
    """Run `request` as `command`, showing it as the flags say; exit with the run's code."""
    from txsend.app import sending  # loaded when a run starts: --help never loads it

    summary, console, rich = shown_run(
        flags,
        lambda on_prepared, on_tick: sending.run(
            request, command, on_prepared=on_prepared, on_tick=on_tick, job=job
        ),
    )
    if flags.json_out:
        sys.stdout.write(json.dumps(summary.to_json(), indent=2) + "\n")
    final, next_command = final_and_next(
        summary, job_argument(request), command, resume_argument(request)
    )
    if flags.log_format == "json":
        log_summary(summary, final, next_command, flags.quiet)
        raise typer.Exit(summary.exit_code)
    for warning in summary.warnings:
        console.print(f"warning: {warning}", markup=False)
    if rich is not None:
        print_summary(rich, summary)
    console.print(final, markup=False)
    raise typer.Exit(summary.exit_code)


def shown_run(
    flags: SendFlags,
    runner: Callable[
        [Callable[[requests.Prepared], None], Callable[[RunStats], None] | None], _Result
    ],
) -> tuple[_Result, Printer, Console | None]:
    """Call `runner(on_prepared, on_tick)` with the logs, the ingest lines and the progress
    bar the flags ask for; its result, the printer for what follows, and Rich (if shown)."""
    _check_log_flags(flags)
    # Rich loads for what only it shows: the summary table and the live bar
    rich = stderr_console() if not flags.quiet and flags.log_format == "text" else None
    console: Printer = rich if rich is not None else PlainLines()
    view = ProgressView(rich) if rich is not None and _shows_progress(rich, flags) else None
    undo_logs = _configure_logs(console, flags)
    try:
        result = runner(_announcer(console, flags, view), view.update if view is not None else None)
    finally:
        if view is not None:
            view.stop()
        undo_logs()
    return result, console, rich


def _check_log_flags(flags: SendFlags) -> None:
    if flags.log_format not in logs.FORMATS:
        raise UsageError(f"--log-format must be text or json, not {flags.log_format!r}")
    if flags.log_level.lower() not in logs.LEVELS:
        raise UsageError(f"--log-level must be one of {', '.join(logs.LEVELS)}")


def _shows_progress(console: Console, flags: SendFlags) -> bool:
    """The live bar only where it helps and harms nothing: a terminal, text logs, no
    per-message debug lines to tear it apart."""
    return (
        console.is_terminal
        and not flags.quiet
        and "NO_COLOR" not in os.environ
        and flags.log_format == "text"
        and flags.log_level.lower() != "debug"
    )


def _configure_logs(console: Printer, flags: SendFlags) -> Callable[[], None]:
    """Send the run's log lines to stderr as the flags say; returns the undo."""
    if flags.log_format == "json":
        return logs.configure("json", flags.log_level, stderr_line)
    return logs.configure("text", flags.log_level, lambda line: console.print(line, markup=False))


def _announcer(
    console: Printer, flags: SendFlags, view: ProgressView | None
) -> Callable[[requests.Prepared], None]:
    """What a run says once its job is open: what ingest did, what a previous run left
    mid-send; then the progress bar starts."""

    def prepared(p: requests.Prepared) -> None:
        if not flags.quiet and p.ingest is not None:
            _announce_ingest(console, flags, p.ingest, str(p.journal.location))
        if not flags.quiet and p.recovered:
            _announce_recovered(console, flags, p)
        if view is not None:
            view.start(p.due)

    return prepared


def _announce_ingest(console: Printer, flags: SendFlags, i: IngestStats, journal: str) -> None:
    line = (
        f"journal {journal}: "
        + ("ingested by another worker: " if i.by_other else f"{i.new} new rows, ")
        + (f"of which {i.seeds} seed copies, " if i.seeds else "")
        + f"{i.existing} already known"
        + (f", {i.duplicates} duplicate keys skipped" if i.duplicates else "")
        + (f", {i.invalid} invalid rows skipped" if i.invalid else "")
    )
    if flags.log_format == "json":
        logs.output_event(
            stderr_line,
            "info",
            "ingest",
            line,
            journal=journal,
            new=i.new,
            existing=i.existing,
            duplicates=i.duplicates,
            invalid=i.invalid,
            by_other=i.by_other,
            seeds=i.seeds,
            problems=list(i.problems),
        )
        return
    console.print(line, markup=False)
    for problem in i.problems:
        console.print(f"  skipped {problem}", markup=False)


def _announce_recovered(console: Printer, flags: SendFlags, p: requests.Prepared) -> None:
    on_unknown = p.job.delivery.on_unknown
    schedule = p.job.schedule
    why = (
        "schedule.not_after has passed: they are not sent again"
        if schedule is not None and schedule.expired(time.time())
        else f"delivery.on_unknown: {on_unknown}"
    )
    line = f"{p.recovered} rows were mid-send when a previous run stopped: now 'unknown' ({why})"
    if flags.log_format == "json":
        logs.output_event(
            stderr_line,
            "warning",
            "recovered",
            line,
            recovered=p.recovered,
            on_unknown=on_unknown,
        )
        return
    console.print(line, markup=False)
