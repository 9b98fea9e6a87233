"""`txsend bounces` and `txsend suppress`: what came back after sending, and the shared
suppression store. Parse the flags, call `txsend.app.bounces` / `txsend.app.suppressions`,
print what they return."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from txsend.cli.console import stderr_console, stdout_console
from txsend.cli.options import JobArg, JournalOpt, JsonOpt, journal_overrides
from txsend.errors import UsageError

if TYPE_CHECKING:
    from txsend.app.bounces import BounceResult

PROVIDERS = ("ses", "postmark", "sendgrid", "mailgun")

MaildirOpt = Annotated[
    Path | None,
    typer.Option(metavar="DIR", help="Read a Maildir (new/ and cur/); handled mail moves to cur/."),
]
MboxOpt = Annotated[
    Path | None, typer.Option(metavar="FILE", help="Read an mbox file (read-only).")
]
ImapOpt = Annotated[
    str | None,
    typer.Option(
        metavar="URL",
        help="Read an IMAP folder: imaps://user@host[:port]/FOLDER (or imap://…?tls=starttls); "
        "handled mail is flagged \\Seen and $TxsendHandled.",
    ),
]
EventsOpt = Annotated[
    Path | None,
    typer.Option(
        metavar="FILE",
        help="Read provider events (JSON, an array or JSON lines): Amazon SES (or through "
        "SNS), Postmark, SendGrid, Mailgun webhooks.",
    ),
]
ProviderOpt = Annotated[
    str | None,
    typer.Option(
        metavar="NAME",
        help="The provider of --events: ses, postmark, sendgrid or mailgun (default: "
        "recognised per event).",
    ),
]
PasswordEnvOpt = Annotated[
    str | None, typer.Option(metavar="VAR", help="IMAP password from this environment variable.")
]
PasswordFileOpt = Annotated[
    Path | None, typer.Option(metavar="FILE", help="IMAP password from this file (mode 0600).")
]
PasswordCmdOpt = Annotated[
    str | None, typer.Option(metavar="CMD", help="IMAP password from this command's output.")
]
CaFileOpt = Annotated[
    Path | None, typer.Option(metavar="FILE", help="PEM CA bundle to verify the IMAP server.")
]
MoveToOpt = Annotated[
    str | None,
    typer.Option(
        metavar="FOLDER",
        help="Move handled mail to this IMAP folder (or this Maildir subfolder, e.g. .Done).",
    ),
]
DeleteOpt = Annotated[
    bool, typer.Option("--delete", help="Delete handled mail (IMAP: expunge) instead.")
]
TimeoutOpt = Annotated[
    float,
    typer.Option(
        min=1,
        metavar="SECONDS",
        help="IMAP: give up when one exchange with the server (a command and all of its "
        "answer) takes longer.",
    ),
]
StoreOpt = Annotated[
    str | None,
    typer.Option(
        metavar="PATH|URL",
        help="The store: a SQLite file or postgresql://… (default: "
        "$XDG_STATE_HOME/txsend/suppressions.db).",
    ),
]
StoreJobOpt = Annotated[
    Path | None,
    typer.Option(
        "--job", metavar="JOB", help="Use the store the job names (suppress: {store: …})."
    ),
]
AddressesArg = Annotated[
    list[str], typer.Argument(metavar="ADDRESS...", help="Addresses.", show_default=False)
]


def bounces(
    job: JobArg,
    maildir: MaildirOpt = None,
    mbox: MboxOpt = None,
    imap: ImapOpt = None,
    events: EventsOpt = None,
    provider: ProviderOpt = None,
    password_env: PasswordEnvOpt = None,
    password_file: PasswordFileOpt = None,
    password_cmd: PasswordCmdOpt = None,
    ca_file: CaFileOpt = None,
    move_to: MoveToOpt = None,
    delete: DeleteOpt = False,
    timeout: TimeoutOpt = 60.0,
    journal: JournalOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Read late bounces and complaints; mark rows bounced, feed the suppressions.

    Matches each report to a row by VERP token, ENVID, Message-ID, then final
    recipient. Reading the same mail twice counts it once. Exit 0 when every source
    was read (unmatched and unreadable reports are listed), 64 bad flags, 65 an input that
    is not a Maildir / mbox / JSON, 66 missing input, 69 IMAP unreachable or login
    refused, 78 configuration."""
    from txsend.app.bounces import BounceRequest, read_bounces

    if provider is not None and provider.lower() not in PROVIDERS:
        raise UsageError(f"--provider: expected one of {', '.join(PROVIDERS)}, got {provider!r}")
    if move_to is not None and delete:
        raise UsageError("pass --move-to or --delete, not both")
    sources = [password_env, password_file, password_cmd]
    if sum(s is not None for s in sources) > 1:
        raise UsageError("pass one of --password-env, --password-file, --password-cmd")

    def password() -> str:
        from txsend.job.credentials import read_secret  # a password command loads asyncio

        found = read_secret(
            f"--imap {imap}", env_var=password_env, file=password_file, cmd=password_cmd
        )
        return found if found is not None else ""

    result = read_bounces(
        BounceRequest(
            target=job,
            overrides=journal_overrides(journal),
            maildir=maildir,
            mbox=mbox,
            imap=imap,
            events=events,
            provider=provider.lower() if provider else None,
            password=password,
            ca_file=ca_file,
            move_to=move_to,
            delete=delete,
            timeout=timeout,
        )
    )
    if json_out:
        sys.stdout.write(json.dumps(result.to_json(), indent=2) + "\n")
        return
    _print_bounces(result)


def _print_bounces(result: BounceResult) -> None:
    console = stdout_console()

    def out(text: str) -> None:
        console.print(text, markup=False)

    out(
        f"{result.job}: {result.messages} read, {result.recorded} new reports, "
        f"{result.duplicates} already recorded"
    )
    if result.by_kind:
        out("  new: " + ", ".join(f"{n} {kind}" for kind, n in sorted(result.by_kind.items())))
    if result.matched_by:
        out(
            "  matched by: "
            + ", ".join(f"{key} {n}" for key, n in sorted(result.matched_by.items()))
        )
    out(
        f"  {result.late_bounced} rows accepted, then bounced; {result.accepted} unknown rows "
        f"proved accepted; {result.suppressed} addresses suppressed"
        + (f" (store {result.store})" if result.store else "")
    )
    for title, count, listed in (
        ("not matched to a row", result.unmatched_count, result.unmatched),
        ("not readable (left in place)", result.unreadable_count, result.unreadable),
    ):
        if count:
            out(f"  {count} {title}:")
            for source, reason in listed:
                out(f"    {source}: {reason}")
            if count > len(listed):
                out(f"    … and {count - len(listed)} more (--json lists the first ones too)")
    totals = result.totals
    if totals:
        out(
            f"  journal so far: {totals.get('late_bounced', 0)} accepted then bounced, "
            f"{totals.get('complaints', 0)} complaints, {totals.get('delayed', 0)} delays, "
            f"{totals.get('unmatched', 0)} unmatched"
        )


suppress_app = typer.Typer(
    name="suppress",
    help="The suppression store shared by jobs: addresses no job that names it sends to.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
)


def _ref(store: str | None, job: Path | None) -> Any:
    from txsend.app.suppressions import StoreRef

    return StoreRef(store=store, job=job)


@suppress_app.command("add")
def suppress_add(
    addresses: AddressesArg,
    reason: Annotated[str, typer.Option(help="Why (kept with each address).")] = "added by hand",
    store: StoreOpt = None,
    job: StoreJobOpt = None,
) -> None:
    """Suppress addresses (an address already there gets the new reason)."""
    from txsend.app import suppressions

    new, location = suppressions.add(_ref(store, job), addresses, reason)
    stderr_console().print(f"{new} new of {len(addresses)} in {location}", markup=False)


@suppress_app.command("remove")
def suppress_remove(
    addresses: AddressesArg, store: StoreOpt = None, job: StoreJobOpt = None
) -> None:
    """Stop suppressing addresses."""
    from txsend.app import suppressions

    removed, location = suppressions.remove(_ref(store, job), addresses)
    stderr_console().print(f"{removed} removed from {location}", markup=False)


@suppress_app.command("list")
def suppress_list(
    kind: Annotated[
        str | None, typer.Option(help="Only this kind: bounce, complaint, manual, import.")
    ] = None,
    store: StoreOpt = None,
    job: StoreJobOpt = None,
    json_out: Annotated[bool, typer.Option("--json", help="JSON lines on stdout.")] = False,
) -> None:
    """Every suppressed address with its kind, reason and date (CSV, or JSON lines)."""
    import csv
    import time

    from txsend.app import suppressions

    if kind is not None and kind not in suppressions.KINDS:
        raise UsageError(f"--kind: expected one of {', '.join(suppressions.KINDS)}")
    entries = suppressions.listing(_ref(store, job), kind)
    if json_out:
        for entry in entries:
            sys.stdout.write(json.dumps(entry) + "\n")
        return
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(["email", "kind", "reason", "since"])
    for entry in entries:
        since = time.strftime("%Y-%m-%d", time.gmtime(entry["created_at"]))
        writer.writerow([entry["address"], entry["kind"], entry["reason"], since])


@suppress_app.command("import")
def suppress_import(
    file: Annotated[
        Path,
        typer.Argument(
            metavar="FILE",
            help="A list: one address a line, or a CSV with an email/address column "
            "(as a provider's suppression export).",
            show_default=False,
        ),
    ],
    reason: Annotated[str | None, typer.Option(help="Why (default: imported from FILE).")] = None,
    store: StoreOpt = None,
    job: StoreJobOpt = None,
) -> None:
    """Import a suppression list into the store."""
    from txsend.app import suppressions

    read, new, location = suppressions.import_file(_ref(store, job), file, reason)
    stderr_console().print(f"{read} read, {new} new in {location}", markup=False)
