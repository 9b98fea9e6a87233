"""End to end: the real CLI against a real SMTP server on 127.0.0.1, a real journal."""

from __future__ import annotations

import signal
import sqlite3
import stat
from collections import Counter
from pathlib import Path

import pytest

from tests.jobs import HTML, TEXT, cli, txsend_subprocess, write_job
from tests.smtpd import ScriptedServer


def journal_states(path: Path) -> dict[str, str]:
    with sqlite3.connect(path) as db:
        return dict(db.execute("SELECT key, state FROM messages"))


def test_yaml_job_delivers_every_row_once(
    tmp_path: Path, smtp_server: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    job = write_job(tmp_path, rows=25)
    result = cli(capsys, "run", job, "--relay", smtp_server.url, "--concurrency", "4")
    assert result.code == 0, result.err
    received = smtp_server.received
    assert len(received) == 25
    tos = Counter(r.rcpt_tos[0] for r in received)
    assert tos == Counter(f"user{i}@example.com" for i in range(25))
    ids = set()
    for r in received:
        msg = r.message
        n = r.rcpt_tos[0].removeprefix("user").split("@")[0]
        assert msg["Subject"] == f"Welcome, User{n}!"
        assert msg["To"] == f"User{n} <user{n}@example.com>"
        assert msg["From"] == "Acme <noreply@acme.example>"
        assert msg["X-Campaign"] == "test"
        assert msg.get_content_type() == "multipart/alternative"
        text, html = msg.iter_parts()
        assert text.get_content_type() == "text/plain"
        assert text.get_content().replace("\r\n", "\n") == TEXT.replace(
            "{{ first_name }}", f"User{n}"
        ).replace("{{ plan }}", "pro")
        assert html.get_content_type() == "text/html"
        assert f"<b>User{n}</b>" in html.get_content()
        ids.add(msg["Message-ID"])
    assert len(ids) == 25
    states = journal_states(tmp_path / "job.journal.db")
    assert Counter(states.values()) == {"sent": 25}
    assert "25 sent" in result.err


def test_journal_file_is_private(
    tmp_path: Path, smtp_server: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    job = write_job(tmp_path, rows=1)
    assert cli(capsys, "run", job, "--relay", smtp_server.url).code == 0
    mode = stat.S_IMODE((tmp_path / "job.journal.db").stat().st_mode)
    assert mode & 0o077 == 0


def test_csv_alone_job(
    tmp_path: Path, smtp_server: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "list.csv"
    data.write_text(
        "\ufeffemail,first_name\na@example.com,Ann\nb@example.com,Bob\nc@example.com,Cy\n",
        encoding="utf-8",
    )
    (tmp_path / "body.txt").write_text("Hi {{ first_name }}\n", encoding="utf-8")
    result = cli(
        capsys,
        "run",
        data,
        "--from",
        "News <news@acme.example>",
        "--subject",
        "News for {{ first_name }}",
        "--text",
        tmp_path / "body.txt",
        "--relay",
        smtp_server.url,
    )
    assert result.code == 0, result.err
    got = {r.rcpt_tos[0]: r.message for r in smtp_server.received}
    assert sorted(got) == ["a@example.com", "b@example.com", "c@example.com"]
    assert got["b@example.com"]["Subject"] == "News for Bob"
    assert got["b@example.com"].get_content().replace("\r\n", "\n") == "Hi Bob\n"
    assert got["b@example.com"].get_content_type() == "text/plain"
    # the CSV-alone job resumes by its journal or its CSV alone (flags were recorded)
    again = cli(capsys, "resume", tmp_path / "list.journal.db", "--relay", smtp_server.url)
    assert again.code == 0, again.err
    status = cli(capsys, "status", data)
    assert status.code == 0, status.err
    assert len(smtp_server.received) == 3


def test_relay_from_environment(
    tmp_path: Path,
    smtp_server: ScriptedServer,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TXSEND_RELAY", smtp_server.url)
    job = write_job(tmp_path, rows=2)
    assert cli(capsys, "run", job).code == 0
    assert len(smtp_server.received) == 2


def test_one_recipient_refused_is_bounced(
    tmp_path: Path, smtp_server: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    smtp_server.rcpt_replies["user2@example.com"] = "550 5.1.1 <user2@example.com> no such user"
    job = write_job(tmp_path, rows=5)
    result = cli(capsys, "run", job, "--relay", smtp_server.url, "--json")
    assert result.code == 1
    states = journal_states(tmp_path / "job.journal.db")
    assert states.pop("user2@example.com") == "bounced"
    assert set(states.values()) == {"sent"}
    assert len(smtp_server.received) == 4
    with sqlite3.connect(tmp_path / "job.journal.db") as db:
        code, reply = db.execute(
            "SELECT code, reply FROM messages WHERE key = 'user2@example.com'"
        ).fetchone()
    assert code == 550 and "no such user" in reply


def test_transient_reply_defers_and_resume_sends(
    tmp_path: Path, smtp_server: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    smtp_server.data_reply = "451 4.3.0 try again later"
    job = write_job(tmp_path, rows=3)
    result = cli(capsys, "run", job, "--relay", smtp_server.url)
    assert result.code == 75
    assert "txsend resume" in result.err
    assert set(journal_states(tmp_path / "job.journal.db").values()) == {"deferred"}
    status = cli(capsys, "status", job, "--json")
    assert status.code == 0
    assert '"deferred": 3' in status.out
    smtp_server.data_reply = None
    # not due yet: resume (the cron form) sends nothing
    early = cli(capsys, "resume", job, "--relay", smtp_server.url)
    assert early.code == 75 and smtp_server.received == []
    make_due(tmp_path / "job.journal.db")
    result = cli(capsys, "resume", job, "--relay", smtp_server.url)
    assert result.code == 0, result.err
    assert len(smtp_server.received) == 3


def make_due(journal: Path) -> None:
    """As if the retry time of every deferred row had come."""
    with sqlite3.connect(journal) as db:
        db.execute("UPDATE messages SET next_attempt_at = 0 WHERE state = 'deferred'")


def test_second_run_sends_nothing(
    tmp_path: Path, smtp_server: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    job = write_job(tmp_path, rows=4)
    assert cli(capsys, "run", job, "--relay", smtp_server.url).code == 0
    again = cli(capsys, "run", job, "--relay", smtp_server.url)
    assert again.code == 0, again.err
    assert len(smtp_server.received) == 4


def test_limit_then_run_sends_the_rest(
    tmp_path: Path, smtp_server: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    job = write_job(tmp_path, rows=10)
    assert cli(capsys, "run", job, "--relay", smtp_server.url, "--limit", "3").code == 0
    assert len(smtp_server.received) == 3
    assert cli(capsys, "run", job, "--relay", smtp_server.url).code == 0
    assert Counter(r.rcpt_tos[0] for r in smtp_server.received) == Counter(
        f"user{i}@example.com" for i in range(10)
    )


def test_dry_run_sends_nothing(
    tmp_path: Path, smtp_server: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    job = write_job(tmp_path, rows=4)
    result = cli(capsys, "run", job, "--dry-run", "--json")
    assert result.code == 0, result.err
    assert smtp_server.received == []
    assert '"rendered": 4' in result.out
    assert set(journal_states(tmp_path / "job.journal.db").values()) == {"pending"}


def test_duplicate_key_is_skipped(
    tmp_path: Path, smtp_server: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    records = [
        {"email": "a@example.com", "first_name": "A", "plan": "x"},
        {"email": "b@example.com", "first_name": "B", "plan": "x"},
        {"email": "a@example.com", "first_name": "A2", "plan": "x"},
    ]
    job = write_job(tmp_path, records=records)
    result = cli(capsys, "run", job, "--relay", smtp_server.url, "--json")
    assert result.code == 0, result.err
    assert sorted(r.rcpt_tos[0] for r in smtp_server.received) == ["a@example.com", "b@example.com"]
    assert '"skipped": 1' in result.out
    assert "duplicate key" in result.err


def test_header_injection_row_is_skipped(
    tmp_path: Path, smtp_server: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    records = [
        {"email": "a@example.com", "first_name": "Ann", "plan": "x"},
        {"email": "evil@example.com", "first_name": "Eve\r\nBcc: victim@example.org", "plan": "x"},
    ]
    job = write_job(tmp_path, records=records)
    result = cli(capsys, "run", job, "--relay", smtp_server.url)
    # skipped by an error, not by policy: the run says so with exit 1
    assert result.code == 1, result.err
    assert "1 skipped (1 by an error)" in result.err
    assert [r.rcpt_tos for r in smtp_server.received] == [["a@example.com"]]
    for r in smtp_server.received:
        assert b"victim" not in r.data
    states = journal_states(tmp_path / "job.journal.db")
    assert states == {"a@example.com": "sent", "evil@example.com": "skipped"}
    with sqlite3.connect(tmp_path / "job.journal.db") as db:
        (reason,) = db.execute(
            "SELECT reply FROM messages WHERE key = 'evil@example.com'"
        ).fetchone()
    assert "line break" in reason.lower() or "control" in reason.lower()


def test_changed_job_refused_without_force(
    tmp_path: Path, smtp_server: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    smtp_server.data_reply = "451 4.3.0 later"
    job = write_job(tmp_path, rows=2)
    assert cli(capsys, "run", job, "--relay", smtp_server.url).code == 75
    (tmp_path / "t.txt").write_text("Changed {{ first_name }}\n", encoding="utf-8")
    refused = cli(capsys, "resume", job, "--relay", smtp_server.url)
    assert refused.code == 65
    assert "text template t.txt changed" in refused.err
    assert "--force" in refused.err
    smtp_server.data_reply = None
    make_due(tmp_path / "job.journal.db")
    forced = cli(capsys, "resume", job, "--relay", smtp_server.url, "--force")
    assert forced.code == 0, forced.err
    assert all(
        r.message.get_body(("plain",)).get_content().startswith("Changed")
        for r in smtp_server.received
    )  # type: ignore[union-attr]


def test_disconnect_after_data_is_unknown_then_resent(
    tmp_path: Path, smtp_server: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    smtp_server.disconnect_after = 0  # drop the first message's final dot without a reply
    job = write_job(tmp_path, rows=3)
    result = cli(capsys, "run", job, "--relay", smtp_server.url, "--concurrency", "1")
    assert result.code == 75, result.err
    states = journal_states(tmp_path / "job.journal.db")
    assert Counter(states.values()) == {"sent": 2, "unknown": 1}
    result = cli(capsys, "resume", job, "--relay", smtp_server.url)
    assert result.code == 0, result.err
    assert set(journal_states(tmp_path / "job.journal.db").values()) == {"sent"}


def test_preview_and_validate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    job = write_job(tmp_path, rows=3)
    raw = cli(capsys, "preview", job, "--row", "2")
    assert raw.code == 0, raw.err
    assert "Subject: Welcome, User1!" in raw.out
    assert "multipart/alternative" in raw.out
    html = cli(capsys, "preview", job, "--key", "user2@example.com", "--part", "html")
    assert (
        html.out.strip()
        == HTML.replace("{{ first_name }}", "User2").replace("{{ plan }}", "pro").strip()
    )
    ok = cli(capsys, "validate", job)
    assert ok.code == 0, ok.err
    assert "3 rows, 0 problems" in ok.err


def test_init_writes_a_job_and_refuses_to_overwrite(
    tmp_path: Path, smtp_server: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "new"
    assert cli(capsys, "init", target).code == 0
    assert cli(capsys, "run", target / "job.yaml", "--relay", smtp_server.url).code == 0
    assert len(smtp_server.received) == 3
    again = cli(capsys, "init", target)
    assert again.code == 64
    assert "refusing to overwrite" in again.err


# --- bad input: a clear message and the documented exit code, never a traceback ---------


def assert_clean_error(result_err: str) -> None:
    assert "Traceback" not in result_err
    assert "txsend: error:" in result_err


def test_missing_job_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result = cli(capsys, "run", tmp_path / "nope.yaml", "--relay", "smtp://127.0.0.1:1")
    assert result.code == 66
    assert_clean_error(result.err)
    assert "nope.yaml" in result.err


def test_yaml_syntax_error_names_the_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job = write_job(tmp_path)
    job.write_text(job.read_text() + "relays: [\n  oops: {\n", encoding="utf-8")
    result = cli(capsys, "validate", job)
    assert result.code == 65
    assert_clean_error(result.err)
    assert "job.yaml:" in result.err


def test_undefined_variable_named_by_validate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job = write_job(tmp_path, rows=2, subject="Hi {{ nickname }}")
    result = cli(capsys, "validate", job)
    assert result.code == 65
    assert "Traceback" not in result.err
    assert "nickname" in result.err
    assert "row 1" in result.err and "user0@example.com" in result.err


def test_missing_password_env(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    job = write_job(
        tmp_path,
        extra_yaml="relays:\n  - url: smtps://mailer@127.0.0.1:4650\n"
        "    password_env: TXSEND_TEST_NO_SUCH_VAR\n",
    )
    result = cli(capsys, "run", job)
    assert result.code == 78
    assert_clean_error(result.err)
    assert "TXSEND_TEST_NO_SUCH_VAR" in result.err


def test_connection_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    job = write_job(tmp_path, rows=3)
    result = cli(capsys, "run", job, "--relay", f"smtp://127.0.0.1:{port}?tls=none")
    assert result.code == 69
    assert "Traceback" not in result.err
    assert "refused" in result.err
    assert set(journal_states(tmp_path / "job.journal.db").values()) == {"pending"}


def test_usage_error_exit_code(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(capsys, "run").code == 64
    assert cli(capsys, "frobnicate").code == 64


def test_bad_relay_url(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    job = write_job(tmp_path)
    result = cli(capsys, "run", job, "--relay", "ftp://127.0.0.1:25")
    assert result.code == 78
    assert_clean_error(result.err)


# --- crash safety -------------------------------------------------------------------


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_sends_each_once(
    tmp_path: Path, smtp_server: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = 60
    smtp_server.data_delay = 0.05
    job = write_job(tmp_path, rows=rows)
    proc = txsend_subprocess("run", job, "--relay", smtp_server.url, "--concurrency", "4")
    smtp_server.wait_for(15, timeout=30)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=10)
    before = len(smtp_server.received)
    assert before < rows
    journal = tmp_path / "job.journal.db"
    in_window = {k for k, s in journal_states(journal).items() if s == "sending"}
    assert in_window, "rows in flight should be left in 'sending'"

    smtp_server.data_delay = 0
    result = cli(capsys, "resume", job, "--relay", smtp_server.url)
    assert result.code == 0, result.err
    assert "now 'unknown'" in result.err
    delivered = Counter(r.rcpt_tos[0] for r in smtp_server.received)
    assert set(delivered) == {f"user{i}@example.com" for i in range(rows)}
    twice = {k for k, n in delivered.items() if n > 1}
    assert twice <= in_window
    assert set(journal_states(journal).values()) == {"sent"}


@pytest.mark.slow
def test_sigint_stops_cleanly_with_130(
    tmp_path: Path, smtp_server: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    smtp_server.data_delay = 0.05
    job = write_job(tmp_path, rows=200)
    proc = txsend_subprocess("run", job, "--relay", smtp_server.url, "--concurrency", "2")
    smtp_server.wait_for(5, timeout=30)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    states = Counter(journal_states(tmp_path / "job.journal.db").values())
    assert "sending" not in states
    assert states["sent"] == len(smtp_server.received)
    smtp_server.data_delay = 0
    assert cli(capsys, "resume", job, "--relay", smtp_server.url).code == 0
    assert len(smtp_server.received) == 200


@pytest.mark.slow
def test_second_run_while_locked_exits_75(
    tmp_path: Path, smtp_server: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    smtp_server.data_delay = 0.05
    job = write_job(tmp_path, rows=100)
    proc = txsend_subprocess("run", job, "--relay", smtp_server.url, "--concurrency", "1")
    try:
        smtp_server.wait_for(2, timeout=30)
        result = cli(capsys, "run", job, "--relay", smtp_server.url)
        assert result.code == 75
        assert f"pid {proc.pid}" in result.err
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 143, err


def test_failover_to_next_priority_relay(
    tmp_path: Path, smtp_server: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    job = write_job(
        tmp_path,
        rows=6,
        extra_yaml="relays:\n"
        f"  - url: smtp://127.0.0.1:{dead_port}?tls=none\n    priority: 0\n"
        f"  - url: {smtp_server.url}\n    priority: 1\n",
    )
    result = cli(capsys, "run", job, "--json")
    assert result.code == 0, result.err
    assert len(smtp_server.received) == 6
    assert f'"127.0.0.1:{dead_port}"' in result.out
    assert "connection refused" in result.out


def test_quiet_prints_only_the_final_line(
    tmp_path: Path, smtp_server: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    job = write_job(tmp_path, rows=2)
    result = cli(capsys, "run", job, "--relay", smtp_server.url, "--quiet")
    assert result.code == 0
    assert result.out == ""
    assert result.err.strip() == "test-job: 2 sent (exit 0)"


def test_connections_are_reused_up_to_messages_per_connection(
    tmp_path: Path, smtp_server: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    job = write_job(
        tmp_path,
        rows=10,
        extra_yaml=f"relays:\n  - url: {smtp_server.url}\n"
        "    connections: 1\n    messages_per_connection: 3\n",
    )
    assert cli(capsys, "run", job).code == 0
    assert len(smtp_server.received) == 10
    assert smtp_server.connections == 4  # 3 + 3 + 3 + 1


def test_service_closing_421_defers_and_reconnects(
    tmp_path: Path, smtp_server: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    smtp_server.rcpt_replies["user1@example.com"] = "421 closing, come back later"
    job = write_job(tmp_path, rows=4)
    result = cli(capsys, "run", job, "--relay", smtp_server.url, "--concurrency", "1")
    assert result.code == 75
    states = journal_states(tmp_path / "job.journal.db")
    assert states.pop("user1@example.com") == "deferred"
    assert set(states.values()) == {"sent"}
    # each 421 closed the session; the message was tried once more on a new one, and the
    # second 421 deferred it: two attempts
    assert smtp_server.connections >= 2
    with sqlite3.connect(tmp_path / "job.journal.db") as db:
        (reply, attempts) = db.execute(
            "SELECT reply, attempts FROM messages WHERE key = 'user1@example.com'"
        ).fetchone()
    assert reply.startswith("421 closing")
    assert attempts == 2


@pytest.mark.parametrize(
    "args",
    [
        ["sample_jobs/welcome.yaml"],
        [
            "sample_jobs/newsletter.csv",
            "--from",
            "News <news@acme.example>",
            "--subject",
            "This week in {{ topic }}",
            "--text",
            "sample_jobs/newsletter.txt",
        ],
    ],
)
def test_sample_jobs_validate(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    root = Path(__file__).resolve().parents[2]
    result = cli(
        capsys, "validate", *[str(root / a) if a.startswith("sample_") else a for a in args]
    )
    assert result.code == 0, result.err
    assert " 0 problems" in result.err


def test_fixed_data_with_force_sends_the_skipped_row(
    tmp_path: Path, smtp_server: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = [
        {"email": "a@example.com", "first_name": "Ann", "plan": "x"},
        {"email": "b@example.com", "first_name": "B\nob", "plan": "x"},
    ]
    job = write_job(tmp_path, records=bad)
    assert cli(capsys, "run", job, "--relay", smtp_server.url).code == 1  # skipped: an error
    assert len(smtp_server.received) == 1
    bad[1]["first_name"] = "Bob"
    write_job(tmp_path, records=bad)
    refused = cli(capsys, "run", job, "--relay", smtp_server.url)
    assert refused.code == 65 and "data file people.csv changed" in refused.err
    forced = cli(capsys, "run", job, "--relay", smtp_server.url, "--force")
    assert forced.code == 0, forced.err
    assert [r.rcpt_tos[0] for r in smtp_server.received] == ["a@example.com", "b@example.com"]
    assert smtp_server.received[1].message["To"] == "Bob <b@example.com>"


def test_a_bug_in_a_worker_is_an_internal_error(
    tmp_path: Path,
    smtp_server: ScriptedServer,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import txsend.delivery.engine

    def broken(*args: object) -> None:
        raise RuntimeError("classifier exploded")

    monkeypatch.setattr(txsend.delivery.engine, "classify", broken)
    job = write_job(tmp_path, rows=3)
    result = cli(capsys, "run", job, "--relay", smtp_server.url, "--concurrency", "1")
    assert result.code == 70
    assert "internal error: RuntimeError: classifier exploded" in result.err
    assert "Traceback" not in result.err
    # the message that reached DATA is in the RFC 1047 window: recorded as unknown at the
    # end of the run; nothing is lost
    states = Counter(journal_states(tmp_path / "job.journal.db").values())
    assert states["unknown"] == 1 and states["pending"] == 2


def test_both_event_loops(
    event_loop_choice: str,
    tmp_path: Path,
    smtp_server: ScriptedServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    smtp_server.rcpt_replies["user2@example.com"] = "550 5.1.1 no such user"
    job = write_job(tmp_path, rows=20)
    result = cli(capsys, "run", job, "--relay", smtp_server.url, "--concurrency", "4")
    assert result.code == 1, result.err
    assert len(smtp_server.received) == 19
    assert smtp_server.pipelined == 20


def test_bad_event_loop_setting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TXSEND_LOOP", "trio")
    job = write_job(tmp_path, rows=1)
    result = cli(capsys, "run", job, "--relay", "smtp://127.0.0.1:1?tls=none")
    assert result.code == 78
    assert "TXSEND_LOOP" in result.err
