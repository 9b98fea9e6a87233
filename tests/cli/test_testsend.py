"""`txsend run JOB --test-to ADDR [--rows N]`: the real CLI against a real SMTP server.

What a reviewer gets (RCPT, To, the intended recipient, the [TEST] mark, DKIM), the test
journal, and that the job's journal is never made, locked or changed by a test send.
"""

from __future__ import annotations

import base64
import hashlib
import json
import sqlite3
from collections import Counter
from pathlib import Path

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from tests.jobs import cli, write_job
from tests.smtpd import ScriptedServer

REVIEWER = "reviewer@review.example"
SCHEMA = json.loads((Path(__file__).parents[2] / "docs" / "report.schema.json").read_text())


def journals_of(folder: Path) -> list[Path]:
    return sorted((folder / "job.tests").glob("*.journal.db"))


def snapshot(folder: Path) -> dict[str, str]:
    """Every file of the job's journal (the database, its WAL, its lock): name -> hash."""
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.glob("job.journal.db*"))
    }


def rows_of(path: Path) -> dict[str, tuple[str, str]]:
    with sqlite3.connect(path) as db:
        return {k: (a, s) for k, a, s in db.execute("SELECT key, address, state FROM messages")}


def test_the_first_row_goes_to_the_test_address_only(
    tmp_path: Path, smtp_server: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    job = write_job(tmp_path, rows=5)
    result = cli(capsys, "run", job, "--relay", smtp_server.url, "--test-to", REVIEWER)
    assert result.code == 0, result.err
    [got] = smtp_server.received
    assert got.rcpt_tos == [REVIEWER]
    msg = got.message
    assert msg["To"] == REVIEWER
    assert msg["Subject"] == "[TEST] Welcome, User0!"
    assert msg["X-Txsend-Intended-To"] == "User0 <user0@example.com>"
    assert msg["From"] == "Acme <noreply@acme.example>"
    assert msg["X-Campaign"] == "test"
    text, html = msg.iter_parts()
    assert text.get_content().replace("\r\n", "\n") == "Hello User0,\nyour plan is pro.\n"
    assert "<b>User0</b>" in html.get_content()
    # the job's journal was never made; the test has its own, next to the job
    assert snapshot(tmp_path) == {}
    [journal] = journals_of(tmp_path)
    assert rows_of(journal) == {f"test:{REVIEWER}:user0@example.com": (REVIEWER, "sent")}
    assert str(journal) in result.err and "test send:" in result.err
    assert "row 1 (user0@example.com) for user0@example.com" in result.err
    # a real run afterwards sends every row, as if there had been no test
    real = cli(capsys, "run", job, "--relay", smtp_server.url)
    assert real.code == 0, real.err
    tos = [r.rcpt_tos[0] for r in smtp_server.received[1:]]
    assert sorted(tos) == [f"user{i}@example.com" for i in range(5)]
    assert all(not r.message["Subject"].startswith("[TEST]") for r in smtp_server.received[1:])
    assert all(r.message["X-Txsend-Intended-To"] is None for r in smtp_server.received[1:])
    test_ids = {smtp_server.received[0].message["Message-ID"]}
    assert test_ids.isdisjoint(r.message["Message-ID"] for r in smtp_server.received[1:])


def test_the_job_journal_stays_byte_identical(
    tmp_path: Path, smtp_server: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    job = write_job(tmp_path, rows=6)
    first = cli(capsys, "run", job, "--relay", smtp_server.url, "--limit", "2")
    assert first.code == 0, first.err
    before = snapshot(tmp_path)
    assert "job.journal.db" in before
    mtimes = {p.name: p.stat().st_mtime_ns for p in tmp_path.glob("job.journal.db*")}
    result = cli(
        capsys, "run", job, "--relay", smtp_server.url, "--test-to", REVIEWER, "--rows", "3"
    )
    assert result.code == 0, result.err
    assert snapshot(tmp_path) == before
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.glob("job.journal.db*")} == mtimes
    # the test shows the job's first rows, sent or not
    subjects = [r.message["Subject"] for r in smtp_server.received[2:]]
    assert subjects == [f"[TEST] Welcome, User{i}!" for i in range(3)]
    rest = cli(capsys, "run", job, "--relay", smtp_server.url)
    assert rest.code == 0, rest.err
    real = Counter(r.rcpt_tos[0] for r in smtp_server.received if r.rcpt_tos != [REVIEWER])
    assert real == Counter(f"user{i}@example.com" for i in range(6))


def test_several_reviewers_get_each_row(
    tmp_path: Path, smtp_server: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    job = write_job(tmp_path, rows=5)
    other = "second@review.example"
    args = ["--test-to", REVIEWER, "--test-to", other, "--test-to", REVIEWER.upper()]
    result = cli(capsys, "run", job, "--relay", smtp_server.url, *args, "--rows", "3")
    assert result.code == 0, result.err
    got = Counter((r.rcpt_tos[0], r.message["X-Txsend-Intended-To"]) for r in smtp_server.received)
    # an address given twice (in any case) is one reviewer
    addresses = {r.rcpt_tos[0].lower() for r in smtp_server.received}
    assert addresses == {REVIEWER, other}
    assert sum(got.values()) == 6
    assert all(r.message["To"] == r.rcpt_tos[0] for r in smtp_server.received)
    assert len(journals_of(tmp_path)) == 1


def test_a_test_send_ignores_the_jobs_domain_pace(
    tmp_path: Path,
    smtp_server: ScriptedServer,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # one message a minute to the reviewers' domain, and an mx: group whose resolver is
    # malformed: a test send is paced by neither and looks nothing up
    monkeypatch.setenv("TXSEND_DNS", "garbage")
    job = write_job(
        tmp_path,
        rows=5,
        extra_yaml=(
            "domains:\n  review.example: {rate: 1/min, connections: 1}\n"
            "  google: {mx: [google.com], rate: 1/min}\n"
        ),
    )
    args = ["--test-to", REVIEWER, "--test-to", "second@review.example", "--rows", "3"]
    result = cli(capsys, "run", job, "--relay", smtp_server.url, *args, "--json")
    assert result.code == 0, result.err
    assert len(smtp_server.received) == 6  # at 1/min, these would take five minutes
    starts = sorted(r.mail_at for r in smtp_server.received if r.mail_at is not None)
    assert starts[-1] - starts[0] < 30.0
    assert "MX lookup" not in result.err
    domains = json.loads(result.out)["run"].get("domains") or {}
    assert domains.get("review.example", {}).get("configured") in (None, False)


def test_each_test_send_has_a_new_journal(
    tmp_path: Path, smtp_server: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    job = write_job(tmp_path, rows=2)
    for _ in range(2):
        result = cli(capsys, "run", job, "--relay", smtp_server.url, "--test-to", REVIEWER)
        assert result.code == 0, result.err
    assert len(journals_of(tmp_path)) == 2
    assert len(smtp_server.received) == 2  # the second test is sent again, not "done"


def ed25519_job(folder: Path, rows: int = 2) -> tuple[Path, bytes]:
    """A job that signs with Ed25519; its DNS TXT record."""
    key = ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "dkim.pem").write_bytes(pem)
    (folder / "dkim.pem").chmod(0o600)
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    record = b"v=DKIM1; k=ed25519; p=" + base64.b64encode(raw)
    extra = (
        "dkim: {domain: acme.example, selector: s1, key_file: dkim.pem, "
        "algorithm: ed25519-sha256}\n"
    )
    return write_job(folder, rows=rows, extra_yaml=extra), record


def verifies(message: bytes, record: bytes) -> bool:
    def dnsfunc(name: bytes, timeout: float = 5) -> bytes:
        assert name == b"s1._domainkey.acme.example."
        return record

    return bool(dkim.verify(message, dnsfunc=dnsfunc))


def test_dkim_signs_the_test_message_as_changed(
    tmp_path: Path, smtp_server: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    job, record = ed25519_job(tmp_path)
    result = cli(capsys, "run", job, "--relay", smtp_server.url, "--test-to", REVIEWER)
    assert result.code == 0, result.err
    [got] = smtp_server.received
    assert verifies(got.data, record)
    signed = got.message["DKIM-Signature"].replace("\r\n", "").replace(" ", "").lower()
    headers = signed.split("h=")[1].split(";")[0].split(":")
    assert "to" in headers and "subject" in headers
    # the To and Subject a reviewer sees are the ones signed: changing either breaks it
    assert not verifies(got.data.replace(b"[TEST] ", b""), record)
    assert not verifies(got.data.replace(REVIEWER.encode(), b"user0@example.com", 1), record)


def test_rows_that_do_not_render_are_reported_and_skipped(
    tmp_path: Path, smtp_server: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    records = [
        {"email": "not an address", "first_name": "Bad", "plan": "pro"},
        {"email": "b@example.com", "first_name": "B", "plan": "{{"},  # data, not a template
        {"email": "c@example.com", "first_name": "C", "plan": "basic"},
        {"email": "d@example.com", "first_name": "D", "plan": "basic"},
    ]
    job = write_job(tmp_path, records=records, subject="Hi {{ first_name }} {{ missing }}")
    result = cli(capsys, "run", job, "--relay", smtp_server.url, "--test-to", REVIEWER)
    assert result.code == 65, result.err  # every row fails the template: nothing to test
    assert "no row of people.csv renders" in result.err
    assert "txsend validate" in result.err
    assert "Traceback" not in result.err
    assert smtp_server.received == []
    assert journals_of(tmp_path) == []

    job = write_job(tmp_path, records=records)
    result = cli(
        capsys, "run", job, "--relay", smtp_server.url, "--test-to", REVIEWER, "--rows", "2"
    )
    # rows 3 and 4 sent; row 1 (invalid address) reported and skipped: exit 1, as a run
    assert result.code == 1, result.err
    assert "skipped row 1 key 'not an address': not an email address" in result.err
    intended = [r.message["X-Txsend-Intended-To"] for r in smtp_server.received]
    assert intended == ["B <b@example.com>", "C <c@example.com>"]


def test_fewer_rows_than_asked_sends_what_there_is(
    tmp_path: Path, smtp_server: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    job = write_job(tmp_path, rows=2)
    result = cli(
        capsys, "run", job, "--relay", smtp_server.url, "--test-to", REVIEWER, "--rows", "50"
    )
    assert result.code == 0, result.err
    assert len(smtp_server.received) == 2


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--test-to", REVIEWER, "--rows", "0"], "--rows must be at least 1"),
        (["--test-to", REVIEWER, "--rows", "-3"], "--rows must be at least 1"),
        (["--rows", "2"], "--rows goes with --test-to"),
        (["--test-to", "not-an-address"], "no '@' in address"),
        (["--test-to", "Rev <rev@review.example>"], "space in address"),
        (["--test-to", ""], "empty address"),
        (["--test-to", REVIEWER, "--limit", "1"], "use --rows N"),
        (["--test-to", REVIEWER, "--rows", "x"], "'x' is not a valid int"),
    ],
)
def test_bad_flags_are_usage_errors(
    tmp_path: Path,
    smtp_server: ScriptedServer,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    words: str,
) -> None:
    job = write_job(tmp_path, rows=2)
    result = cli(capsys, "run", job, "--relay", smtp_server.url, *args)
    assert result.code == 64, result.err
    assert words in result.err
    assert "Traceback" not in result.err
    assert smtp_server.received == []
    assert snapshot(tmp_path) == {}
    assert not (tmp_path / "job.tests").exists()


def test_a_journal_is_no_target_and_a_test_journal_is_not_resumed(
    tmp_path: Path, smtp_server: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    smtp_server.rcpt_replies[REVIEWER] = "451 4.3.0 try later"
    job = write_job(tmp_path, rows=2)
    result = cli(capsys, "run", job, "--relay", smtp_server.url, "--test-to", REVIEWER)
    assert result.code == 75, result.err  # deferred, as a run
    assert f"send the test again with: txsend run {job} --test-to {REVIEWER}" in result.err
    [journal] = journals_of(tmp_path)
    assert rows_of(journal)[f"test:{REVIEWER}:user0@example.com"][1] == "deferred"
    smtp_server.rcpt_replies.clear()
    again = cli(capsys, "resume", journal, "--relay", smtp_server.url)
    assert again.code == 64, again.err
    assert "is the journal of a test send" in again.err
    as_target = cli(capsys, "run", journal, "--relay", smtp_server.url, "--test-to", REVIEWER)
    assert as_target.code == 64
    assert "pass the job file" in as_target.err
    assert len(smtp_server.received) == 0
    # the test journal reads like any other
    status = cli(capsys, "status", journal, "--json")
    assert status.code == 0, status.err
    assert json.loads(status.out)["counts"]["deferred"] == 1


def test_a_refused_test_address_is_a_bounce(
    tmp_path: Path, smtp_server: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    smtp_server.rcpt_replies[REVIEWER] = "550 5.1.1 no such user"
    job = write_job(tmp_path, rows=2)
    result = cli(capsys, "run", job, "--relay", smtp_server.url, "--test-to", REVIEWER)
    assert result.code == 1, result.err
    assert "1 bounced" in result.err
    assert "see the failed rows with: txsend status" in result.err
    assert snapshot(tmp_path) == {}


def test_suppressions(
    tmp_path: Path, smtp_server: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "suppressed.csv").write_text(f"email\nuser0@example.com\n{REVIEWER}\n")
    job = write_job(tmp_path, rows=2, extra_yaml="suppress: [suppressed.csv]\n")
    refused = cli(capsys, "run", job, "--relay", smtp_server.url, "--test-to", REVIEWER)
    assert refused.code == 64, refused.err
    assert f"--test-to {REVIEWER} is suppressed" in refused.err
    # listed in a file: `txsend suppress remove` (the store) would not help
    assert "suppress remove" not in refused.err
    assert "listed in suppressed.csv" in refused.err and "suppress: lists" in refused.err
    assert smtp_server.received == []
    # the intended recipient is suppressed: the reviewer still sees the message, warned
    result = cli(capsys, "run", job, "--relay", smtp_server.url, "--test-to", "ok@review.example")
    assert result.code == 0, result.err
    [got] = smtp_server.received
    assert got.message["X-Txsend-Intended-To"] == "User0 <user0@example.com>"
    assert "user0@example.com is suppressed" in result.err
    assert "the run will skip it" in result.err


def test_dry_run_renders_and_sends_nothing(
    tmp_path: Path, smtp_server: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    job = write_job(tmp_path, rows=3)
    result = cli(capsys, "run", job, "--test-to", REVIEWER, "--rows", "2", "--dry-run", "--json")
    assert result.code == 0, result.err
    assert smtp_server.received == []
    report = json.loads(result.out)
    assert report["dry_run"] is True and report["counts"]["pending"] == 2
    assert snapshot(tmp_path) == {}


def test_json_summary_says_what_the_test_sent(
    tmp_path: Path, smtp_server: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    job = write_job(tmp_path, rows=3)
    result = cli(
        capsys,
        "run",
        job,
        "--relay",
        smtp_server.url,
        "--test-to",
        REVIEWER,
        "--rows",
        "2",
        "--json",
        "--log-format",
        "json",
    )
    assert result.code == 0, result.err
    report = json.loads(result.out)
    jsonschema.validate(report, SCHEMA)
    about = report["test_send"]
    assert about["to"] == [REVIEWER]
    assert [r["intended_to"] for r in about["rows"]] == ["user0@example.com", "user1@example.com"]
    assert Path(about["journal"]) == journals_of(tmp_path)[0]
    assert report["counts"]["sent"] == 2
    events = [json.loads(line) for line in result.err.splitlines()]  # every line is JSON
    assert any(e.get("event") == "test_send" for e in events)
    assert events[-1]["event"] == "verdict" and events[-1]["exit_code"] == 0


def test_a_seeded_job_sends_no_seed_copies_in_a_test(
    tmp_path: Path, smtp_server: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    job = write_job(tmp_path, rows=3, extra_yaml="seeds: [seed@monitor.example]\n")
    result = cli(
        capsys, "run", job, "--relay", smtp_server.url, "--test-to", REVIEWER, "--rows", "3"
    )
    assert result.code == 0, result.err
    assert {r.rcpt_tos[0] for r in smtp_server.received} == {REVIEWER}
    assert len(smtp_server.received) == 3


def test_a_postgresql_journal_job_is_not_touched(
    tmp_path: Path,
    smtp_server: ScriptedServer,
    capsys: pytest.CaptureFixture[str],
    pg_url: str,
) -> None:
    import psycopg

    job = write_job(tmp_path, rows=3, extra_yaml=f"journal: {pg_url}\n")
    result = cli(capsys, "run", job, "--relay", smtp_server.url, "--test-to", REVIEWER)
    assert result.code == 0, result.err
    assert [r.rcpt_tos for r in smtp_server.received] == [[REVIEWER]]
    with psycopg.connect(pg_url, autocommit=True) as conn:
        tables = conn.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name LIKE 'txsend%'"
        ).fetchone()
    assert tables == (0,)  # not even created
    real = cli(capsys, "run", job, "--relay", smtp_server.url)
    assert real.code == 0, real.err
    assert len(smtp_server.received) == 4


def test_a_relay_that_never_answers_ends_the_test_within_its_limits(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import time

    from tests.faultserver import HANG, FaultServer

    delivery = "  timeouts: {connect: 1s, command: 1s}\n  give_up_unreachable: 1s\n"
    job = write_job(tmp_path, rows=2, delivery=delivery)
    with FaultServer({"CONNECT": HANG}) as server:  # accepts TCP, never greets
        started = time.monotonic()
        result = cli(capsys, "run", job, "--relay", server.url, "--test-to", REVIEWER)
        elapsed = time.monotonic() - started
    assert result.code == 69, result.err  # no relay ever answered
    assert elapsed < 15
    assert "send the test again with" in result.err
    assert snapshot(tmp_path) == {}


def test_a_csv_alone_job_takes_its_flags(
    tmp_path: Path, smtp_server: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "list.csv"
    data.write_text("email,first_name\na@example.com,Ann\nb@example.com,Bob\n")
    (tmp_path / "body.txt").write_text("Hi {{ first_name }}\n")
    flags = ["--from", "News <news@acme.example>", "--subject", "News for {{ first_name }}"]
    flags += ["--text", str(tmp_path / "body.txt"), "--relay", smtp_server.url]
    assert cli(capsys, "run", data, *flags, "--limit", "1").code == 0
    journal = tmp_path / "list.journal.db"
    before = hashlib.sha256(journal.read_bytes()).hexdigest()
    # without the flags: they are in the job's journal, which a test does not open
    bare = cli(capsys, "run", data, "--relay", smtp_server.url, "--test-to", REVIEWER)
    assert bare.code == 64 and "needs --from" in bare.err
    result = cli(capsys, "run", data, *flags, "--test-to", REVIEWER, "--rows", "2")
    assert result.code == 0, result.err
    subjects = [r.message["Subject"] for r in smtp_server.received[1:]]
    assert subjects == ["[TEST] News for Ann", "[TEST] News for Bob"]
    assert hashlib.sha256(journal.read_bytes()).hexdigest() == before
    assert len(sorted((tmp_path / "list.tests").glob("*.journal.db"))) == 1


def test_a_test_send_runs_neither_the_alert_nor_the_finish_command(
    tmp_path: Path, smtp_server: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """on_finish_command and alerts.command are about the job's real run: a test send
    (a reviewer's copy) must not announce that the campaign went out."""
    marker = tmp_path / "finished"
    job = write_job(
        tmp_path,
        rows=3,
        extra_yaml=(
            f"on_finish_command: 'echo $TXSEND_EXIT_CODE >> {marker}'\n"
            "alerts:\n"
            "  error_rate: {above: 1%, window: 1m}\n"
            "  min_messages: 1\n"
            f"  command: 'echo alert >> {marker}'\n"
        ),
    )
    smtp_server.rcpt_replies = {REVIEWER: "550 5.1.1 no such user"}
    result = cli(capsys, "run", job, "--relay", smtp_server.url, "--test-to", REVIEWER)
    assert result.code == 1, result.err
    assert not marker.exists()
    # the same job's real run does run it
    real = cli(capsys, "run", job, "--relay", smtp_server.url)
    assert real.code == 0, real.err
    assert marker.read_text().split() == ["0"]


def test_a_test_journal_exports_no_failed_csv(
    tmp_path: Path, smtp_server: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """A test journal's rows carry the intended recipients' data: exported as a recipients
    file (what --failed-csv is for) they would mail real people what a reviewer was sent."""
    job = write_job(tmp_path, rows=3)
    smtp_server.rcpt_replies = {REVIEWER: "550 5.1.1 no such user"}
    result = cli(capsys, "run", job, "--relay", smtp_server.url, "--test-to", REVIEWER)
    assert result.code == 1, result.err
    [journal] = journals_of(tmp_path)
    out = tmp_path / "failed.csv"
    refused = cli(capsys, "report", journal, "--failed-csv", out)
    assert refused.code == 64, refused.err
    assert "test send" in refused.err and "job.yaml" in refused.err
    assert not out.exists()
    # the report itself still reads it
    assert cli(capsys, "report", journal, "--json").code == 0


def test_a_test_send_is_not_held_by_the_quotas_or_the_warmup(
    tmp_path: Path, smtp_server: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """Its journal is its own: 3 copies go although the warm-up allows 1 a day and the
    relay 1 a day, and nothing is counted in the job's journal (never made)."""
    job = write_job(
        tmp_path,
        rows=5,
        extra_yaml=f"relays:\n  - url: {smtp_server.url}\n    rate: 1/day\n"
        "warmup: {start: 1/day, growth: 2, until: 10/day}\n",
    )
    result = cli(capsys, "run", job, "--test-to", REVIEWER, "--rows", "3")
    assert result.code == 0, result.err
    assert len(smtp_server.received) == 3
    assert snapshot(tmp_path) == {}
    [journal] = journals_of(tmp_path)
    with sqlite3.connect(journal) as db:
        assert db.execute("SELECT count(*) FROM rate_buckets").fetchone() == (0,)
