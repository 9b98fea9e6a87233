"""Relay passwords from the environment or a file; never from the job file or command line."""

from __future__ import annotations

import os
import shlex
import stat
import subprocess
from collections.abc import Mapping

from txsend.errors import ConfigError
from txsend.models import RelayConfig

# For a relay given as --relay or TXSEND_RELAY, which has no password_env of its own.
FALLBACK_ENV = "TXSEND_RELAY_PASSWORD"


def relay_password(relay: RelayConfig, env: Mapping[str, str] = os.environ) -> str | None:
    """The relay's password, or None when it needs none; ConfigError (78) when it is missing.

    Whether a password may be used at all (a user in the URL, TLS or allow_insecure_auth)
    is checked when the relay URL is parsed.
    """
    if relay.password_env:
        value = env.get(relay.password_env)
        if not value:
            raise ConfigError(
                f"relay {relay.url}: environment variable {relay.password_env} is not set",
                hint=f"export {relay.password_env}=... before running txsend",
            )
        password: str | None = value
    elif relay.password_file:
        try:
            mode = relay.password_file.stat().st_mode
            password = relay.password_file.read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise ConfigError(
                f"relay {relay.url}: cannot read password_file {relay.password_file}: "
                f"{exc.strerror}"
            ) from exc
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigError(
                f"relay {relay.url}: password_file {relay.password_file} is readable by others",
                hint=f"chmod 600 {relay.password_file}",
            )
    elif relay.password_cmd:
        try:
            done = subprocess.run(
                shlex.split(relay.password_cmd),
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ConfigError(f"relay {relay.url}: password_cmd failed to run: {exc}") from exc
        if done.returncode != 0:
            raise ConfigError(
                f"relay {relay.url}: password_cmd exited with status {done.returncode}"
            )
        password = done.stdout.rstrip("\r\n")
    else:
        password = None

    if password is None and relay.username is not None:
        password = env.get(FALLBACK_ENV) or None
        if password is None:
            raise ConfigError(
                f"relay {relay.url}: the URL names user {relay.username!r} but no password source",
                hint=f"add password_env: VARIABLE (or password_file) to the relay in the job, "
                f"or export {FALLBACK_ENV} for a --relay / TXSEND_RELAY URL",
            )
    return password
