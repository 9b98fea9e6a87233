"""`txsend send` as pipelines use it, checked from outside: messages written by other
tools on stdin (8-bit bodies, UTF-8 header fields, duplicated fields, resent messages),
the state directory, and `status`/`report` on a key's journal. Real servers on 127.0.0.1.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.jobs import cli, private_state
from tests.jobs import send_cli as send
from tests.smtpd import ScriptedServer


@pytest.fixture(autouse=True)
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return private_state(tmp_path, monkeypatch)


# --------------------------------------------------------------------------- 8-bit, UTF-8

# as Thunderbird writes one: a UTF-8 display name in a header field, an 8-bit text part
THUNDERBIRD = (
    b"Message-ID: <9f1c2a3b-1111@acme.example>\n"
    b"Date: Tue, 2 Jan 2024 10:00:00 +0100\n"
    b"MIME-Version: 1.0\n"
    b"User-Agent: Mozilla Thunderbird\n"
    b'To: "M\xc3\xbcller, Anna" <anna@example.com>\n'
    b"From: Carl <carl@acme.example>\n"
    b"Subject: Report\n"
    b"Content-Type: text/plain; charset=UTF-8; format=flowed\n"
    b"Content-Transfer-Encoding: 8bit\n"
    b"\n"
    b"sch\xc3\xb6ne Gr\xc3\xbc\xc3\x9fe\n"
)
# as a script writes one: ASCII header fields, a Latin-1 body without MIME fields
EIGHT_BIT_BODY = b"From: bot@acme.example\nTo: ann@example.com\nSubject: s\n\nGr\xfc\xdfe\n"


def test_a_utf8_header_field_is_sent_with_smtputf8(
    smtp_server: ScriptedServer,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """RFC 6532 header fields may be sent only in an SMTPUTF8 transaction (RFC 6531 3.2),
    even when both addresses are ASCII."""
    result = send(capsys, monkeypatch, "--stdin", "--relay", smtp_server.url, stdin=THUNDERBIRD)
    assert result.code == 0, result.err
    (received,) = smtp_server.received
    assert "SMTPUTF8" in received.mail_options
    assert "BODY=8BITMIME" in received.mail_options
    assert received.data == THUNDERBIRD.replace(b"\n", b"\r\n")


def test_a_utf8_header_field_is_not_sent_to_a_relay_without_smtputf8(
    smtp_server: ScriptedServer,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    smtp_server.smtputf8 = False
    result = send(capsys, monkeypatch, "--stdin", "--relay", smtp_server.url, stdin=THUNDERBIRD)
    assert result.code == 1, result.err
    assert not smtp_server.received
    assert "needs SMTPUTF8" in result.err and "header" in result.err


def test_an_8bit_body_is_declared_as_8bitmime(
    smtp_server: ScriptedServer,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """RFC 6152: 8-bit content goes with MAIL FROM ... BODY=8BITMIME (no SMTPUTF8 needed)."""
    result = send(capsys, monkeypatch, "--stdin", "--relay", smtp_server.url, stdin=EIGHT_BIT_BODY)
    assert result.code == 0, result.err
    (received,) = smtp_server.received
    assert received.mail_options == ["BODY=8BITMIME"]
    assert received.data.endswith(b"\r\n\r\nGr\xfc\xdfe\r\n")


def test_a_7bit_message_has_no_body_parameter(
    smtp_server: ScriptedServer,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    message = b"From: bot@acme.example\nTo: ann@example.com\nSubject: s\n\nplain\n"
    result = send(capsys, monkeypatch, "--stdin", "--relay", smtp_server.url, stdin=message)
    assert result.code == 0, result.err
    assert smtp_server.received[0].mail_options == []


# --------------------------------------------------------------------------- odd headers


@pytest.mark.parametrize(
    "message",
    [
        b"From: a@acme.example\nFrom: b@acme.example\nTo: x@example.com\n\nbody\n",
        b"From: a@acme.example\nTo: x@example.com\nSubject: one\nsubject: two\n\nbody\n",
        b"From: a@acme.example\nTo: x@example.com\nTo: y@example.com\n\nbody\n",
        b"Date: Tue, 2 Jan 2024 10:00:00 +0100\nFrom: a@acme.example\nTo: x@example.com\n"
        b"Date: Wed, 3 Jan 2024 10:00:00 +0100\n\nbody\n",
        b"Message-ID: <1@acme.example>\nFrom: a@acme.example\nTo: x@example.com\n"
        b"Message-ID: <2@acme.example>\n\nbody\n",
    ],
)
def test_a_field_rfc5322_allows_once_given_twice_is_65(
    message: bytes,
    smtp_server: ScriptedServer,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two From fields (or Subject, To, Date, Message-ID...): which one is the author?
    Providers refuse such a message (Gmail: "not RFC 5322 compliant"); txsend says so
    before sending anything, naming the field and its lines."""
    result = send(capsys, monkeypatch, "--stdin", "--relay", smtp_server.url, stdin=message)
    assert result.code == 65, result.err
    assert "at most once" in result.err and "lines" in result.err
    assert smtp_server.connections == 0


def test_a_resent_message_goes_from_its_resent_from_to_its_newest_resent_block(
    smtp_server: ScriptedServer,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """RFC 5322 3.6.6: each resending prepends its own block of Resent-* fields; the newest
    (first) block names who resends it now, and to whom. The older block's recipients
    had their copy already, and the original author is not the one resending."""
    message = (
        b"Resent-From: second@acme.example\nResent-To: now@example.com\n"
        b"Resent-Date: Thu, 4 Jan 2024 10:00:00 +0100\n"
        b"Received: from a by b; Wed, 3 Jan 2024 10:00:00 +0100\n"
        b"Resent-From: first@acme.example\nResent-To: before@example.com\n"
        b"Resent-Date: Wed, 3 Jan 2024 10:00:00 +0100\n"
        b"From: author@acme.example\nTo: orig@example.com\nSubject: s\n\nbody\n"
    )
    result = send(capsys, monkeypatch, "--stdin", "--relay", smtp_server.url, stdin=message)
    assert result.code == 0, result.err
    (received,) = smtp_server.received
    assert received.rcpt_tos == ["now@example.com"]
    assert received.mail_from == "second@acme.example"
    # --from still names the envelope sender
    smtp_server.received.clear()
    args = ["--stdin", "--from", "bounces@acme.example", "--relay", smtp_server.url]
    result = send(capsys, monkeypatch, *args, stdin=message)
    assert result.code == 0, result.err
    assert smtp_server.received[0].mail_from == "bounces@acme.example"


# --------------------------------------------------------------------------- the key's journal


def key_journal(state: Path, key: str) -> Path:
    (path,) = (state / "send").glob("*.db")
    return path


def test_status_and_report_read_a_keys_journal(
    smtp_server: ScriptedServer,
    state: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The journal of `send --idempotency-key` is a journal like a job's: `status` and
    `report` (and the --failed-csv its report points to) read it."""
    smtp_server.rcpt_replies["gone@example.com"] = "550 5.1.1 no such user"
    result = send(
        capsys,
        monkeypatch,
        "--to",
        "ann@example.com, gone@example.com",
        "--from",
        "ci@acme.example",
        "--subject",
        "s",
        "--text",
        "-",
        "--relay",
        smtp_server.url,
        "--idempotency-key",
        "build-7",
        "--json",
        stdin=b"body\n",
    )
    assert result.code == 1, result.err
    journal = key_journal(state, "build-7")
    assert json.loads(result.out)["journal"] == str(journal)

    status = cli(capsys, "status", journal, "--json")
    assert status.code == 0, status.err
    assert json.loads(status.out)["counts"]["sent"] == 1
    assert json.loads(status.out)["counts"]["bounced"] == 1

    report = cli(capsys, "report", journal, "--json")
    assert report.code == 0, report.err
    data = json.loads(report.out)
    assert data["counts"]["bounced"] == 1 and data["problems"]["count"] == 1
    export = data["problems"]["export"]
    assert export == f"txsend report {journal} --failed-csv failed.csv"

    out = tmp_path / "failed.csv"
    exported = cli(capsys, "report", journal, "--failed-csv", out)
    assert exported.code == 0, exported.err
    lines = out.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2 and "gone@example.com" in lines[1] and "550" in lines[1]


@pytest.mark.parametrize("command", ["resume", "validate", "preview"])
def test_a_keys_journal_is_continued_by_send_alone(
    command: str,
    smtp_server: ScriptedServer,
    state: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    smtp_server.rcpt_replies["later@example.com"] = "451 4.3.0 try again"
    args = ["--to", "later@example.com", "--from", "ci@acme.example", "--subject", "s"]
    more = ["--text", "-", "--relay", smtp_server.url, "--idempotency-key", "k"]
    result = send(capsys, monkeypatch, *args, *more, "--retry-backoff", "10m", stdin=b"b")
    assert result.code == 75, result.err
    other = cli(capsys, command, key_journal(state, "k"))
    assert other.code == 64, other.err
    assert "txsend send" in other.err and "same" in other.err
    assert "Traceback" not in other.err and "not found" not in other.err


def test_a_state_directory_that_cannot_be_made_is_a_configuration_error(
    smtp_server: ScriptedServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """78 (configuration), not 66 (an input file is missing): nothing the user named as
    input is missing; the environment points the state somewhere it cannot be."""
    a_file = tmp_path / "a-file"
    a_file.write_text("x", encoding="utf-8")
    monkeypatch.setenv("TXSEND_STATE_DIR", str(a_file))
    args = ["--to", "ann@example.com", "--from", "ci@acme.example", "--subject", "s"]
    more = ["--text", "-", "--relay", smtp_server.url, "--idempotency-key", "k"]
    result = send(capsys, monkeypatch, *args, *more, stdin=b"b")
    assert result.code == 78, result.err
    assert str(a_file) in result.err and "TXSEND_STATE_DIR" in result.err
    assert smtp_server.connections == 0


def test_without_a_key_the_json_report_points_to_no_removed_journal(
    smtp_server: ScriptedServer,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The temporary journal is gone when the call ends: no `txsend report` line names it."""
    smtp_server.rcpt_replies["gone@example.com"] = "550 5.1.1 no such user"
    args = ["--to", "gone@example.com", "--from", "ci@acme.example", "--subject", "s"]
    result = send(
        capsys, monkeypatch, *args, "--text", "-", "--relay", smtp_server.url, "--json", stdin=b"b"
    )
    assert result.code == 1, result.err
    data = json.loads(result.out)
    assert data["journal"] is None
    assert data["report"]["problems"]["count"] == 1
    assert data["report"]["problems"]["export"] == ""  # schema 1: a string
