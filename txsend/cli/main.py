"""The txsend command line: parse flags, call txsend.app.runner, print. Nothing else."""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
import traceback
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeRemainingColumn
from rich.table import Table

from txsend import __version__, logs
from txsend.app import runner, scaffold
from txsend.errors import ExitCode, TxsendError, UsageError
from txsend.job.loading import JobOverrides
from txsend.journal.api import is_postgres
from txsend.models import Job, State
from txsend.reporting.outputs import OutputOptions
from txsend.reporting.stats import RunStats
from txsend.reporting.summary import Summary, state_counts
from txsend.units import parse_duration

app = typer.Typer(
    name="txsend",
    help="Send bulk and transactional email from a YAML job or a CSV, resumably.\n\n"
    "Exit codes: 0 all delivered (or skipped by policy), 1 some bounced, failed, skipped "
    "by an error or unknown (on_unknown: skip), 64 usage, 65 bad job or data, "
    "66 missing file, 69 no relay reachable, 70 bug, 75 try again later (deferred or "
    "unknown rows to resend), 78 configuration, 130/143 interrupted.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        sys.stdout.write(f"txsend {__version__}\n")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Send bulk and transactional email from a YAML job or a CSV, resumably."""


JobArg = Annotated[
    Path,
    typer.Argument(
        help="The job: a YAML job file, a CSV/JSONL alone (with --from/--subject/--text), "
        "or a journal file.",
        show_default=False,
        metavar="JOB",
    ),
]
FromOpt = Annotated[
    str | None,
    typer.Option("--from", metavar="ADDRESS", help="From address (fills or overrides the job)."),
]
SubjectOpt = Annotated[str | None, typer.Option(metavar="TEMPLATE", help="Subject template.")]
TextOpt = Annotated[Path | None, typer.Option(metavar="FILE", help="Text template file.")]
HtmlOpt = Annotated[Path | None, typer.Option(metavar="FILE", help="HTML template file.")]
RelayOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--relay",
        metavar="URL",
        help="Relay URL smtp://[user@]host[:port][?tls=starttls|none] or smtps://...; "
        "repeatable; replaces the job's relays. Default: the job's, else $TXSEND_RELAY.",
    ),
]
JournalOpt = Annotated[
    str | None,
    typer.Option(
        metavar="PATH|URL",
        help="Journal file (default: <job>.journal.db next to the job), or "
        "postgresql://[user@]host[:port]/db to work the job from several hosts "
        "(password from $TXSEND_PG_PASSWORD or a PGPASSFILE).",
    ),
]
LeaseOpt = Annotated[
    str,
    typer.Option(
        "--lease",
        metavar="DURATION",
        help="PostgreSQL journal: how long this worker may go silent before the others "
        "take back its rows (its rows in DATA become unknown).",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON summary on stdout.")]
LimitOpt = Annotated[
    int | None, typer.Option(min=1, metavar="N", help="Send at most N rows in this run.")
]
ConcurrencyOpt = Annotated[
    int | None,
    typer.Option(
        min=1, max=1000, metavar="N", help="SMTP connections per relay (overrides the job)."
    ),
]
ForceOpt = Annotated[
    bool, typer.Option("--force", help="Continue even though the job changed since its journal.")
]
DryRunOpt = Annotated[
    bool, typer.Option("--dry-run", help="Render and journal every row; send nothing.")
]
AbortOpt = Annotated[
    float | None,
    typer.Option(
        "--abort-on-error-rate",
        metavar="RATE",
        help="Stop taking work when more than RATE (0-1) of the recent messages bounced, "
        "failed or went unknown (replaces delivery.abort_on.error_rate).",
    ),
]
QuietOpt = Annotated[
    bool, typer.Option("--quiet", "-q", help="Print only errors and the final line.")
]
ReportOpt = Annotated[
    Path | None,
    typer.Option(
        "--report", metavar="FILE", help="Write the run's JSON report (schema 1) to FILE."
    ),
]
ReportHtmlOpt = Annotated[
    Path | None,
    typer.Option(
        "--report-html",
        metavar="FILE",
        help="Write a self-contained HTML page with the run's charts to FILE.",
    ),
]
MetricsFileOpt = Annotated[
    Path | None,
    typer.Option(
        "--metrics-file",
        metavar="FILE",
        help="Prometheus text file, rewritten atomically every 5 s and at the end "
        "(node_exporter textfile collector).",
    ),
]
MetricsPortOpt = Annotated[
    int | None,
    typer.Option(
        "--metrics-port",
        min=0,
        max=65535,
        metavar="N",
        help="Serve /metrics on 127.0.0.1:N while the run lasts.",
    ),
]
LogFormatOpt = Annotated[
    str,
    typer.Option(
        "--log-format",
        metavar="text|json",
        help="Log lines on stderr: text, or one JSON object per line.",
    ),
]
LogLevelOpt = Annotated[
    str,
    typer.Option(
        "--log-level",
        metavar="LEVEL",
        help="debug (every message's outcome), info (run start/end, relays up), "
        "warning (relays down, circuits) or error.",
    ),
]
GraceOpt = Annotated[
    str,
    typer.Option(
        "--grace",
        metavar="DURATION",
        help="After SIGINT/SIGTERM, how long transactions in flight may finish "
        "(a second signal stops at once).",
    ),
]


def _request(
    job: Path,
    overrides: JobOverrides,
    *,
    resume: bool = False,
    force: bool,
    dry_run: bool,
    limit: int | None,
    concurrency: int | None,
    grace: str,
    report: Path | None,
    report_html: Path | None,
    metrics_file: Path | None,
    metrics_port: int | None,
    lease: str = "30s",
    worker: bool = False,
) -> runner.RunRequest:
    try:
        grace_seconds = parse_duration(grace)
    except ValueError as exc:
        raise UsageError(f"--grace: {exc}") from None
    try:
        lease_seconds = parse_duration(lease)
    except ValueError as exc:
        raise UsageError(f"--lease: {exc}") from None
    if lease_seconds < 2:
        raise UsageError("--lease must be at least 2s")
    return runner.RunRequest(
        target=job,
        overrides=overrides,
        resume=resume,
        force=force,
        dry_run=dry_run,
        limit=limit,
        concurrency=concurrency,
        grace=grace_seconds,
        outputs=OutputOptions(report, report_html, metrics_file, metrics_port),
        lease=lease_seconds,
        worker=worker,
    )


def _overrides(
    from_addr: str | None,
    subject: str | None,
    text: Path | None,
    html: Path | None,
    relay: list[str] | None,
    journal: str | None,
    abort_on_error_rate: float | None = None,
) -> JobOverrides:
    shared = journal is not None and is_postgres(journal)
    return JobOverrides(
        from_addr=from_addr,
        subject=subject,
        text=text,
        html=html,
        relays=tuple(relay or ()),
        journal=Path(journal) if journal is not None and not shared else None,
        journal_url=journal.strip() if journal is not None and shared else None,
        abort_on_error_rate=abort_on_error_rate,
    )


def _stderr_line(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def _err() -> Console:
    # soft_wrap: never break a message at 80 columns when stderr is a file or a pipe
    return Console(stderr=True, highlight=False, soft_wrap=True)


@app.command()
def run(
    job: JobArg,
    from_addr: FromOpt = None,
    subject: SubjectOpt = None,
    text: TextOpt = None,
    html: HtmlOpt = None,
    relay: RelayOpt = None,
    journal: JournalOpt = None,
    dry_run: DryRunOpt = False,
    limit: LimitOpt = None,
    concurrency: ConcurrencyOpt = None,
    force: ForceOpt = False,
    abort_on_error_rate: AbortOpt = None,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    report: ReportOpt = None,
    report_html: ReportHtmlOpt = None,
    metrics_file: MetricsFileOpt = None,
    metrics_port: MetricsPortOpt = None,
    log_format: LogFormatOpt = "text",
    log_level: LogLevelOpt = "warning",
    grace: GraceOpt = "10s",
    lease: LeaseOpt = "30s",
) -> None:
    """Ingest the recipients into the journal and send every row not yet done.

    With --journal postgresql://..., run it on several hosts at once: the first ingests,
    all of them send, none sends a row twice."""
    logs.use_format(log_format)  # an error from here on is a JSON line too
    request = _request(
        job,
        _overrides(from_addr, subject, text, html, relay, journal, abort_on_error_rate),
        lease=lease,
        force=force,
        dry_run=dry_run,
        limit=limit,
        concurrency=concurrency,
        grace=grace,
        report=report,
        report_html=report_html,
        metrics_file=metrics_file,
        metrics_port=metrics_port,
    )
    _send(request, "run", json_out=json_out, quiet=quiet, log=(log_format, log_level))


@app.command()
def resume(
    job: JobArg,
    relay: RelayOpt = None,
    journal: JournalOpt = None,
    limit: LimitOpt = None,
    concurrency: ConcurrencyOpt = None,
    force: ForceOpt = False,
    dry_run: DryRunOpt = False,
    abort_on_error_rate: AbortOpt = None,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    report: ReportOpt = None,
    report_html: ReportHtmlOpt = None,
    metrics_file: MetricsFileOpt = None,
    metrics_port: MetricsPortOpt = None,
    log_format: LogFormatOpt = "text",
    log_level: LogLevelOpt = "warning",
    grace: GraceOpt = "10s",
    lease: LeaseOpt = "30s",
) -> None:
    """Continue a job's journal: pending rows, deferred ones that are due, and unknown ones
    (delivery.on_unknown: resend). On a PostgreSQL journal it also lifts an error-rate
    abort, so that other hosts can join again."""
    logs.use_format(log_format)
    request = _request(
        job,
        _overrides(None, None, None, None, relay, journal, abort_on_error_rate),
        lease=lease,
        resume=True,
        force=force,
        dry_run=dry_run,
        limit=limit,
        concurrency=concurrency,
        grace=grace,
        report=report,
        report_html=report_html,
        metrics_file=metrics_file,
        metrics_port=metrics_port,
    )
    _send(request, "resume", json_out=json_out, quiet=quiet, log=(log_format, log_level))


@app.command()
def worker(
    journal: Annotated[
        str,
        typer.Option(
            metavar="URL",
            help="The shared journal: postgresql://[user@]host[:port]/db "
            "(password from $TXSEND_PG_PASSWORD or a PGPASSFILE).",
        ),
    ],
    job_name: Annotated[
        str | None,
        typer.Option(
            "--job", metavar="NAME", help="The job to work (default: the only one with rows due)."
        ),
    ] = None,
    relay: RelayOpt = None,
    concurrency: ConcurrencyOpt = None,
    abort_on_error_rate: AbortOpt = None,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    report: ReportOpt = None,
    report_html: ReportHtmlOpt = None,
    metrics_file: MetricsFileOpt = None,
    metrics_port: MetricsPortOpt = None,
    log_format: LogFormatOpt = "text",
    log_level: LogLevelOpt = "warning",
    grace: GraceOpt = "10s",
    lease: LeaseOpt = "30s",
) -> None:
    """Join a job stored in a PostgreSQL journal and send its rows beside the other hosts.

    The job (its file, templates and attachments) was stored by `txsend run JOB
    --journal URL` on another host. Secrets are not stored: relay passwords come from
    this host's environment as the job's relays say, and a DKIM key from the current
    directory at the path the job gives (e.g. keys/dkim.pem)."""
    logs.use_format(log_format)
    if not is_postgres(journal):
        raise UsageError(
            "--journal must be a postgresql:// URL: a worker joins a shared journal",
            hint="a job with a journal file runs with: txsend run JOB",
        )
    overrides = _overrides(None, None, None, None, relay, journal, abort_on_error_rate)
    stored, folder = runner.load_stored_job(journal.strip(), job_name, overrides)
    request = _request(
        stored.source,
        overrides,
        lease=lease,
        worker=True,
        force=False,
        dry_run=False,
        limit=None,
        concurrency=concurrency,
        grace=grace,
        report=report,
        report_html=report_html,
        metrics_file=metrics_file,
        metrics_port=metrics_port,
    )
    try:
        _send(
            request,
            "worker",
            json_out=json_out,
            quiet=quiet,
            log=(log_format, log_level),
            job=stored,
        )
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _send(
    request: runner.RunRequest,
    command: str,
    *,
    json_out: bool,
    quiet: bool,
    log: tuple[str, str],
    job: Job | None = None,
) -> None:
    console = _err()
    log_format, log_level = log
    if log_format not in logs.FORMATS:
        raise UsageError(f"--log-format must be text or json, not {log_format!r}")
    if log_level.lower() not in logs.LEVELS:
        raise UsageError(f"--log-level must be one of {', '.join(logs.LEVELS)}")
    show_progress = (
        console.is_terminal
        and not quiet
        and "NO_COLOR" not in os.environ
        and log_format == "text"
        and log_level.lower() != "debug"
    )
    view = _ProgressView(console) if show_progress else None
    if log_format == "json":
        undo_logs = logs.configure("json", log_level, _stderr_line)
    else:
        undo_logs = logs.configure(
            "text", log_level, lambda line: console.print(line, markup=False)
        )

    json_logs = log_format == "json"

    def prepared(p: runner.Prepared) -> None:
        if not quiet and p.ingest is not None:
            i = p.ingest
            line = (
                f"journal {p.journal.location}: "
                + ("ingested by another worker: " if i.by_other else f"{i.new} new rows, ")
                + f"{i.existing} already known"
                + (f", {i.duplicates} duplicate keys skipped" if i.duplicates else "")
                + (f", {i.invalid} invalid rows skipped" if i.invalid else "")
            )
            if json_logs:
                logs.output_event(
                    _stderr_line,
                    "info",
                    "ingest",
                    line,
                    journal=str(p.journal.location),
                    new=i.new,
                    existing=i.existing,
                    duplicates=i.duplicates,
                    invalid=i.invalid,
                    by_other=i.by_other,
                    problems=list(i.problems),
                )
            else:
                console.print(line)
                for problem in i.problems:
                    console.print(f"  skipped {problem}")
        if not quiet and p.recovered:
            line = (
                f"{p.recovered} rows were mid-send when a previous run stopped: now 'unknown' "
                f"(delivery.on_unknown: {p.job.delivery.on_unknown})"
            )
            if json_logs:
                logs.output_event(
                    _stderr_line,
                    "warning",
                    "recovered",
                    line,
                    recovered=p.recovered,
                    on_unknown=p.job.delivery.on_unknown,
                )
            else:
                console.print(line)
        if view is not None:
            view.start(p.due)

    try:
        summary = runner.run(
            request,
            command,
            on_prepared=prepared,
            on_tick=view.update if view is not None else None,
            job=job,
        )
    finally:
        if view is not None:
            view.stop()
        undo_logs()
    if json_out:
        sys.stdout.write(json.dumps(summary.to_json(), indent=2) + "\n")
    final, next_command = _final(
        summary, _job_argument(request), command, _resume_argument(request)
    )
    if json_logs:
        _log_summary(summary, final, next_command, quiet)
        raise typer.Exit(summary.exit_code)
    for warning in summary.warnings:
        console.print(f"warning: {warning}", markup=False)
    if not quiet:
        _print_summary(console, summary)
    console.print(final)
    raise typer.Exit(summary.exit_code)


def _log_summary(summary: Summary, final: str, next_command: str | None, quiet: bool) -> None:
    """The end of a run as JSON events: warnings, the summary (unless quiet), the verdict."""
    for warning in summary.warnings:
        logs.output_event(_stderr_line, "warning", "warning", warning)
    stats = summary.stats
    if not quiet:
        message, fields = _summary_event(summary)
        logs.output_event(_stderr_line, "info", "summary", message, **fields)
    code = summary.exit_code
    logs.output_event(
        _stderr_line,
        "info" if code == ExitCode.OK else "warning" if code in _SOFT_EXITS else "error",
        "verdict",
        final,
        job=summary.job,
        run_id=summary.run_id,
        exit_code=code,
        stop_reason=stats.stop_reason if stats is not None else None,
        next_command=next_command,
        next_attempt_at=summary.next_attempt_at,
    )


# exit codes of a run that ended as it should, with work left or rows refused
_SOFT_EXITS = (ExitCode.SOME_FAILED, ExitCode.TEMPFAIL, ExitCode.SIGINT, ExitCode.SIGTERM)


def _summary_event(summary: Summary) -> tuple[str, dict[str, Any]]:
    """What `_print_summary` shows for a run, as the message and fields of one event."""
    stats = summary.stats
    fields: dict[str, Any] = {
        "job": summary.job,
        "run_id": summary.run_id,
        "outcomes": state_counts(stats.outcomes) if stats is not None else None,  # this run
        "counts": state_counts(summary.counts),  # the journal's totals
    }
    if stats is None:
        return f"txsend: {summary.job}", fields
    p50, p95 = stats.latency.percentile(50), stats.latency.percentile(95)
    fields.update(
        seconds=round(stats.elapsed, 3),
        messages_per_second=round(stats.rate, 1),
        latency_ms={"p50": _ms(p50), "p95": _ms(p95)},
        relays=[_relay_event(row) for row in _relay_rows(stats)],
        abandoned=stats.abandoned,
        dry_run=summary.dry_run,
        rendered=stats.queued,
    )
    return f"{summary.job}: {_pace(stats)}", fields


def _pace(stats: RunStats) -> str:
    """`2.50 s, 400.0 messages/s, SMTP transaction p50 1.2 ms, p95 3.4 ms`."""
    p50, p95 = stats.latency.percentile(50), stats.latency.percentile(95)
    latency = (
        f", SMTP transaction p50 {p50 * 1000:.1f} ms, p95 {p95 * 1000:.1f} ms"
        if p50 is not None and p95 is not None
        else ""
    )
    return f"{stats.elapsed:.2f} s, {stats.rate:.1f} messages/s{latency}"


def _relay_rows(stats: RunStats) -> list[dict[str, Any]]:
    """Each relay's line of the summary: outcomes, p95 (seconds), error rate, connections,
    circuit; unrounded."""
    rows = []
    for name, relay in stats.relays.items():
        o = relay.outcomes
        errors = sum(relay.errors.values())
        rows.append(
            {
                "relay": name,
                "sent": o[State.SENT],
                "failed": o[State.BOUNCED] + o[State.FAILED] + o[State.UNKNOWN],
                "deferred": o[State.DEFERRED],
                "p95": relay.latency.percentile(95),
                "error_rate": errors / relay.attempts if relay.attempts else None,
                "connections": relay.connections,
                "connect_failures": relay.connect_failures,
                "circuit": relay.circuit,
                "last_error": relay.last_error,
            }
        )
    return rows


def _relay_event(row: dict[str, Any]) -> dict[str, Any]:
    """A relay's summary line for the JSON event: milliseconds and rates rounded."""
    rate = row["error_rate"]
    return {
        "relay": row["relay"],
        "sent": row["sent"],
        "failed": row["failed"],
        "deferred": row["deferred"],
        "p95_ms": _ms(row["p95"]),
        "error_rate": round(rate, 4) if rate is not None else None,
        "connections": row["connections"],
        "connect_failures": row["connect_failures"],
        "circuit": row["circuit"],
        "last_error": row["last_error"],
    }


def _ms(seconds: float | None) -> float | None:
    return round(seconds * 1000, 1) if seconds is not None else None


class _ProgressView:
    """Rich progress on a terminal: counts per outcome, rate, ETA."""

    def __init__(self, console: Console) -> None:
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TextColumn("{task.fields[counts]}"),
            TextColumn("{task.fields[rate]}"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[health]}"),
            console=console,
            transient=True,
        )
        self._task: TaskID | None = None

    def start(self, total: int) -> None:
        self._progress.start()
        self._task = self._progress.add_task("sending", total=total, counts="", rate="", health="")

    def update(self, stats: RunStats) -> None:
        if self._task is None:
            return
        o = stats.outcomes
        counts = (
            f"sent {o[State.SENT]}  bounced {o[State.BOUNCED]}  deferred {o[State.DEFERRED]}"
            + (f"  unknown {o[State.UNKNOWN]}" if o[State.UNKNOWN] else "")
            + (f"  skipped {o[State.SKIPPED]}" if o[State.SKIPPED] else "")
        )
        rolling = stats.timeline.recent_rate(time.monotonic())
        p95 = stats.latency.percentile(95)
        attempts = sum(r.attempts for r in stats.relays.values())
        errors = sum(stats.errors.values())
        health = (
            (f"p95 {p95 * 1000:.0f} ms  " if p95 is not None else "")
            + (f"errors {errors / attempts:.1%}  " if attempts else "")
            + f"queue {stats.queue_depth}"
        )
        if stats.waiting:  # what the run waits for, and when it gives up
            health = f"waiting: {stats.waiting}"
        self._progress.update(
            self._task,
            completed=stats.attempted,
            counts=counts,
            rate=f"{rolling:.0f} msg/s (avg {stats.rate:.0f})",
            health=health,
        )

    def stop(self) -> None:
        self._progress.stop()


def _print_summary(console: Console, summary: Summary) -> None:
    table = Table(title=f"txsend: {summary.job}", title_justify="left")
    table.add_column("state")
    table.add_column("outcomes this run", justify="right")
    table.add_column("journal total", justify="right")
    stats = summary.stats
    for state in State:
        now = stats.outcomes[state] if stats is not None else 0
        total = summary.counts.get(state, 0)
        if now or total:
            table.add_row(state.value, str(now) if stats is not None else "-", str(total))
    console.print(table)
    if stats is None:
        return
    console.print(_pace(stats))
    if stats.relays:
        relays = Table(title_justify="left", box=None, pad_edge=False)
        for column in (
            "relay",
            "sent",
            "failed",
            "deferred",
            "p95 ms",
            "errors",
            "connects ok/failed",
        ):
            relays.add_column(column, justify="left" if column == "relay" else "right")
        relays.add_column("circuit")
        for row in _relay_rows(stats):
            p95, rate = row["p95"], row["error_rate"]
            relays.add_row(
                row["relay"],
                str(row["sent"]),
                str(row["failed"]),
                str(row["deferred"]),
                f"{p95 * 1000:.1f}" if p95 is not None else "-",
                f"{rate:.1%}" if rate is not None else "-",
                f"{row['connections']}/{row['connect_failures']}",
                row["circuit"],
            )
        console.print(relays)
    for name, relay in stats.relays.items():
        if relay.last_error and (relay.connect_failures or not relay.connections):
            console.print(f"relay {name}: {relay.last_error}")
    if stats.abandoned:
        console.print(
            f"{stats.abandoned} messages were abandoned after DATA began: now 'unknown' "
            "(resume resends them unless delivery.on_unknown: skip)"
        )
    if summary.dry_run:
        console.print(f"dry run: {stats.queued} messages rendered, nothing sent")


def _local_time(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))


def _job_argument(request: runner.RunRequest) -> str:
    """How the follow-up commands name this job (a worker's job file is a temp copy)."""
    url = request.overrides.journal_url
    if url is None:
        return str(request.target)
    from txsend.journal.postgres.journal import redact

    if request.worker:
        return f"--journal {redact(url)}"  # `txsend worker --journal URL` joins it again
    return f"{request.target} --journal {redact(url)}"


def _resume_argument(request: runner.RunRequest) -> str | None:
    """How `txsend resume` names a worker's job: its file, on the host that has it."""
    url = request.overrides.journal_url
    if not request.worker or url is None:
        return None
    from txsend.journal.postgres.journal import redact

    return f"{Path(request.target).name} --journal {redact(url)}"


def _final_line(
    summary: Summary, target: str | Path, command: str, resume_target: str | Path | None = None
) -> str:
    """The last line of a run: counts, exit code, why it stopped, what continues the job.

    `resume_target` names the job for `txsend resume` where that differs from `target`
    (a worker is named by its journal, but only `resume` resends `unknown` rows)."""
    return _final(summary, target, command, resume_target)[0]


def _final(
    summary: Summary, target: str | Path, command: str, resume_target: str | Path | None = None
) -> tuple[str, str | None]:
    """`_final_line`'s text, and the (first) command it tells to run next, if any."""
    c = summary.counts
    parts = []
    for state, n in c.items():
        if not n:
            continue
        if state is State.SKIPPED and summary.skipped_by_error:
            parts.append(f"{n} skipped ({summary.skipped_by_error} by an error)")
        else:
            parts.append(f"{n} {state.value}")
    line = f"{summary.job}: " + (", ".join(parts) or "no rows") + f" (exit {summary.exit_code})"
    stats = summary.stats
    if stats is not None and stats.stop_reason:
        line += f"; {'gave up' if stats.unreachable else 'stopped'}: {stats.stop_reason}"
    unknown = c.get(State.UNKNOWN, 0)
    resends = summary.resend_unknown
    if unknown:
        line += f"\n{unknown} unknown: no reply was recorded after the message was sent; " + (
            "resume sends them again (delivery.on_unknown: resend)"
            if resends
            else "they are left as they are (delivery.on_unknown: skip): check them "
            "before sending again"
        )
    resume = f"txsend resume {resume_target or target}"
    if summary.exit_code in (ExitCode.TEMPFAIL, ExitCode.UNAVAILABLE, 130, 143):
        others = c.get(State.PENDING, 0) + c.get(State.DEFERRED, 0) + c.get(State.SENDING, 0)
        if command == "worker" and (others or not (unknown and resends)):
            next_command = f"txsend worker {target}"
            line += f"\ncontinue with: {next_command}"
            if unknown and resends:
                line += f"; the unknown rows with: {resume}"
        else:
            next_command = resume
            line += f"\ncontinue with: {next_command}"
        if summary.next_attempt_at:
            line += f" (next retry due {_local_time(summary.next_attempt_at)})"
        return line, next_command
    if summary.exit_code == ExitCode.SOME_FAILED:
        next_command = f"txsend status {resume_target or target}"
        return line + f"\nsee the failed rows with: {next_command}", next_command
    return line, None


@app.command()
def status(
    job: JobArg,
    journal: JournalOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Counts per state from the journal, the last run and the next retry time."""
    summary = runner.status(job, _overrides(None, None, None, None, None, journal))
    if json_out:
        sys.stdout.write(json.dumps(summary.to_json(), indent=2) + "\n")
        return
    console = Console(highlight=False, soft_wrap=True)
    _print_summary(console, summary)
    if summary.workers:
        _print_workers(console, summary.workers)
    if summary.next_attempt_at:
        console.print(f"next retry due {_local_time(summary.next_attempt_at)}")


def _print_workers(console: Console, workers: tuple[dict[str, Any], ...]) -> None:
    """A shared journal's workers: who holds which rows, and how fresh each lease is."""
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


@app.command()
def report(
    job: JobArg,
    journal: JournalOpt = None,
    json_out: JsonOpt = False,
    failed_csv: Annotated[
        Path | None,
        typer.Option(
            "--failed-csv",
            metavar="FILE",
            help="Write the failed, bounced and unknown rows to FILE: their data columns, "
            "then txsend_state, txsend_code, txsend_reply (a recipients file itself).",
        ),
    ] = None,
    report_html: ReportHtmlOpt = None,
) -> None:
    """The summary of every run so far, from the journal alone (schema 1 with --json)."""
    overrides = _overrides(None, None, None, None, None, journal)
    data = runner.report(job, overrides)
    console = _err()
    if failed_csv is not None:
        written = runner.write_failed_csv(job, overrides, failed_csv)
        console.print(f"{written} rows written to {failed_csv}", markup=False)
    if report_html is not None:
        runner.write_html_report(data, report_html)
        console.print(f"report written to {report_html}", markup=False)
    if json_out:
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
        return
    out = Console(highlight=False, soft_wrap=True)
    _print_journal_report(out, data)


def _print_journal_report(console: Console, data: dict[str, Any]) -> None:
    table = Table(title=f"txsend: {data['job']} (all runs)", title_justify="left")
    table.add_column("state")
    table.add_column("rows", justify="right")
    for state, count in data["counts"].items():
        if count:
            table.add_row(state, str(count))
    console.print(table)
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
        console.print(f"next retry due {_local_time(data['next_attempt_at'])}")


@app.command()
def validate(
    job: JobArg,
    from_addr: FromOpt = None,
    subject: SubjectOpt = None,
    text: TextOpt = None,
    html: HtmlOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Load and render every row without sending; list every problem (exit 65 if any)."""
    report = runner.validate(job, _overrides(from_addr, subject, text, html, None, None))
    code = ExitCode.DATA if report.problems else ExitCode.OK
    if json_out:
        data: dict[str, Any] = {
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
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
    console = _err()
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
    raise typer.Exit(code)


def _size(size: int) -> str:
    """Bytes for people: 512 bytes, 879 KB, 1.2 MB (powers of 1024, as max_message_size)."""
    if size < 1024:
        return f"{size} bytes"
    if size < 1024 * 1024:
        return f"{size / 1024:.0f} KB"
    return f"{size / 1024 / 1024:.1f} MB"


@app.command()
def preview(
    job: JobArg,
    row: Annotated[int | None, typer.Option(min=1, help="Data row number (1 = first).")] = None,
    key: Annotated[str | None, typer.Option(help="Row key.")] = None,
    part: Annotated[
        str | None,
        typer.Option(
            help="Print only this part as sent: text (made from the HTML if the job has none),"
            " html (Markdown rendered, CSS inlined) or subject.",
            show_default=False,
        ),
    ] = None,
    from_addr: FromOpt = None,
    subject: SubjectOpt = None,
    text: TextOpt = None,
    html: HtmlOpt = None,
) -> None:
    """Print one fully rendered message (raw RFC 5322) or one of its parts on stdout."""
    if row is not None and key is not None:
        raise UsageError("pass --row or --key, not both")
    if part is not None and part not in ("text", "html", "subject"):
        raise UsageError(f"--part must be text, html or subject, not {part!r}")
    data = runner.preview(
        job,
        _overrides(from_addr, subject, text, html, None, None),
        row_number=row,
        key=key,
        part=part,
    )
    sys.stdout.buffer.write(data if data.endswith(b"\n") else data + b"\n")
    sys.stdout.flush()


@app.command()
def init(
    directory: Annotated[Path, typer.Argument(help="Folder to create the sample job in.")],
) -> None:
    """Write a working sample job into DIRECTORY (refuses to overwrite)."""
    written = scaffold.write_sample(directory)
    console = _err()
    for path in written:
        console.print(f"wrote {path}")
    console.print(
        f"try it: txsend sink --port 2525 & txsend run {directory / 'job.yaml'} "
        "--relay smtp://127.0.0.1:2525"
    )


@app.command()
def sink(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port (0: any free port).")] = 2525,
    maildir: Annotated[
        Path | None, typer.Option(help="Write every message into this Maildir.")
    ] = None,
    discard: Annotated[bool, typer.Option("--discard", help="Count messages only.")] = False,
    port_file: Annotated[
        Path | None, typer.Option(help="Write the listening port here once ready.")
    ] = None,
    fail: Annotated[
        list[str] | None,
        typer.Option(
            "--fail",
            metavar="RULE",
            help="Inject a fault: COMMAND:CODE[:PROBABILITY | :every=N][:match=TEXT][:TEXT], "
            "COMMAND one of connect, ehlo, mail, rcpt, data, dot (the reply after the "
            "message); e.g. rcpt:451:0.3, dot:554:every=10, mail:421, "
            "rcpt:550:match=@bounce. (match=: an address containing TEXT). 421 closes the "
            "connection. Repeatable; the first rule that fires answers.",
        ),
    ] = None,
    seed: Annotated[
        int | None,
        typer.Option(
            metavar="N", help="Seed for the probability of --fail rules (repeatable runs)."
        ),
    ] = None,
    disconnect_after: Annotated[
        int | None,
        typer.Option(
            min=1,
            metavar="N",
            help="Drop the connection without a reply right after the final dot of the Nth "
            "message (counted across connections; once); that message is not stored.",
        ),
    ] = None,
    delay: Annotated[
        str | None,
        typer.Option(
            metavar="DURATION",
            help="Wait this long (50ms, 1s, 0.2) before each reply to a message's final dot.",
        ),
    ] = None,
    delay_command: Annotated[
        str | None,
        typer.Option(
            metavar="DURATION",
            help="Wait this long before every other reply (greeting, EHLO, MAIL, RCPT, ...).",
        ),
    ] = None,
    greylist: Annotated[
        str | None,
        typer.Option(
            metavar="SECONDS",
            help="Greylist: the first RCPT of each (sender, recipient) pair gets 450 4.2.0; "
            "a retry SECONDS later passes (0: any retry).",
        ),
    ] = None,
) -> None:
    """A capture SMTP server for demos and tests; prints what it received on exit."""
    from txsend.sink.server import Faults, format_stats, serve

    faults = Faults.from_options(  # checked before anything is bound
        fail or (),
        seed=seed,
        disconnect_after=disconnect_after,
        delay=delay,
        delay_command=delay_command,
        greylist=greylist,
    )
    console = _err()
    stats = serve(
        host,
        port,
        maildir=maildir,
        discard=discard,
        port_file=port_file,
        on_ready=lambda h, p: console.print(f"txsend sink listening on {h}:{p}"),
        faults=faults,
    )
    sys.stdout.write(format_stats(stats) + "\n")


def run_cli(argv: list[str]) -> int:
    """Run the CLI on argv and return the exit code; every error becomes a message."""
    logs.reset()
    try:
        return _run_cli(argv)
    finally:
        logs.reset()  # the next invocation in this process starts as text


def _run_cli(argv: list[str]) -> int:
    command = typer.main.get_command(app)
    try:
        result = command.main(args=argv, prog_name="txsend", standalone_mode=False)
    except typer.Abort:
        return ExitCode.SIGINT
    except TxsendError as exc:
        _fail(exc.exit_code, exc.message, exc.hint)
        return exc.exit_code
    except KeyboardInterrupt:
        if logs.json_mode():
            _fail(ExitCode.SIGINT, "interrupted; the journal is consistent: txsend resume JOB")
        else:
            _err().print("txsend: interrupted; the journal is consistent: txsend resume JOB")
        return ExitCode.SIGINT
    except Exception as exc:
        if _is_click_usage_error(exc):  # bad flags or arguments, already worded by click
            if logs.json_mode() or _asks_for_json(argv):
                logs.use_format("json")
                ctx = getattr(exc, "ctx", None)
                where = ctx.command_path if ctx is not None else "txsend"
                _fail(ExitCode.USAGE, exc.format_message(), f"see: {where} --help")  # type: ignore[attr-defined]
            else:
                exc.show()  # type: ignore[attr-defined]
            return ExitCode.USAGE
        # anything else is a bug: say where, and where to report it
        frame = traceback.extract_tb(exc.__traceback__)[-1]
        message = (
            f"internal error: {type(exc).__name__}: {exc} "
            f"(at {Path(frame.filename).name}:{frame.lineno})"
        )
        hint = (
            "this is a bug: please report it as an issue in the txsend repository, with "
            "this output and the traceback that TXSEND_DEBUG=1 prints"
        )
        if logs.json_mode():
            extra = {"traceback": traceback.format_exc()} if os.environ.get("TXSEND_DEBUG") else {}
            _fail(ExitCode.SOFTWARE, message, hint, **extra)
            return ExitCode.SOFTWARE
        console = _err()
        console.print(f"txsend: {message}", markup=False)
        console.print(hint, markup=False)
        if os.environ.get("TXSEND_DEBUG"):
            traceback.print_exc()
        return ExitCode.SOFTWARE
    return result if isinstance(result, int) else ExitCode.OK


def _fail(code: int, message: str, hint: str | None = None, **fields: Any) -> None:
    """The error a command ends with: `txsend: error:` and `hint:` lines, or one JSON event."""
    if logs.json_mode():
        logs.output_event(
            _stderr_line, "error", "error", message, hint=hint, exit_code=int(code), **fields
        )
        return
    console = _err()
    console.print(f"txsend: error: {message}", markup=False)
    if hint:
        console.print(f"hint: {hint}", markup=False)


def _asks_for_json(argv: list[str]) -> bool:
    """`run|resume|worker ... --log-format json`, seen before click parsed the flags (for a
    usage error, which comes before the command could say so itself)."""
    if not argv or argv[0] not in ("run", "resume", "worker"):
        return False
    for i, arg in enumerate(argv):
        if arg == "--":
            break
        if arg == "--log-format=json" or (
            arg == "--log-format" and argv[i + 1 : i + 2] == ["json"]
        ):
            return True
    return False


def _is_click_usage_error(exc: Exception) -> bool:
    # Typer may vendor its own click; recognise its exceptions by shape, not by import.
    return hasattr(exc, "show") and hasattr(exc, "exit_code") and hasattr(exc, "format_message")


def main() -> None:
    """Console-script entry point."""
    sys.exit(run_cli(sys.argv[1:]))
