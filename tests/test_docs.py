"""Every command and flag a user can type is documented in the README."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer

from txsend.cli.app import app

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
COMMAND = typer.main.get_command(app)
COMMANDS = sorted(COMMAND.commands)  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", COMMANDS)
def test_command_is_documented(name: str) -> None:
    assert f"`txsend {name}" in README


@pytest.mark.parametrize(
    ("command", "flag"),
    [
        (name, opt)
        for name in COMMANDS
        for param in COMMAND.commands[name].params  # type: ignore[attr-defined]
        for opt in param.opts
        if opt.startswith("--") and opt != "--help"
    ],
)
def test_flag_is_documented(command: str, flag: str) -> None:
    assert flag in README, f"txsend {command} {flag} is not in README.md"


def test_exit_codes_are_documented() -> None:
    for code in ("64", "65", "66", "69", "70", "75", "78", "130 / 143"):
        assert f"| {code} |" in README


def test_classification_table_is_documented() -> None:
    from txsend.delivery.classify import RULES

    for number, rule in enumerate(RULES, 1):
        condition, outcome = rule.describe()
        assert f"| {number} | {condition} | {outcome} |" in README


def test_connection_fault_table_is_documented() -> None:
    from txsend.delivery.classify import CONNECT_RULES

    for rule in CONNECT_RULES:
        condition, outcome = rule.describe()
        assert f"| {condition} | {outcome}" in README
