"""Late bounces end to end with a real MTA: txsend sends through Postfix, Postfix accepts,
fails to deliver and sends its own DSNs to the VERP address; `txsend bounces` reads them.

The Postfix instance (tests/postfix.py) relays nowhere.example to a stand-in MX that
refuses every recipient (550 5.1.1), keeps slow.example deferred (a "delayed" DSN after a
second) and delivers acme.example, the bounce address's domain, into a Maildir.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import sqlite3
import subprocess
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from tests.dovecot import DovecotServer
from tests.jobs import cli, txsend_subprocess, write_job
from tests.postfix import PostfixInstance, wait_until

pytestmark = pytest.mark.slow


def _job(folder: Path, postfix: PostfixInstance, records: list[dict[str, str]], extra: str) -> Path:
    relay = f"relays:\n  - url: smtp://127.0.0.1:{postfix.port}?tls=none\n    connections: 4\n"
    return write_job(folder, records=records, extra_yaml=relay + extra)


def _people(domain: str, n: int, start: int = 0) -> list[dict[str, str]]:
    return [
        {"email": f"user{i}@{domain}", "first_name": f"User{i}", "plan": "pro"}
        for i in range(start, start + n)
    ]


def _rows(journal: Path) -> dict[str, dict[str, Any]]:
    conn = sqlite3.connect(journal)
    conn.row_factory = sqlite3.Row
    try:
        return {
            r["key"]: dict(r) for r in conn.execute("SELECT key, state, code, reply FROM messages")
        }
    finally:
        conn.close()


def test_postfix_bounces_come_back_matched_by_verp_token(
    postfix: PostfixInstance, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    people = _people("nowhere.example", 6) + _people("slow.example", 2, 6)
    people += [{"email": "colleague@acme.example", "first_name": "C", "plan": "x"}]
    job = _job(tmp_path / "job", postfix, people, "return_path: bounces@acme.example\nverp: true\n")
    run = cli(capsys, "run", job, "--quiet")
    assert run.code == 0, run.err
    journal = job.parent / "job.journal.db"
    assert {r["state"] for r in _rows(journal).values()} == {"sent"}  # Postfix said 250
    # 6 bounces, 2 delay warnings, and the colleague's ordinary message
    postfix.wait_for_messages(9, timeout=30)

    result = cli(capsys, "bounces", job, "--maildir", postfix.maildir, "--json")
    assert result.code == 0, result.err
    data = json.loads(result.out)
    _show(capsys, data)  # how many matched by which key, for whoever reads the test log
    assert data["matched_by"] == {"verp": 8}
    assert data["by_kind"] == {"delayed": 2, "failed": 6}
    assert data["late_bounced"] == 6
    assert data["suppressed"] == 6
    assert data["unmatched"]["count"] == 0
    assert data["unreadable"]["count"] == 1  # the colleague's mail is no report: left alone
    rows = _rows(journal)
    for i in range(6):
        row = rows[f"user{i}@nowhere.example"]
        assert row["state"] == "bounced"
        assert row["code"] == 550
        assert row["reply"].startswith("accepted, then bounced: 5.1.1")
    assert rows["user6@slow.example"]["state"] == "sent"
    assert rows["colleague@acme.example"]["state"] == "sent"
    # the bad mailboxes are suppressed for this job's next runs
    conn = sqlite3.connect(journal)
    suppressed = {a for (a,) in conn.execute("SELECT address FROM suppressions")}
    conn.close()
    assert suppressed == {f"user{i}@nowhere.example" for i in range(6)}

    status = json.loads(cli(capsys, "status", job, "--json").out)
    assert status["counts"]["bounced"] == 6
    assert status["feedback"] == {
        "complaints": 0,
        "delayed": 2,
        "events": 8,
        "late_bounced": 6,
        "unmatched": 0,
    }
    # read again: nothing new, nothing doubled
    again = json.loads(cli(capsys, "bounces", job, "--maildir", postfix.maildir, "--json").out)
    assert (again["recorded"], again["duplicates"]) == (0, 8)


def test_without_verp_postfix_dsns_match_by_envid(
    postfix: PostfixInstance, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job = _job(
        tmp_path / "job",
        postfix,
        _people("nowhere.example", 3),
        "return_path: bounces@acme.example\n",
    )
    assert cli(capsys, "run", job, "--quiet").code == 0
    postfix.wait_for_messages(3, timeout=30)
    result = cli(capsys, "bounces", job, "--maildir", postfix.maildir, "--json")
    assert result.code == 0, result.err
    data = json.loads(result.out)
    _show(capsys, data)
    assert data["matched_by"] == {"envid": 3}
    assert data["late_bounced"] == 3


def _show(capsys: pytest.CaptureFixture[str], data: dict[str, Any]) -> None:
    with capsys.disabled():
        print("\nbounces:", json.dumps({k: data[k] for k in ("matched_by", "by_kind")}))


def _mbox(paths: list[Path]) -> bytes:
    """The messages as one mbox (mboxrd: "From " lines in bodies quoted)."""
    out = []
    for path in paths:
        body = path.read_bytes().replace(b"\r\n", b"\n")
        lines = [
            b">" + ln if ln.lstrip(b">").startswith(b"From ") else ln for ln in body.split(b"\n")
        ]
        out.append(b"From MAILER-DAEMON Tue Nov  3 10:15:02 2026\n" + b"\n".join(lines) + b"\n")
    return b"".join(out)


def test_kill_9_mid_batch_loses_no_report_and_doubles_none(
    postfix: PostfixInstance, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from txsend.app.bounces import BATCH

    count = BATCH + 20
    job = _job(
        tmp_path / "job",
        postfix,
        _people("nowhere.example", count),
        "return_path: bounces@acme.example\nverp: true\n",
    )
    assert cli(capsys, "run", job, "--quiet").code == 0
    dsns = postfix.wait_for_messages(count, timeout=60)
    mbox = _mbox(dsns)
    journal = job.parent / "job.journal.db"

    # the reports arrive through a pipe: the first batch is committed, the rest is read
    # and waits for the pipe when the process is killed
    fifo = tmp_path / "bounces.fifo"
    os.mkfifo(fifo)
    child = txsend_subprocess("bounces", job, "--mbox", fifo, "--json")
    try:
        with _writer(fifo, child) as pipe:
            pipe.write(mbox)
            pipe.flush()

            def committed() -> int:
                conn = sqlite3.connect(journal)
                try:
                    found = conn.execute("SELECT count(*) FROM feedback").fetchone()
                    return int(found[0])
                except sqlite3.OperationalError:
                    return 0
                finally:
                    conn.close()

            wait_until(lambda: committed() >= BATCH, 30, "the first batch committed")
            assert child.poll() is None  # still waiting for the rest of the pipe
            child.send_signal(signal.SIGKILL)
            child.wait(timeout=10)
    finally:
        if child.poll() is None:
            child.kill()
        child.communicate()
    assert child.returncode == -signal.SIGKILL
    assert committed() == BATCH  # the batch in progress was not half written

    whole = tmp_path / "bounces.mbox"
    whole.write_bytes(mbox)
    done = subprocess.run(
        [*_txsend(), "bounces", str(job), "--mbox", str(whole), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert (data["duplicates"], data["recorded"]) == (BATCH, count - BATCH)
    assert data["journal"]["late_bounced"] == count
    assert data["journal"]["events"] == count
    assert {r["state"] for r in _rows(journal).values()} == {"bounced"}


def _writer(fifo: Path, child: subprocess.Popen[str]) -> BinaryIO:
    """The pipe's write end, once the child has opened the other (bounded, never blocking
    on a child that died first)."""
    fd: list[int] = []

    def opened() -> bool:
        assert child.poll() is None, child.communicate()
        try:
            fd.append(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        except OSError as exc:
            if exc.errno != errno.ENXIO:  # no reader yet
                raise
            return False
        return True

    wait_until(opened, 30, "txsend opening the pipe")
    os.set_blocking(fd[0], True)
    return os.fdopen(fd[0], "wb")


def _txsend() -> list[str]:
    import sys

    return [sys.executable, "-m", "txsend"]


def test_bounces_read_over_imap_are_flagged_and_moved_not_deleted(
    postfix: PostfixInstance,
    dovecot: DovecotServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    job = _job(
        tmp_path / "job",
        postfix,
        _people("nowhere.example", 3),
        "return_path: bounces@acme.example\nverp: true\n",
    )
    assert cli(capsys, "run", job, "--quiet").code == 0
    for path in postfix.wait_for_messages(3, timeout=30):
        dovecot.drop(path.read_bytes())
    dovecot.drop(b"From: someone@example.net\r\nSubject: hello\r\n\r\nnot a report\r\n")
    monkeypatch.setenv("TEST_IMAP_PASSWORD", dovecot.password)
    imap = [
        "--imap", dovecot.url(), "--password-env", "TEST_IMAP_PASSWORD",
        "--ca-file", dovecot.ca_file, "--move-to", "Processed", "--json",
    ]  # fmt: skip
    result = cli(capsys, "bounces", job, *imap)
    assert result.code == 0, result.err
    data = json.loads(result.out)
    assert (data["late_bounced"], data["matched_by"]) == (3, {"verp": 3})
    assert data["unreadable"]["count"] == 1
    # the three reports moved to Processed; the letter stays in the INBOX, unflagged
    processed = dovecot.mail_root / ".Processed"
    wait_until(lambda: len(_files(processed)) == 3, 10, "3 messages in Processed")
    assert len(_files(dovecot.mail_root)) == 1
    again = json.loads(cli(capsys, "bounces", job, *imap).out)
    assert (again["recorded"], again["unreadable"]["count"]) == (0, 1)
    # a wrong password is exit 69, naming the server, with no traceback
    monkeypatch.setenv("TEST_IMAP_PASSWORD", "wrong")
    refused = cli(capsys, "bounces", job, *imap)
    assert refused.code == 69, refused.err
    assert "127.0.0.1" in refused.err and "Traceback" not in refused.err


def _files(maildir: Path) -> list[Path]:
    return [
        p for sub in ("new", "cur") if (maildir / sub).is_dir() for p in (maildir / sub).iterdir()
    ]
