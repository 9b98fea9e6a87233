"""`txsend check`: probe relays as swaks or msmtp would, without sending. Parse the flags,
call `txsend.app.probe`, print each relay's phases (text on stdout, or one JSON object
with --json) and end with the exit code of the phase that failed."""

from __future__ import annotations

import json
import sys
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from txsend.cli.console import stdout_console
from txsend.errors import UsageError
from txsend.units import parse_duration

if TYPE_CHECKING:
    from rich.console import Console

    from txsend.app.probe import CheckedRelay

RelayUrlArg = Annotated[
    str | None,
    typer.Argument(
        metavar="[RELAY_URL]",
        help="smtp://[user@]host[:port][?tls=starttls|none] or smtps://[user@]host[:465] "
        "(password from $TXSEND_RELAY_PASSWORD). Default: the --job's relays, else "
        "$TXSEND_RELAY.",
        show_default=False,
    ),
]
CheckJobOpt = Annotated[
    Path | None,
    typer.Option(
        "--job",
        metavar="JOB",
        help="Check every relay of this job in order, each with its own password, ca_file "
        "and the job's timeouts (with RELAY_URL: that relay of the job, or the URL "
        "with the job's timeouts).",
    ),
]
RcptOpt = Annotated[
    str | None,
    typer.Option(
        "--rcpt",
        metavar="ADDRESS",
        help="Also try MAIL FROM and RCPT TO this address, then RSET: nothing is sent.",
    ),
]
CheckFromOpt = Annotated[
    str | None,
    typer.Option(
        "--from",
        metavar="ADDRESS",
        help="MAIL FROM for --rcpt (default: the job's return_path or From, else the "
        "null sender <>).",
    ),
]
CheckJsonOpt = Annotated[
    bool, typer.Option("--json", help="Print the probe as one JSON object on stdout.")
]
CheckTimeoutOpt = Annotated[
    str | None,
    typer.Option(
        "--timeout",
        metavar="DURATION",
        help="Limit of each phase, e.g. 10s (default: the job's timeouts.connect for "
        "connect and greeting, timeouts.command for the rest; 30s without a job).",
    ),
]


def check(
    relay_url: RelayUrlArg = None,
    job: CheckJobOpt = None,
    rcpt: RcptOpt = None,
    mail_from: CheckFromOpt = None,
    json_out: CheckJsonOpt = False,
    timeout: CheckTimeoutOpt = None,
) -> None:
    """Probe relays (greeting, EHLO, TLS, AUTH, RCPT); nothing is sent.

    Each phase in turn: connect, greeting, EHLO and what it offers, STARTTLS or implicit
    TLS (protocol, cipher, the certificate and whether it verifies), EHLO again, AUTH
    when the relay has a user, and with --rcpt MAIL FROM and RCPT TO, then RSET and
    QUIT: never DATA.

    Exit codes: 0 every phase passed, 20 connect, 21 greeting, 22 EHLO, 29 TLS
    (STARTTLS missing or refused, handshake, certificate not verified), 28 AUTH, 23 MAIL,
    24 RCPT (with several relays, the first failing relay's), 64 usage, 65 bad job,
    66 missing job file, 78 configuration (bad relay URL, missing password, ca_file).
    """
    from txsend.app import probe  # loaded when the command runs, not for --help

    limit = None
    if timeout is not None:
        try:
            limit = parse_duration(timeout)
        except ValueError as exc:
            raise UsageError(f"--timeout: {exc}") from None
    request = probe.CheckRequest(
        relay_url=relay_url, job=job, rcpt=rcpt, mail_from=mail_from, timeout=limit
    )
    if json_out:
        result = probe.check(request)
        sys.stdout.write(json.dumps(result.to_json(), indent=2) + "\n")
        raise typer.Exit(result.exit_code)
    console = stdout_console()
    shown: list[CheckedRelay] = []

    def show(checked: CheckedRelay) -> None:
        if shown:
            console.print()
        shown.append(checked)
        print_relay(console, checked)

    result = probe.check(request, on_relay=show)
    if len(result.relays) > 1:
        failing = next((r for r in result.relays if r.exit_code), None)
        console.print()
        if failing is None:
            console.print(f"all {len(result.relays)} relays passed every phase (exit 0)")
        else:
            console.print(
                f"exit {int(result.exit_code)}: the first failing relay, {failing.probe.relay.url}",
                markup=False,
            )
    raise typer.Exit(result.exit_code)


def print_relay(console: Console, checked: CheckedRelay) -> None:
    """One relay's phases, a line each (and what each found, indented), then its verdict."""
    from rich.text import Text

    relay = checked.probe.relay
    user = f" as {relay.username}" if relay.username else ""
    console.print(Text(f"{relay.url} ({relay.name}, tls={relay.tls}{user})", style="bold"))
    width = max(len(str(p.name)) for p in checked.probe.phases) if checked.probe.phases else 0
    for phase in checked.probe.phases:
        line = Text("  ")
        line.append("ok  " if phase.ok else "FAIL", style="green" if phase.ok else "bold red")
        line.append(f"  {phase.name!s:<{width}}  {phase.seconds:7.3f} s  ")
        first, *rest = _headline(phase.code, phase.text).splitlines() or [""]
        line.append(first)
        console.print(line)
        indent = " " * (2 + 4 + 2 + width + 2 + 9 + 2)
        for extra in rest + _found(phase.name, phase.details):
            console.print(Text(indent + extra))
    failed = checked.probe.failed
    if failed is None:
        console.print(Text("  every phase passed (exit 0)", style="green"))
    else:
        console.print(
            Text(
                f"  {str(failed.name).upper()} failed (exit {int(checked.exit_code)})",
                style="bold red",
            )
        )


def _headline(code: int | None, text: str) -> str:
    return f"{code} {text}" if code is not None else text


def _found(name: str, details: dict[str, Any]) -> list[str]:
    """What a phase found, as indented lines."""
    lines: list[str] = []
    if name in ("ehlo", "ehlo_after_tls") and "extensions" in details:
        lines.append("offers: " + (_offers(details) or "nothing beyond plain SMTP"))
        if details.get("note"):
            lines.append(str(details["note"]))
    elif name == "tls":
        lines += _tls(details)
    elif name == "auth" and details.get("offered") is not None:
        lines.append("mechanisms offered: " + (" ".join(details["offered"]) or "none"))
    elif name == "connect" and len(details.get("tried", [])) > 1:
        lines.append("tried: " + "; ".join(details["tried"]))
    elif name == "greeting" and details.get("timed_with") == "tls":
        lines.append("(read with the TLS handshake: its time is the TLS phase's)")
    elif name == "quit" and details.get("rset"):
        lines.append(f"RSET: {details['rset']}")
    for key in ("from", "to"):
        if key in details:
            lines.append(f"{key}: {details[key]}")
    return lines


def _offers(details: dict[str, Any]) -> str:
    parts = []
    for keyword, params in details["extensions"].items():
        if keyword == "SIZE" and details.get("size") is not None:
            parts.append(f"SIZE {details['size']} ({_size(details['size'])})")
        else:
            parts.append(f"{keyword} {params}".strip())
    return ", ".join(parts)


def _size(size: int) -> str:
    if size == 0:
        return "no limit"
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} bytes"


def _tls(details: dict[str, Any]) -> list[str]:
    lines = []
    if "trust" in details:
        lines.append(f"checked against {details['trust']}, for the name {details['server_name']}")
    error = details.get("verify_error")
    if error and error["kind"] in _PROBLEMS:
        lines.append(f"problem: {_PROBLEMS[error['kind']]} ({error['kind']})")
    if details.get("certificates_from"):
        lines.append(f"certificate from {details['certificates_from']}:")
    if details.get("certificates_error"):
        lines.append(str(details["certificates_error"]))
    for number, cert in enumerate(details.get("certificates", []), 1):
        role = "the relay's" if number == 1 else "intermediate"
        if "error" in cert:
            lines.append(f"certificate {number} ({role}): {cert['error']}")
            continue
        names = [f"DNS:{n}" for n in cert["dns_names"]] + [f"IP:{a}" for a in cert["ip_addresses"]]
        lines += [
            f"certificate {number} ({role}): {cert['subject']}",
            f"  issuer: {cert['issuer']}",
            f"  names: {', '.join(names) or 'none (no subjectAltName)'}",
            f"  valid: {_date(cert['not_before'])} to {_date(cert['not_after'])} "
            f"({_days(cert['days_left'], cert['expired'])})",
        ]
    if details.get("chain_note"):
        lines.append(f"chain: {details['chain_note']}")
    return lines


_PROBLEMS = {
    "wrong_host_name": "the certificate is for another name",
    "expired": "the certificate has expired",
    "not_yet_valid": "the certificate is not valid yet",
    "unknown_ca": "no CA this host trusts issued it",
}


def _date(iso: str) -> str:
    return datetime.fromisoformat(iso).strftime("%Y-%m-%d %H:%M UTC")


def _days(days: int, expired: bool) -> str:
    if expired:
        return (
            "EXPIRED today" if days == 0 else f"EXPIRED {-days} day{'s' if days != -1 else ''} ago"
        )
    return f"{days} day{'s' if days != 1 else ''} left"
