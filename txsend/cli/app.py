"""The txsend command line: the one Typer app, its commands in --help order, and how an
invocation ends (an exit code, and every error as a message or a JSON line).

Commands parse flags, call txsend.app, and print; nothing else. They live by what they
do (send, inspection, tools) and register here, so the order of --help is this file's.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from txsend import __version__, logs
from txsend.cli import check, feedback, inspection, oneshot, send, tools
from txsend.cli.console import stderr_console, stderr_line
from txsend.errors import ExitCode, JobErrors, TxsendError


class _Interrupted(BaseException):
    """Ctrl-C inside a command that did not handle it itself (e.g. while the job loads)."""


class _Commands(TyperGroup):
    """Typer ends a command's KeyboardInterrupt as a silent exit 130: say it instead."""

    def invoke(self, ctx: Any) -> Any:  # click.Context (vendored by newer Typer)
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt as exc:
            raise _Interrupted from exc


app = typer.Typer(
    cls=_Commands,
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

# --help lists the commands in this order
COMMANDS: tuple[Callable[..., None], ...] = (
    send.run,
    send.resume,
    send.worker,
    oneshot.send,
    inspection.status,
    inspection.report,
    inspection.validate,
    inspection.preview,
    check.check,
    feedback.bounces,
    tools.init,
    tools.sink,
)
for _command in COMMANDS:
    app.command()(_command)
app.add_typer(feedback.suppress_app)

# the commands whose --log-format json turns even a usage error into a JSON line
_LOGGING_COMMANDS = ("run", "resume", "worker", "send")


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


def main() -> None:
    """Console-script entry point."""
    sys.exit(run_cli(sys.argv[1:]))


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
    except JobErrors as exc:  # several problems in a job file: each on its own
        for error in exc.errors:
            _fail(exc.exit_code, error.message, error.hint)
        return exc.exit_code
    except TxsendError as exc:
        _fail(exc.exit_code, exc.message, exc.hint)
        return exc.exit_code
    except (KeyboardInterrupt, _Interrupted):
        return _interrupted(argv)
    except Exception as exc:
        if _is_click_usage_error(exc):  # bad flags or arguments, already worded by click
            return _usage_error(exc, argv)
        return _internal_error(exc)
    return result if isinstance(result, int) else ExitCode.OK


def _interrupted(argv: list[str]) -> int:
    message = "interrupted"
    if argv and argv[0] in ("run", "resume", "worker"):  # a job's run: say how it goes on
        message += "; the journal is consistent: txsend resume JOB"
    elif argv and argv[0] == "send":
        message += "; with --idempotency-key, the same command again continues the send"
    if logs.json_mode():
        _fail(ExitCode.SIGINT, message)
    else:
        stderr_console().print(f"txsend: {message}", markup=False)
    return ExitCode.SIGINT


def _usage_error(exc: Exception, argv: list[str]) -> int:
    if logs.json_mode() or _asks_for_json(argv):
        logs.use_format("json")
        ctx = getattr(exc, "ctx", None)
        where = ctx.command_path if ctx is not None else "txsend"
        _fail(ExitCode.USAGE, exc.format_message(), f"see: {where} --help")  # type: ignore[attr-defined]
    else:
        exc.show()  # type: ignore[attr-defined]
    return ExitCode.USAGE


def _internal_error(exc: Exception) -> int:
    """Anything else is a bug: say where, and where to report it."""
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
    console = stderr_console()
    console.print(f"txsend: {message}", markup=False)
    console.print(hint, markup=False)
    if os.environ.get("TXSEND_DEBUG"):
        traceback.print_exc()
    return ExitCode.SOFTWARE


def _fail(code: int, message: str, hint: str | None = None, **fields: Any) -> None:
    """The error a command ends with: `txsend: error:` and `hint:` lines, or one JSON event."""
    if logs.json_mode():
        logs.output_event(
            stderr_line, "error", "error", message, hint=hint, exit_code=int(code), **fields
        )
        return
    console = stderr_console()
    console.print(f"txsend: error: {message}", markup=False)
    if hint:
        console.print(f"hint: {hint}", markup=False)


def _asks_for_json(argv: list[str]) -> bool:
    """`run|resume|worker ... --log-format json`, seen before click parsed the flags (for a
    usage error, which comes before the command could say so itself)."""
    if not argv or argv[0] not in _LOGGING_COMMANDS:
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
