"""TLS and AUTH end to end: the real CLI against ScriptedServer over STARTTLS, implicit TLS
and plain SMTP, with passwords from the environment or a file.

The certificates come from a throwaway CA made once per session with the openssl command
line; the tests that need them are skipped when it is not installed.
"""

from __future__ import annotations

import asyncio
import base64
import gc
import json
import os
import shutil
import smtplib
import sqlite3
import ssl
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faultserver import FaultServer, reply
from tests.jobs import Result, cli, write_job
from tests.smtpd import ScriptedServer, TlsFiles, make_tls_files
from txsend.delivery.smtp import RelayDown, SmtpConnection
from txsend.job.relays import parse_relay_url
from txsend.models import Timeouts

USER = "mailer"
PASSWORD = "s3cret-Pa55word-7f3a"  # distinctive, so a leak is found by substring
PASSWORD_ENV = "TXSEND_TEST_SMTP_PASSWORD"
MESSAGE = b"From: a@acme.example\r\nTo: b@example.com\r\nSubject: hi\r\n\r\nhello\r\n"


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    """A CA and a certificate for 127.0.0.1/localhost, made once for the session."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("TLS tests need the openssl command line to make test certificates")
    return make_tls_files(tmp_path_factory.mktemp("tls"), openssl=openssl)


@pytest.fixture
def starttls_server(tls_files: TlsFiles) -> Iterator[ScriptedServer]:
    """A server that offers STARTTLS and refuses mail (and AUTH) before it."""
    with ScriptedServer(tls_context=tls_files.server_context(), require_starttls=True) as server:
        yield server


@pytest.fixture
def smtps_server(tls_files: TlsFiles) -> Iterator[ScriptedServer]:
    """A server that speaks TLS from the first byte (smtps)."""
    with ScriptedServer(tls_context=tls_files.server_context(), implicit_tls=True) as server:
        yield server


@pytest.fixture(autouse=True)
def _only_the_system_trust_store(monkeypatch: pytest.MonkeyPatch) -> None:
    # Without ca_file txsend must trust only the default store; keep it the default one.
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    monkeypatch.delenv("TXSEND_RELAY", raising=False)


# --------------------------------------------------------------------------- helpers


def txsend(capsys: pytest.CaptureFixture[str], *args: object) -> Result:
    """`tests.jobs.cli`, then a garbage collection.

    A socket a run failed to close would otherwise warn (ResourceWarning, an error here)
    whenever the collector next runs, pinned on some later test; collected now, it fails
    the test whose run leaked it.
    """
    result = cli(capsys, *args)
    gc.collect()
    return result


def relays_yaml(url: str, **options: object) -> str:
    """The `relays:` block of a job with one relay."""
    lines = ["relays:", f"  - url: {url}"]
    for key, value in options.items():
        shown = str(value).lower() if isinstance(value, bool) else str(value)
        lines.append(f"    {key}: {shown}")
    return "\n".join(lines) + "\n"


def journal_rows(folder: Path) -> dict[str, tuple[str, int | None, str | None]]:
    """key -> (state, code, reply) from the journal next to the job."""
    db = sqlite3.connect(folder / "job.journal.db")
    try:
        rows = db.execute("SELECT key, state, code, reply FROM messages").fetchall()
    finally:
        db.close()
    return {key: (state, code, reply) for key, state, code, reply in rows}


def states(folder: Path) -> set[str]:
    return {state for state, _, _ in journal_rows(folder).values()}


def journal_bytes(folder: Path) -> bytes:
    """The journal and any WAL/SHM files beside it, as raw bytes."""
    return b"".join(path.read_bytes() for path in sorted(folder.glob("job.journal.db*")))


def addresses(rows: int) -> list[str]:
    return [f"user{i}@example.com" for i in range(rows)]


def assert_no_traceback(result: Result) -> None:
    assert "Traceback" not in result.err
    assert "Traceback" not in result.out


# --------------------------------------------------------------------------- the harness


def test_scripted_server_starttls_with_smtplib(
    starttls_server: ScriptedServer, tls_files: TlsFiles
) -> None:
    assert starttls_server.url == f"smtp://127.0.0.1:{starttls_server.port}?tls=starttls"
    with smtplib.SMTP(starttls_server.host, starttls_server.port, timeout=10) as client:
        client.ehlo("test.example")
        assert client.has_extn("starttls")
        assert client.mail("a@acme.example")[0] == 530  # require_starttls
        client.starttls(context=ssl.create_default_context(cafile=tls_files.ca_file))
        client.ehlo("test.example")
        assert client.sendmail("a@acme.example", ["b@example.com"], MESSAGE) == {}
    starttls_server.wait_for(1)
    assert starttls_server.received[0].tls is True
    assert starttls_server.tls_sessions == 1
    assert starttls_server.errors == []


def test_scripted_server_implicit_tls_with_smtplib(
    smtps_server: ScriptedServer, tls_files: TlsFiles
) -> None:
    assert smtps_server.url == f"smtps://127.0.0.1:{smtps_server.port}"
    context = ssl.create_default_context(cafile=tls_files.ca_file)
    with smtplib.SMTP_SSL(smtps_server.host, smtps_server.port, context=context) as client:
        assert client.sendmail("a@acme.example", ["b@example.com"], MESSAGE) == {}
    smtps_server.wait_for(1)
    assert smtps_server.received[0].tls is True
    assert smtps_server.tls_sessions == 1


def test_plain_server_records_no_tls(smtp_server: ScriptedServer) -> None:
    with smtplib.SMTP(smtp_server.host, smtp_server.port, timeout=10) as client:
        client.ehlo("test.example")
        assert not client.has_extn("starttls")
        client.sendmail("a@acme.example", ["b@example.com"], MESSAGE)
    smtp_server.wait_for(1)
    assert smtp_server.received[0].tls is False
    assert smtp_server.tls_sessions == 0


def test_implicit_tls_needs_a_context() -> None:
    with pytest.raises(ValueError, match="tls_context"):
        ScriptedServer(implicit_tls=True).start()


# --------------------------------------------------------------------------- TLS


def test_starttls_relay_delivers_every_row(
    tmp_path: Path,
    starttls_server: ScriptedServer,
    tls_files: TlsFiles,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = f"smtp://127.0.0.1:{starttls_server.port}?tls=starttls"
    job = write_job(tmp_path, rows=6, extra_yaml=relays_yaml(url, ca_file=tls_files.ca_file))
    result = txsend(capsys, "run", job)
    assert result.code == 0, result.err
    received = starttls_server.received
    assert sorted(r.rcpt_tos[0] for r in received) == sorted(addresses(6))
    assert all(r.tls for r in received), "a message was sent before STARTTLS"
    assert starttls_server.tls_sessions >= 1
    assert starttls_server.tls_failures == 0
    assert starttls_server.errors == []
    rows = journal_rows(tmp_path)
    assert {state for state, _, _ in rows.values()} == {"sent"}
    assert {code for _, code, _ in rows.values()} == {250}


def test_implicit_tls_relay_delivers(
    tmp_path: Path,
    smtps_server: ScriptedServer,
    tls_files: TlsFiles,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = f"smtps://127.0.0.1:{smtps_server.port}"
    job = write_job(tmp_path, rows=3, extra_yaml=relays_yaml(url, ca_file=tls_files.ca_file))
    result = txsend(capsys, "run", job)
    assert result.code == 0, result.err
    assert sorted(r.rcpt_tos[0] for r in smtps_server.received) == addresses(3)
    assert all(r.tls for r in smtps_server.received)
    assert smtps_server.tls_sessions >= 1
    assert states(tmp_path) == {"sent"}


def test_ca_file_relative_to_the_job_folder(
    tmp_path: Path,
    starttls_server: ScriptedServer,
    tls_files: TlsFiles,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    shutil.copy(tls_files.ca_file, job_dir / "relay-ca.pem")
    monkeypatch.chdir(tmp_path)  # not the job's folder
    url = f"smtp://127.0.0.1:{starttls_server.port}?tls=starttls"
    job = write_job(job_dir, rows=2, extra_yaml=relays_yaml(url, ca_file="relay-ca.pem"))
    result = txsend(capsys, "run", job)
    assert result.code == 0, result.err
    assert len(starttls_server.received) == 2


@pytest.mark.parametrize("mode", ["starttls", "smtps"])
def test_untrusted_certificate_exits_69_and_keeps_rows_pending(
    mode: str,
    tmp_path: Path,
    starttls_server: ScriptedServer,
    smtps_server: ScriptedServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    if mode == "starttls":
        server = starttls_server
        url = f"smtp://127.0.0.1:{server.port}?tls=starttls"
    else:
        server = smtps_server
        url = f"smtps://127.0.0.1:{server.port}"
    job = write_job(tmp_path, rows=3, extra_yaml=relays_yaml(url))  # no ca_file
    result = txsend(capsys, "run", job)
    assert result.code == 69, result.err
    assert_no_traceback(result)
    assert "certificate" in result.err.lower()
    assert server.connections >= 1  # it was reachable; the handshake failed
    assert server.tls_sessions == 0
    assert server.received == []
    assert states(tmp_path) == {"pending"}


def test_starttls_relay_without_starttls_support_is_not_sent_in_clear(
    tmp_path: Path, smtp_server: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"smtp://127.0.0.1:{smtp_server.port}?tls=starttls"
    job = write_job(tmp_path, rows=2, extra_yaml=relays_yaml(url))
    result = txsend(capsys, "run", job)
    assert result.code == 69, result.err
    assert_no_traceback(result)
    assert "starttls" in result.err.lower()
    assert smtp_server.received == []
    assert states(tmp_path) == {"pending"}


# --------------------------------------------------------------------------- AUTH


def test_auth_over_starttls_with_password_env(
    event_loop_choice: str,
    tmp_path: Path,
    starttls_server: ScriptedServer,
    tls_files: TlsFiles,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # both loops: the pipelined transactions take the TLS transport over from aiosmtplib
    starttls_server.credentials = {USER: PASSWORD}
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    url = f"smtp://{USER}@127.0.0.1:{starttls_server.port}?tls=starttls"
    job = write_job(
        tmp_path,
        rows=4,
        extra_yaml=relays_yaml(url, ca_file=tls_files.ca_file, password_env=PASSWORD_ENV),
    )
    result = txsend(capsys, "run", job)
    assert result.code == 0, result.err
    received = starttls_server.received
    assert sorted(r.rcpt_tos[0] for r in received) == addresses(4)
    assert {r.login for r in received} == {USER}
    assert all(r.tls for r in received)
    assert starttls_server.pipelined == 4
    assert states(tmp_path) == {"sent"}
    assert PASSWORD not in result.out + result.err
    assert PASSWORD.encode() not in journal_bytes(tmp_path)


def test_auth_over_implicit_tls(
    event_loop_choice: str,
    tmp_path: Path,
    smtps_server: ScriptedServer,
    tls_files: TlsFiles,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    smtps_server.credentials = {USER: PASSWORD}
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    url = f"smtps://{USER}@127.0.0.1:{smtps_server.port}"
    job = write_job(
        tmp_path,
        rows=2,
        extra_yaml=relays_yaml(url, ca_file=tls_files.ca_file, password_env=PASSWORD_ENV),
    )
    result = txsend(capsys, "run", job)
    assert result.code == 0, result.err
    assert [r.login for r in smtps_server.received] == [USER, USER]


def test_wrong_password_exits_69_and_never_shows_the_password(
    tmp_path: Path,
    starttls_server: ScriptedServer,
    tls_files: TlsFiles,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    starttls_server.credentials = {USER: "the-right-one"}
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    url = f"smtp://{USER}@127.0.0.1:{starttls_server.port}?tls=starttls"
    job = write_job(
        tmp_path,
        rows=3,
        extra_yaml=relays_yaml(url, ca_file=tls_files.ca_file, password_env=PASSWORD_ENV),
    )
    result = txsend(capsys, "run", job, "--json")
    assert result.code == 69, result.err
    assert_no_traceback(result)
    assert "authentication" in result.err.lower()
    assert starttls_server.received == []
    assert starttls_server.tls_sessions >= 1  # it got as far as AUTH, over TLS
    assert states(tmp_path) == {"pending"}
    json.loads(result.out)  # the summary is still one JSON object
    assert PASSWORD not in result.out
    assert PASSWORD not in result.err
    assert PASSWORD.encode() not in journal_bytes(tmp_path)
    status = txsend(capsys, "status", job, "--json")
    assert status.code == 0, status.err
    assert PASSWORD not in status.out + status.err


def test_a_relay_that_quotes_the_auth_plain_line_back_does_not_leak_the_password(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """AUTH PLAIN sends base64(NUL user NUL password): a relay quoting that back must not
    put the password, decodable, into the logs, the report or the journal."""
    plain = base64.b64encode(f"\0{USER}\0{PASSWORD}".encode()).decode()
    script = {
        "EHLO": reply("250-faultserver\n250 AUTH PLAIN"),
        "AUTH": reply(f"535 5.7.8 bad credentials {plain}"),
    }
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    with FaultServer(script) as server:
        url = f"smtp://{USER}@127.0.0.1:{server.port}?tls=none"
        job = write_job(
            tmp_path,
            rows=2,
            extra_yaml=relays_yaml(url, password_env=PASSWORD_ENV, allow_insecure_auth=True),
        )
        report = tmp_path / "report.json"
        result = txsend(capsys, "run", job, "--json", "--report", report)
        assert server.commands.count("AUTH") >= 1
    assert result.code == 69, result.err
    assert "535 5.7.8 bad credentials ***" in result.err
    written = result.out + result.err + report.read_text()
    for secret in (PASSWORD, plain, plain.rstrip("=")):
        assert secret not in written
        assert secret.encode() not in journal_bytes(tmp_path)
    assert_no_traceback(result)


@pytest.mark.parametrize("url_tail", ["", "?tls=none"])
def test_password_without_tls_is_refused_before_connecting(
    url_tail: str,
    tmp_path: Path,
    smtp_server: ScriptedServer,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    smtp_server.credentials = {USER: PASSWORD}
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    url = f"smtp://{USER}@127.0.0.1:{smtp_server.port}{url_tail}"  # loopback: tls=none
    job = write_job(tmp_path, rows=2, extra_yaml=relays_yaml(url, password_env=PASSWORD_ENV))
    result = txsend(capsys, "run", job)
    assert result.code == 78, result.err
    assert_no_traceback(result)
    assert "tls" in result.err.lower()
    assert "allow_insecure_auth" in result.err
    assert smtp_server.connections == 0
    assert PASSWORD not in result.out + result.err


def test_allow_insecure_auth_permits_auth_without_tls(
    tmp_path: Path,
    smtp_server: ScriptedServer,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    smtp_server.credentials = {USER: PASSWORD}
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    url = f"smtp://{USER}@127.0.0.1:{smtp_server.port}?tls=none"
    job = write_job(
        tmp_path,
        rows=3,
        extra_yaml=relays_yaml(url, password_env=PASSWORD_ENV, allow_insecure_auth=True),
    )
    result = txsend(capsys, "run", job)
    assert result.code == 0, result.err
    assert [r.login for r in smtp_server.received] == [USER] * 3
    assert not any(r.tls for r in smtp_server.received)
    assert states(tmp_path) == {"sent"}


def test_password_file_readable_by_others_is_refused(
    tmp_path: Path,
    starttls_server: ScriptedServer,
    tls_files: TlsFiles,
    capsys: pytest.CaptureFixture[str],
) -> None:
    starttls_server.credentials = {USER: PASSWORD}
    secret = tmp_path / "smtp-password"
    secret.write_text(PASSWORD + "\n", encoding="utf-8")
    secret.chmod(0o644)
    url = f"smtp://{USER}@127.0.0.1:{starttls_server.port}?tls=starttls"
    job = write_job(
        tmp_path,
        rows=2,
        extra_yaml=relays_yaml(url, ca_file=tls_files.ca_file, password_file=secret.name),
    )
    result = txsend(capsys, "run", job)
    assert result.code == 78, result.err
    assert_no_traceback(result)
    assert "chmod" in result.err
    assert starttls_server.connections == 0
    assert PASSWORD not in result.out + result.err


def test_password_file_private_delivers(
    tmp_path: Path,
    starttls_server: ScriptedServer,
    tls_files: TlsFiles,
    capsys: pytest.CaptureFixture[str],
) -> None:
    starttls_server.credentials = {USER: PASSWORD}
    secret = tmp_path / "smtp-password"
    secret.write_text(PASSWORD + "\n", encoding="utf-8")  # the newline is stripped
    os.chmod(secret, 0o600)
    url = f"smtp://{USER}@127.0.0.1:{starttls_server.port}?tls=starttls"
    job = write_job(
        tmp_path,
        rows=3,
        extra_yaml=relays_yaml(url, ca_file=tls_files.ca_file, password_file=secret.name),
    )
    result = txsend(capsys, "run", job)
    assert result.code == 0, result.err
    assert [r.login for r in starttls_server.received] == [USER] * 3
    assert all(r.tls for r in starttls_server.received)
    assert states(tmp_path) == {"sent"}
    assert PASSWORD.encode() not in journal_bytes(tmp_path)


# --------------------------------------------------------------------------- regressions


def test_tls_connection_is_closed_before_the_run_ends(
    starttls_server: ScriptedServer, tls_files: TlsFiles
) -> None:
    starttls_server.credentials = {USER: "the-right-one"}
    relay = parse_relay_url(
        f"smtp://{USER}@127.0.0.1:{starttls_server.port}?tls=starttls",
        ca_file=str(tls_files.ca_file),
        password_env=PASSWORD_ENV,
    )

    async def refused_login() -> None:
        connection = SmtpConnection(relay, PASSWORD, Timeouts())
        with pytest.raises(RelayDown, match="authentication"):
            await connection.open()

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        asyncio.run(refused_login())
        gc.collect()
    leaks = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert leaks == []


class SilentAfterAuth:
    """A STARTTLS relay that answers AUTH with `answer` (none: it never answers) and then
    never reads again: a client that closes its TLS session politely waits for a
    close_notify that never comes."""

    def __init__(self, context: ssl.SSLContext, answer: bytes = b"") -> None:
        self.context = context
        self.answer = answer
        self.port = 0
        self.auth = threading.Event()  # AUTH arrived (and was answered, if it is)
        self._writers: list[asyncio.StreamWriter] = []
        self._done: asyncio.Event | None = None
        self._server: asyncio.Server | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def __enter__(self) -> SilentAfterAuth:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._session, "127.0.0.1", 0), self._loop
        ).result(timeout=10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def __exit__(self, *exc: object) -> None:
        async def stop() -> None:
            assert self._server is not None
            self._server.close()
            for writer in self._writers:
                writer.transport.abort()
            if self._done is not None:
                self._done.set()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._server.wait_closed()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        self._done = self._done or asyncio.Event()
        writer.write(b"220 silent ESMTP\r\n")
        await reader.readline()  # EHLO
        writer.write(b"250-silent\r\n250 STARTTLS\r\n")
        await reader.readline()  # STARTTLS
        writer.write(b"220 go ahead\r\n")
        await writer.drain()
        await writer.start_tls(self.context)
        await reader.readline()  # EHLO
        writer.write(b"250-silent\r\n250 AUTH PLAIN\r\n")
        await reader.readline()  # AUTH
        writer.write(self.answer)
        await writer.drain()
        self.auth.set()
        await self._done.wait()  # never reads again; the socket stays open


@pytest.mark.parametrize("loop_name", ["asyncio", "uvloop"])
def test_a_refused_login_closes_the_tls_socket_without_waiting_for_the_relay(
    loop_name: str, tls_files: TlsFiles
) -> None:
    """uvloop's transports are no asyncio.WriteTransport: the connection was closed
    politely, waiting for the relay's close_notify, and the run's loop closed with the
    socket still open (uvloop: OSError EBUSY, an internal error, exit 70)."""
    factory = None
    if loop_name == "uvloop":
        uvloop = pytest.importorskip("uvloop", reason="uvloop is the optional 'speed' extra")
        factory = uvloop.new_event_loop
    refusal = b"454 4.7.0 Temporary authentication failure\r\n"
    with SilentAfterAuth(tls_files.server_context(), refusal) as server:
        relay = parse_relay_url(
            f"smtp://{USER}@127.0.0.1:{server.port}?tls=starttls",
            ca_file=str(tls_files.ca_file),
            password_env=PASSWORD_ENV,
        )

        async def refused_login() -> None:
            connection = SmtpConnection(relay, PASSWORD, Timeouts())
            with pytest.raises(RelayDown, match="454"):
                await connection.open()

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ResourceWarning)
            with asyncio.Runner(loop_factory=factory) as runner:  # closing: no socket open
                runner.run(refused_login())
            gc.collect()
        assert server.auth.is_set()
    leaks = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert leaks == []


@pytest.mark.parametrize("loop_name", ["asyncio", "uvloop"])
def test_a_connection_cancelled_while_it_opens_leaves_no_socket_open(
    loop_name: str, tls_files: TlsFiles
) -> None:
    """A run that stops (give_up_unreachable, Ctrl-C) cancels the connections being
    opened: one waiting for its AUTH reply over TLS was left to aiosmtplib's polite close,
    still open when the loop closed (uvloop: OSError EBUSY, an internal error, exit 70)."""
    factory = None
    if loop_name == "uvloop":
        uvloop = pytest.importorskip("uvloop", reason="uvloop is the optional 'speed' extra")
        factory = uvloop.new_event_loop
    with SilentAfterAuth(tls_files.server_context()) as server:
        relay = parse_relay_url(
            f"smtp://{USER}@127.0.0.1:{server.port}?tls=starttls",
            ca_file=str(tls_files.ca_file),
            password_env=PASSWORD_ENV,
        )

        async def cancelled_login() -> None:
            connection = SmtpConnection(relay, PASSWORD, Timeouts())
            opening = asyncio.create_task(connection.open())
            assert await asyncio.to_thread(server.auth.wait, 30), "AUTH never arrived"
            opening.cancel()
            with pytest.raises(asyncio.CancelledError):
                await opening

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ResourceWarning)
            with asyncio.Runner(loop_factory=factory) as runner:  # closing: no socket open
                runner.run(cancelled_login())
            gc.collect()
    leaks = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert leaks == []


def test_missing_ca_file_is_a_configuration_error(
    tmp_path: Path, starttls_server: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"smtp://127.0.0.1:{starttls_server.port}?tls=starttls"
    job = write_job(tmp_path, rows=2, extra_yaml=relays_yaml(url, ca_file="missing-ca.pem"))
    result = txsend(capsys, "run", job)
    assert_no_traceback(result)
    assert result.code in (66, 78), result.err
    assert "missing-ca.pem" in result.err
    assert starttls_server.received == []


@pytest.mark.parametrize("mode", ["starttls", "smtps"])
def test_tls_connection_is_closed_after_quit_before_the_run_ends(
    mode: str,
    starttls_server: ScriptedServer,
    smtps_server: ScriptedServer,
    tls_files: TlsFiles,
) -> None:
    server = starttls_server if mode == "starttls" else smtps_server
    relay = parse_relay_url(server.url, ca_file=str(tls_files.ca_file))

    async def open_and_close() -> None:
        connection = SmtpConnection(relay, None, Timeouts())
        await connection.open()
        await connection.close()

    leaks: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        for _ in range(10):  # the TLS close races the end of the loop: try a few times
            asyncio.run(open_and_close())
            gc.collect()
            leaks = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
            if leaks:
                break
    assert server.tls_sessions >= 1
    assert leaks == []
