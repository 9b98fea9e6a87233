"""OAuth 2.0 relays (auth: xoauth2 | oauthbearer) end to end: the real CLI against
ScriptedServer over STARTTLS with a test CA, the access token printed by a password_cmd
that counts its calls (and can fail, hang, or print a token the server refuses).

The token is distinctive, so that a leak into any output, log, report or journal is found
by substring; the exact SASL bytes the server received are checked against it.
"""

from __future__ import annotations

import base64
import gc
import json
import os
import shlex
import shutil
import signal
import sqlite3
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.jobs import Result, cli, process_gone, txsend_subprocess, write_job
from tests.smtpd import ScriptedServer, TlsFiles, make_tls_files
from txsend.delivery.smtp.auth import oauth_initial_response
from txsend.job.relays import parse_relay_url
from txsend.models import RelayAuth

USER = "mailer@acme.example"  # written %40 in the URL, as a Microsoft 365 account is
# a JWT's length (Microsoft's tokens are 1-2 KB): the AUTH line is longer than 512 bytes
TOKEN = "eyJ0eXAi.TXSEND-oauth-T0ken-9c1e." + "Zm9vYmFy" * 150 + "_-~+/=="
MECHANISMS = ["xoauth2", "oauthbearer"]
GIVE_UP = "  retry: {backoff: 10m, max_backoff: 1h}\n  give_up_unreachable: 1s\n"

TOKEN_SCRIPT = """\
import pathlib, subprocess, sys
counter, mode, token, good = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
calls = int(counter.read_text()) + 1 if counter.exists() else 1
counter.write_text(str(calls))
if calls > good:
    if mode == "hang":  # and a grandchild that holds stdout open: the group must go
        child = subprocess.Popen(["sleep", "3600"])
        pathlib.Path(str(counter) + ".pid").write_text(str(child.pid))
        child.wait()
    elif mode == "fail":
        print(token)
        print("token-helper: refresh failed for " + token, file=sys.stderr)
        sys.exit(3)
    elif mode == "wrong":
        token = "Wr0ng" + token
    elif mode == "empty":
        token = ""
    elif mode == "lines":
        token = '{"access_token": "' + token + '",\\n "expires_in": 3599}'
print(token)
"""


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("TLS tests need the openssl command line to make test certificates")
    return make_tls_files(tmp_path_factory.mktemp("tls"), openssl=openssl)


@pytest.fixture
def server(tls_files: TlsFiles) -> Iterator[ScriptedServer]:
    """STARTTLS required; AUTH (XOAUTH2, OAUTHBEARER) only after it, for USER's TOKEN."""
    with ScriptedServer(tls_context=tls_files.server_context(), require_starttls=True) as smtpd:
        smtpd.oauth_tokens = {USER: TOKEN}
        yield smtpd


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SSL_CERT_FILE", "SSL_CERT_DIR", "TXSEND_RELAY", "TXSEND_RELAY_PASSWORD"):
        monkeypatch.delenv(name, raising=False)


# --------------------------------------------------------------------------- helpers


class TokenCommand:
    """A password_cmd that prints TOKEN and counts its calls; after `good` calls it does
    what `mode` says (ok, fail, hang, wrong, empty, lines)."""

    def __init__(self, folder: Path, mode: str = "ok", good: int = 10**6) -> None:
        self.script = folder / "token.py"
        self.script.write_text(TOKEN_SCRIPT, encoding="utf-8")
        self.counter = folder / "token-calls"
        argv = [sys.executable, str(self.script), str(self.counter), mode, TOKEN, str(good)]
        self.command = shlex.join(argv)

    @property
    def calls(self) -> int:
        return int(self.counter.read_text()) if self.counter.exists() else 0

    @property
    def grandchild(self) -> int | None:
        pid_file = Path(str(self.counter) + ".pid")
        return int(pid_file.read_text()) if pid_file.exists() else None


def relay_yaml(url: str, **options: object) -> str:
    lines = ["relays:", f"  - url: {url}"]
    for key, value in options.items():
        if isinstance(value, bool):
            shown = str(value).lower()
        elif isinstance(value, int):
            shown = str(value)
        else:
            shown = json.dumps(str(value))
        lines.append(f"    {key}: {shown}")
    return "\n".join(lines) + "\n"


def oauth_job(
    folder: Path,
    server: ScriptedServer,
    tls_files: TlsFiles,
    command: TokenCommand,
    *,
    auth: str = "xoauth2",
    rows: int = 3,
    delivery: str = GIVE_UP,
    **options: object,
) -> Path:
    url = f"smtp://{USER.replace('@', '%40')}@127.0.0.1:{server.port}?tls=starttls"
    relay = relay_yaml(
        url,
        auth=auth,
        password_cmd=command.command,
        ca_file=tls_files.ca_file,
        connections=1,
        **options,
    )
    return write_job(folder, rows=rows, extra_yaml=relay, delivery=delivery)


def txsend(capsys: pytest.CaptureFixture[str], *args: object) -> Result:
    """The CLI in-process, then a collection: a leaked socket or pipe fails this test."""
    result = cli(capsys, *args)
    gc.collect()
    return result


def journal_rows(folder: Path) -> dict[str, tuple[str, str | None]]:
    db = sqlite3.connect(folder / "job.journal.db")
    try:
        return {k: (s, r) for k, s, r in db.execute("SELECT key, state, reply FROM messages")}
    finally:
        db.close()


def everything_written(folder: Path, result: Result) -> bytes:
    """stdout, stderr and every file the run left in its folder (journal, WAL, reports)."""
    files = b"".join(
        path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name not in ("token.py", "job.yaml")
    )
    return result.out.encode() + result.err.encode() + files


def assert_no_token(folder: Path, result: Result, server: ScriptedServer) -> None:
    written = everything_written(folder, result)
    assert b"TXSEND-oauth-T0ken" not in written
    for exchange in server.oauth_exchanges:  # nor the SASL response as it went on the wire
        assert base64.b64encode(exchange.initial) not in written
    assert "Traceback" not in result.out + result.err


def expected_sasl(mechanism: str, server: ScriptedServer, token: str = TOKEN) -> bytes:
    if mechanism == "xoauth2":
        return f"user={USER}\x01auth=Bearer {token}\x01\x01".encode()
    return (
        f"n,a={USER},\x01host=127.0.0.1\x01port={server.port}\x01auth=Bearer {token}\x01\x01"
    ).encode()


# --------------------------------------------------------------------------- success


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_oauth_relay_delivers_with_the_exact_sasl_exchange(
    mechanism: str,
    event_loop_choice: str,
    tmp_path: Path,
    server: ScriptedServer,
    tls_files: TlsFiles,
    capsys: pytest.CaptureFixture[str],
) -> None:
    command = TokenCommand(tmp_path)
    job = oauth_job(tmp_path, server, tls_files, command, auth=mechanism, rows=4)
    result = txsend(capsys, "run", job, "--log-level", "debug", "--report", tmp_path / "r.json")
    assert result.code == 0, result.err
    received = server.received
    assert sorted(r.rcpt_tos[0] for r in received) == [f"user{i}@example.com" for i in range(4)]
    assert {r.login for r in received} == {USER}
    assert all(r.tls for r in received)
    assert len(server.oauth_exchanges) == 1  # one connection carried the four
    exchange = server.oauth_exchanges[0]
    assert exchange.mechanism == mechanism.upper()
    assert exchange.initial == expected_sasl(mechanism, server)
    assert exchange.answer is None
    assert {state for state, _ in journal_rows(tmp_path).values()} == {"sent"}
    assert_no_token(tmp_path, result, server)


def test_token_is_fetched_again_for_each_connection(
    tmp_path: Path,
    server: ScriptedServer,
    tls_files: TlsFiles,
    capsys: pytest.CaptureFixture[str],
) -> None:
    command = TokenCommand(tmp_path)
    job = oauth_job(tmp_path, server, tls_files, command, rows=6, messages_per_connection=2)
    result = txsend(capsys, "run", job)
    assert result.code == 0, result.err
    assert len(server.received) == 6
    assert server.connections == 3
    assert len(server.oauth_exchanges) == 3
    # once before the run (a failing command stops it before anything is sent), then
    # once for each of the three connections
    assert command.calls == 1 + 3


def test_dry_run_fetches_no_token(
    tmp_path: Path, server: ScriptedServer, tls_files: TlsFiles, capsys: pytest.CaptureFixture[str]
) -> None:
    command = TokenCommand(tmp_path)
    job = oauth_job(tmp_path, server, tls_files, command)
    result = txsend(capsys, "run", job, "--dry-run")
    assert result.code == 0, result.err
    assert command.calls == 0
    assert server.connections == 0


# --------------------------------------------------------------------------- refusals


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_refused_token_exits_69_with_the_servers_reason_and_no_token_anywhere(
    mechanism: str,
    tmp_path: Path,
    server: ScriptedServer,
    tls_files: TlsFiles,
    capsys: pytest.CaptureFixture[str],
) -> None:
    command = TokenCommand(tmp_path, "wrong", good=0)  # every token is one the server refuses
    server.oauth_error = {"status": "invalid_token", "scope": "https://mail.google.com/"}
    job = oauth_job(tmp_path, server, tls_files, command, auth=mechanism)
    result = txsend(
        capsys,
        "run",
        job,
        "--json",
        "--log-format",
        "json",
        "--log-level",
        "debug",
        "--report",
        tmp_path / "report.json",
        "--metrics-file",
        tmp_path / "metrics.prom",
    )
    assert result.code == 69, result.err
    assert "authentication refused: 535 5.7.8 Username and Password not accepted" in result.err
    assert f"{mechanism.upper()} error: status invalid_token" in result.err
    assert "scope https://mail.google.com/" in result.err
    for line in result.err.splitlines():
        json.loads(line)  # --log-format json: every stderr line is one JSON object
    summary = json.loads(result.out)
    assert summary["exit_code"] == 69
    # the server's JSON error challenge was answered as the mechanism says, once: a
    # refused token takes the relay out for the run
    assert [e.answer for e in server.oauth_exchanges] == [
        b"" if mechanism == "xoauth2" else b"\x01"
    ]
    assert server.oauth_exchanges[0].initial == expected_sasl(mechanism, server, "Wr0ng" + TOKEN)
    assert server.received == []
    assert {state for state, _ in journal_rows(tmp_path).values()} == {"pending"}
    assert "authentication refused" in (tmp_path / "report.json").read_text()
    assert_no_token(tmp_path, result, server)
    status = txsend(capsys, "status", job, "--json")
    assert b"TXSEND-oauth-T0ken" not in (status.out + status.err).encode()


def test_temporary_refusal_is_retried_and_delivers(
    tmp_path: Path, server: ScriptedServer, tls_files: TlsFiles, capsys: pytest.CaptureFixture[str]
) -> None:
    server.oauth_refusals = ["454 4.7.0 Temporary authentication failure"]
    command = TokenCommand(tmp_path)
    job = oauth_job(tmp_path, server, tls_files, command, rows=3)
    result = txsend(capsys, "run", job, "--log-level", "info")
    assert result.code == 0, result.err
    assert len(server.received) == 3
    assert [e.reply[:3] for e in server.oauth_exchanges] == ["454", "235"]
    assert "authentication failed for now: 454 4.7.0 Temporary authentication failure" in result.err
    assert command.calls == 1 + 2  # before the run, and for each of the two connections


def test_temporary_refusals_leave_the_rest_for_resume_75(
    tmp_path: Path, server: ScriptedServer, tls_files: TlsFiles, capsys: pytest.CaptureFixture[str]
) -> None:
    # the first two tokens (before the run, the first connection) are good; then the
    # server answers 454 to each: waiting may fix it, so the relay is not given up at once
    server.oauth_refusal = "454 4.7.0 Try again later"
    command = TokenCommand(tmp_path, "wrong", good=2)
    job = oauth_job(tmp_path, server, tls_files, command, rows=5, messages_per_connection=2)
    started = time.monotonic()
    result = txsend(capsys, "run", job)
    assert result.code == 75, result.err
    assert time.monotonic() - started < 30
    assert len(server.received) == 2
    states = sorted(state for state, _ in journal_rows(tmp_path).values())
    assert states == ["pending"] * 3 + ["sent"] * 2
    assert len(server.oauth_exchanges) >= 2  # it tried again
    assert "454 4.7.0 Try again later" in result.err
    assert f"relay 127.0.0.1:{server.port} given up" not in result.err  # not taken out
    assert_no_token(tmp_path, result, server)


def test_mechanism_the_relay_does_not_offer_is_a_clear_69(
    tmp_path: Path, server: ScriptedServer, tls_files: TlsFiles, capsys: pytest.CaptureFixture[str]
) -> None:
    server.oauth_mechanisms = ("XOAUTH2",)
    command = TokenCommand(tmp_path)
    job = oauth_job(tmp_path, server, tls_files, command, auth="oauthbearer")
    result = txsend(capsys, "run", job)
    assert result.code == 69, result.err
    assert "does not offer the OAUTHBEARER authentication method (it offers XOAUTH2)" in result.err
    assert server.oauth_exchanges == []
    assert server.received == []
    assert_no_token(tmp_path, result, server)


# --------------------------------------------------------------------------- the token command


@pytest.mark.parametrize(
    ("mode", "says"),
    [
        ("fail", "password_cmd exited with status 3"),
        ("empty", "password_cmd gave an empty access token"),
        ("lines", "password_cmd gave 2 line(s) that are not one OAuth access token"),
    ],
)
def test_token_command_failing_before_the_run_exits_78(
    mode: str,
    says: str,
    tmp_path: Path,
    server: ScriptedServer,
    tls_files: TlsFiles,
    capsys: pytest.CaptureFixture[str],
) -> None:
    command = TokenCommand(tmp_path, mode, good=0)
    job = oauth_job(tmp_path, server, tls_files, command)
    result = txsend(capsys, "run", job)
    assert result.code == 78, result.err
    assert says in result.err
    assert server.connections == 0
    assert command.calls == 1
    # the command printed the token to stdout and stderr: neither is shown
    assert_no_token(tmp_path, result, server)


def test_token_command_hanging_before_the_run_is_stopped_after_the_connect_timeout(
    tmp_path: Path, server: ScriptedServer, tls_files: TlsFiles, capsys: pytest.CaptureFixture[str]
) -> None:
    command = TokenCommand(tmp_path, "hang", good=0)
    delivery = GIVE_UP + "  timeouts: {connect: 1s}\n"
    job = oauth_job(tmp_path, server, tls_files, command, delivery=delivery)
    started = time.monotonic()
    result = txsend(capsys, "run", job)
    assert result.code == 78, result.err
    assert time.monotonic() - started < 15
    assert "password_cmd did not finish within 1 s (timeouts.connect): stopped" in result.err
    assert server.connections == 0
    grandchild = command.grandchild
    assert grandchild is not None and process_gone(grandchild)


@pytest.mark.parametrize("command_line", [["run"], ["check", "--job"]], ids=["run", "check"])
def test_ctrl_c_while_the_token_command_runs_kills_it_and_exits_130(
    command_line: list[str], tmp_path: Path, server: ScriptedServer, tls_files: TlsFiles
) -> None:
    """The token command runs in a session of its own, so the terminal's Ctrl-C does not
    reach it: txsend must kill it (and what it started) itself."""
    command = TokenCommand(tmp_path, "hang", good=0)
    delivery = GIVE_UP + "  timeouts: {connect: 120s}\n"
    job = oauth_job(tmp_path, server, tls_files, command, delivery=delivery)
    proc = txsend_subprocess(*command_line, job)
    try:
        deadline = time.monotonic() + 60
        while command.grandchild is None:  # the command, and what it started, run
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the token command never started"
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        grandchild = command.grandchild
        gone = grandchild is None or process_gone(grandchild)
        if not gone:
            os.kill(grandchild, signal.SIGKILL)
    assert proc.returncode == 130, err
    assert gone, "the token command's child outlived txsend"
    assert server.connections == 0
    assert "TXSEND-oauth-T0ken" not in out + err


@pytest.mark.parametrize("mode", ["hang", "fail"])
def test_token_command_failing_during_the_run_fails_connections_and_the_run_ends(
    mode: str,
    event_loop_choice: str,
    tmp_path: Path,
    server: ScriptedServer,
    tls_files: TlsFiles,
    capsys: pytest.CaptureFixture[str],
) -> None:
    command = TokenCommand(tmp_path, mode, good=1)  # good before the run only
    delivery = GIVE_UP + "  timeouts: {connect: 0.5s, command: 5s}\n"
    job = oauth_job(tmp_path, server, tls_files, command, rows=3, delivery=delivery)
    started = time.monotonic()
    result = txsend(capsys, "run", job)
    elapsed = time.monotonic() - started
    assert result.code == 69, result.err  # no relay ever worked: give_up_unreachable
    assert elapsed < 20, elapsed
    assert command.calls >= 2
    assert server.connections == 0  # no connection is opened without a token
    if mode == "hang":
        assert "fetching the access token: password_cmd did not finish within 0.5 s" in result.err
        grandchild = command.grandchild
        assert grandchild is not None and process_gone(grandchild)
    else:
        assert "fetching the access token: password_cmd exited with status 3" in result.err
    assert {state for state, _ in journal_rows(tmp_path).values()} == {"pending"}
    assert_no_token(tmp_path, result, server)


# --------------------------------------------------------------------------- the job file


def test_unknown_auth_is_a_job_error_with_its_line(
    tmp_path: Path, server: ScriptedServer, tls_files: TlsFiles, capsys: pytest.CaptureFixture[str]
) -> None:
    command = TokenCommand(tmp_path)
    job = oauth_job(tmp_path, server, tls_files, command, auth="bogus")
    line = next(n for n, text in enumerate(job.read_text().splitlines(), 1) if "auth:" in text)
    result = txsend(capsys, "run", job)
    assert result.code == 65, result.err
    assert f"job.yaml:{line}" in result.err
    assert "relays[0].auth: expected one of password, xoauth2, oauthbearer, got 'bogus'" in (
        result.err
    )
    assert command.calls == 0
    assert server.connections == 0


@pytest.mark.parametrize(
    ("url", "options", "says"),
    [
        (
            "smtp://127.0.0.1:{port}?tls=starttls",
            {"password_cmd": "token-cmd"},
            "auth: xoauth2 needs the account's user name in the URL",
        ),
        (
            "smtp://mailer@127.0.0.1:{port}?tls=starttls",
            {},
            "auth: xoauth2 needs a source for the access token",
        ),
        (
            "smtp://mailer@127.0.0.1:{port}?tls=none",
            {"password_cmd": "token-cmd"},
            "would send the access token in clear",
        ),
    ],
)
def test_oauth_relay_configuration_errors_exit_78_with_the_line(
    url: str,
    options: dict[str, str],
    says: str,
    tmp_path: Path,
    server: ScriptedServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    relay = relay_yaml(url.format(port=server.port), auth="XOAUTH2", **options)
    job = write_job(tmp_path, rows=2, extra_yaml=relay)
    line = next(n for n, text in enumerate(job.read_text().splitlines(), 1) if "url:" in text)
    result = txsend(capsys, "run", job)
    assert result.code == 78, result.err
    assert says in result.err
    assert f"job.yaml:{line}" in result.err
    assert server.connections == 0
    assert "Traceback" not in result.err


def test_oauth_with_password_env_is_a_static_token(
    tmp_path: Path,
    server: ScriptedServer,
    tls_files: TlsFiles,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TXSEND_TEST_TOKEN", TOKEN)
    url = f"smtp://{USER.replace('@', '%40')}@127.0.0.1:{server.port}?tls=starttls"
    relay = relay_yaml(
        url,
        auth="oauthbearer",
        password_env="TXSEND_TEST_TOKEN",
        ca_file=tls_files.ca_file,
        messages_per_connection=1,
    )
    job = write_job(tmp_path, rows=2, extra_yaml=relay)
    result = txsend(capsys, "run", job)
    assert result.code == 0, result.err
    assert [e.initial for e in server.oauth_exchanges] == [expected_sasl("oauthbearer", server)] * 2
    assert_no_token(tmp_path, result, server)


def test_password_relays_are_unchanged_by_an_oauth_server(
    tmp_path: Path,
    server: ScriptedServer,
    tls_files: TlsFiles,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # auth: password (the default) against a relay that offers only XOAUTH2/OAUTHBEARER
    monkeypatch.setenv("TXSEND_TEST_PASSWORD", "pa55word")
    url = f"smtp://mailer@127.0.0.1:{server.port}?tls=starttls"
    relay = relay_yaml(url, password_env="TXSEND_TEST_PASSWORD", ca_file=tls_files.ca_file)
    job = write_job(tmp_path, rows=2, extra_yaml=relay)
    result = txsend(capsys, "run", job)
    assert result.code == 69, result.err
    assert "no usable AUTH mechanism" in result.err
    assert server.oauth_exchanges == []
    assert os.environ["TXSEND_TEST_PASSWORD"] not in result.err


def test_a_server_that_quotes_the_token_back_does_not_leak_it(
    tmp_path: Path, server: ScriptedServer, tls_files: TlsFiles, capsys: pytest.CaptureFixture[str]
) -> None:
    command = TokenCommand(tmp_path, "wrong", good=0)
    server.oauth_refusal = f"535 5.7.8 token Wr0ng{TOKEN} is not valid"
    job = oauth_job(tmp_path, server, tls_files, command)
    result = txsend(capsys, "run", job, "--report", tmp_path / "report.json")
    assert result.code == 69, result.err
    assert "535 5.7.8 token [token] is not valid" in result.err
    assert_no_token(tmp_path, result, server)


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_a_server_that_quotes_the_sasl_response_back_does_not_leak_the_token(
    mechanism: str,
    tmp_path: Path,
    server: ScriptedServer,
    tls_files: TlsFiles,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The base64 SASL response carries the token, decodable: quoted back in the relay's
    refusal, it must not reach the logs, the report or the journal."""
    command = TokenCommand(tmp_path, "wrong", good=0)
    url = f"smtp://{USER.replace('@', '%40')}@127.0.0.1:{server.port}?tls=starttls"
    relay = parse_relay_url(url, auth=mechanism, password_env="UNUSED")
    quoted = oauth_initial_response(relay, "Wr0ng" + TOKEN).decode()
    server.oauth_refusal = f"535 5.7.8 {quoted} is not valid"
    job = oauth_job(tmp_path, server, tls_files, command, auth=mechanism)
    result = txsend(capsys, "run", job, "--report", tmp_path / "report.json")
    assert result.code == 69, result.err
    assert "535 5.7.8 [token] is not valid" in result.err
    assert [base64.b64encode(e.initial).decode() for e in server.oauth_exchanges] == [quoted]
    assert quoted.rstrip("=").encode() not in everything_written(tmp_path, result)
    assert_no_token(tmp_path, result, server)


def test_oauthbearer_escapes_the_authorization_identity() -> None:
    relay = parse_relay_url(
        "smtps://a%2Cb%3Dc@smtp.example.com:465", auth="oauthbearer", password_env="T"
    )
    raw = base64.b64decode(oauth_initial_response(relay, "tok"))
    assert raw == b"n,a=a=2Cb=3Dc,\x01host=smtp.example.com\x01port=465\x01auth=Bearer tok\x01\x01"
    xoauth2 = parse_relay_url("smtps://u%40example.com@h", auth="xoauth2", password_env="T")
    assert base64.b64decode(oauth_initial_response(xoauth2, "tok")) == (
        b"user=u@example.com\x01auth=Bearer tok\x01\x01"
    )


def test_auth_defaults_to_password_and_takes_any_case() -> None:
    url = "smtps://mailer@smtp.example.com"
    assert parse_relay_url(url, password_env="P").auth is RelayAuth.PASSWORD
    assert parse_relay_url(url, password_env="P", auth="password").auth is RelayAuth.PASSWORD
    assert parse_relay_url(url, password_env="P", auth=" XOAuth2 ").auth is RelayAuth.XOAUTH2
