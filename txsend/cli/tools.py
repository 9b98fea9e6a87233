"""The helper commands around a job: init (a sample job to start from) and sink (a capture
SMTP server to send it to)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from txsend.app import scaffold
from txsend.cli.console import stderr_console

HostOpt = Annotated[str, typer.Option(help="Address to listen on.")]
PortOpt = Annotated[int, typer.Option(min=0, max=65535, help="Port (0: any free port).")]
MaildirOpt = Annotated[Path | None, typer.Option(help="Write every message into this Maildir.")]
DiscardOpt = Annotated[bool, typer.Option("--discard", help="Count messages only.")]
PortFileOpt = Annotated[Path | None, typer.Option(help="Write the listening port here once ready.")]
FailOpt = Annotated[
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
]
SeedOpt = Annotated[
    int | None,
    typer.Option(metavar="N", help="Seed for the probability of --fail rules (repeatable runs)."),
]
DisconnectAfterOpt = Annotated[
    int | None,
    typer.Option(
        min=1,
        metavar="N",
        help="Drop the connection without a reply right after the final dot of the Nth "
        "message (counted across connections; once); that message is not stored.",
    ),
]
DelayOpt = Annotated[
    str | None,
    typer.Option(
        metavar="DURATION",
        help="Wait this long (50ms, 1s, 0.2) before each reply to a message's final dot.",
    ),
]
DelayCommandOpt = Annotated[
    str | None,
    typer.Option(
        metavar="DURATION",
        help="Wait this long before every other reply (greeting, EHLO, MAIL, RCPT, ...).",
    ),
]
GreylistOpt = Annotated[
    str | None,
    typer.Option(
        metavar="SECONDS",
        help="Greylist: the first RCPT of each (sender, recipient) pair gets 450 4.2.0; "
        "a retry SECONDS later passes (0: any retry).",
    ),
]


def init(
    directory: Annotated[Path, typer.Argument(help="Folder to create the sample job in.")],
) -> None:
    """Write a working sample job into DIRECTORY (refuses to overwrite)."""
    written = scaffold.write_sample(directory)
    console = stderr_console()
    for path in written:
        console.print(f"wrote {path}")
    console.print(
        f"try it: txsend sink --port 2525 & txsend run {directory / 'job.yaml'} "
        "--relay smtp://127.0.0.1:2525"
    )


def sink(
    host: HostOpt = "127.0.0.1",
    port: PortOpt = 2525,
    maildir: MaildirOpt = None,
    discard: DiscardOpt = False,
    port_file: PortFileOpt = None,
    fail: FailOpt = None,
    seed: SeedOpt = None,
    disconnect_after: DisconnectAfterOpt = None,
    delay: DelayOpt = None,
    delay_command: DelayCommandOpt = None,
    greylist: GreylistOpt = None,
) -> None:
    """A capture SMTP server for demos and tests; prints what it received on exit."""
    # Lazy: the sink's aiosmtpd stays out of every other command's start-up.
    from txsend.sink.capture import format_stats
    from txsend.sink.faults import Faults
    from txsend.sink.server import serve

    faults = Faults.from_options(  # checked before anything is bound
        fail or (),
        seed=seed,
        disconnect_after=disconnect_after,
        delay=delay,
        delay_command=delay_command,
        greylist=greylist,
    )
    console = stderr_console()
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
