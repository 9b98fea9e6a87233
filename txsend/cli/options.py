"""The options the commands share, each written once, and the flag groups made of them.

A flag group is a frozen dataclass whose fields are options: `MessageFlags` (what the
message says) and `SendFlags` (how a run sends). `takes` puts a group's options into a
command's signature, where Typer finds them, and hands the command one instance of the
group; what the flags mean to the app (its JobOverrides, its RunRequest) is derived from
the group here, so that no command passes options one by one.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, get_type_hints

import typer

from txsend.app import requests
from txsend.errors import UsageError
from txsend.job.location import JournalLocation
from txsend.job.spec import JobOverrides
from txsend.reporting.outputs import OutputOptions
from txsend.units import parse_duration

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
        "repeatable; replaces the job's relays (a URL naming one of them, same scheme, "
        "user, host and port, keeps its settings: rate, connections, password). "
        "Default: the job's, else $TXSEND_RELAY.",
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

TestToOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--test-to",
        metavar="ADDRESS",
        help="Send a test instead of the job: the job's first --rows rows, each rendered "
        "as its recipient would get it, to ADDRESS only (RCPT and To), the Subject marked "
        "[TEST], the intended recipient in X-Txsend-Intended-To. A journal of its own "
        "(<job>.tests/ beside the job); the job's journal is not touched. Repeatable.",
    ),
]
RowsOpt = Annotated[
    int | None,
    typer.Option(
        "--rows",
        metavar="N",
        help=f"With --test-to: how many of the job's rows that render to send to each "
        f"address (default {requests.DEFAULT_TEST_ROWS}).",
    ),
]


def journal_location(value: str | None) -> JournalLocation | None:
    """--journal as given: a file or a postgresql:// URL; None when the flag is absent."""
    return JournalLocation.parse(value) if value is not None else None


def journal_overrides(journal: str | None) -> JobOverrides:
    """The overrides of a command whose only say about the job is --journal."""
    return JobOverrides(journal=journal_location(journal))


@dataclass(frozen=True)
class MessageFlags:
    """--from, --subject, --text, --html: the message, where the job leaves it open."""

    from_addr: FromOpt = None
    subject: SubjectOpt = None
    text: TextOpt = None
    html: HtmlOpt = None

    def overrides(self) -> JobOverrides:
        """The job's message as these flags fill in or override it."""
        return JobOverrides(
            from_addr=self.from_addr, subject=self.subject, text=self.text, html=self.html
        )


@dataclass(frozen=True)
class SendFlags:
    """The options of the commands that send (run, resume, worker), in `resume`'s order.

    A command that does not offer an option runs with its default here: a worker never
    forces, dry-runs or stops at a limit."""

    relay: RelayOpt = None
    journal: JournalOpt = None
    limit: LimitOpt = None
    concurrency: ConcurrencyOpt = None
    force: ForceOpt = False
    dry_run: DryRunOpt = False
    abort_on_error_rate: AbortOpt = None
    json_out: JsonOpt = False
    quiet: QuietOpt = False
    report: ReportOpt = None
    report_html: ReportHtmlOpt = None
    metrics_file: MetricsFileOpt = None
    metrics_port: MetricsPortOpt = None
    log_format: LogFormatOpt = "text"
    log_level: LogLevelOpt = "warning"
    grace: GraceOpt = "10s"
    lease: LeaseOpt = "30s"

    def overrides(self, message: MessageFlags | None = None) -> JobOverrides:
        """The job as these flags (and the message flags, where a command has them) change it."""
        return dataclasses.replace(
            message.overrides() if message is not None else JobOverrides(),
            relays=tuple(self.relay or ()),
            journal=journal_location(self.journal),
            abort_on_error_rate=self.abort_on_error_rate,
        )

    def lease_seconds(self) -> float:
        """--lease, checked: at least 2 seconds."""
        lease = _duration("--lease", self.lease)
        if lease < 2:
            raise UsageError("--lease must be at least 2s")
        return lease

    def request(
        self,
        target: Path,
        overrides: JobOverrides,
        *,
        resume: bool = False,
        worker: bool = False,
    ) -> requests.RunRequest:
        """What the app is asked to do; --grace and --lease are checked here."""
        grace = _duration("--grace", self.grace)
        lease = self.lease_seconds()
        return requests.RunRequest(
            target=target,
            overrides=overrides,
            resume=resume,
            force=self.force,
            dry_run=self.dry_run,
            limit=self.limit,
            concurrency=self.concurrency,
            grace=grace,
            outputs=OutputOptions(
                self.report, self.report_html, self.metrics_file, self.metrics_port
            ),
            lease=lease,
            worker=worker,
        )


def _duration(flag: str, value: str) -> float:
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise UsageError(f"{flag}: {exc}") from None


def takes(
    param: str, group: type[Any], offered: Sequence[str] | None = None
) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """A decorator: the command's parameter `param` (a flag group) becomes the group's
    options, in its signature where `param` stood, and the command gets one `group` made
    of them.

    `offered` names the options the command shows, in its --help order (default: all, in
    the group's order); the others keep the group's defaults (every option has one).
    """
    fields = {field.name: field for field in dataclasses.fields(group)}
    names = tuple(offered) if offered is not None else tuple(fields)
    if unknown := sorted(set(names) - set(fields)):
        raise TypeError(f"{group.__name__} has no options {unknown}")
    hints = get_type_hints(group, include_extras=True)

    def decorate(command: Callable[..., None]) -> Callable[..., None]:
        signature = inspect.signature(command, eval_str=True)
        if param not in signature.parameters:
            raise TypeError(f"{command.__name__} has no parameter {param!r} for {group.__name__}")
        kind = signature.parameters[param].kind
        options = [
            inspect.Parameter(name, kind, default=fields[name].default, annotation=hints[name])
            for name in names
        ]
        parameters = [
            option
            for old in signature.parameters.values()
            for option in (options if old.name == param else [old])
        ]

        @functools.wraps(command)
        def with_group(**values: Any) -> None:
            picked = {name: values.pop(name) for name in names}
            command(**values, **{param: group(**picked)})

        # Typer reads a command's options from its signature and annotations
        with_group.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
        with_group.__annotations__ = {p.name: p.annotation for p in parameters}
        return with_group

    return decorate
