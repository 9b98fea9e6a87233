"""The shared options: each written once in a flag group, offered alike by every command
that takes the group, and turned into the app's JobOverrides and RunRequest from the group."""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path
from typing import Any

import click
import pytest
import typer

from txsend.cli.app import app
from txsend.cli.options import MessageFlags, SendFlags, journal_overrides, takes
from txsend.errors import UsageError
from txsend.reporting.outputs import OutputOptions

COMMAND: click.Group = typer.main.get_command(app)  # type: ignore[assignment]
SEND_OPTIONS = [field.name for field in dataclasses.fields(SendFlags)]


def params(command: str) -> dict[str, click.Parameter]:
    return {p.name: p for p in COMMAND.commands[command].params if p.name}


def test_help_lists_the_commands_in_their_order() -> None:
    assert list(COMMAND.commands) == [
        "run",
        "resume",
        "worker",
        "send",
        "status",
        "report",
        "validate",
        "preview",
        "check",
        "bounces",
        "init",
        "sink",
        "suppress",
    ]


def test_send_flags_hold_the_options_of_the_sending_commands() -> None:
    assert SEND_OPTIONS == [
        "relay",
        "journal",
        "limit",
        "concurrency",
        "force",
        "dry_run",
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
    ]


@pytest.mark.parametrize("command", ["run", "resume", "worker"])
def test_every_sending_command_offers_a_shared_option_the_same_way(command: str) -> None:
    reference = params("resume")
    offered = params(command)
    for name in SEND_OPTIONS:
        if name not in offered or (command == "worker" and name == "journal"):
            continue
        mine, theirs = offered[name], reference[name]
        assert (mine.opts, mine.default, mine.metavar) == (
            theirs.opts,
            theirs.default,
            theirs.metavar,
        )
        assert getattr(mine, "help", None) == getattr(theirs, "help", None)


def test_each_command_shows_its_options_in_the_order_it_always_had() -> None:
    assert list(params("run")) == [
        "job",
        "from_addr",
        "subject",
        "text",
        "html",
        "relay",
        "journal",
        "dry_run",
        "limit",
        "concurrency",
        "force",
        *SEND_OPTIONS[6:],
        "test_to",  # a test send: run only, after the shared options
        "rows",
    ]
    assert list(params("resume")) == ["job", *SEND_OPTIONS]
    assert list(params("worker")) == [
        "journal",
        "job_name",
        "relay",
        "concurrency",
        *SEND_OPTIONS[6:],
    ]
    assert list(params("validate")) == ["job", "from_addr", "subject", "text", "html", "json_out"]
    assert list(params("preview")) == [
        "job",
        "row",
        "key",
        "part",
        "from_addr",
        "subject",
        "text",
        "html",
    ]


def test_a_worker_journal_is_its_own_required_url_option() -> None:
    journal = params("worker")["journal"]
    assert journal.required
    assert journal.metavar == "URL"


def test_overrides_carry_the_message_relays_journal_and_error_rate() -> None:
    flags = SendFlags(relay=["smtp://a", "smtp://b"], journal="j.db", abort_on_error_rate=0.2)
    overrides = flags.overrides(MessageFlags(from_addr="a@example.com", subject="Hi"))
    assert overrides.from_addr == "a@example.com"
    assert overrides.subject == "Hi"
    assert overrides.relays == ("smtp://a", "smtp://b")
    assert overrides.journal is not None
    assert overrides.journal.path is not None
    assert overrides.journal.path.name == "j.db"
    assert overrides.abort_on_error_rate == 0.2


def test_a_postgresql_journal_is_a_url_and_no_journal_is_none() -> None:
    shared = SendFlags(journal=" postgresql://u@db/mail ").overrides().journal
    assert shared is not None
    assert shared.url == "postgresql://u@db/mail"
    assert SendFlags().overrides().journal is None
    assert journal_overrides(None).journal is None
    assert MessageFlags().overrides().relays == ()


def test_request_takes_every_send_flag() -> None:
    flags = SendFlags(
        limit=5,
        concurrency=3,
        force=True,
        dry_run=True,
        report=Path("r.json"),
        metrics_port=9100,
        grace="2s",
        lease="1m",
    )
    overrides = flags.overrides()
    request = flags.request(Path("job.yaml"), overrides, resume=True)
    assert request.target == Path("job.yaml")
    assert request.overrides is overrides
    assert (request.resume, request.worker, request.force, request.dry_run) == (
        True,
        False,
        True,
        True,
    )
    assert (request.limit, request.concurrency, request.grace, request.lease) == (5, 3, 2.0, 60.0)
    assert request.outputs == OutputOptions(Path("r.json"), None, None, 9100)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (SendFlags(grace="soon"), "--grace: "),
        (SendFlags(lease="later"), "--lease: "),
        (SendFlags(grace="soon", lease="later"), "--grace: "),  # in the order of --help
        (SendFlags(lease="1s"), "--lease must be at least 2s"),
    ],
)
def test_request_refuses_bad_durations(flags: SendFlags, message: str) -> None:
    with pytest.raises(UsageError) as caught:
        flags.request(Path("job.yaml"), flags.overrides())
    assert caught.value.message.startswith(message)


def test_takes_puts_the_group_where_its_parameter_stood() -> None:
    seen: list[Any] = []

    @takes("message", MessageFlags, ("subject", "from_addr"))
    def command(job: Path, message: MessageFlags, loud: bool = False) -> None:
        seen.append((job, message, loud))

    assert list(inspect.signature(command).parameters) == ["job", "subject", "from_addr", "loud"]
    assert command.__doc__ is None
    assert command.__name__ == "command"
    command(job=Path("j"), subject="S", from_addr="f@example.com", loud=True)
    assert seen == [(Path("j"), MessageFlags(from_addr="f@example.com", subject="S"), True)]


def test_takes_refuses_what_the_group_or_the_command_lacks() -> None:
    with pytest.raises(TypeError, match="no options"):
        takes("message", MessageFlags, ("subject", "colour"))
    with pytest.raises(TypeError, match="no parameter"):

        @takes("message", MessageFlags)
        def command(job: Path) -> None:
            del job
