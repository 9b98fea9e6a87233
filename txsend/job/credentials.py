"""Relay passwords from the environment or a file; never from the job file or command line."""

from __future__ import annotations

import os
import shlex
import stat
import subprocess
from collections.abc import Mapping
from pathlib import Path

from txsend.errors import ConfigError
from txsend.models import RelayConfig

# For a relay given as --relay or TXSEND_RELAY, which has no password_env of its own.
FALLBACK_ENV = "TXSEND_RELAY_PASSWORD"


def read_secret(
    owner: str,
    *,
    env_var: str | None = None,
    file: Path | None = None,
    cmd: str | None = None,
    env: Mapping[str, str] = os.environ,
) -> str | None:
    """A password from an environment variable, a file (mode 0600) or a command's output
    (trailing newline stripped); None when no source is given. `owner` names what the
    password is for, in errors (ConfigError, 78)."""
    if env_var:
        value = env.get(env_var)
        if not value:
            raise ConfigError(
                f"{owner}: environment variable {env_var} is not set",
                hint=f"export {env_var}=... before running txsend",
            )
        return value
    if file:
        try:
            mode = file.stat().st_mode
            password = file.read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise ConfigError(f"{owner}: cannot read password_file {file}: {exc.strerror}") from exc
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigError(
                f"{owner}: password_file {file} is readable by others",
                hint=f"chmod 600 {file}",
            )
        return password
    if cmd:
        try:
            done = subprocess.run(
                shlex.split(cmd), capture_output=True, text=True, timeout=30, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ConfigError(f"{owner}: password_cmd failed to run: {exc}") from exc
        if done.returncode != 0:
            raise ConfigError(f"{owner}: password_cmd exited with status {done.returncode}")
        return done.stdout.rstrip("\r\n")
    return None


def relay_password(relay: RelayConfig, env: Mapping[str, str] = os.environ) -> str | None:
    """The relay's password, or None when it needs none; ConfigError (78) when it is missing.

    Whether a password may be used at all (a user in the URL, TLS or allow_insecure_auth)
    is checked when the relay URL is parsed.
    """
    password = read_secret(
        f"relay {relay.url}",
        env_var=relay.password_env,
        file=relay.password_file,
        cmd=relay.password_cmd,
        env=env,
    )

    if password is None and relay.username is not None:
        password = env.get(FALLBACK_ENV) or None
        if password is None:
            raise ConfigError(
                f"relay {relay.url}: the URL names user {relay.username!r} but no password source",
                hint=f"add password_env: VARIABLE (or password_file) to the relay in the job, "
                f"or export {FALLBACK_ENV} for a --relay / TXSEND_RELAY URL",
            )
    return password
