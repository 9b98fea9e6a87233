"""Shared fixtures for the txsend test suite."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.dovecot import DovecotServer, dovecot_server
from tests.postfix import PostfixInstance, postfix_instance
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


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """A throwaway PostgreSQL server for the whole session: its postgresql:// URL."""
    from tests.pgserver import throwaway_server

    with throwaway_server() as url:
        yield url


@pytest.fixture
def pg_url(pg_server: str, request: pytest.FixtureRequest) -> str:
    """An empty database of its own for one test."""
    import re

    from tests.pgserver import fresh_database

    name = "t_" + re.sub(r"[^a-z0-9]+", "_", request.node.name.lower())[:50]
    return fresh_database(pg_server, name)


@pytest.fixture
def postfix() -> Iterator[PostfixInstance]:
    """A throwaway Postfix relay on 127.0.0.1 that bounces mail for nowhere.example, delays
    slow.example and delivers acme.example to a Maildir (tests/postfix.py)."""
    with postfix_instance() as instance:
        yield instance


@pytest.fixture
def dovecot() -> Iterator[DovecotServer]:
    """A throwaway Dovecot IMAP server on 127.0.0.1 (imaps and STARTTLS ports, a test CA,
    one user) with an empty Maildir (tests/dovecot.py)."""
    with dovecot_server() as server:
        yield server
