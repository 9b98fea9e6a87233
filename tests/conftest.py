"""Shared fixtures for the txsend test suite."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.smtpd import ScriptedServer


@pytest.fixture
def smtp_server() -> Iterator[ScriptedServer]:
    """A started ScriptedServer on 127.0.0.1 (free port), stopped after the test."""
    with ScriptedServer() as server:
        yield server


@pytest.fixture(params=["asyncio", "uvloop"])
def event_loop_choice(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the test once on asyncio's loop and once on uvloop (skipped when not installed)."""
    loop: str = request.param
    if loop == "uvloop":
        pytest.importorskip("uvloop", reason="uvloop is the optional 'speed' extra")
    monkeypatch.setenv("TXSEND_LOOP", loop)
    return loop
