"""Relay secrets from the environment, a file or a command; never from the job file or
the command line.

A relay's connections get their secret through a `RelaySecret`. A password is read once,
before the run (`FixedSecret`). An OAuth 2.0 access token (`auth: xoauth2|oauthbearer`)
lives about an hour, so its `password_cmd` runs again for each new connection
(`TokenCommand`: an asyncio subprocess, killed with its process group after `timeout`),
and its `password_file` is read again (`TokenFile`, for a file a token refresher keeps
current); a token from `password_env` cannot change during the run (`FixedSecret`).
Nothing here ever puts a secret, or a token command's output, into a message.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shlex
import signal
import stat
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from txsend.errors import ConfigError
from txsend.job.relays import is_loopback
from txsend.models import RelayConfig, TlsMode

__all__ = [
    "FALLBACK_ENV",
    "FixedSecret",
    "RelaySecret",
    "SecretUnavailable",
    "TokenCommand",
    "TokenFile",
    "fetch_token",
    "read_secret",
    "relay_password",
    "relay_secret",
]

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
            return asyncio.run(_command_text(owner, cmd, _PASSWORD_CMD_TIMEOUT, setting=""))
        except SecretUnavailable as exc:  # a plain ConfigError for a password
            raise ConfigError(exc.message) from None
    return None


def relay_password(
    relay: RelayConfig,
    env: Mapping[str, str] = os.environ,
    *,
    timeout: float = 30.0,
    setting: str = "timeouts.connect",
) -> str | None:
    """The relay's password, or for an OAuth relay one freshly fetched access token; None
    when it needs none; ConfigError (78) when it is missing (SecretUnavailable when a token
    command fails, or prints no token within `timeout` seconds).

    Whether a secret may be used at all (a user in the URL, TLS or allow_insecure_auth)
    is checked when the relay URL is parsed.
    """
    owner = f"relay {relay.url}"
    if relay.auth.oauth and relay.password_cmd:
        return fetch_token(owner, relay.password_cmd, timeout, setting=setting)
    password = read_secret(
        owner,
        env_var=relay.password_env,
        file=relay.password_file,
        cmd=relay.password_cmd,
        env=env,
    )

    if password is None and relay.username is not None:
        password = env.get(FALLBACK_ENV) or None
        if (
            password is not None
            and relay.tls is TlsMode.NONE
            and not relay.allow_insecure_auth
            and not is_loopback(relay.host)
        ):
            raise ConfigError(
                f"relay {relay.url}: authenticating without TLS would send the password "
                "in clear to a host that is not this machine",
                hint="use ?tls=starttls or smtps://, or a job file relay with "
                "allow_insecure_auth: true (test relays only)",
            )
        if password is None:
            raise ConfigError(
                f"relay {relay.url}: the URL names user {relay.username!r} but no password source",
                hint=f"add password_env: VARIABLE (or password_file) to the relay in the job, "
                f"or export {FALLBACK_ENV} for a --relay / TXSEND_RELAY URL",
            )
    if password is not None and relay.auth.oauth:
        source = "password_file" if relay.password_file else "password_env"
        return _access_token(owner, source, password)
    return password


# --------------------------------------------------------------------------- the seam


class RelaySecret(Protocol):
    """Where a relay's connections get their secret: asked once per new connection."""

    async def secret(self) -> str | None:
        """The secret for the next connection; SecretUnavailable when there is none now."""
        ...


class SecretUnavailable(ConfigError):
    """A token command failed or hung, or a token file went bad. Before the run this is a
    configuration error (78); during the run it fails the connection being opened.

    `reason` is the message without the relay's name; neither holds any of the command's
    output."""

    def __init__(self, owner: str, reason: str) -> None:
        super().__init__(
            f"{owner}: {reason}",
            hint="run the command by hand to see what it says; it must print one access "
            "token and exit 0",
        )
        self.reason = reason


@dataclass(frozen=True)
class FixedSecret:
    """A secret read once before the run (a password, or a token from password_env)."""

    value: str | None = field(repr=False)

    async def secret(self) -> str | None:
        return self.value


@dataclass(frozen=True)
class TokenCommand:
    """An OAuth relay's password_cmd, run again for each new connection."""

    owner: str
    command: str
    timeout: float  # seconds: the job's timeouts.connect

    async def secret(self) -> str:
        return await fetch_token_async(self.owner, self.command, self.timeout)


@dataclass(frozen=True)
class TokenFile:
    """An OAuth relay's password_file, read again for each new connection."""

    owner: str
    path: Path

    async def secret(self) -> str:
        try:
            token = read_secret(self.owner, file=self.path)
        except ConfigError as exc:
            raise SecretUnavailable(
                self.owner, exc.message.removeprefix(f"{self.owner}: ")
            ) from None
        assert token is not None  # a file was given
        return _access_token(self.owner, "password_file", token)


def relay_secret(
    relay: RelayConfig, *, timeout: float, env: Mapping[str, str] = os.environ
) -> RelaySecret:
    """The relay's secret for a run. Read (or, for an OAuth relay, fetched) once now, so
    that a missing secret or a failing token command is a configuration error (78) before
    anything is sent; `timeout` (timeouts.connect) bounds each token command."""
    value = relay_password(relay, env, timeout=timeout)
    owner = f"relay {relay.url}"
    if relay.auth.oauth and relay.password_cmd:
        return TokenCommand(owner, relay.password_cmd, timeout)
    if relay.auth.oauth and relay.password_file:
        return TokenFile(owner, relay.password_file)
    return FixedSecret(value)


# --------------------------------------------------------------------------- token commands

# RFC 6750 section 2.1, b64token: what a bearer token is made of
_ACCESS_TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
_KILLED_WAIT = 5.0  # seconds for a killed command to be reaped
_OUTPUT_MAX = 64 * 1024  # bytes: a token is a few KB; more is no secret, and is not kept
_PASSWORD_CMD_TIMEOUT = 30.0  # seconds: a password command (not OAuth) runs once, before


def _access_token(owner: str, source: str, text: str) -> str:
    """`text` (a command's output, trailing newline stripped) if it is one bearer token."""
    token = text.rstrip("\r\n")
    if not _ACCESS_TOKEN.fullmatch(token):
        if not token.strip():
            raise SecretUnavailable(owner, f"{source} gave an empty access token")
        # nothing of it is shown: it may be a token with a stray character
        raise SecretUnavailable(
            owner,
            f"{source} gave {len(token.splitlines())} line(s) that are not one OAuth access "
            "token (letters, digits and -._~+/=)",
        )
    return token


def _argv(owner: str, command: str) -> list[str]:
    try:
        argv = shlex.split(command)
    except ValueError as exc:
        raise SecretUnavailable(owner, f"password_cmd cannot be read as a command: {exc}") from None
    if not argv:
        raise SecretUnavailable(owner, "password_cmd is empty")
    return argv


def _kill_group(pid: int) -> None:
    """Kill a token command and whatever it started (its own process group)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _timed_out(owner: str, timeout: float, setting: str) -> SecretUnavailable:
    named = f" ({setting})" if setting else ""
    return SecretUnavailable(
        owner, f"password_cmd did not finish within {timeout:g} s{named}: stopped"
    )


def fetch_token(
    owner: str, command: str, timeout: float, *, setting: str = "timeouts.connect"
) -> str:
    """One access token from `command`'s stdout, from synchronous code (no event loop
    running): `fetch_token_async` in a loop of its own, so that Ctrl-C kills the command
    too. SecretUnavailable (78) if it fails, prints no token, or takes longer than
    `timeout` seconds (then it is killed with everything it started)."""
    return asyncio.run(fetch_token_async(owner, command, timeout, setting=setting))


async def fetch_token_async(
    owner: str, command: str, timeout: float, *, setting: str = "timeouts.connect"
) -> str:
    """One access token from `command`'s stdout (its own session, stdin closed, stderr
    dropped), without blocking the event loop; see `_command_text`."""
    text = await _command_text(owner, command, timeout, setting=setting)
    return _access_token(owner, "password_cmd", text)


async def _command_text(owner: str, command: str, timeout: float, *, setting: str) -> str:
    """What `command` printed on stdout before it exited, trailing newline stripped.

    SecretUnavailable if it cannot start, exits non-zero, prints more than _OUTPUT_MAX
    bytes or bytes that are not UTF-8, or has not exited within `timeout` seconds; then,
    and when the fetch is cancelled (Ctrl-C), it is killed with everything it started.
    Once it has exited, a process it left behind that still holds its stdout is not
    waited for. Nothing it printed is ever put into a message."""
    argv = _argv(owner, command)
    # a pipe of our own rather than asyncio's: asyncio waits for every holder of its
    # pipes to close them before it reports the exit
    read_fd, write_fd = os.pipe()
    try:
        try:
            process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=subprocess.DEVNULL,
                stdout=write_fd,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise SecretUnavailable(owner, f"password_cmd failed to run: {reason}") from None
        finally:
            os.close(write_fd)
        out = await _output_of(owner, process, read_fd, timeout, setting)
    finally:
        os.close(read_fd)
    if process.returncode != 0:
        # never the output: on stdout it may be a token, and stderr is not kept
        raise SecretUnavailable(owner, f"password_cmd exited with status {process.returncode}")
    try:
        text = out.decode("utf-8")
    except UnicodeDecodeError:
        raise SecretUnavailable(owner, "password_cmd printed bytes that are not UTF-8") from None
    return text.rstrip("\r\n")


async def _output_of(
    owner: str, process: asyncio.subprocess.Process, fd: int, timeout: float, setting: str
) -> bytes:
    """Read `fd` (the command's stdout) until the command exits, at most _OUTPUT_MAX
    bytes and `timeout` seconds; a command still running after that is killed."""
    loop = asyncio.get_running_loop()
    os.set_blocking(fd, False)
    output = _Output(fd, loop.create_future())
    loop.add_reader(fd, output.read)
    try:
        async with asyncio.timeout(timeout):
            exited = asyncio.ensure_future(process.wait())
            try:
                await asyncio.wait({exited, output.full}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                exited.cancel()
    except TimeoutError:
        raise _timed_out(owner, timeout, setting) from None
    finally:
        loop.remove_reader(fd)
        if process.returncode is None:  # timed out, too much output, or cancelled
            _kill_group(process.pid)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_KILLED_WAIT):
                    await process.wait()
    output.read_all()  # all it wrote before it exited is in the pipe now
    if output.full.done():
        raise SecretUnavailable(
            owner,
            f"password_cmd printed more than {_OUTPUT_MAX // 1024} KiB: not one secret, stopped",
        )
    return b"".join(output.chunks)


@dataclass
class _Output:
    """A command's stdout as it arrives, up to _OUTPUT_MAX bytes; `full` is set (to the
    bytes read) when it printed more."""

    fd: int
    full: asyncio.Future[int] = field(repr=False)
    chunks: list[bytes] = field(default_factory=list, repr=False)
    size: int = 0
    ended: bool = False

    def read(self) -> bool:
        """One read of what is there now; False when nothing more will be (EOF, nothing
        waiting, or too much)."""
        if self.ended or self.full.done():
            return False
        try:
            data = os.read(self.fd, 65536)
        except BlockingIOError:
            return False
        except OSError:
            data = b""
        if not data:
            self.ended = True
            self.stop()
            return False
        self.size += len(data)
        if self.size > _OUTPUT_MAX:
            self.chunks.clear()
            self.full.set_result(self.size)
            self.stop()
            return False
        self.chunks.append(data)
        return True

    def read_all(self) -> None:
        while self.read():
            pass

    def stop(self) -> None:
        """No more reads: at its end the pipe would be readable (EOF) without end."""
        asyncio.get_running_loop().remove_reader(self.fd)
