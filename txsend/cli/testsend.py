"""`txsend run JOB --test-to ADDRESS [--rows N]`: the flags of a test send, and how one
is shown (the rows it sent to whom, the summary, the test journal to look at)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import typer

from txsend import logs
from txsend.app import requests
from txsend.cli.console import Printer, stderr_line
from txsend.cli.options import SendFlags
from txsend.cli.verdict import final_and_next, log_summary, print_summary
from txsend.errors import ExitCode, UsageError

if TYPE_CHECKING:
    from rich.console import Console

    from txsend.app.testsend import TestSendResult
    from txsend.reporting.stats import RunStats

# `txsend.cli.send.shown_run`, as a test send calls it
ShownRun = Callable[
    [
        SendFlags,
        Callable[
            [Callable[[requests.Prepared], None], Callable[["RunStats"], None] | None],
            "TestSendResult",
        ],
    ],
    tuple["TestSendResult", Printer, "Console | None"],
]

_RESENDABLE = (ExitCode.TEMPFAIL, ExitCode.UNAVAILABLE, ExitCode.SIGINT, ExitCode.SIGTERM)


def test_flags(test_to: list[str] | None, rows: int | None) -> requests.TestSend | None:
    """--test-to and --rows as the app takes them; None for a run that is no test."""
    if not test_to:
        if rows is not None:
            raise UsageError(
                "--rows goes with --test-to", hint="e.g. txsend run JOB --test-to ADDRESS --rows 3"
            )
        return None
    if rows is not None and rows < 1:
        raise UsageError(f"--rows must be at least 1, got {rows}")
    # the address rules (idna among them) load for a test send only, not for run --help
    from txsend.addresses import comparable_address, envelope_address

    addresses: list[str] = []
    for value in test_to:
        try:
            address = envelope_address(value.strip())
        except ValueError as exc:
            raise UsageError(
                f"--test-to {value!r}: {exc}", hint="a bare address, e.g. reviewer@example.com"
            ) from None
        if comparable_address(address) not in map(comparable_address, addresses):
            addresses.append(address)  # one reviewer, however often (in whatever case) given
    return requests.TestSend(tuple(addresses), rows or requests.DEFAULT_TEST_ROWS)


def test_send(
    request: requests.RunRequest,
    test: requests.TestSend,
    flags: SendFlags,
    shown_run: ShownRun,
) -> None:
    """Run a test send as the flags say; exit with its code, as `txsend run` would.

    `shown_run` is `txsend.cli.send.shown_run`: the logs, lines and bar of any run."""
    from txsend.app import testsend  # loaded when a test starts: --help never loads it

    result, console, rich = shown_run(
        flags,
        lambda on_prepared, on_tick: testsend.run(
            request, test, on_prepared=on_prepared, on_tick=on_tick
        ),
    )
    summary = result.summary
    about = _about(result, test)
    if flags.json_out:
        sys.stdout.write(json.dumps({**summary.to_json(), "test_send": about}, indent=2) + "\n")
    final, next_command = _final(result, request, test)
    if flags.log_format == "json":
        if not flags.quiet:
            logs.output_event(stderr_line, "info", "test_send", _sent_line(test), **about)
        log_summary(summary, final, next_command, flags.quiet)
        raise typer.Exit(summary.exit_code)
    if not flags.quiet:
        console.print(_sent_line(test), markup=False)
        for row in result.rows:
            console.print(f"  row {row.number} ({row.key}) for {row.address}", markup=False)
    for warning in summary.warnings:
        console.print(f"warning: {warning}", markup=False)
    if rich is not None:
        print_summary(rich, summary)
    console.print(final, markup=False)
    raise typer.Exit(summary.exit_code)


def _sent_line(test: requests.TestSend) -> str:
    return f"test send to {', '.join(test.to)}: the messages of these rows"


def _about(result: TestSendResult, test: requests.TestSend) -> dict[str, Any]:
    """The `test_send` member of the JSON summary."""
    return {
        "to": list(test.to),
        "journal": str(result.journal),
        "rows": [
            {"row": row.number, "key": row.key, "intended_to": row.address} for row in result.rows
        ],
        "problems": list(result.problems),
    }


def _final(
    result: TestSendResult, request: requests.RunRequest, test: requests.TestSend
) -> tuple[str, str | None]:
    """The outcome line, where the test journal is, and what to run next (if anything)."""
    journal = result.journal
    outcome = final_and_next(result.summary, journal, "run")[0].split("\n", 1)[0]
    line = f"test send: {outcome}\ntest journal: {journal}"
    code = result.summary.exit_code
    if code in _RESENDABLE:
        flags = " ".join(f"--test-to {address}" for address in test.to)
        again = f"txsend run {request.target} {flags}"
        return line + f"\nsend the test again with: {again}", again
    if code == ExitCode.SOME_FAILED:
        status = f"txsend status {journal}"
        return line + f"\nsee the failed rows with: {status}", status
    return line, None
