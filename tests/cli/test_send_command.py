"""`txsend send`: one message from flags or from stdin, against a real SMTP server on
127.0.0.1; what arrived (per recipient, headers, MIME), the journal's rows, exit codes.

The idempotency key (replays, concurrency, kill -9) is tested in test_send_idempotency.
"""

from __future__ import annotations

import json
import sqlite3
import tempfile
from collections import Counter
from email.message import EmailMessage, MIMEPart
from pathlib import Path
from typing import Any

import pytest

from tests.jobs import private_state
from tests.jobs import send_cli as send
from tests.smtpd import ScriptedServer

FROM = "CI <ci@acme.example>"
COMMON = ["--to", "a@x.example", "--from", FROM, "--subject", "s"]
BODY = "Hello {{ name }},\nthe build {% if ok %}passed{% endif %}.\n"


@pytest.fixture(autouse=True)
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A state directory of the test's own; no relay from the caller's environment."""
    folder = private_state(tmp_path, monkeypatch)
    # temporary journals go here, so that a test sees them come and go
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    return folder


def body_file(folder: Path, text: str = BODY, name: str = "body.txt") -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def composed(folder: Path, server: ScriptedServer, *extra: object) -> list[object]:
    """To two, Cc one, Bcc one, a text body with Jinja markup in it."""
    return [
        "--to",
        "Ann <ann@example.com>, bob@example.com",
        "--cc",
        "cy@example.com",
        "--bcc",
        "dee@example.com",
        "--from",
        FROM,
        "--subject",
        "Build {{ n }} passed",
        "--text",
        body_file(folder),
        "--relay",
        server.url,
        *extra,
    ]


def journal_rows(state: Path) -> list[dict[str, Any]]:
    """Every row of the only journal in the state directory."""
    (path,) = (state / "send").glob("*.db")
    with sqlite3.connect(path) as db:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute("SELECT * FROM messages ORDER BY row")]


def content(part: MIMEPart) -> Any:
    """A part's content, text with LF line ends."""
    value = part.get_content()
    return value.replace("\r\n", "\n") if isinstance(value, str) else value


def by_rcpt(server: ScriptedServer) -> dict[str, EmailMessage]:
    return {r.rcpt_tos[0]: r.message for r in server.received}


# --------------------------------------------------------------------------- composed


def test_each_recipient_gets_one_copy_of_one_message_and_bcc_is_never_shown(
    tmp_path: Path,
    smtp_server: ScriptedServer,
    state: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    result = send(capsys, monkeypatch, *composed(tmp_path, smtp_server, "--idempotency-key", "b-1"))
    assert result.code == 0, result.err
    received = smtp_server.received
    assert Counter(r.rcpt_tos[0] for r in received) == Counter(
        ["ann@example.com", "bob@example.com", "cy@example.com", "dee@example.com"]
    )
    assert all(len(r.rcpt_tos) == 1 and r.mail_from == "ci@acme.example" for r in received)
    assert len({r.data for r in received}) == 1  # the same bytes to every recipient
    msg = received[0].message
    assert msg["To"] == "Ann <ann@example.com>, bob@example.com"
    assert msg["Cc"] == "cy@example.com"
    assert msg["From"] == FROM
    assert msg["Subject"] == "Build {{ n }} passed"
    assert msg["Date"] is not None
    assert b"dee@example.com" not in received[0].data
    lines = received[0].data.split(b"\r\n")
    assert not [line for line in lines if line.lower().startswith(b"bcc")]
    assert msg.get_content_type() == "text/plain"
    assert content(msg) == BODY  # content, not a template
    # one journal row per recipient, one Message-ID, each recipient's outcome
    rows = journal_rows(state)
    assert [(r["address"], r["state"], r["attempts"]) for r in rows] == [
        ("ann@example.com", "sent", 1),
        ("bob@example.com", "sent", 1),
        ("cy@example.com", "sent", 1),
        ("dee@example.com", "sent", 1),
    ]
    assert {r["message_id"] for r in rows} == {msg["Message-ID"]}
    assert [json.loads(r["data"])["field"] for r in rows] == ["to", "to", "cc", "bcc"]
    assert "4 sent (exit 0)" in result.err
    assert "dee@example.com (bcc): 250" in result.err


def test_without_a_key_the_temporary_journal_is_removed(
    tmp_path: Path,
    smtp_server: ScriptedServer,
    state: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    result = send(capsys, monkeypatch, *composed(tmp_path, smtp_server))
    assert result.code == 0, result.err
    assert len(smtp_server.received) == 4
    assert list((tmp_path / "tmp").iterdir()) == []
    assert not state.exists()


def test_a_recipient_given_twice_gets_one_copy(
    tmp_path: Path,
    smtp_server: ScriptedServer,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    args = ["--to", "a@example.com", "--cc", "A@example.com", "--bcc", "a@example.com"]
    result = send(
        capsys,
        monkeypatch,
        *args,
        "--from",
        FROM,
        "--subject",
        "s",
        "--text",
        body_file(tmp_path),
        "--relay",
        smtp_server.url,
    )
    assert result.code == 0, result.err
    assert [r.rcpt_tos for r in smtp_server.received] == [["a@example.com"]]
    assert smtp_server.received[0].message["Cc"] == "A@example.com"


def test_text_from_stdin(
    tmp_path: Path,
    smtp_server: ScriptedServer,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    text = "Build 42 {{ failed }} on main\nsee https://ci.example/42\n"
    result = send(
        capsys,
        monkeypatch,
        "--to",
        "ops@example.com",
        "--from",
        FROM,
        "--subject",
        "CI",
        "--text",
        "-",
        "--relay",
        smtp_server.url,
        stdin=text.encode(),
    )
    assert result.code == 0, result.err
    (msg,) = by_rcpt(smtp_server).values()
    assert content(msg) == text
    assert msg["To"] == "ops@example.com"


def test_html_gets_a_text_alternative_and_its_images(
    tmp_path: Path,
    smtp_server: ScriptedServer,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    html = body_file(
        tmp_path, '<p>Deploy <b>{{ done }}</b></p><img src="cid:logo.png">\n', "m.html"
    )
    (tmp_path / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\nfake")
    result = send(
        capsys,
        monkeypatch,
        "--to",
        "ops@example.com",
        "--from",
        FROM,
        "--subject",
        "Deploy",
        "--html",
        html,
        "--relay",
        smtp_server.url,
    )
    assert result.code == 0, result.err
    (msg,) = by_rcpt(smtp_server).values()
    assert msg.get_content_type() == "multipart/alternative"
    text, related = msg.iter_parts()
    assert text.get_content_type() == "text/plain"
    assert "Deploy {{ done }}" in content(text)
    assert related.get_content_type() == "multipart/related"
    html_part, image = related.iter_parts()
    assert "<b>{{ done }}</b>" in content(html_part)
    assert content(image) == b"\x89PNG\r\n\x1a\nfake"


def test_text_and_html_together(
    tmp_path: Path,
    smtp_server: ScriptedServer,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    result = send(
        capsys,
        monkeypatch,
        "--to",
        "ops@example.com",
        "--from",
        FROM,
        "--subject",
        "Both",
        "--text",
        body_file(tmp_path, "plain words\n"),
        "--html",
        body_file(tmp_path, "<p>rich words</p>\n", "b.html"),
        "--relay",
        smtp_server.url,
    )
    assert result.code == 0, result.err
    (msg,) = by_rcpt(smtp_server).values()
    text, html = msg.iter_parts()
    assert content(text) == "plain words\n"
    assert content(html) == "<p>rich words</p>\n"


def test_markdown_makes_html_and_text(
    tmp_path: Path,
    smtp_server: ScriptedServer,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    md = body_file(tmp_path, "# Release {{ v }}\n\n* **fast**\n* <script>x</script>\n", "n.md")
    result = send(
        capsys,
        monkeypatch,
        "--to",
        "ops@example.com",
        "--from",
        FROM,
        "--subject",
        "Notes",
        "--markdown",
        md,
        "--relay",
        smtp_server.url,
    )
    assert result.code == 0, result.err
    (msg,) = by_rcpt(smtp_server).values()
    assert msg.get_content_type() == "multipart/alternative"
    text, html = msg.iter_parts()
    assert "**fast**" in content(text)
    assert "<strong>fast</strong>" in content(html)
    assert "Release {{ v }}" in content(html)
    assert "<script>" not in content(html)  # raw HTML in Markdown is escaped


def test_attachments_arrive_whole_with_their_names(
    tmp_path: Path,
    smtp_server: ScriptedServer,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    elsewhere = tmp_path / "artifacts" / "deep"
    elsewhere.mkdir(parents=True)
    report = elsewhere / "report {{1}}.pdf"
    report.write_bytes(bytes(range(256)) * 40)
    log = tmp_path / "build.log"
    log.write_text("ok\n", encoding="utf-8")
    result = send(
        capsys,
        monkeypatch,
        "--to",
        "ops@example.com",
        "--bcc",
        "audit@example.com",
        "--from",
        FROM,
        "--subject",
        "Artifacts",
        "--text",
        body_file(tmp_path, "attached\n"),
        "--attach",
        report,
        "--attach",
        log,
        "--relay",
        smtp_server.url,
    )
    assert result.code == 0, result.err
    got = by_rcpt(smtp_server)
    assert sorted(got) == ["audit@example.com", "ops@example.com"]
    msg = got["audit@example.com"]
    assert msg.get_content_type() == "multipart/mixed"
    body, pdf, text = msg.iter_parts()
    assert content(body) == "attached\n"
    assert pdf.get_filename() == "report {{1}}.pdf"
    assert pdf.get_content_type() == "application/pdf"
    assert content(pdf) == bytes(range(256)) * 40
    assert text.get_filename() == "build.log"
    assert msg["Bcc"] is None and msg["To"] == "ops@example.com"


def test_json_lists_each_recipient(
    tmp_path: Path,
    smtp_server: ScriptedServer,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    smtp_server.rcpt_replies["bob@example.com"] = "550 5.1.1 <bob@example.com> no such user"
    result = send(capsys, monkeypatch, *composed(tmp_path, smtp_server, "--json"))
    assert result.code == 1, result.err
    data = json.loads(result.out)
    assert data["exit_code"] == 1
    assert data["replayed"] is False
    assert data["idempotency_key"] is None
    assert data["message_id"] == smtp_server.received[0].message["Message-ID"]
    states = {r["address"]: (r["field"], r["state"], r["code"]) for r in data["recipients"]}
    assert states == {
        "ann@example.com": ("to", "sent", 250),
        "bob@example.com": ("to", "bounced", 550),
        "cy@example.com": ("cc", "sent", 250),
        "dee@example.com": ("bcc", "sent", 250),
    }
    assert data["counts"]["bounced"] == 1
    assert data["report"]["exit_code"] == 1  # run's report, schema 1
    assert "no such user" in result.err


def test_json_logs_make_every_stderr_line_json(
    tmp_path: Path,
    smtp_server: ScriptedServer,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    result = send(capsys, monkeypatch, *composed(tmp_path, smtp_server, "--log-format", "json"))
    assert result.code == 0, result.err
    events = [json.loads(line) for line in result.err.splitlines()]
    assert [e["event"] for e in events if e["event"] == "recipient"] == ["recipient"] * 4
    assert events[-1]["event"] == "verdict" and events[-1]["exit_code"] == 0
    # a usage error too
    bad = send(capsys, monkeypatch, "--to", "a@example.com", "--log-format", "json")
    assert bad.code == 64
    assert all(json.loads(line) for line in bad.err.splitlines())


def test_relay_from_the_environment(
    tmp_path: Path,
    smtp_server: ScriptedServer,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    args = composed(tmp_path, smtp_server)[:-2]  # without --relay
    none = send(capsys, monkeypatch, *args)
    assert none.code == 78
    assert "TXSEND_RELAY" in none.err and "Traceback" not in none.err
    monkeypatch.setenv("TXSEND_RELAY", smtp_server.url)
    assert send(capsys, monkeypatch, *args).code == 0
    assert len(smtp_server.received) == 4


def test_a_user_without_a_password_is_a_configuration_error(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    result = send(
        capsys,
        monkeypatch,
        "--to",
        "a@example.com",
        "--from",
        FROM,
        "--subject",
        "s",
        "--text",
        body_file(tmp_path),
        "--relay",
        "smtps://mailer@127.0.0.1:1",
    )
    assert result.code == 78
    assert "TXSEND_RELAY_PASSWORD" in result.err


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--to", "a@example.com", "--from", FROM, "--subject", "s"], "needs a body"),
        (["--from", FROM, "--subject", "s", "--text", "-"], "needs a recipient"),
        (["--to", "a@example.com", "--subject", "s", "--text", "-"], "--from"),
        (["--to", "a@example.com", "--from", FROM, "--text", "-"], "--subject"),
        (["--stdin", "--text", "-"], "--stdin reads a complete message"),
        (["--stdin", "--subject", "s"], "--stdin reads a complete message"),
        (["--stdin", "--attach", "x.pdf"], "--stdin reads a complete message"),
        ([*COMMON, "--markdown", "-", "--text", "t"], "--markdown"),
        ([*COMMON, "--text", "-", "--html", "-"], "one body"),
        (["--stdin", "--idempotency-key", ""], "must not be empty"),
        (["--stdin", "--idempotency-key", "a\nb"], "printable"),
        (["--stdin", "--idempotency-key", "k" * 256], "255"),
        (["--stdin", "--on-unknown", "maybe"], "resend or skip"),
        (["--stdin", "--timeout", "soon"], "--timeout"),
        (["--stdin", "--give-up", "0s"], "--give-up"),
        (["--stdin", "--max-size", "lots"], "--max-size"),
        (["--stdin", "--frobnicate"], "frobnicate"),
    ],
)
def test_usage_errors_are_64(
    args: list[str],
    says: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    result = send(capsys, monkeypatch, *args, "--relay", "smtp://127.0.0.1:1?tls=none")
    assert result.code == 64, result.err
    assert says in result.err
    assert "Traceback" not in result.err


def test_missing_files_are_66_naming_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    common = ["--to", "a@example.com", "--from", FROM, "--subject", "s"]
    relay = ["--relay", "smtp://127.0.0.1:1?tls=none"]
    for args, name in (
        (["--text", tmp_path / "nope.txt"], "nope.txt"),
        (["--html", tmp_path / "gone.html"], "gone.html"),
        (["--markdown", tmp_path], str(tmp_path)),
        (["--text", body_file(tmp_path), "--attach", tmp_path / "missing.pdf"], "missing.pdf"),
    ):
        result = send(capsys, monkeypatch, *common, *args, *relay)
        assert result.code == 66, result.err
        assert name in result.err
        assert "Traceback" not in result.err


def test_a_body_that_is_not_utf8_is_65(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    latin = tmp_path / "latin1.txt"
    latin.write_bytes("Grüße\n".encode("latin-1"))
    common = ["--to", "a@example.com", "--from", FROM, "--subject", "s"]
    result = send(capsys, monkeypatch, *common, "--text", latin, "--relay", "smtp://h:1")
    assert result.code == 65
    assert "latin1.txt" in result.err and "not UTF-8" in result.err
    piped = send(capsys, monkeypatch, *common, "--text", "-", stdin=b"\xff\xfe oops")
    assert piped.code == 65
    assert "stdin" in piped.err and "not UTF-8" in piped.err


@pytest.mark.parametrize(
    ("flag", "value", "says"),
    [
        ("--to", "not-an-address", "--to"),
        ("--to", "a@example.com b@example.com", "--to"),
        ("--cc", "a@example.com\r\nBcc: evil@example.com", "--cc"),
        ("--bcc", "@example.com", "--bcc"),
        ("--from", "a@example.com, b@example.com", "--from"),
        ("--from", "Acme", "--from"),
        ("--reply-to", "x@", "--reply-to"),
        ("--subject", "hi\r\nBcc: evil@example.com", "Subject"),
        ("--subject", "bell\x07", "Subject"),
    ],
)
def test_bad_addresses_and_header_injection_are_65(
    flag: str,
    value: str,
    says: str,
    tmp_path: Path,
    smtp_server: ScriptedServer,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    args = {"--to": "a@example.com", "--from": FROM, "--subject": "s", flag: value}
    flat = [item for pair in args.items() for item in pair]
    result = send(
        capsys, monkeypatch, *flat, "--text", body_file(tmp_path), "--relay", smtp_server.url
    )
    assert result.code == 65, result.err
    assert says in result.err
    assert "Traceback" not in result.err
    assert smtp_server.connections == 0


def test_a_message_over_max_size_is_65_before_connecting(
    tmp_path: Path,
    smtp_server: ScriptedServer,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(b"x" * 40_000)
    common = ["--to", "a@example.com", "--from", FROM, "--subject", "s"]
    result = send(
        capsys,
        monkeypatch,
        *common,
        "--text",
        body_file(tmp_path),
        "--attach",
        big,
        "--max-size",
        "50KB",
        "--relay",
        smtp_server.url,
    )
    assert result.code == 65
    assert "size limit" in result.err
    assert smtp_server.connections == 0
    piped = send(
        capsys,
        monkeypatch,
        *common,
        "--text",
        "-",
        "--max-size",
        "1KB",
        "--relay",
        smtp_server.url,
        stdin=b"y" * 5000,
    )
    assert piped.code == 65 and "size limit" in piped.err


# --------------------------------------------------------------------------- --stdin


READY = (
    b"From: Deploy Bot <bot@acme.example>\n"
    b"To: Ann <ann@example.com>, bob@example.com\n"
    b"Cc: cy@example.com\n"
    b"Bcc: hidden@example.com,\n"
    b"  also-hidden@example.com\n"
    b"Subject: =?utf-8?q?d=C3=A9ploy?= {{ v }}\n"
    b"X-Custom: kept as it is   \n"
    b"Content-Type: text/plain; charset=utf-8\n"
    b"Content-Transfer-Encoding: 8bit\n"
    b"\n"
    b"d\xc3\xa9ploy done\n"
    b".leading dot\n"
    b"\n"
    b"last line"
)


def test_stdin_message_goes_to_its_to_cc_and_bcc_without_the_bcc_field(
    smtp_server: ScriptedServer,
    state: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    result = send(
        capsys,
        monkeypatch,
        "--stdin",
        "--relay",
        smtp_server.url,
        "--idempotency-key",
        "ready",
        stdin=READY,
    )
    assert result.code == 0, result.err
    got = by_rcpt(smtp_server)
    assert sorted(got) == [
        "also-hidden@example.com",
        "ann@example.com",
        "bob@example.com",
        "cy@example.com",
        "hidden@example.com",
    ]
    assert {r.mail_from for r in smtp_server.received} == {"bot@acme.example"}
    data = smtp_server.received[0].data
    assert len({r.data for r in smtp_server.received}) == 1
    assert b"hidden" not in data and b"Bcc" not in data
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    # every field kept byte for byte, in order; Date and Message-ID added at the end
    assert lines[:6] == [
        b"From: Deploy Bot <bot@acme.example>",
        b"To: Ann <ann@example.com>, bob@example.com",
        b"Cc: cy@example.com",
        b"Subject: =?utf-8?q?d=C3=A9ploy?= {{ v }}",
        b"X-Custom: kept as it is   ",
        b"Content-Type: text/plain; charset=utf-8",
    ]
    assert lines[7].startswith(b"Date: ") and lines[8].startswith(b"Message-ID: <")
    assert body == b"d\xc3\xa9ploy done\r\n.leading dot\r\n\r\nlast line\r\n"
    message_id = lines[8].removeprefix(b"Message-ID: ").decode()
    assert {r["message_id"] for r in journal_rows(state)} == {message_id}
    assert [json.loads(r["data"])["field"] for r in journal_rows(state)] == [
        "to",
        "to",
        "cc",
        "bcc",
        "bcc",
    ]


def test_stdin_keeps_its_date_and_message_id(
    smtp_server: ScriptedServer,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    message = (
        b"Date: Tue, 01 Dec 2026 10:00:00 +0000\r\nMessage-ID: <given.1@acme.example>\r\n"
        b"From: bot@acme.example\r\nTo: ann@example.com\r\nSubject: s\r\n\r\nbody\r\n"
    )
    relay = ["--relay", smtp_server.url]
    result = send(capsys, monkeypatch, "--stdin", *relay, "--json", stdin=message)
    assert result.code == 0, result.err
    assert smtp_server.received[0].data == message
    assert json.loads(result.out)["message_id"] == "<given.1@acme.example>"


def test_stdin_recipients_from_the_flags_win_over_the_header(
    smtp_server: ScriptedServer,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    result = send(
        capsys,
        monkeypatch,
        "--stdin",
        "--to",
        "only@example.com",
        "--from",
        "bounces@acme.example",
        "--relay",
        smtp_server.url,
        stdin=READY,
    )
    assert result.code == 0, result.err
    (received,) = smtp_server.received
    assert received.rcpt_tos == ["only@example.com"]
    assert received.mail_from == "bounces@acme.example"  # --from: the envelope sender only
    assert received.message["To"] == "Ann <ann@example.com>, bob@example.com"  # as written
    assert received.message["From"] == "Deploy Bot <bot@acme.example>"
    assert b"hidden" not in received.data  # Bcc removed all the same


def test_stdin_resent_fields_name_the_recipients(
    smtp_server: ScriptedServer,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    message = (
        b"Resent-From: fwd@acme.example\nResent-To: new@example.com\n"
        b"Resent-Bcc: secret@example.com\n"
        b"From: bot@acme.example\nTo: old@example.com\nSubject: s\n\nbody\n"
    )
    result = send(capsys, monkeypatch, "--stdin", "--relay", smtp_server.url, stdin=message)
    assert result.code == 0, result.err
    assert sorted(by_rcpt(smtp_server)) == ["new@example.com", "secret@example.com"]
    assert b"secret" not in smtp_server.received[0].data


@pytest.mark.parametrize(
    ("message", "says"),
    [
        (b"", "no message"),
        (b"\n\n", "no message"),
        (b"just some text\nno headers\n", "line 1 is not a header field"),
        (b" continued\nTo: a@example.com\n\nx", "line 1 continues"),
        (b"From: bot@acme.example\nTo: a@example.com\rBcc: x@example.com\n\nbody", "header To"),
        (b"From: bot@acme.example\nTo: a@example.com\nSubject: a\x00b\n\nbody", "header Subject"),
        (b"From: bot@acme.example\nTo: a@example.com\nSubject: \xe9t\xe9\n\nbody", "not UTF-8"),
        (b"From: bot@acme.example\nTo: a@example.com, not-an-address\n\nx", "header To"),
        (b"From: bot@acme.example\nCc: <b@example.com\n\nx", "header Cc"),
        (b"From: not-an-address\nTo: a@example.com\n\nx", "header From"),
        (b"To: a@example.com\nSubject: s\n\nx", "no From field"),
        (b"From: bot@acme.example\nSubject: s\n\nx", "no recipient"),
        (b"From: bot@acme.example\nTo: undisclosed-recipients:;\n\nx", "no recipient"),
        (b"From: bot@acme.example\nTo: a@example.com\nX-Long: " + b"x" * 1000 + b"\n\nx", "998"),
    ],
)
def test_stdin_problems_are_65_naming_the_header_or_line(
    message: bytes,
    says: str,
    smtp_server: ScriptedServer,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    result = send(capsys, monkeypatch, "--stdin", "--relay", smtp_server.url, stdin=message)
    assert result.code == 65, result.err
    assert says in result.err
    assert "Traceback" not in result.err
    assert smtp_server.connections == 0


def test_stdin_over_max_size_is_65(
    smtp_server: ScriptedServer,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    message = b"From: b@acme.example\nTo: a@example.com\n\n" + b"z" * 3000
    result = send(
        capsys,
        monkeypatch,
        "--stdin",
        "--max-size",
        "2KB",
        "--relay",
        smtp_server.url,
        stdin=message,
    )
    assert result.code == 65 and "size limit" in result.err
    assert smtp_server.connections == 0
