"""The scripted test SMTP server itself, driven with the standard library's smtplib."""

from __future__ import annotations

import smtplib
import time

import pytest

from tests.smtpd import ScriptedServer

MESSAGE = (
    b"From: Sender <sender@acme.example>\r\n"
    b"To: Ann <ann@example.com>\r\n"
    b"Subject: Hello, Ann\r\n"
    b"Message-ID: <1@acme.example>\r\n"
    b"\r\n"
    b"Hi Ann,\r\n"
    b".a line that starts with a dot\r\n"
)


def _client(server: ScriptedServer) -> smtplib.SMTP:
    client = smtplib.SMTP(server.host, server.port, timeout=10)
    client.ehlo("test.example")
    return client


def test_accepted_message_is_recorded(smtp_server: ScriptedServer) -> None:
    with _client(smtp_server) as client:
        refused = client.sendmail("sender@acme.example", ["ann@example.com"], MESSAGE)
    assert refused == {}
    smtp_server.wait_for(1)
    (got,) = smtp_server.received
    assert got.mail_from == "sender@acme.example"
    assert got.rcpt_tos == ["ann@example.com"]
    assert got.data == MESSAGE  # dot-unstuffed back to the original
    assert got.message["Subject"] == "Hello, Ann"
    assert got.message["To"].addresses[0].username == "ann"
    assert smtp_server.connections == 1
    assert smtp_server.url == f"smtp://127.0.0.1:{smtp_server.port}?tls=none"


def test_scripted_rcpt_refusal(smtp_server: ScriptedServer) -> None:
    smtp_server.rcpt_replies["bob@example.com"] = "550 5.1.1 <bob@example.com> no such user"
    with _client(smtp_server) as client:
        refused = client.sendmail(
            "sender@acme.example", ["ann@example.com", "Bob@Example.com"], MESSAGE
        )
        assert refused == {"Bob@Example.com": (550, b"5.1.1 <bob@example.com> no such user")}
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            client.sendmail("sender@acme.example", ["bob@example.com"], MESSAGE)
    assert [r.rcpt_tos for r in smtp_server.received] == [["ann@example.com"]]


def test_mail_reply_replaces_mail_from(smtp_server: ScriptedServer) -> None:
    smtp_server.mail_reply = "421 4.7.0 too busy"
    with _client(smtp_server) as client:
        assert client.mail("sender@acme.example") == (421, b"4.7.0 too busy")
    assert smtp_server.received == []


def test_data_reply_and_script_change_between_sends(smtp_server: ScriptedServer) -> None:
    smtp_server.data_reply = "451 4.3.0 try later"
    with _client(smtp_server) as client:
        with pytest.raises(smtplib.SMTPDataError) as info:
            client.sendmail("sender@acme.example", ["ann@example.com"], MESSAGE)
        assert info.value.smtp_code == 451
        assert smtp_server.received == []
        smtp_server.data_reply = None
        client.rset()
        assert client.sendmail("sender@acme.example", ["ann@example.com"], MESSAGE) == {}
    smtp_server.wait_for(1)


def test_data_delay(smtp_server: ScriptedServer) -> None:
    smtp_server.data_delay = 0.3
    with _client(smtp_server) as client:
        started = time.monotonic()
        client.sendmail("sender@acme.example", ["ann@example.com"], MESSAGE)
        elapsed = time.monotonic() - started
    assert elapsed >= 0.3


def test_disconnect_after_drops_once(smtp_server: ScriptedServer) -> None:
    smtp_server.disconnect_after = 1
    with _client(smtp_server) as client:
        client.sendmail("sender@acme.example", ["ann@example.com"], MESSAGE)
        with pytest.raises(smtplib.SMTPServerDisconnected):
            client.sendmail("sender@acme.example", ["ann@example.com"], MESSAGE)
    assert len(smtp_server.received) == 1
    assert len(smtp_server.dropped) == 1
    assert smtp_server.disconnect_after is None
    with _client(smtp_server) as client:  # once only: the next connection works
        client.sendmail("sender@acme.example", ["ann@example.com"], MESSAGE)
    smtp_server.wait_for(2)
    assert smtp_server.connections == 2


def test_credentials_require_auth(smtp_server: ScriptedServer) -> None:
    smtp_server.credentials = {"mailer": "s3cret"}
    with _client(smtp_server) as client:
        with pytest.raises(smtplib.SMTPSenderRefused):
            client.sendmail("sender@acme.example", ["ann@example.com"], MESSAGE)
        with pytest.raises(smtplib.SMTPAuthenticationError):
            client.login("mailer", "wrong")
    with _client(smtp_server) as client:
        client.login("mailer", "s3cret")
        client.sendmail("sender@acme.example", ["ann@example.com"], MESSAGE)
    smtp_server.wait_for(1)
    assert smtp_server.received[0].login == "mailer"


def test_wait_for_times_out(smtp_server: ScriptedServer) -> None:
    with pytest.raises(AssertionError, match="expected 1 messages"):
        smtp_server.wait_for(1, timeout=0.05)


def test_stop_with_open_connection() -> None:
    server = ScriptedServer()
    server.start()
    client = _client(server)
    server.stop()
    with pytest.raises(smtplib.SMTPServerDisconnected):
        client.noop()
    client.close()
    server.stop()  # idempotent
