"""Relay passwords: from the environment, a private file or a command; never elsewhere."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from txsend.errors import ConfigError
from txsend.job.credentials import FALLBACK_ENV, relay_password
from txsend.job.relays import parse_relay_url

URL = "smtps://mailer@127.0.0.1:4650"


def test_password_env() -> None:
    relay = parse_relay_url(URL, password_env="SMTP_PW")
    assert relay_password(relay, {"SMTP_PW": "s3cret"}) == "s3cret"
    with pytest.raises(ConfigError, match="SMTP_PW is not set"):
        relay_password(relay, {})


def test_password_file_must_be_private(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    relay = parse_relay_url(URL, password_file=str(secret))
    secret.chmod(0o644)
    with pytest.raises(ConfigError, match="readable by others") as info:
        relay_password(relay, {})
    assert info.value.hint == f"chmod 600 {secret}"
    secret.chmod(0o600)
    assert relay_password(relay, {}) == "s3cret"


def test_password_cmd(tmp_path: Path) -> None:
    relay = parse_relay_url(URL, password_cmd=f"{sys.executable} -c \"print('s3cret')\"")
    assert relay_password(relay, {}) == "s3cret"
    failing = parse_relay_url(URL, password_cmd=f"{sys.executable} -c 'raise SystemExit(3)'")
    with pytest.raises(ConfigError, match="exited with status 3"):
        relay_password(failing, {})


def test_user_without_source_uses_the_fallback_variable() -> None:
    relay = parse_relay_url(URL)
    assert relay_password(relay, {FALLBACK_ENV: "s3cret"}) == "s3cret"
    with pytest.raises(ConfigError, match="no password source"):
        relay_password(relay, {})


def test_no_user_needs_no_password() -> None:
    assert relay_password(parse_relay_url("smtp://127.0.0.1:2525"), {}) is None
