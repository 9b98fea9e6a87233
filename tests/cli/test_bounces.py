"""`txsend bounces` and `txsend suppress` through the real CLI, on reports shaped like
Postfix's DSNs and an ARF complaint, made for the rows the run really sent.

The reports are built here for rows a real run sent into an aiosmtpd server (the tokens
from the journal's own secret); tests/mta has the same flow with a real Postfix making
the bounces.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from tests.jobs import cli, write_job
from tests.smtpd import ScriptedServer
from txsend.job.location import JournalLocation
from txsend.journal.opening import open_journal
from txsend.verp import make_token

SCHEMA = json.loads((Path(__file__).parents[2] / "docs" / "report.schema.json").read_text())
BOUNDARY = "4Zq1xK0c3Hz9sWd.1793700902/mx.example.org"


def dsn(
    *,
    to: str,
    recipient: str,
    envid: str | None = None,
    message_id: str | None = None,
    status: str = "5.1.1",
    action: str = "failed",
    reporting: str = "mx.example.org",
) -> bytes:
    """A DSN in Postfix's shape (RFC 3464) for one recipient."""
    headers = f"Message-ID: {message_id}\n" if message_id else ""
    envid_line = f"Original-Envelope-Id: {envid}\n" if envid else ""
    text = f"""\
Return-Path: <>
Delivered-To: {to}
Date: Tue,  3 Nov 2026 10:15:02 +0000 (UTC)
From: MAILER-DAEMON@{reporting} (Mail Delivery System)
Subject: Undelivered Mail Returned to Sender
To: {to}
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status;
\tboundary="{BOUNDARY}"
Message-Id: <{abs(hash((to, recipient, status, action)))}@{reporting}>

--{BOUNDARY}
Content-Type: text/plain; charset=us-ascii

Your message could not be delivered.

--{BOUNDARY}
Content-Type: message/delivery-status

Reporting-MTA: dns; {reporting}
{envid_line}Arrival-Date: Tue,  3 Nov 2026 10:15:01 +0000 (UTC)

Final-Recipient: rfc822; {recipient}
Action: {action}
Status: {status}
Diagnostic-Code: smtp; 550 {status} <{recipient}>: User unknown

--{BOUNDARY}
Content-Type: text/rfc822-headers

From: Acme <noreply@acme.example>
To: {recipient}
Subject: Welcome
{headers}
--{BOUNDARY}--
"""
    return text.replace("\n", "\r\n").encode()


def arf(*, to: str, recipient: str, message_id: str) -> bytes:
    boundary = "part1_13d.2e68ed54_boundary"
    text = f"""\
Delivered-To: {to}
From: <staff@fbl.example.net>
Subject: FW: Welcome
To: <{to}>
MIME-Version: 1.0
Message-ID: <fbl-{abs(hash(recipient))}@fbl.example.net>
Content-Type: multipart/report; report-type=feedback-report; boundary="{boundary}"

--{boundary}
Content-Type: text/plain

This is an email abuse report.

--{boundary}
Content-Type: message/feedback-report

Feedback-Type: abuse
Version: 1
Original-Rcpt-To: <{recipient}>
Arrival-Date: Thu, 5 Nov 2026 08:52:14 -0500

--{boundary}
Content-Type: message/rfc822

From: <noreply@acme.example>
To: {recipient}
Subject: Welcome
Message-ID: {message_id}

Hello!

--{boundary}--
"""
    return text.replace("\n", "\r\n").encode()


def maildir(folder: Path, messages: list[bytes]) -> Path:
    for sub in ("new", "cur", "tmp"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for i, raw in enumerate(messages):
        (folder / "new" / f"1700000000.{i}.test").write_bytes(raw)
    return folder


def rows(journal: Path) -> dict[str, dict[str, Any]]:
    conn = sqlite3.connect(journal)
    conn.row_factory = sqlite3.Row
    try:
        found = conn.execute("SELECT key, address, message_id, state, code, reply FROM messages")
        return {r["key"]: dict(r) for r in found}
    finally:
        conn.close()


def secret_of(journal: Path) -> bytes:
    opened = open_journal(JournalLocation(path=journal), create=False)
    try:
        return opened.verp_secret()
    finally:
        opened.close()


@pytest.fixture
def sent_job(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[Path, Path]:
    """A 4-row VERP job, all rows sent to an aiosmtpd relay: (job file, journal)."""
    job = write_job(
        tmp_path / "job",
        rows=4,
        extra_yaml="return_path: bounces@acme.example\nverp: true\nsuppress: {store: store.db}\n",
    )
    with ScriptedServer() as server:
        result = cli(capsys, "run", job, "--relay", server.url, "--quiet")
        assert result.code == 0, result.err
        senders = [r.mail_from for r in server.received]
    journal = job.parent / "job.journal.db"
    found = rows(journal)
    assert {r["state"] for r in found.values()} == {"sent"}
    # each message went out from its own VERP address, naming its row
    secret = secret_of(journal)
    expected = {
        f"bounces+{make_token(secret, 'test-job', r['message_id'])}@acme.example"
        for r in found.values()
    }
    assert set(senders) == expected
    return job, journal


def _token(journal: Path, key: str) -> str:
    return make_token(secret_of(journal), "test-job", rows(journal)[key]["message_id"])


def test_reports_turn_sent_rows_bounced_once_whatever_key_matches(
    sent_job: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job, journal = sent_job
    r = rows(journal)
    keys = sorted(r)
    t0 = _token(journal, keys[0])
    box = maildir(
        tmp_path / "box",
        [
            # by the VERP address the report came back to
            dsn(to=f"bounces+{t0}@acme.example", recipient=keys[0]),
            # by ENVID alone (no VERP address: a return path without verp)
            dsn(to="bounces@acme.example", recipient=keys[1], envid=_token(journal, keys[1])),
            # by the original Message-ID in the returned headers
            dsn(
                to="bounces@acme.example",
                recipient="x@y.example",
                message_id=r[keys[2]]["message_id"],
            ),
            # a delay: a note, the row stays sent
            dsn(to="bounces@acme.example", recipient=keys[3], status="4.4.1", action="delayed"),
        ],
    )
    result = cli(capsys, "bounces", job, "--maildir", box, "--json")
    assert result.code == 0, result.err
    data = json.loads(result.out)
    assert data["matched_by"] == {"envid": 1, "message-id": 1, "recipient": 1, "verp": 1}
    assert (data["late_bounced"], data["recorded"], data["duplicates"]) == (3, 4, 0)
    assert data["by_kind"] == {"delayed": 1, "failed": 3}
    after = rows(journal)
    assert [after[k]["state"] for k in keys] == ["bounced", "bounced", "bounced", "sent"]
    assert after[keys[0]]["reply"].startswith("accepted, then bounced: 5.1.1")
    assert after[keys[0]]["code"] == 550
    # handled mail moved to cur/, marked seen; read again, it counts once
    assert not list((box / "new").iterdir())
    assert all(p.name.endswith(":2,S") for p in (box / "cur").iterdir())
    again = json.loads(cli(capsys, "bounces", job, "--maildir", box, "--json").out)
    assert (again["recorded"], again["duplicates"], again["late_bounced"]) == (0, 4, 0)
    # status and report count "accepted, then bounced" apart
    status = json.loads(cli(capsys, "status", job, "--json").out)
    assert status["counts"]["bounced"] == 3
    assert status["feedback"]["late_bounced"] == 3
    assert status["feedback"]["delayed"] == 1
    report = json.loads(cli(capsys, "report", job, "--json").out)
    assert report["feedback"]["late_bounced"] == 3
    jsonschema.validate(report, SCHEMA)
    jsonschema.validate(status, SCHEMA)
    text = cli(capsys, "status", job)
    assert "after acceptance: 3 bounced" in text.out
    # the bad mailboxes are in the job's store: a second job naming it skips them
    listed = cli(capsys, "suppress", "list", "--job", job, "--json")
    assert listed.code == 0, listed.err
    stored = [json.loads(line) for line in listed.out.splitlines()]
    assert sorted(e["address"] for e in stored) == sorted(keys[:3])
    assert {e["kind"] for e in stored} == {"bounce"}


def test_forged_foreign_and_malformed_reports_change_no_row(
    sent_job: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job, journal = sent_job
    r = rows(journal)
    keys = sorted(r)
    real = _token(journal, keys[0])
    forged = real[:-1] + ("a" if real[-1] != "a" else "b")
    foreign = make_token(secret_of(journal), "another-job", r[keys[1]]["message_id"])
    box = maildir(
        tmp_path / "box",
        [
            # the recipient is a row's, but the token is forged: no fallback to it
            dsn(to=f"bounces+{forged}@acme.example", recipient=keys[0]),
            dsn(to=f"bounces+{foreign}@acme.example", recipient=keys[1]),
            dsn(to="bounces@acme.example", recipient="stranger@example.net"),
            b"Content-Type: multipart/report; boundary=x\r\n\r\n--x\r\nContent-Type: mess",
            b"\x00\xff" * 5000,
            b"Subject: " + b"a" * 1_000_000 + b"\r\n\r\nbody\r\n",
            b"",
        ],
    )
    result = cli(capsys, "bounces", job, "--maildir", box, "--json")
    assert result.code == 0, result.err
    data = json.loads(result.out)
    assert data["late_bounced"] == 0
    assert data["unmatched"]["count"] == 3
    reasons = " | ".join(u["reason"] for u in data["unmatched"]["listed"])
    assert "forged token" in reasons and "another job" in reasons
    assert "no row of this job was sent to stranger@example.net" in reasons
    assert data["unreadable"]["count"] == 4
    assert {row["state"] for row in rows(journal).values()} == {"sent"}
    # what could not be read stays where it was, for a person (or a newer txsend)
    assert len(list((box / "new").iterdir())) == 4
    text = cli(capsys, "bounces", job, "--maildir", box)
    assert text.code == 0
    assert "not readable (left in place)" in text.out


def test_a_maildir_file_that_cannot_be_read_is_listed_and_the_rest_is_read(
    sent_job: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job, journal = sent_job
    key = sorted(rows(journal))[0]
    box = maildir(
        tmp_path / "box", [dsn(to=f"bounces+{_token(journal, key)}@acme.example", recipient=key)]
    )
    # open() fails on it (ELOOP), as on a message another user delivered with mode 0600
    (box / "new" / "1700000001.loop.test").symlink_to("1700000001.loop.test")
    result = cli(capsys, "bounces", job, "--maildir", box, "--json")
    assert result.code == 0, result.err
    data = json.loads(result.out)
    assert (data["messages"], data["late_bounced"]) == (2, 1)
    [unreadable] = data["unreadable"]["listed"]
    assert unreadable["source"] == "maildir:new/1700000001.loop.test"
    assert unreadable["reason"].startswith("cannot read the file")
    assert [p.name for p in (box / "new").iterdir()] == ["1700000001.loop.test"]


def test_a_complaint_suppresses_the_address_for_every_job_naming_the_store(
    sent_job: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job, journal = sent_job
    r = rows(journal)
    key = sorted(r)[2]
    box = maildir(
        tmp_path / "box",
        [arf(to="fbl@acme.example", recipient=key, message_id=r[key]["message_id"])],
    )
    result = cli(capsys, "bounces", job, "--maildir", box, "--json")
    assert result.code == 0, result.err
    data = json.loads(result.out)
    assert data["by_kind"] == {"complaint": 1}
    assert data["matched_by"] == {"message-id": 1}
    assert data["suppressed"] == 1
    assert rows(journal)[key]["state"] == "sent"  # a complaint is not a bounce
    # another job naming the same store skips the address, with the reason
    other = write_job(
        tmp_path / "job2",
        rows=4,
        extra_yaml=f"suppress: {{store: {job.parent / 'store.db'}}}\n",
    )
    with ScriptedServer() as server:
        run = cli(capsys, "run", other, "--relay", server.url, "--quiet")
        delivered = {rcpt for m in server.received for rcpt in m.rcpt_tos}
    assert run.code == 0, run.err
    assert key not in delivered and len(delivered) == 3
    skipped = rows(other.parent / "job.journal.db")[key]
    assert skipped["state"] == "skipped"
    assert "complaint (abuse)" in skipped["reply"]


def test_provider_events_match_by_message_id(
    sent_job: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job, journal = sent_job
    r = rows(journal)
    key = sorted(r)[1]
    event = {
        "notificationType": "Bounce",
        "bounce": {
            "feedbackId": "0102019a-test-0001",
            "bounceType": "Permanent",
            "bounceSubType": "General",
            "bouncedRecipients": [
                {
                    "emailAddress": key,
                    "action": "failed",
                    "status": "5.1.1",
                    "diagnosticCode": "smtp; 550 5.1.1 user unknown",
                }
            ],
            "timestamp": "2026-11-03T10:15:06.477Z",
            "reportingMTA": "dsn; a4-8.smtp-out.amazonses.example",
        },
        "mail": {
            "timestamp": "2026-11-03T10:15:00.000Z",
            "source": "noreply@acme.example",
            "messageId": "0102019a3f6b1c2d",
            "destination": [key],
            "commonHeaders": {"messageId": r[key]["message_id"]},
        },
    }
    events = tmp_path / "ses.json"
    events.write_text(json.dumps(event), encoding="utf-8")
    result = cli(capsys, "bounces", job, "--events", events, "--json")
    assert result.code == 0, result.err
    data = json.loads(result.out)
    assert (data["late_bounced"], data["matched_by"]) == (1, {"message-id": 1})
    assert rows(journal)[key]["state"] == "bounced"
    again = json.loads(cli(capsys, "bounces", job, "--events", events, "--json").out)
    assert (again["duplicates"], again["late_bounced"]) == (1, 0)


def test_reading_a_mailbox_again_does_not_undo_suppress_remove(
    sent_job: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job, journal = sent_job
    key = sorted(rows(journal))[0]
    verp = f"bounces+{_token(journal, key)}@acme.example"
    # two reports about one address (from two MTAs): one address suppressed
    box = maildir(
        tmp_path / "box",
        [dsn(to=verp, recipient=key), dsn(to=verp, recipient=key, reporting="mx2.example.org")],
    )
    first = json.loads(cli(capsys, "bounces", job, "--maildir", box, "--json").out)
    assert (first["recorded"], first["late_bounced"], first["suppressed"]) == (2, 1, 1)
    removed = cli(capsys, "suppress", "remove", "--job", job, key)
    assert "1 removed" in removed.err
    # cron reads the same Maildir again (its cur/ too): the report counts once, and the
    # address the user took out of the store stays out
    again = json.loads(cli(capsys, "bounces", job, "--maildir", box, "--json").out)
    assert (again["recorded"], again["duplicates"], again["suppressed"]) == (0, 2, 0)
    listed = cli(capsys, "suppress", "list", "--job", job, "--json")
    assert listed.out == ""


def test_an_internationalised_domain_matches_and_is_suppressed_in_either_form(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The data writes user@bücher.example; it goes out (RCPT TO), comes back in a DSN
    and from providers as user@xn--bcher-kva.example: one mailbox."""
    people = [
        {"email": "User@Bücher.example", "first_name": "U", "plan": "x"},
        {"email": "plain@example.com", "first_name": "P", "plan": "x"},
    ]
    store = tmp_path / "store.db"
    extra = f"return_path: bounces@acme.example\nsuppress: {{store: {store}}}\n"
    job = write_job(tmp_path / "job", records=people, extra_yaml=extra)
    with ScriptedServer() as server:
        assert cli(capsys, "run", job, "--relay", server.url, "--quiet").code == 0
        assert "User@xn--bcher-kva.example" in {r for m in server.received for r in m.rcpt_tos}
    box = maildir(
        tmp_path / "box",
        [dsn(to="bounces@acme.example", recipient="user@xn--bcher-kva.example")],
    )
    result = cli(capsys, "bounces", job, "--maildir", box, "--json")
    assert result.code == 0, result.err
    data = json.loads(result.out)
    assert (data["matched_by"], data["late_bounced"]) == ({"recipient": 1}, 1)
    journal = job.parent / "job.journal.db"
    assert rows(journal)["User@Bücher.example"]["state"] == "bounced"
    # a job whose data writes the domain either way skips the address
    for name, written in (
        ("u-labels", "user@bücher.example"),
        ("a-labels", "USER@XN--BCHER-KVA.EXAMPLE"),
    ):
        other = write_job(
            tmp_path / name,
            records=[{"email": written, "first_name": "U", "plan": "x"}, people[1]],
            extra_yaml=f"suppress: {{store: {store}}}\n",
        )
        with ScriptedServer() as server:
            run = cli(capsys, "run", other, "--relay", server.url, "--quiet")
            delivered = {r for m in server.received for r in m.rcpt_tos}
        assert run.code == 0, run.err
        assert delivered == {"plain@example.com"}, name
    # and txsend suppress takes either form for one address
    added = cli(capsys, "suppress", "add", "--store", str(store), "user@BÜCHER.example")
    assert "0 new of 1" in added.err
    removed = cli(capsys, "suppress", "remove", "--store", str(store), "user@bücher.example")
    assert "1 removed" in removed.err


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        ((), 64, "nothing to read"),
        (("--maildir", "missing-dir"), 66, "missing-dir"),
        (("--events", "bad.json"), 65, "bad.json"),
        (("--provider", "yahoo", "--events", "bad.json"), 64, "--provider"),
        (("--maildir", "box", "--move-to", ".Done", "--delete"), 64, "not both"),
    ],
)
def test_bad_input_is_a_clear_error(
    sent_job: tuple[Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    args: tuple[str, ...],
    code: int,
    message: str,
) -> None:
    job, _journal = sent_job
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.json").write_text("{not json", encoding="utf-8")
    maildir(tmp_path / "box", [])
    result = cli(capsys, "bounces", job, *args)
    assert result.code == code, result.err
    assert message in result.err
    assert "Traceback" not in result.err


def test_a_file_that_is_no_mbox_is_refused_before_anything_is_read(
    sent_job: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job, journal = sent_job
    key = sorted(rows(journal))[0]
    report = dsn(to=f"bounces+{_token(journal, key)}@acme.example", recipient=key)
    box = maildir(tmp_path / "box", [report])
    letter = tmp_path / "bounce.eml"  # one message, no "From " line: not an mbox
    letter.write_bytes(report)
    for path in (letter, tmp_path / "missing.mbox"):
        result = cli(capsys, "bounces", job, "--maildir", box, "--mbox", path)
        assert result.code == (65 if path == letter else 66), result.err
        assert str(path.name) in result.err and "Traceback" not in result.err
    assert "not an mbox file" in cli(capsys, "bounces", job, "--mbox", letter).err
    # the Maildir named beside it was not read either
    assert len(list((box / "new").iterdir())) == 1
    assert rows(journal)[key]["state"] == "sent"
    empty = tmp_path / "empty.mbox"
    empty.write_bytes(b"")
    assert cli(capsys, "bounces", job, "--mbox", empty).code == 0


def test_suppress_manages_the_default_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    added = cli(capsys, "suppress", "add", "A@Example.com", "b@example.com", "--reason", "asked")
    assert added.code == 0, added.err
    assert "2 new of 2" in added.err
    assert (tmp_path / "state" / "txsend" / "suppressions.db").exists()
    imported = tmp_path / "export.csv"
    imported.write_text("Email Address,Reason\nc@example.com,bounce\na@example.com,x\n")
    result = cli(capsys, "suppress", "import", imported)
    assert result.code == 0, result.err
    assert "2 read, 1 new" in result.err
    listed = cli(capsys, "suppress", "list")
    lines = listed.out.splitlines()
    assert lines[0] == "email,kind,reason,since"
    assert [line.split(",")[:2] for line in lines[1:]] == [
        ["a@example.com", "import"],
        ["b@example.com", "manual"],
        ["c@example.com", "import"],
    ]
    removed = cli(capsys, "suppress", "remove", "C@example.com", "nobody@example.com")
    assert "1 removed" in removed.err
    only = cli(capsys, "suppress", "list", "--kind", "manual", "--json")
    assert [json.loads(x)["address"] for x in only.out.splitlines()] == ["b@example.com"]
    bad = cli(capsys, "suppress", "list", "--kind", "weird")
    assert bad.code == 64


@pytest.mark.parametrize("bad", ["", "   ", "not-an-address", "user@", "@example.com"])
def test_suppress_add_refuses_what_is_not_an_address(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], bad: str
) -> None:
    store = str(tmp_path / "store.db")
    result = cli(capsys, "suppress", "add", "--store", store, "ok@example.com", bad)
    assert result.code == 64, result.err
    assert "not an email address" in result.err and "internal error" not in result.err
    assert cli(capsys, "suppress", "list", "--store", store, "--json").out == ""
    named = cli(capsys, "suppress", "add", "--store", store, "Ann <Ann@Example.com>")
    assert named.code == 0, named.err
    listed = cli(capsys, "suppress", "list", "--store", store, "--json")
    assert [json.loads(x)["address"] for x in listed.out.splitlines()] == ["ann@example.com"]


def test_with_a_postgresql_journal_the_store_is_its_database(
    pg_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run's hard bounce and a late bounce land in the shared database's store, which
    another job in that database skips; `txsend bounces` works the PostgreSQL journal."""
    extra = f"journal: {pg_url}\nsuppress: {{store: true}}\nverp: true\n"
    job = write_job(tmp_path / "a", rows=3, extra_yaml="name: job-a\n" + extra)
    job.write_text(job.read_text().replace("name: test-job\n", ""))
    with ScriptedServer() as server:
        server.rcpt_replies["user0@example.com"] = "550 5.1.1 <user0@example.com>: no such user"
        run = cli(capsys, "run", job, "--relay", server.url, "--quiet")
    assert run.code == 1, run.err  # one row bounced at once
    listed = cli(capsys, "suppress", "list", "--job", job, "--json")
    assert listed.code == 0, listed.err
    assert [json.loads(x)["address"] for x in listed.out.splitlines()] == ["user0@example.com"]
    # a late bounce for user1, matched by its VERP address
    opened = open_journal(JournalLocation(url=pg_url), create=False, job_name="job-a")
    try:
        secret = opened.verp_secret()
        [row] = opened.feedback_rows(address="user1@example.com")
    finally:
        opened.close()
    token = make_token(secret, "job-a", row.message_id)
    box = maildir(tmp_path / "box", [dsn(to=f"x+{token}@acme.example", recipient="zz@x.example")])
    late = json.loads(cli(capsys, "bounces", job, "--maildir", box, "--json").out)
    assert (late["late_bounced"], late["matched_by"], late["suppressed"]) == (1, {"verp": 1}, 1)
    assert late["suppression_store"] == pg_url
    # read again after the address was taken out of the store: it stays out
    assert "1 removed" in cli(capsys, "suppress", "remove", "--job", job, "user1@example.com").err
    again = json.loads(cli(capsys, "bounces", job, "--maildir", box, "--json").out)
    assert (again["duplicates"], again["suppressed"]) == (1, 0)
    listed = cli(capsys, "suppress", "list", "--job", job, "--json")
    assert [json.loads(x)["address"] for x in listed.out.splitlines()] == ["user0@example.com"]
    cli(capsys, "suppress", "add", "--job", job, "user1@example.com")
    # job-b, in the same database, skips both
    other = write_job(tmp_path / "b", rows=3, extra_yaml="name: job-b\n" + extra)
    other.write_text(other.read_text().replace("name: test-job\n", ""))
    with ScriptedServer() as server:
        again = cli(capsys, "run", other, "--relay", server.url, "--quiet")
        delivered = {rcpt for m in server.received for rcpt in m.rcpt_tos}
    assert again.code == 0, again.err
    assert delivered == {"user2@example.com"}
