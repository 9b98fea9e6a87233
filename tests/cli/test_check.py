"""`txsend check` end to end: the real CLI in this process against real SMTP servers on
127.0.0.1 (the suite's ScriptedServer with TLS and AUTH, the misbehaving FaultServer,
Postfix's smtp-sink), checking the exit code of each phase, the report (text and JSON),
what the server saw (never DATA, never a message), and that no password is ever shown."""

from __future__ import annotations

import base64
import datetime as dt
import gc
import json
import re
import shlex
import shutil
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.certs import make_dated_tls_files
from tests.delivery.test_delivery import SMTP_SINK, postfix_sink
from tests.faultserver import CLOSE, HANG, FaultServer, drip, make_misnamed_tls_files, reply
from tests.jobs import Result, cli, process_gone, txsend_subprocess, write_job
from tests.smtpd import ScriptedServer, TlsFiles, make_tls_files
from txsend.delivery.smtp.auth import oauth_initial_response
from txsend.job.relays import parse_relay_url

USER = "mailer"
PASSWORD = "Pr0be-s3cret-9c1d"  # distinctive, so a leak is found by substring
PASSWORD_ENV = "TXSEND_TEST_CHECK_PASSWORD"
SHOWN_UNVERIFIED = "a second connection without verification, only to show the certificate"


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # only the system store unless a ca_file says otherwise; no relay from the caller
    for name in ("SSL_CERT_FILE", "SSL_CERT_DIR", "TXSEND_RELAY", "TXSEND_RELAY_PASSWORD"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("TLS tests need the openssl command line to make test certificates")
    return make_tls_files(tmp_path_factory.mktemp("tls"), openssl=openssl)


class CountingServer(ScriptedServer):
    """A ScriptedServer that counts AUTH attempts (any mechanism, any outcome)."""

    auth_attempts = 0

    def _authenticate(self, *args: Any) -> Any:
        self.auth_attempts += 1
        return super()._authenticate(*args)


@contextmanager
def tls_server(
    files: TlsFiles, *, implicit: bool = False, auth: bool = True
) -> Iterator[CountingServer]:
    """A server with AUTH (USER / PASSWORD) that offers STARTTLS and wants it before mail
    and AUTH, or speaks TLS from the first byte."""
    server = CountingServer(
        tls_context=files.server_context(), implicit_tls=implicit, require_starttls=not implicit
    )
    if auth:
        server.credentials = {USER: PASSWORD}
    with server:
        yield server


# --------------------------------------------------------------------------- helpers


def check(capsys: pytest.CaptureFixture[str], *args: object) -> Result:
    """`txsend check ARGS`; then a garbage collection, so that a socket the probe failed
    to close warns (an error here) in this test and not in a later one."""
    result = cli(capsys, "check", *args)
    gc.collect()
    return result


def report(result: Result) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(result.out)
    return data


def phases(result: Result, relay: int = 0) -> dict[str, dict[str, Any]]:
    return {p["name"]: p for p in report(result)["relays"][relay]["phases"]}


def names(result: Result, relay: int = 0) -> list[str]:
    return [p["name"] for p in report(result)["relays"][relay]["phases"]]


def with_user(url: str, user: str = USER) -> str:
    scheme, rest = url.split("://", 1)
    return f"{scheme}://{user}@{rest}"


def job_with_relays(folder: Path, *relays: dict[str, object], timeouts: str = "") -> Path:
    """A job whose relays: are the given mappings (url: and options)."""
    lines = ["relays:"]
    for relay in relays:
        items = list(relay.items())
        key, value = items[0]
        lines.append(f"  - {key}: {json.dumps(value)}")
        lines += [f"    {k}: {json.dumps(v)}" for k, v in items[1:]]
    delivery = "  retry: {backoff: 10m}\n" + (f"  timeouts: {timeouts}\n" if timeouts else "")
    return write_job(folder, rows=1, extra_yaml="\n".join(lines) + "\n", delivery=delivery)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def assert_clean(result: Result) -> None:
    """No traceback and no password, in any output."""
    for text in (result.out, result.err):
        assert "Traceback" not in text
        assert PASSWORD not in text


# --------------------------------------------------------------------------- phases


def test_a_plain_relay_passes_every_phase(
    capsys: pytest.CaptureFixture[str], smtp_server: ScriptedServer
) -> None:
    result = check(capsys, smtp_server.url, "--json")
    assert result.code == 0, result.out + result.err
    assert result.err == ""
    data = report(result)
    assert data["exit_code"] == 0
    (relay,) = data["relays"]
    assert (relay["url"], relay["tls"], relay["failed_phase"]) == (smtp_server.url, "none", None)
    assert names(result) == ["connect", "greeting", "ehlo", "quit"]
    found = phases(result)
    assert found["connect"]["details"]["address"] == "127.0.0.1"
    assert found["connect"]["details"]["port"] == smtp_server.port
    assert found["greeting"]["code"] == 220
    assert "test-smtpd" in found["greeting"]["text"]
    ehlo = found["ehlo"]["details"]
    assert found["ehlo"]["code"] == 250
    assert ehlo["size"] == 50 * 1024 * 1024
    assert ehlo["offers"]["PIPELINING"] and ehlo["offers"]["SMTPUTF8"]
    assert ehlo["offers"]["8BITMIME"] and not ehlo["offers"]["STARTTLS"]
    assert "HELP" in ehlo["other"]
    assert found["quit"]["code"] == 221
    for phase in data["relays"][0]["phases"]:
        assert phase["ok"] is True and phase["seconds"] >= 0
    assert smtp_server.received == [] and smtp_server.connections == 1


def test_the_text_report_is_plain_on_a_pipe(
    capsys: pytest.CaptureFixture[str], smtp_server: ScriptedServer
) -> None:
    result = check(capsys, smtp_server.url)
    assert result.code == 0, result.out + result.err
    assert "\x1b[" not in result.out
    lines = result.out.splitlines()
    assert lines[0].startswith(smtp_server.url)
    assert any(line.split()[:2] == ["ok", "connect"] for line in lines)
    assert "offers: SIZE 52428800 (50.0 MiB)" in result.out
    assert lines[-1].strip() == "every phase passed (exit 0)"


def test_rcpt_tries_mail_and_rcpt_then_resets_and_sends_nothing(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with FaultServer() as server:
        result = check(
            capsys, server.url, "--rcpt", "bob@example.com", "--from", "Al <al@acme.example>"
        )
        assert result.code == 0, result.out + result.err
        assert server.commands == ["EHLO", "MAIL", "RCPT", "RSET", "QUIT"]
        assert server.arrivals() == {}
    assert "from: <al@acme.example>" in result.out
    assert "to: <bob@example.com>" in result.out
    assert "RSET: 250" in result.out


@pytest.mark.parametrize(
    ("extra", "sender"),
    [([], "<>"), (["--from", "<>"], "<>"), (["--job"], "<noreply@acme.example>")],
    ids=["null-sender", "explicit-null", "job-from"],
)
def test_the_sender_of_the_rcpt_test(
    extra: list[str], sender: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    with FaultServer() as server:
        if extra == ["--job"]:
            extra = ["--job", str(job_with_relays(tmp_path, {"url": server.url}))]
            args: list[str] = []
        else:
            args = [server.url]
        result = check(capsys, *args, *extra, "--rcpt", "bob@example.com", "--json")
        assert result.code == 0, result.out + result.err
        assert "DATA" not in server.commands
    assert phases(result)["mail"]["details"]["from"] == sender


def test_a_refused_port_fails_connect(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"smtp://127.0.0.1:{free_port()}?tls=none"
    result = check(capsys, url)
    assert result.code == 20, result.out + result.err
    assert "connection refused" in result.out
    assert "CONNECT failed (exit 20)" in result.out


@pytest.mark.parametrize("how", ["--timeout", "job timeouts", "URL with the job's timeouts"])
def test_a_server_that_never_greets_fails_the_greeting_within_the_limit(
    how: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    with FaultServer({"CONNECT": HANG}) as server:
        if how == "--timeout":
            args: list[str] = [server.url, "--timeout", "1s", "--json"]
        elif how == "job timeouts":
            job = job_with_relays(tmp_path, {"url": server.url}, timeouts="{connect: 1s}")
            args = ["--job", str(job), "--json"]
        else:  # a URL that is not the job's relay: probed alone, with the job's limits
            dead = f"smtp://127.0.0.1:{free_port()}"
            job = job_with_relays(tmp_path, {"url": dead}, timeouts="{connect: 1s}")
            args = [server.url, "--job", str(job), "--json"]
        started = time.monotonic()
        result = check(capsys, *args)
        elapsed = time.monotonic() - started
    assert result.code == 21, result.out + result.err
    assert 1 <= elapsed < 4
    greeting = phases(result)["greeting"]
    assert (greeting["ok"], greeting["code"]) == (False, None)
    assert greeting["text"] == "no reply within 1 s"
    assert names(result) == ["connect", "greeting"]  # no QUIT on a session that never began
    assert [r["url"] for r in report(result)["relays"]] == [server.url]


@pytest.mark.parametrize(
    ("script", "code", "phase"),
    [
        ({"CONNECT": drip("220-drip", every=0.05, forever=True)}, 21, "greeting"),
        ({"EHLO": drip("250-drip", every=0.05, forever=True)}, 22, "ehlo"),
        ({"MAIL": drip("250-drip", every=0.05, forever=True)}, 23, "mail"),
        ({"RCPT": HANG}, 24, "rcpt"),
    ],
    ids=["greeting", "ehlo", "mail", "rcpt"],
)
def test_a_dripping_or_silent_server_is_cut_off_at_the_phase_limit(
    script: dict[str, Any], code: int, phase: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with FaultServer(script) as server:
        started = time.monotonic()
        result = check(capsys, server.url, "--timeout", "1", "--rcpt", "b@example.com", "--json")
        elapsed = time.monotonic() - started
        assert "DATA" not in server.commands
    assert result.code == code, result.out + result.err
    assert elapsed < 4
    failed = phases(result)[phase]
    assert failed["ok"] is False and failed["text"] == "no reply within 1 s"
    assert report(result)["relays"][0]["failed_phase"] == phase


def test_a_554_greeting_fails_the_greeting_with_its_reply(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with FaultServer({"CONNECT": reply("554 5.7.1 no service for you")}) as server:
        result = check(capsys, server.url, "--json")
    assert result.code == 21, result.out + result.err
    greeting = phases(result)["greeting"]
    assert (greeting["code"], greeting["text"]) == (554, "5.7.1 no service for you")


@pytest.mark.parametrize("code", ["550", "421"])
def test_an_ehlo_refusal_fails_ehlo(code: str, capsys: pytest.CaptureFixture[str]) -> None:
    with FaultServer({"EHLO": reply(f"{code} 5.7.1 go away")}) as server:
        result = check(capsys, server.url, "--rcpt", "b@example.com", "--json")
        commands = list(server.commands)
    assert result.code == 22, result.out + result.err
    assert phases(result)["ehlo"]["code"] == int(code)
    assert "MAIL" not in commands and "HELO" not in commands


def test_starttls_missing_when_asked_fails_tls_and_says_nothing_more_in_clear(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TXSEND_RELAY_PASSWORD", PASSWORD)
    with FaultServer({"EHLO": reply("250-faultserver\n250 AUTH PLAIN LOGIN")}) as server:
        url = f"smtp://{USER}@127.0.0.1:{server.port}?tls=starttls"
        result = check(capsys, url, "--rcpt", "b@example.com", "--json")
        commands = list(server.commands)
    assert result.code == 29, result.out + result.err
    assert "does not offer STARTTLS" in phases(result)["tls"]["text"]
    assert commands == ["EHLO", "QUIT"]  # no AUTH, no MAIL in clear
    assert_clean(result)


def test_mail_refused_fails_mail_and_rcpt_is_not_tried(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with FaultServer({"MAIL": reply("550 5.7.1 sender not allowed")}) as server:
        result = check(capsys, server.url, "--rcpt", "b@example.com", "--json")
        commands = list(server.commands)
    assert result.code == 23, result.out + result.err
    mail = phases(result)["mail"]
    assert (mail["code"], mail["text"]) == (550, "5.7.1 sender not allowed")
    assert commands == ["EHLO", "MAIL", "RSET", "QUIT"]


@pytest.mark.parametrize("refusal", ["550 5.1.1 no such user", "451 4.7.1 try later"])
def test_rcpt_refused_fails_rcpt_whatever_its_class(
    refusal: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with FaultServer({"RCPT": reply(refusal)}) as server:
        result = check(capsys, server.url, "--rcpt", "nobody@example.com", "--json")
        commands = list(server.commands)
        assert server.arrivals() == {}
    assert result.code == 24, result.out + result.err
    rcpt = phases(result)["rcpt"]
    assert f"{rcpt['code']} {rcpt['text']}" == refusal
    assert commands == ["EHLO", "MAIL", "RCPT", "RSET", "QUIT"]


def test_an_international_address_needs_smtputf8(capsys: pytest.CaptureFixture[str]) -> None:
    with FaultServer() as server:  # its EHLO offers no SMTPUTF8
        result = check(capsys, server.url, "--rcpt", "jösé@example.com", "--json")
        commands = list(server.commands)
    assert result.code == 23, result.out + result.err
    assert "SMTPUTF8" in phases(result)["mail"]["text"]
    assert "MAIL" not in commands


def test_an_international_address_goes_with_smtputf8(
    capsys: pytest.CaptureFixture[str], smtp_server: ScriptedServer
) -> None:
    result = check(capsys, smtp_server.url, "--rcpt", "jösé@example.com", "--json")
    assert result.code == 0, result.out + result.err
    assert phases(result)["rcpt"]["details"]["to"] == "<jösé@example.com>"
    assert smtp_server.received == []


# --------------------------------------------------------------------------- AUTH


def test_auth_accepted_and_refused_over_starttls(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    tls_files: TlsFiles,
) -> None:
    with tls_server(tls_files) as server:
        relay = {"url": with_user(server.url), "password_env": PASSWORD_ENV}
        relay["ca_file"] = str(tls_files.ca_file)
        job = job_with_relays(tmp_path, relay)
        monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
        accepted = check(capsys, "--job", job, "--json")
        text = check(capsys, "--job", job)
        assert server.auth_attempts == 2
        monkeypatch.setenv(PASSWORD_ENV, PASSWORD + "-wrong")
        refused = check(capsys, "--job", job, "--json")
        refused_text = check(capsys, "--job", job)
        assert server.received == []
        # aiosmtplib tries each mechanism offered (PLAIN, LOGIN) before it gives up
        assert server.auth_attempts > 2
    assert accepted.code == 0, accepted.out + accepted.err
    assert names(accepted) == [
        "connect",
        "greeting",
        "ehlo",
        "tls",
        "ehlo_after_tls",
        "auth",
        "quit",
    ]
    found = phases(accepted)
    # AUTH is offered only after STARTTLS
    assert found["ehlo"]["details"]["auth"] == []
    assert found["ehlo"]["details"]["offers"]["STARTTLS"]
    assert {"PLAIN", "LOGIN"} <= set(found["ehlo_after_tls"]["details"]["auth"])
    assert found["auth"]["text"] == f"authenticated as {USER}"
    assert text.code == 0 and "authenticated as mailer" in text.out
    assert refused.code == 28, refused.out + refused.err
    auth = phases(refused)["auth"]
    assert (auth["ok"], auth["code"]) == (False, 535)
    assert refused_text.code == 28 and "AUTH failed (exit 28)" in refused_text.out
    for result in (accepted, text, refused, refused_text):
        assert_clean(result)


def test_auth_not_offered_is_no_usable_mechanism(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TXSEND_RELAY_PASSWORD", PASSWORD)
    with FaultServer() as server:
        result = check(capsys, with_user(server.url), "--json")
        commands = list(server.commands)
    assert result.code == 28, result.out + result.err
    assert "offers no AUTH" in phases(result)["auth"]["text"]
    assert commands == ["EHLO", "QUIT"]
    assert_clean(result)


def test_a_relay_that_echoes_the_password_is_shown_without_it(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TXSEND_RELAY_PASSWORD", PASSWORD)
    script = {
        "EHLO": reply("250-faultserver\n250 AUTH PLAIN LOGIN"),
        "AUTH": reply(f"535 5.7.8 password {PASSWORD} is wrong"),
    }
    with FaultServer(script) as server:
        for args in ([], ["--json"]):
            result = check(capsys, with_user(server.url), *args)
            assert result.code == 28, result.out + result.err
            assert_clean(result)
            assert "password *** is wrong" in result.out


def test_a_job_relay_named_by_its_url_keeps_its_password_source(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    server = CountingServer()
    server.credentials = {USER: PASSWORD}
    with server:
        url = with_user(server.url)
        relay = {"url": url, "password_env": PASSWORD_ENV, "allow_insecure_auth": True}
        job = job_with_relays(tmp_path, {"url": f"smtp://127.0.0.1:{free_port()}"}, relay)
        monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
        result = check(capsys, url, "--job", job, "--json")
        assert server.auth_attempts == 1
    assert result.code == 0, result.out + result.err
    assert [r["url"] for r in report(result)["relays"]] == [url]  # only that relay
    assert_clean(result)


# --------------------------------------------------------------------------- TLS


def test_starttls_verified_with_the_ca_file_shows_the_certificate(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    tls_files: TlsFiles,
    event_loop_choice: str,
) -> None:
    with tls_server(tls_files, auth=False) as server:
        job = job_with_relays(tmp_path, {"url": server.url, "ca_file": str(tls_files.ca_file)})
        result = check(capsys, "--job", job, "--rcpt", "b@example.com", "--json")
        text = check(capsys, "--job", job)
        assert server.received == []
        assert server.tls_sessions == 2
    assert result.code == 0, result.out + result.err
    tls = phases(result)["tls"]
    assert tls["code"] == 220
    details = tls["details"]
    assert details["mode"] == "starttls" and details["verified"] is True
    assert details["version"].startswith("TLSv1.")
    assert details["cipher"] and details["cipher_bits"] >= 128
    assert details["trust"] == f"ca_file {tls_files.ca_file}"
    leaf = details["certificates"][0]
    assert (leaf["subject"], leaf["issuer"]) == ("CN=localhost", "CN=txsend test CA")
    assert (leaf["dns_names"], leaf["ip_addresses"]) == (["localhost"], ["127.0.0.1"])
    assert leaf["days_left"] in (0, 1)  # make_tls_files: 2 days from a moment ago
    assert dt.datetime.fromisoformat(leaf["not_after"]) > dt.datetime.now(dt.UTC)
    if not details["whole_chain"]:
        assert "3.13" in details["chain_note"]
    assert text.code == 0
    assert "certificate 1 (the relay's): CN=localhost" in text.out
    assert "issuer: CN=txsend test CA" in text.out
    assert "names: DNS:localhost, IP:127.0.0.1" in text.out


def test_smtps_implicit_tls(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    tls_files: TlsFiles,
    event_loop_choice: str,
) -> None:
    with tls_server(tls_files, implicit=True) as server:
        relay = {"url": with_user(server.url), "password_env": PASSWORD_ENV}
        relay["ca_file"] = str(tls_files.ca_file)
        monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
        result = check(capsys, "--job", job_with_relays(tmp_path, relay), "--json")
        assert server.auth_attempts == 1
    assert result.code == 0, result.out + result.err
    assert names(result) == ["connect", "tls", "greeting", "ehlo", "auth", "quit"]
    found = phases(result)
    assert found["tls"]["details"]["mode"] == "implicit"
    assert found["tls"]["details"]["certificates"][0]["subject"] == "CN=localhost"
    assert found["greeting"]["code"] == 220
    assert_clean(result)


@pytest.mark.parametrize("implicit", [False, True], ids=["starttls", "smtps"])
def test_an_unknown_ca_fails_tls_and_shows_the_certificate_without_auth(
    implicit: bool,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tls_files: TlsFiles,
) -> None:
    monkeypatch.setenv("TXSEND_RELAY_PASSWORD", PASSWORD)
    with tls_server(tls_files, implicit=implicit) as server:
        result = check(capsys, with_user(server.url), "--rcpt", "b@example.com", "--json")
        text = check(capsys, with_user(server.url))
        assert server.auth_attempts == 0
        assert server.received == []
        assert server.connections == 4  # each probe: its own, and one to show the certificate
    assert result.code == 29, result.out + result.err
    assert names(result)[-1] == "tls"
    tls = phases(result)["tls"]
    details = tls["details"]
    assert details["verified"] is False
    assert details["trust"] == "the system's CA store"
    assert details["verify_error"]["kind"] == "unknown_ca"
    assert "local issuer certificate" in details["verify_error"]["message"]
    assert details["certificates_from"] == SHOWN_UNVERIFIED
    assert details["certificates"][0]["issuer"] == "CN=txsend test CA"
    assert text.code == 29
    assert "certificate not verified: unable to get local issuer certificate" in text.out
    assert "TLS failed (exit 29)" in text.out
    assert_clean(result)
    assert_clean(text)


def test_a_wrong_host_name_fails_tls(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command line")
    files = make_misnamed_tls_files(tmp_path / "tls")
    server = CountingServer(tls_context=files.server_context(), require_starttls=True)
    with server:
        job = job_with_relays(tmp_path, {"url": server.url, "ca_file": str(files.ca_file)})
        result = check(capsys, "--job", job, "--json")
    assert result.code == 29, result.out + result.err
    details = phases(result)["tls"]["details"]
    assert details["verify_error"]["kind"] == "wrong_host_name"
    assert "127.0.0.1" in details["verify_error"]["message"]
    assert details["certificates"][0]["dns_names"] == ["wrong-name.example"]


def test_an_expired_certificate_fails_tls(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    now = dt.datetime.now(dt.UTC)
    files = make_dated_tls_files(
        tmp_path / "tls",
        not_before=now - dt.timedelta(days=30),
        not_after=now - dt.timedelta(days=3),
    )
    server = ScriptedServer(tls_context=files.server_context(), require_starttls=True)
    with server:
        job = job_with_relays(tmp_path, {"url": server.url, "ca_file": str(files.ca_file)})
        result = check(capsys, "--job", job, "--json")
        text = check(capsys, "--job", job)
    assert result.code == 29, result.out + result.err
    details = phases(result)["tls"]["details"]
    assert details["verify_error"] == {"kind": "expired", "message": "certificate has expired"}
    assert details["certificates"][0]["days_left"] == -3
    assert details["certificates"][0]["expired"] is True
    assert "(EXPIRED 3 days ago)" in text.out


def test_a_certificate_that_expires_soon_says_how_soon(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    now = dt.datetime.now(dt.UTC)
    files = make_dated_tls_files(
        tmp_path / "tls",
        not_before=now - dt.timedelta(days=80),
        not_after=now + dt.timedelta(days=10, hours=1),
    )
    with ScriptedServer(tls_context=files.server_context(), implicit_tls=True) as server:
        job = job_with_relays(tmp_path, {"url": server.url, "ca_file": str(files.ca_file)})
        result = check(capsys, "--job", job)
    assert result.code == 0, result.out + result.err
    assert "(10 days left)" in result.out


# --------------------------------------------------------------------------- several relays


def test_every_relay_of_a_job_is_probed_and_the_first_failure_decides(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    dead = f"smtp://127.0.0.1:{free_port()}?tls=none"
    with FaultServer({"RCPT": reply("550 5.1.1 no")}) as refusing, FaultServer() as fine:
        job = job_with_relays(tmp_path, {"url": fine.url}, {"url": refusing.url}, {"url": dead})
        result = check(capsys, "--job", job, "--rcpt", "b@example.com", "--json")
        text = check(capsys, "--job", job, "--rcpt", "b@example.com")
        assert "DATA" not in fine.commands + refusing.commands
    assert result.code == 24, result.out + result.err
    data = report(result)
    assert [(r["url"], r["exit_code"]) for r in data["relays"]] == [
        (fine.url, 0),
        (refusing.url, 24),
        (dead, 20),
    ]
    assert data["exit_code"] == 24
    assert text.code == 24
    assert f"exit 24: the first failing relay, {refusing.url}" in text.out


def test_txsend_relay_names_the_relays_when_nothing_else_does(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    dead = f"smtp://127.0.0.1:{free_port()}?tls=none"
    with FaultServer() as server:
        monkeypatch.setenv("TXSEND_RELAY", f"{dead}, {server.url}")
        result = check(capsys, "--json")
    assert result.code == 20, result.out + result.err
    assert [r["exit_code"] for r in report(result)["relays"]] == [20, 0]


# --------------------------------------------------------------------------- before probing


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["ftp://mail.example"], 78, "unsupported scheme ftp://"),
        (["smtp://mail.example?tls=maybe"], 78, "tls must be starttls or none"),
        ([f"smtp://u:{PASSWORD}@mail.example"], 78, "passwords do not belong in relay URLs"),
        (["smtp://mailer@127.0.0.1:2525"], 78, "no password source"),
        (["--job", "missing.yaml"], 66, "job file not found"),
        ([], 64, "no relay to check"),
        (["smtp://127.0.0.1:25", "--timeout", "soon"], 64, "--timeout"),
        (["smtp://127.0.0.1:25", "--timeout", "0"], 64, "--timeout"),
        (["smtp://127.0.0.1:25", "--rcpt", "not an address"], 64, "--rcpt"),
        (["smtp://127.0.0.1:25", "--from", "a@b.example"], 64, "there is no --rcpt"),
        (["smtp://127.0.0.1:25", "--rcpt", "b@example.com", "--from", "x@"], 64, "--from"),
        (["smtp://127.0.0.1:25", "--bogus"], 64, "--bogus"),
    ],
)
def test_errors_before_probing_go_to_stderr_with_their_code(
    args: list[str],
    code: int,
    message: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.chdir(tmp_path)
    for extra in ([], ["--json"]):
        result = check(capsys, *args, *extra)
        assert result.code == code, result.out + result.err
        assert result.out == ""
        assert message in result.err
        assert_clean(result)


def test_a_bad_job_is_65(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    job = tmp_path / "job.yaml"
    job.write_text("name: [unclosed\n", encoding="utf-8")
    result = check(capsys, "--job", job)
    assert result.code == 65, result.out + result.err
    assert result.out == ""


def test_a_job_without_relays_is_78(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    result = check(capsys, "--job", write_job(tmp_path, rows=1))
    assert result.code == 78, result.out + result.err
    assert "has no relays" in result.err


@pytest.mark.parametrize("problem", ["missing", "not pem"])
def test_an_unreadable_ca_file_is_78(
    problem: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    ca_file = tmp_path / "ca.pem"
    if problem == "not pem":
        ca_file.write_text("hello\n", encoding="utf-8")
    job = job_with_relays(
        tmp_path, {"url": "smtp://127.0.0.1:2525?tls=starttls", "ca_file": str(ca_file)}
    )
    result = check(capsys, "--job", job)
    assert result.code == 78, result.out + result.err
    assert "cannot load ca_file" in result.err


def test_a_missing_password_env_is_78_before_any_relay_is_dialled(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    with FaultServer() as server:
        relay = {"url": with_user(server.url), "password_env": PASSWORD_ENV}
        relay["allow_insecure_auth"] = True
        job = job_with_relays(tmp_path, {"url": server.url}, relay)
        result = check(capsys, "--job", job)
        assert server.connections == 0
    assert result.code == 78, result.out + result.err
    assert PASSWORD_ENV in result.err


# --------------------------------------------------------------------------- smtp-sink


@pytest.mark.skipif(SMTP_SINK is None, reason="Postfix's smtp-sink is not installed")
@pytest.mark.parametrize(
    ("flags", "code"),
    [([], 0), (["-r", "rcpt"], 24), (["-f", "mail"], 23), (["-f", "ehlo"], 22)],
    ids=["accept", "soft-rcpt", "hard-mail", "hard-ehlo"],
)
def test_smtp_sink(flags: list[str], code: int, capsys: pytest.CaptureFixture[str]) -> None:
    with postfix_sink(*flags) as sink:
        url = f"smtp://127.0.0.1:{sink.port}?tls=none"
        result = check(capsys, url, "--rcpt", "b@example.com", "--json")
        bodies = [p.read_text(errors="replace") for p in sink.dumps.iterdir()]
    assert result.code == code, result.out + result.err
    assert not any("\nMessage-ID: " in body or "DATA" in body for body in bodies)
    if code == 0:
        found = phases(result)
        assert found["ehlo"]["details"]["offers"]["PIPELINING"]
        assert found["rcpt"]["code"] == 250


# --------------------------------------------------------------------------- odd relays


@pytest.mark.parametrize(
    ("script", "code", "phase", "text"),
    [
        ({"CONNECT": CLOSE}, 21, "greeting", "the relay closed the connection"),
        ({"EHLO": CLOSE}, 22, "ehlo", "the relay closed the connection"),
        (
            {"EHLO": reply("250-faultserver\n250 STARTTLS"), "STARTTLS": reply("454 4.7.0 no")},
            29,
            "tls",
            "4.7.0 no",
        ),
        (
            # 220 to STARTTLS, and then no handshake: the client's hello is never answered
            {
                "CONNECT": reply("220 faultserver"),  # "*" would answer it too
                "EHLO": reply("250-faultserver\n250 STARTTLS"),
                "STARTTLS": reply("220 go ahead"),
                "*": HANG,
            },
            29,
            "tls",
            "TLS handshake not done within 1 s",
        ),
        (
            # 220 to STARTTLS, and then plain text where the server's hello should be
            {"EHLO": reply("250-faultserver\n250 STARTTLS"), "STARTTLS": reply("220 go ahead")},
            29,
            "tls",
            "TLS handshake failed: WRONG_VERSION_NUMBER",
        ),
    ],
    ids=["closed-before-greeting", "closed-at-ehlo", "starttls-454", "no-handshake", "garbage"],
)
def test_relays_that_hang_up_or_refuse_tls(
    script: dict[str, Any], code: int, phase: str, text: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with FaultServer(script) as server:
        url = server.url.replace("tls=none", "tls=starttls")
        started = time.monotonic()
        result = check(capsys, url, "--timeout", "1", "--rcpt", "b@example.com", "--json")
        elapsed = time.monotonic() - started
        commands = list(server.commands)
    assert result.code == code, result.out + result.err
    assert elapsed < 4
    failed = phases(result)[phase]
    assert failed["ok"] is False and text in failed["text"]
    assert "MAIL" not in commands


def test_smtps_to_a_plain_port_fails_the_handshake(capsys: pytest.CaptureFixture[str]) -> None:
    with FaultServer() as server:
        result = check(capsys, f"smtps://127.0.0.1:{server.port}", "--timeout", "2", "--json")
    assert result.code == 29, result.out + result.err
    assert phases(result)["tls"]["text"].startswith("TLS handshake failed")


def test_what_a_relay_says_is_shown_as_text_not_markup(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with FaultServer({"CONNECT": reply("220-[bold red]hi[/] there\n220 second line")}) as server:
        result = check(capsys, server.url)
    assert result.code == 0, result.out + result.err
    assert "220 [bold red]hi[/] there" in result.out
    assert "second line" in result.out


def test_the_console_script_exits_with_the_phase_code() -> None:
    """The real entry point (`python -m txsend`), in a process of its own."""
    with FaultServer({"RCPT": reply("550 5.1.1 no such user")}) as server:
        proc = txsend_subprocess("check", server.url, "--rcpt", "b@example.com", "--json")
        out, err = proc.communicate(timeout=60)
        assert "DATA" not in server.commands
    assert proc.returncode == 24, err
    assert json.loads(out)["relays"][0]["failed_phase"] == "rcpt"
    assert err == ""


@pytest.mark.parametrize("value", ["nan", "inf", "1e400"])
def test_a_timeout_that_is_no_limit_is_a_usage_error(
    value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    result = check(capsys, "smtp://127.0.0.1:25?tls=none", "--timeout", value)
    assert result.code == 64, result.out + result.err
    assert "--timeout" in result.err and "internal error" not in result.err
    assert result.out == ""


# --------------------------------------------------------------------------- OAuth relays

OAUTH_USER = "mailer@acme.example"
TOKEN = "ya29.TXSEND-check-T0ken-5e2b"  # distinctive, so a leak is found by substring


def oauth_check_job(
    folder: Path, server: ScriptedServer, files: TlsFiles, code: str, **options: object
) -> Path:
    """A job whose one relay is `server` with auth: xoauth2 (or `auth` in options) and a
    password_cmd running the Python `code`."""
    command = shlex.join([sys.executable, "-c", code])
    relay: dict[str, object] = {
        "url": f"smtp://{OAUTH_USER.replace('@', '%40')}@127.0.0.1:{server.port}?tls=starttls",
        "auth": "xoauth2",
        "password_cmd": command,
        "ca_file": str(files.ca_file),
    }
    relay.update(options)
    timeouts = str(relay.pop("timeouts", ""))
    return job_with_relays(folder, relay, timeouts=timeouts)


def sasl_forms(server: ScriptedServer) -> list[str]:
    """Every SASL response the server saw, as it went on the wire (base64)."""
    return [base64.b64encode(e.initial).decode() for e in server.oauth_exchanges]


@pytest.mark.parametrize("mechanism", ["xoauth2", "oauthbearer"])
def test_check_of_an_oauth_relay_logs_in_with_the_token_and_never_shows_it(
    mechanism: str, capsys: pytest.CaptureFixture[str], tmp_path: Path, tls_files: TlsFiles
) -> None:
    server = ScriptedServer(tls_context=tls_files.server_context(), require_starttls=True)
    server.oauth_tokens = {OAUTH_USER: TOKEN}
    with server:
        job = oauth_check_job(tmp_path, server, tls_files, f"print({TOKEN!r})", auth=mechanism)
        for args in ([], ["--json"]):
            result = check(capsys, "--job", job, *args)
            assert result.code == 0, result.out + result.err
            assert TOKEN not in result.out + result.err
            for form in sasl_forms(server):
                assert form not in result.out + result.err
    assert [e.reply for e in server.oauth_exchanges] == ["235", "235"]
    assert all(TOKEN.encode() in e.initial for e in server.oauth_exchanges)
    assert {e.mechanism for e in server.oauth_exchanges} == {mechanism.upper()}
    assert server.received == []


@pytest.mark.parametrize("mechanism", ["xoauth2", "oauthbearer"])
def test_check_of_an_oauth_relay_that_quotes_the_sasl_response_back_hides_the_token(
    mechanism: str, capsys: pytest.CaptureFixture[str], tmp_path: Path, tls_files: TlsFiles
) -> None:
    server = ScriptedServer(tls_context=tls_files.server_context(), require_starttls=True)
    server.oauth_tokens = {OAUTH_USER: "another-token"}
    with server:
        job = oauth_check_job(tmp_path, server, tls_files, f"print({TOKEN!r})", auth=mechanism)
        # what a relay that quotes the client's line back says: the base64 SASL response
        url = f"smtp://{OAUTH_USER.replace('@', '%40')}@127.0.0.1:{server.port}?tls=starttls"
        relay = parse_relay_url(url, auth=mechanism, password_env="UNUSED")
        quoted = oauth_initial_response(relay, TOKEN).decode()
        server.oauth_refusal = f"535 5.7.8 {quoted} not accepted for {TOKEN}"
        for args in ([], ["--json"]):
            result = check(capsys, "--job", job, *args)
            assert result.code == 28, result.out + result.err
            shown = result.out + result.err
            assert TOKEN not in shown and quoted not in shown and quoted.rstrip("=") not in shown
            assert "[token] not accepted for [token]" in shown
    assert sasl_forms(server) == [quoted, quoted]


@pytest.mark.parametrize(
    ("limit", "args", "named"),
    [
        ("{connect: 1s, command: 30s}", [], "1 s (timeouts.connect)"),
        ("", ["--timeout", "1s"], "1 s (--timeout)"),
    ],
)
def test_check_stops_a_hanging_token_command_at_the_connect_limit(
    limit: str,
    args: list[str],
    named: str,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    tls_files: TlsFiles,
) -> None:
    pid_file = tmp_path / "grandchild"
    code = (
        "import pathlib, subprocess\n"
        "child = subprocess.Popen(['sleep', '3600'])\n"
        f"pathlib.Path({str(pid_file)!r}).write_text(str(child.pid))\n"
        "child.wait()\n"
    )
    server = ScriptedServer(tls_context=tls_files.server_context(), require_starttls=True)
    server.oauth_tokens = {OAUTH_USER: TOKEN}
    with server:
        job = oauth_check_job(tmp_path, server, tls_files, code, timeouts=limit)
        started = time.monotonic()
        result = check(capsys, "--job", job, *args)
        elapsed = time.monotonic() - started
    assert result.code == 78, result.out + result.err
    assert f"password_cmd did not finish within {named}: stopped" in result.err
    assert elapsed < 20, elapsed  # not the 30 s the check used to allow whatever the job said
    assert result.out == "" and server.connections == 0
    assert process_gone(int(pid_file.read_text()))


def test_an_ehlo_reply_too_long_to_read_is_an_ehlo_failure_without_a_reply_code(
    capsys: pytest.CaptureFixture[str],
) -> None:
    lines = ["250-faultserver"] + [f"250-X-EXTENSION-{i} with parameters" for i in range(2000)]
    with FaultServer({"EHLO": reply("\n".join([*lines, "250 8BITMIME"]))}) as server:
        result = check(capsys, server.url, "--json")
    assert result.code == 22, result.out + result.err
    ehlo = phases(result)["ehlo"]
    assert ehlo["ok"] is False and ehlo["code"] is None  # -1 is aiosmtplib's, not the relay's
    assert ehlo["text"] == "the relay's reply could not be read: Response too long"
    assert_clean(result)


def test_a_run_names_an_unreadable_ehlo_reply_as_such(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    lines = ["250-faultserver"] + [f"250-X-EXTENSION-{i} with parameters" for i in range(2000)]
    with FaultServer({"EHLO": reply("\n".join([*lines, "250 8BITMIME"]))}) as server:
        relays = f"relays:\n  - url: {server.url}\n"
        job = write_job(tmp_path, rows=1, extra_yaml=relays)  # gives up after 1 s
        result = cli(capsys, "run", job)
    assert result.code == 69, result.err
    assert "EHLO: the relay's reply could not be read: Response too long" in result.err
    assert "STARTTLS" not in result.err
    # aiosmtplib's -1 is no reply code (the temporary folder's name may hold "-1", as in
    # pytest-of-root/pytest-160: only a -1 standing alone counts)
    assert re.search(r"(?<![\w/.-])-1\b", result.err) is None, result.err
