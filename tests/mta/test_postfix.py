"""The Postfix fixture makes real DSNs: a hard bounce and a delay warning, to the VERP address."""

from __future__ import annotations

import email
import email.policy
import smtplib
from email.message import EmailMessage, Message
from pathlib import Path

from tests.postfix import PostfixInstance, listening, postfix_instance, process_alive

TOKEN = "tx1abcdefabcdefghijklmnopqrstuvwxyz234567abcdefghi"
VERP = f"bounces+{TOKEN}@acme.example"


def _message(to: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = "News <news@acme.example>"
    msg["To"] = to
    msg["Subject"] = "Hello"
    msg["Message-ID"] = "<0123456789abcdef0123456789abcdef@acme.example>"
    msg.set_content("Hello there.\n")
    return msg.as_bytes(policy=email.policy.SMTP)


def _xtext(text: str) -> str:
    """RFC 3461 4: '+', '=' and characters outside '!'..'~' are written +XX."""
    return "".join(c if "!" <= c <= "~" and c not in "+=" else f"+{ord(c):02X}" for c in text)


def _send(instance: PostfixInstance, sender: str, to: str, *, envid: str | None = None) -> None:
    with smtplib.SMTP("127.0.0.1", instance.port, timeout=10) as client:
        client.ehlo("sender.test")
        assert client.has_extn("dsn"), "the relay must offer DSN (RFC 3461)"
        mail_options = ["RET=HDRS"] + ([f"ENVID={envid}"] if envid else [])
        refused = client.sendmail(
            sender,
            [to],
            _message(to),
            mail_options=mail_options,
            rcpt_options=["NOTIFY=FAILURE,DELAY", f"ORCPT=rfc822;{_xtext(to)}"],
        )
        assert refused == {}


def _read(path: Path) -> Message:
    return email.message_from_bytes(path.read_bytes(), policy=email.policy.compat32)


def _report(dsn: Message) -> tuple[Message, list[Message]]:
    """The per-message and per-recipient field groups of a message/delivery-status part."""
    assert dsn.get_content_type() == "multipart/report"
    assert dsn.get_param("report-type") == "delivery-status"
    parts = [p for p in dsn.walk() if p.get_content_type() == "message/delivery-status"]
    assert len(parts) == 1
    groups = parts[0].get_payload()
    assert isinstance(groups, list) and len(groups) >= 2
    return groups[0], groups[1:]


def test_a_refused_recipient_comes_back_as_a_dsn_to_the_verp_address(
    postfix: PostfixInstance,
) -> None:
    _send(postfix, VERP, "nobody1@nowhere.example", envid=TOKEN)

    [path] = postfix.wait_for_messages(1, timeout=10)
    dsn = _read(path)
    assert dsn["Delivered-To"] == VERP
    assert dsn["X-Original-To"] == VERP
    assert dsn["Return-Path"] == "<>"
    per_message, [recipient] = _report(dsn)
    assert per_message["Original-Envelope-Id"] == TOKEN
    assert per_message["Reporting-MTA"] == "dns; relay.txsend.test"
    assert recipient["Final-Recipient"] == "rfc822; nobody1@nowhere.example"
    assert recipient["Original-Recipient"] == "rfc822;nobody1@nowhere.example"
    assert recipient["Action"] == "failed"
    assert recipient["Status"].startswith("5.")
    assert recipient["Status"] == "5.1.1"
    assert "550 5.1.1" in recipient["Diagnostic-Code"]
    assert recipient["Diagnostic-Code"].startswith("smtp;")
    # RET=HDRS: the headers of the original come back, not its body
    returned = [p for p in dsn.walk() if p.get_content_type() == "text/rfc822-headers"]
    assert len(returned) == 1
    headers = returned[0].get_payload()
    assert isinstance(headers, str)
    assert "<0123456789abcdef0123456789abcdef@acme.example>" in headers
    assert "Hello there." not in dsn.as_string()


def test_a_deferred_recipient_gets_a_delayed_dsn(postfix: PostfixInstance) -> None:
    _send(postfix, VERP, "late@slow.example", envid=TOKEN)

    [path] = postfix.wait_for_messages(1, timeout=10)
    dsn = _read(path)
    assert dsn["Delivered-To"] == VERP
    per_message, [recipient] = _report(dsn)
    assert per_message["Original-Envelope-Id"] == TOKEN
    assert recipient["Final-Recipient"] == "rfc822; late@slow.example"
    assert recipient["Action"] == "delayed"
    assert recipient["Status"].startswith("4.")
    assert "late@slow.example" in postfix.queue()  # still queued: a note, not a failure


def test_mail_for_acme_is_delivered_to_the_maildir_whatever_the_local_part(
    postfix: PostfixInstance,
) -> None:
    _send(postfix, "news@acme.example", "someone+tag@acme.example")
    _send(postfix, "news@acme.example", VERP)

    paths = postfix.wait_for_messages(2, timeout=10)
    assert sorted(_read(p)["Delivered-To"] for p in paths) == sorted(
        ["someone+tag@acme.example", VERP]
    )


def test_the_instance_is_stopped_and_its_folder_removed_at_the_end() -> None:
    with postfix_instance() as instance:
        pid = int((instance.queue_directory / "pid" / "master.pid").read_text().split()[0])
        folder = instance.folder
        assert process_alive(pid)
    assert not process_alive(pid)
    assert not folder.exists()
    assert not listening(instance.port) and not listening(instance.mx_port)
