"""`txsend --version` and `txsend --help` are answered before Typer loads, with the same
text Typer prints."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from txsend import __version__
from txsend.cli import quick
from txsend.cli.help_text import HELP


def _txsend(*args: str, columns: int | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    if columns is not None:
        env["COLUMNS"] = str(columns)
    return subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "txsend", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def _loaded_modules(importtime: str) -> set[str]:
    return {line.rsplit("|", 1)[-1].strip() for line in importtime.splitlines() if "|" in line}


def test_the_stored_help_is_what_typer_prints() -> None:
    assert quick.typer_help() == HELP, (
        "the top-level help changed: run `python -m txsend.cli.quick --regenerate`"
    )


def test_version_loads_no_typer() -> None:
    done = _txsend("--version")
    assert (done.returncode, done.stdout) == (0, f"txsend {__version__}\n")
    loaded = _loaded_modules(done.stderr)
    assert "txsend.cli.quick" in loaded
    assert not {"typer", "rich", "txsend.cli.app"} & loaded


@pytest.mark.parametrize("columns", [None, 80, 200])
def test_help_is_the_stored_text_without_typer(columns: int | None) -> None:
    done = _txsend("--help", columns=columns)
    assert (done.returncode, done.stdout) == (0, HELP)
    assert "typer" not in _loaded_modules(done.stderr)


def test_a_narrow_terminal_gets_typers_own_wrapping() -> None:
    done = _txsend("--help", columns=60)
    assert done.returncode == 0
    assert "typer" in _loaded_modules(done.stderr)
    assert max(len(line) for line in done.stdout.splitlines()) <= 60
    assert done.stdout != HELP
    # the same description, wrapped narrower
    assert done.stdout.split("Options:")[0].split() == HELP.split("Options:")[0].split()


@pytest.mark.parametrize("args", [["--version", "run"], ["run", "--help"], []])
def test_anything_else_goes_to_typer(args: list[str]) -> None:
    done = _txsend(*args)
    assert "typer" in _loaded_modules(done.stderr)


def test_run_help_loads_no_job_reader_template_engine_or_smtp_client() -> None:
    # `run --help` is what a CI pipeline and a shell's completion call most: it must not
    # pay for what only a run needs (a Job's annotations once pulled in the YAML reader)
    done = _txsend("run", "--help")
    assert done.returncode == 0 and "Usage" in done.stdout
    heavy = {
        "yaml",
        "jinja2",
        "aiosmtplib",
        "dns",
        "psycopg",
        "sqlite3",
        "txsend.job.loading",
        "txsend.job.domains",
        "txsend.job.warmup",
        "txsend.delivery.engine",
    }
    assert not heavy & _loaded_modules(done.stderr)
