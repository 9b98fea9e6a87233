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
