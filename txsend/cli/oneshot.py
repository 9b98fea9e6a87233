"""`txsend send`: one message from a pipeline, and how its outcome reads (a line per
recipient and a final line on stderr, or one JSON object on stdout with --json)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from txsend import logs
from txsend.app.requests import SendRequest
from txsend.cli.console import PlainLines, Printer, local_time, stderr_console, stderr_line
from txsend.cli.options import GraceOpt, JsonOpt, LogFormatOpt, LogLevelOpt, QuietOpt
from txsend.errors import ExitCode, UsageError
from txsend.models import State
from txsend.units import parse_duration, parse_size

if TYPE_CHECKING:
    from txsend.app.oneshot import SendOutcome

RelayOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--relay",
        metavar="URL",
        help="Relay URL smtp://[user@]host[:port][?tls=starttls|none] or smtps://...; "
        "repeatable. Default: $TXSEND_RELAY; a user's password from $TXSEND_RELAY_PASSWORD.",
    ),
]
ToOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--to",
        metavar="ADDRESS",
        help="Recipient, shown in To: (repeatable; 'Ann <a@x>, b@y' lists several).",
    ),
]
CcOpt = Annotated[
    list[str] | None,
    typer.Option("--cc", metavar="ADDRESS", help="Recipient, shown in Cc: (repeatable)."),
]
BccOpt = Annotated[
    list[str] | None,
    typer.Option("--bcc", metavar="ADDRESS", help="Recipient shown in no header (repeatable)."),
]
FromOpt = Annotated[
    str | None,
    typer.Option(
        "--from",
        metavar="ADDRESS",
        help="From address. With --stdin: the envelope sender (default: the message's From).",
    ),
]
ReplyToOpt = Annotated[
    str | None, typer.Option("--reply-to", metavar="ADDRESS", help="Reply-To address(es).")
]
SubjectOpt = Annotated[
    str | None, typer.Option("--subject", metavar="TEXT", help="Subject, sent as written.")
]
TextOpt = Annotated[
    Path | None,
    typer.Option(
        "--text", metavar="FILE|-", help="Text body (UTF-8, sent as written; '-' reads stdin)."
    ),
]
HtmlOpt = Annotated[
    Path | None,
    typer.Option(
        "--html",
        metavar="FILE|-",
        help="HTML body; a text part is made from it unless --text gives one.",
    ),
]
MarkdownOpt = Annotated[
    Path | None,
    typer.Option(
        "--markdown", metavar="FILE|-", help="Markdown body: sent as an HTML and a text part."
    ),
]
AttachOpt = Annotated[
    list[Path] | None,
    typer.Option("--attach", metavar="FILE", help="Attach a file (repeatable)."),
]
StdinOpt = Annotated[
    bool,
    typer.Option(
        "--stdin",
        help="Read a complete RFC 5322 message from stdin (sendmail -t): recipients from "
        "its To, Cc, Bcc (Resent-* if any) unless --to/--cc/--bcc name them.",
    ),
]
KeyOpt = Annotated[
    str | None,
    typer.Option(
        "--idempotency-key",
        metavar="KEY",
        help="Remember this send under KEY: the same command again reports the first "
        "outcome and sends nothing, or sends only what is still due.",
    ),
]
OnUnknownOpt = Annotated[
    str,
    typer.Option(
        "--on-unknown",
        metavar="resend|skip",
        help="A recipient whose earlier call died after DATA began: send again (it may "
        "arrive twice) or leave it unknown (exit 1).",
    ),
]
TimeoutOpt = Annotated[
    str | None,
    typer.Option(
        "--timeout",
        metavar="DURATION",
        help="Longest wait to connect, for each reply, and for the final reply "
        "(default 30s, 60s, 600s).",
    ),
]
GiveUpOpt = Annotated[
    str | None,
    typer.Option(
        "--give-up",
        metavar="DURATION",
        help="Give up when no relay has been reachable this long (default 2m): exit 69.",
    ),
]
RetryBackoffOpt = Annotated[
    str | None,
    typer.Option(
        "--retry-backoff",
        metavar="DURATION",
        help="Wait before trying a deferred recipient again (default 30s); retries due "
        "within a minute happen in this call, later ones in the next call with the key.",
    ),
]
MaxSizeOpt = Annotated[
    str,
    typer.Option("--max-size", metavar="SIZE", help="Refuse a larger message (exit 65)."),
]


def send(
    to: ToOpt = None,
    cc: CcOpt = None,
    bcc: BccOpt = None,
    from_addr: FromOpt = None,
    reply_to: ReplyToOpt = None,
    subject: SubjectOpt = None,
    text: TextOpt = None,
    html: HtmlOpt = None,
    markdown: MarkdownOpt = None,
    attach: AttachOpt = None,
    stdin: StdinOpt = False,
    relay: RelayOpt = None,
    idempotency_key: KeyOpt = None,
    on_unknown: OnUnknownOpt = "resend",
    timeout: TimeoutOpt = None,
    give_up: GiveUpOpt = None,
    retry_backoff: RetryBackoffOpt = None,
    max_size: MaxSizeOpt = "10MB",
    grace: GraceOpt = "10s",
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    log_format: LogFormatOpt = "text",
    log_level: LogLevelOpt = "warning",
) -> None:
    """Send one message from a pipeline; with --idempotency-key a re-run sends nothing twice.

    txsend send --to A --from F --subject S --text FILE|- [--attach FILE]...,
    or a complete message: ... | txsend send --stdin. Bodies and the subject are sent as
    written (not templates). The relay: --relay, else $TXSEND_RELAY (password from
    $TXSEND_RELAY_PASSWORD). Exit codes as run: 0 delivered, 1 some bounced or failed,
    69 no relay reachable, 75 deferred or in progress (run the same command again)."""
    logs.use_format(log_format)
    if log_format not in logs.FORMATS:
        raise UsageError(f"--log-format must be text or json, not {log_format!r}")
    if log_level.lower() not in logs.LEVELS:
        raise UsageError(f"--log-level must be one of {', '.join(logs.LEVELS)}")
    request = SendRequest(
        to=tuple(to or ()),
        cc=tuple(cc or ()),
        bcc=tuple(bcc or ()),
        from_addr=from_addr,
        reply_to=reply_to,
        subject=subject,
        text=text,
        html=html,
        markdown=markdown,
        attachments=tuple(attach or ()),
        ready=stdin,
        relays=tuple(relay or ()),
        idempotency_key=idempotency_key,
        on_unknown=on_unknown,
        timeout=_duration("--timeout", timeout),
        give_up=_duration("--give-up", give_up),
        retry_backoff=_duration("--retry-backoff", retry_backoff),
        max_size=_size(max_size),
        grace=_duration("--grace", grace) or 0.0,
    )
    from txsend.app import oneshot  # loaded when a send starts: --help never loads it

    console: Printer = stderr_console() if log_format == "text" and not quiet else PlainLines()
    if log_format == "json":
        undo = logs.configure("json", log_level, stderr_line)
    else:
        undo = logs.configure("text", log_level, lambda line: console.print(line, markup=False))
    try:
        outcome = oneshot.send(request, sys.stdin.buffer)
    finally:
        undo()
    if json_out:
        sys.stdout.write(json.dumps(outcome.to_json(), indent=2) + "\n")
    _show(outcome, console, quiet=quiet, as_json=log_format == "json")
    raise typer.Exit(outcome.exit_code)


def _duration(flag: str, value: str | None) -> float | None:
    if value is None:
        return None
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise UsageError(f"{flag}: {exc}") from None
    if seconds <= 0:
        raise UsageError(f"{flag} must be more than 0")
    return seconds


def _size(value: str) -> int:
    try:
        size = parse_size(value)
    except ValueError as exc:
        raise UsageError(f"--max-size: {exc}") from None
    if size <= 0:
        raise UsageError("--max-size must be more than 0")
    return size


def _show(outcome: SendOutcome, console: Printer, *, quiet: bool, as_json: bool) -> None:
    """A line per recipient (unless --quiet), what a replay or a resend means, the verdict."""
    lines: list[tuple[str, str, dict[str, Any]]] = []  # (level, event, line) ...
    if outcome.replayed:
        lines.append(("info", "replay", {"message": _replay_line(outcome)}))
    if outcome.resent_unknown:
        lines.append(("warning", "recovered", {"message": _unknown_line(outcome)}))
    if not quiet:
        for r in outcome.recipients:
            reply = f": {r['reply']}" if r["reply"] else ""
            text = f"{r['state']:<8} {r['address']} ({r['field']}){reply}"
            lines.append(("info", "recipient", {"message": text, **r}))
    final, next_step = final_line(outcome)
    if as_json:
        for level, name, fields in lines:
            message = fields.pop("message")
            logs.output_event(stderr_line, level, name, message, **fields)
        logs.output_event(
            stderr_line,
            "info" if outcome.exit_code == ExitCode.OK else "warning",
            "verdict",
            final,
            message_id=outcome.message_id,
            idempotency_key=outcome.key,
            replayed=outcome.replayed,
            exit_code=outcome.exit_code,
            next=next_step,
        )
        return
    for _, _, fields in lines:
        console.print(fields["message"], markup=False)
    console.print(final + (f"\n{next_step}" if next_step else ""), markup=False)


def _replay_line(outcome: SendOutcome) -> str:
    return (
        f"replay: idempotency key {outcome.key!r} already sent this message; "
        "nothing was sent now (its outcome follows)"
    )


def _unknown_line(outcome: SendOutcome) -> str:
    n = outcome.resent_unknown
    return (
        f"{n} recipient{'s' if n != 1 else ''} had no reply recorded after DATA began (an "
        "earlier call stopped or lost the connection): sent again (--on-unknown resend); "
        "the earlier copy may have arrived too"
    )


def final_line(outcome: SendOutcome) -> tuple[str, str | None]:
    """`message <id>: 2 sent, 1 bounced (exit 1); gave up: ...`, and what to do next."""
    parts = [f"{n} {state.value}" for state, n in outcome.counts.items() if n]
    line = (
        f"message {outcome.message_id}: {', '.join(parts) or 'no recipients'} "
        f"(exit {outcome.exit_code})"
    )
    if outcome.replayed:
        line += " [replayed]"
    if outcome.stop_reason:
        line += f"; {'gave up' if outcome.unreachable else 'stopped'}: {outcome.stop_reason}"
    unknown = outcome.counts.get(State.UNKNOWN, 0)
    if unknown:
        line += (
            f"\n{unknown} unknown: the message went out and no reply came, so it may have "
            "arrived; "
            + (
                "the next call with the key sends it again (--on-unknown resend)"
                if outcome.on_unknown == "resend"
                else "it is left as it is (--on-unknown skip)"
            )
        )
    code = outcome.exit_code
    if code in (ExitCode.TEMPFAIL, ExitCode.UNAVAILABLE, ExitCode.SIGINT, ExitCode.SIGTERM):
        when = (
            f" (next retry due {local_time(outcome.next_attempt_at)})"
            if outcome.next_attempt_at
            else ""
        )
        if outcome.key is not None:
            return line, (
                f"run the same command again to send what is left{when}; "
                "recipients already delivered are not sent to again"
            )
        return line, (
            "nothing remembers this send: running it again sends to every recipient; "
            "give --idempotency-key KEY to send only what is left"
        )
    if code == ExitCode.SOME_FAILED:
        return line, "see the replies above: those recipients were not delivered"
    return line, None
