"""The throwaway PostgreSQL fixture skips where it cannot run, and fails on CI instead."""

from __future__ import annotations

import pytest

from tests import pgserver


def test_missing_postgresql_skips_locally(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="install Debian's postgresql package"):
        pgserver.unavailable("initdb and pg_ctl were not found")


def test_missing_postgresql_fails_on_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=r"cannot run on CI.*\.ci/run"):
        pgserver.unavailable("initdb and pg_ctl were not found")


def test_password_role_must_give_its_password(pg_url: str) -> None:
    psycopg = pytest.importorskip("psycopg")
    url = pgserver.password_role(pg_url, "fixture_pw", "right-password")
    assert url.startswith("postgresql://fixture_pw@/")
    with psycopg.connect(url, password="right-password") as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("fixture_pw",)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(url, password="wrong-password")
    with pytest.raises(psycopg.OperationalError, match="no password supplied"):
        psycopg.connect(url, passfile="/nonexistent")
