"""Relay passwords and OAuth tokens: from the environment, a private file or a command;
never elsewhere."""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import signal
import sys
import time
from pathlib import Path

import pytest

from tests.jobs import process_gone
from txsend.errors import ConfigError
from txsend.job.credentials import (
    FALLBACK_ENV,
    FixedSecret,
    SecretUnavailable,
    TokenCommand,
    TokenFile,
    fetch_token_async,
    relay_password,
    relay_secret,
)
from txsend.job.relays import parse_relay_url
from txsend.models import RelayAuth

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


# --------------------------------------------------------------------------- OAuth tokens

TOKEN = "ya29.TXSEND-unit-T0ken"


def _command(code: str) -> str:
    return shlex.join([sys.executable, "-c", code])


def test_oauth_relay_password_is_a_fresh_token_from_the_command(tmp_path: Path) -> None:
    counter = tmp_path / "calls"
    code = (
        f"import pathlib; p = pathlib.Path({str(counter)!r}); "
        "n = len(p.read_text()) if p.exists() else 0; "
        f"p.write_text('x' * (n + 1)); print('{TOKEN}-' + str(n + 1))"
    )
    relay = parse_relay_url(URL, auth="xoauth2", password_cmd=_command(code))
    assert relay.auth is RelayAuth.XOAUTH2
    assert relay_password(relay, {}) == f"{TOKEN}-1"
    assert relay_password(relay, {}) == f"{TOKEN}-2"  # fetched again, for `txsend check` too


@pytest.mark.parametrize(
    ("output", "says"),
    [
        ("", "gave an empty access token"),
        (f"{TOKEN}\\nmore", "gave 2 line(s) that are not one OAuth access token"),
        (f"Bearer {TOKEN}", "gave 1 line(s) that are not one OAuth access token"),
    ],
)
def test_oauth_token_must_be_one_bearer_token(output: str, says: str) -> None:
    relay = parse_relay_url(URL, auth="oauthbearer", password_cmd=_command(f"print('{output}')"))
    with pytest.raises(SecretUnavailable, match=re.escape(says)) as info:
        relay_password(relay, {})
    assert TOKEN not in str(info.value) + str(info.value.hint)


def test_oauth_token_from_password_env_is_checked_too() -> None:
    relay = parse_relay_url(URL, auth="xoauth2", password_env="TOKEN")
    assert relay_password(relay, {"TOKEN": TOKEN}) == TOKEN
    with pytest.raises(SecretUnavailable, match="password_env gave 1 line"):
        relay_password(relay, {"TOKEN": f"{TOKEN} x"})


def test_relay_secret_per_source(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    password = relay_secret(parse_relay_url(URL, password_env="PW"), timeout=5, env={"PW": "pw"})
    assert password == FixedSecret("pw")
    static = relay_secret(
        parse_relay_url(URL, auth="xoauth2", password_env="T"), timeout=5, env={"T": TOKEN}
    )
    assert static == FixedSecret(TOKEN)
    command = relay_secret(
        parse_relay_url(URL, auth="xoauth2", password_cmd=_command(f"print('{TOKEN}')")),
        timeout=5,
    )
    assert isinstance(command, TokenCommand) and command.timeout == 5
    assert asyncio.run(command.secret()) == TOKEN
    from_file = relay_secret(
        parse_relay_url(URL, auth="xoauth2", password_file=str(token_file)), timeout=5
    )
    assert isinstance(from_file, TokenFile)
    assert TOKEN not in repr(static) + repr(password)


def test_token_file_is_read_again_for_each_connection(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("first\n")
    token_file.chmod(0o600)
    secret = TokenFile("relay r", token_file)
    assert asyncio.run(secret.secret()) == "first"
    token_file.write_text("second\n")  # a token refresher replaced it
    assert asyncio.run(secret.secret()) == "second"
    token_file.chmod(0o644)
    with pytest.raises(SecretUnavailable, match="readable by others"):
        asyncio.run(secret.secret())
    token_file.unlink()
    with pytest.raises(SecretUnavailable, match="cannot read password_file"):
        asyncio.run(secret.secret())


def test_token_command_does_not_block_the_event_loop(tmp_path: Path) -> None:
    # the command waits for a file that only the event loop creates: a fetch that blocked
    # the loop would time out instead
    flag = tmp_path / "loop-ran"
    code = (
        "import pathlib, sys, time\n"
        f"flag = pathlib.Path({str(flag)!r})\n"
        "deadline = time.monotonic() + 20\n"
        "while not flag.exists():\n"
        "    if time.monotonic() > deadline: sys.exit(9)\n"
        "    time.sleep(0.01)\n"
        f"print({TOKEN!r})\n"
    )

    async def main() -> str:
        fetch = asyncio.create_task(fetch_token_async("relay r", _command(code), 30))
        await asyncio.sleep(0)  # the fetch has started
        flag.touch()
        return await fetch

    assert asyncio.run(main()) == TOKEN


@pytest.mark.parametrize("how", ["timeout", "cancel"])
def test_token_command_is_killed_with_what_it_started(how: str, tmp_path: Path) -> None:
    pid_file = tmp_path / "grandchild"
    code = (
        "import pathlib, subprocess\n"
        "child = subprocess.Popen(['sleep', '3600'])\n"
        f"pathlib.Path({str(pid_file)!r}).write_text(str(child.pid))\n"
        "child.wait()\n"
    )

    async def main() -> None:
        if how == "timeout":
            with pytest.raises(SecretUnavailable, match=r"did not finish within 0\.5 s"):
                await fetch_token_async("relay r", _command(code), 0.5)
            return
        fetch = asyncio.create_task(fetch_token_async("relay r", _command(code), 60))
        async with asyncio.timeout(20):
            while not pid_file.exists():  # the command and its grandchild run
                await asyncio.sleep(0.01)
        fetch.cancel()
        with pytest.raises(asyncio.CancelledError):
            await fetch

    started = time.monotonic()
    asyncio.run(main())
    assert time.monotonic() - started < 15
    assert process_gone(int(pid_file.read_text()))


def test_sync_token_fetch_is_bounded_too(tmp_path: Path) -> None:
    relay = parse_relay_url(
        URL, auth="xoauth2", password_cmd=_command("import time; time.sleep(3600)")
    )
    started = time.monotonic()
    with pytest.raises(SecretUnavailable, match=r"did not finish within 0\.5 s"):
        relay_password(relay, {}, timeout=0.5)
    assert time.monotonic() - started < 10


def test_missing_token_command_is_a_clear_error() -> None:
    relay = parse_relay_url(URL, auth="xoauth2", password_cmd="/nonexistent/token-helper")
    with pytest.raises(SecretUnavailable, match="password_cmd failed to run: No such file"):
        relay_password(relay, {})
    with pytest.raises(SecretUnavailable, match="password_cmd failed to run: No such file"):
        asyncio.run(TokenCommand("relay r", "/nonexistent/token-helper", 5).secret())
    unbalanced = parse_relay_url(URL, auth="xoauth2", password_cmd="helper 'unclosed")
    with pytest.raises(SecretUnavailable, match="cannot be read as a command"):
        relay_password(unbalanced, {})


def test_fallback_password_is_never_sent_in_clear_to_another_host() -> None:
    """`--relay smtp://user@remote?tls=none` with TXSEND_RELAY_PASSWORD: refused (78)
    before anything connects; a loopback test relay may still take it."""
    remote = parse_relay_url("smtp://mailer@mail.example.com:25?tls=none")
    with pytest.raises(ConfigError, match="in clear") as caught:
        relay_password(remote, {FALLBACK_ENV: "s3cret"})
    assert "s3cret" not in str(caught.value) and "s3cret" not in (caught.value.hint or "")
    local = parse_relay_url("smtp://mailer@127.0.0.1:2525?tls=none")
    assert relay_password(local, {FALLBACK_ENV: "s3cret"}) == "s3cret"
    tls = parse_relay_url("smtp://mailer@mail.example.com:587")
    assert relay_password(tls, {FALLBACK_ENV: "s3cret"}) == "s3cret"


# --------------------------------------------------------------------------- odd commands


def test_token_command_that_leaves_a_child_holding_stdout_is_not_waited_for(
    tmp_path: Path,
) -> None:
    """It printed its token and exited 0; a process it started in the background keeps
    the pipe open. Its token is used at once, not after the limit, and not called a
    command that "did not finish"."""
    pid_file = tmp_path / "child"
    code = (
        "import pathlib, subprocess, sys\n"
        f"print({TOKEN!r}, flush=True)\n"
        "child = subprocess.Popen(['sleep', '3600'])\n"  # inherits stdout
        f"with open({str(pid_file)!r}, 'a') as f: f.write(f'{{child.pid}}\\n')\n"
    )
    relay = parse_relay_url(URL, auth="xoauth2", password_cmd=_command(code))
    started = time.monotonic()
    try:
        assert relay_password(relay, {}, timeout=60) == TOKEN
        assert asyncio.run(fetch_token_async("relay r", _command(code), 60)) == TOKEN
        assert time.monotonic() - started < 30
    finally:
        for pid in pid_file.read_text().split() if pid_file.exists() else []:
            os.kill(int(pid), signal.SIGKILL)


def test_token_command_that_prints_without_end_is_stopped_with_little_memory() -> None:
    """`yes` as a token command: stopped once it printed more than any token, long before
    the limit, and none of what it printed is shown."""
    code = "import sys\nwhile True: sys.stdout.write('A' * 65536)\n"
    relay = parse_relay_url(URL, auth="xoauth2", password_cmd=_command(code))
    started = time.monotonic()
    with pytest.raises(SecretUnavailable, match="printed more than 64 KiB") as info:
        relay_password(relay, {}, timeout=120)
    assert time.monotonic() - started < 60
    assert "AAAA" not in str(info.value)


def test_password_command_with_bytes_that_are_not_utf8_is_a_config_error() -> None:
    relay = parse_relay_url(
        URL, password_cmd=_command("import sys; sys.stdout.buffer.write(b'\\xff\\xfepw\\n')")
    )
    with pytest.raises(ConfigError, match="not UTF-8"):
        relay_password(relay, {})


def test_password_command_is_bounded_in_output_too() -> None:
    code = "import sys\nwhile True: sys.stdout.write('A' * 65536)\n"
    with pytest.raises(ConfigError, match="printed more than 64 KiB"):
        relay_password(parse_relay_url(URL, password_cmd=_command(code)), {})
