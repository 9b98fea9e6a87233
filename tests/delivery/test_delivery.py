"""Delivery resilience end to end: retries, suppression, relay failover and weights,
rate limits and quotas, the error-rate abort, and Postfix's smtp-sink as a foreign peer.

Every test runs the real CLI in-process against real SMTP servers on 127.0.0.1 (the
suite's ScriptedServer, txsend's own sink, or smtp-sink) and checks the exit code, what
arrived at each server and the journal rows.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.jobs import cli, txsend_subprocess, write_job
from tests.sinks import RunningSink, running_sink
from tests.smtpd import ScriptedServer
from txsend.delivery.engine import RATE_MAX_WAIT
from txsend.sink.faults import Faults

# in-run retries: the second attempt ~50 ms after the first, the third ~100 ms later
FAST_RETRY = (
    "  retry: {attempts: 3, backoff: 50ms, max_backoff: 200ms}\n  give_up_unreachable: 1s\n"
)
BAD = "550 5.1.1 <{}> no such user"


# --- helpers ------------------------------------------------------------------------


def free_port() -> int:
    """A 127.0.0.1 port nobody listens on (bound and released at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def dead_url() -> str:
    return f"smtp://127.0.0.1:{free_port()}?tls=none"


def journal_rows(path: Path) -> dict[str, dict[str, Any]]:
    """Every journal row by key: state, attempts, code, reply, relay, address."""
    with sqlite3.connect(path) as db:
        db.row_factory = sqlite3.Row
        rows = db.execute(
            "SELECT key, address, state, attempts, code, reply, relay, next_attempt_at "
            "FROM messages ORDER BY rowid"
        ).fetchall()
    return {row["key"]: dict(row) for row in rows}


def state_counts(path: Path) -> Counter[str]:
    return Counter(row["state"] for row in journal_rows(path).values())


def suppressions(path: Path) -> dict[str, str]:
    with sqlite3.connect(path) as db:
        return dict(db.execute("SELECT address, reason FROM suppressions"))


def final_line(err: str) -> str:
    """The summary line (`JOB: counts (exit N)[; stopped: ...]`) of a run's stderr."""
    return next(line for line in reversed(err.splitlines()) if "(exit " in line)


def relays_yaml(*relays: dict[str, object]) -> str:
    text = "relays:\n"
    for relay in relays:
        items = list(relay.items())
        key, value = items[0]
        text += f"  - {key}: {value}\n"
        text += "".join(f"    {k}: {v}\n" for k, v in items[1:])
    return text


def recipients(server: ScriptedServer) -> Counter[str]:
    return Counter(r.rcpt_tos[0] for r in server.received)


class RcptScript(dict[str, str]):
    """ScriptedServer.rcpt_replies that counts RCPTs per address and can change its
    answer: `sequences[address]` lists the replies to the 1st, 2nd, ... RCPT (the last
    one repeats)."""

    def __init__(self, sequences: dict[str, list[str]] | None = None) -> None:
        super().__init__()
        self.sequences = sequences or {}
        self.seen: Counter[str] = Counter()

    def get(self, key: str, default: Any = None) -> Any:
        self.seen[key] += 1
        replies = self.sequences.get(key)
        if replies:
            return replies[min(self.seen[key], len(replies)) - 1]
        return super().get(key, default)


def keyed_job(
    folder: Path, records: list[dict[str, str]], *, extra_yaml: str = "", delivery: str = FAST_RETRY
) -> Path:
    """A job whose row key is the `id` column (so one address may appear twice)."""
    job = write_job(folder, records=records, extra_yaml=extra_yaml, delivery=delivery)
    text = job.read_text(encoding="utf-8")
    assert "  file: people.csv\n" in text
    job.write_text(text.replace("  file: people.csv\n", "  file: people.csv\n  key: id\n"))
    return job


@contextmanager
def txsend_sink(tmp_path: Path, faults: Faults) -> Iterator[RunningSink]:
    """txsend's own sink with faults, discarding messages."""
    with running_sink(tmp_path, discard=True, faults=faults) as sink:
        yield sink


# --- retries ------------------------------------------------------------------------


def test_timeouts_command_bounds_each_pipelined_reply_not_the_group(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """MAIL, RCPT and DATA go out together; each reply comes within `command` of the one
    before, the group takes longer than `command`: the message is sent."""
    with ScriptedServer() as server:
        server.command_delay = 1.0  # MAIL's reply after 1 s, RCPT's 1 s later
        job = write_job(
            tmp_path,
            rows=1,
            delivery="  timeouts: {command: 1.6s}\n  retry: {attempts: 1}\n",
            extra_yaml=f"relays:\n  - url: {server.url}\n",
        )
        result = cli(capsys, "run", job)
    assert result.code == 0, result.err
    assert len(server.received) == 1
    assert server.pipelined == 1  # the commands did go out together


def test_a_reply_that_does_not_come_in_time_is_reported_as_a_timeout(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with ScriptedServer() as server:
        server.command_delay = 1.5  # MAIL's reply comes, RCPT's only after the timeout
        job = write_job(
            tmp_path,
            rows=1,
            delivery=(
                "  timeouts: {command: 1s}\n  retry: {attempts: 1}\n  give_up_unreachable: 1s\n"
            ),
            extra_yaml=f"relays:\n  - url: {server.url}\n",
        )
        result = cli(capsys, "run", job)
    assert result.code != 0
    assert server.received == []
    with sqlite3.connect(tmp_path / "job.journal.db") as db:
        ((state, reply),) = db.execute("SELECT state, reply FROM messages")
    assert state in ("deferred", "failed")
    assert reply.startswith("no reply to MAIL within 1 s (timeouts.command)"), reply
    assert "connection lost" not in result.err


def test_greylisting_is_retried_within_the_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = 8
    with txsend_sink(tmp_path, Faults.from_options([], greylist=0)) as sink:
        job = write_job(tmp_path, rows=rows, delivery=FAST_RETRY)
        started = time.monotonic()
        result = cli(capsys, "run", job, "--relay", sink.url, "--concurrency", "2")
        elapsed = time.monotonic() - started
        stats = sink.finish()
    assert result.code == 0, result.err
    assert elapsed < 10
    # every pair was held back once, then accepted on its retry
    assert (stats.messages, stats.recipients, stats.greylisted) == (rows, rows, rows)
    journal = journal_rows(tmp_path / "job.journal.db")
    assert {k: (r["state"], r["attempts"]) for k, r in journal.items()} == {
        f"user{i}@example.com": ("sent", 2) for i in range(rows)
    }
    assert all(r["code"] == 250 for r in journal.values())


def test_greylisting_with_a_hold_time(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """'450 4.2.0 Greylisted, try again in 1 second': the retry waits for the hint."""
    with txsend_sink(tmp_path, Faults.from_options([], greylist="1s")) as sink:
        job = write_job(tmp_path, rows=3, delivery=FAST_RETRY)
        started = time.monotonic()
        result = cli(capsys, "run", job, "--relay", sink.url)
        elapsed = time.monotonic() - started
        stats = sink.finish()
    assert result.code == 0, result.err
    assert 1.0 <= elapsed < 10
    # the hint was honoured: one 450 per pair, not one per 50 ms backoff
    assert (stats.messages, stats.greylisted) == (3, 3)
    journal = journal_rows(tmp_path / "job.journal.db")
    assert {(r["state"], r["attempts"]) for r in journal.values()} == {("sent", 2)}


def test_limit_counts_rows_not_retries(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with txsend_sink(tmp_path, Faults.from_options([], greylist=0)) as sink:
        job = write_job(tmp_path, rows=10, delivery=FAST_RETRY)
        result = cli(capsys, "run", job, "--relay", sink.url, "--limit", "5")
        stats = sink.finish()
    journal = journal_rows(tmp_path / "job.journal.db")
    assert Counter((r["state"], r["attempts"]) for r in journal.values()) == {
        ("sent", 2): 5,
        ("pending", 0): 5,
    }
    assert stats.messages == 5
    assert result.code == 0, result.err


def test_mailbox_full_fails_after_attempts(
    tmp_path: Path, smtp_server: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    script = smtp_server.rcpt_replies = RcptScript(
        {"user1@example.com": ["452 4.2.2 mailbox full"]}
    )
    job = write_job(tmp_path, rows=3, delivery=FAST_RETRY)
    started = time.monotonic()
    result = cli(capsys, "run", job, "--relay", smtp_server.url, "--concurrency", "1")
    assert time.monotonic() - started < 10
    assert result.code == 1, result.err  # finished, one row failed
    assert recipients(smtp_server) == {"user0@example.com": 1, "user2@example.com": 1}
    # three attempts in all, each a RCPT the relay refused: no more, no fewer
    assert script.seen["user1@example.com"] == 3
    journal = journal_rows(tmp_path / "job.journal.db")
    full = journal.pop("user1@example.com")
    assert full["state"] == "failed"
    assert full["attempts"] == 3
    assert full["code"] == 452
    assert full["reply"] == "452 4.2.2 mailbox full (gave up: 3 attempts)"
    assert full["next_attempt_at"] is None
    assert {r["state"] for r in journal.values()} == {"sent"}
    assert "1 failed" in final_line(result.err)


def test_max_age_gives_up(
    tmp_path: Path, smtp_server: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    smtp_server.rcpt_replies["user0@example.com"] = "451 4.3.0 try again later"
    job = write_job(
        tmp_path,
        rows=2,
        delivery="  retry: {attempts: 1000, backoff: 50ms, max_backoff: 50ms, max_age: 400ms}\n"
        "  give_up_unreachable: 1s\n",
    )
    started = time.monotonic()
    result = cli(capsys, "run", job, "--relay", smtp_server.url, "--concurrency", "1")
    assert time.monotonic() - started < 10
    assert result.code == 1, result.err
    journal = journal_rows(tmp_path / "job.journal.db")
    old = journal["user0@example.com"]
    assert old["state"] == "failed"
    assert old["reply"].startswith("451 4.3.0 try again later (gave up: older than")
    assert 2 <= old["attempts"] < 1000
    assert journal["user1@example.com"]["state"] == "sent"


def test_retry_hint_beyond_the_in_run_window_is_left_for_resume(
    tmp_path: Path, smtp_server: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """A deferral whose retry (here the reply's own hint, 5 minutes) is more than 60 s
    away ends the run at once with exit 75 instead of waiting for it."""
    smtp_server.rcpt_replies["user0@example.com"] = "451 4.3.0 try again in 5 minutes"
    job = write_job(tmp_path, rows=2, delivery=FAST_RETRY)
    started = time.monotonic()
    result = cli(capsys, "run", job, "--relay", smtp_server.url)
    assert time.monotonic() - started < 5
    assert result.code == 75, result.err
    assert "txsend resume" in result.err
    journal = journal_rows(tmp_path / "job.journal.db")
    row = journal["user0@example.com"]
    assert (row["state"], row["attempts"]) == ("deferred", 1)
    assert row["next_attempt_at"] >= time.time() + 240
    assert journal["user1@example.com"]["state"] == "sent"


# --- suppression --------------------------------------------------------------------


def _people(addresses: list[str]) -> list[dict[str, str]]:
    return [
        {"id": str(n), "email": address, "first_name": f"P{n}", "plan": "pro"}
        for n, address in enumerate(addresses, start=1)
    ]


def test_hard_bounce_suppresses_a_later_row_of_the_same_address(
    tmp_path: Path, smtp_server: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """The bounced address comes again far beyond the engine's read-ahead (64 rows)."""
    bad = "bad@example.com"
    script = smtp_server.rcpt_replies = RcptScript({bad: [BAD.format(bad)]})
    addresses = [bad] + [f"user{i}@example.com" for i in range(98)] + [bad]
    job = keyed_job(tmp_path, _people(addresses))
    result = cli(capsys, "run", job, "--relay", smtp_server.url, "--concurrency", "1")
    assert result.code == 1, result.err  # one bounce
    journal = journal_rows(tmp_path / "job.journal.db")
    first, last = journal.pop("1"), journal.pop("100")
    assert (first["state"], first["code"], first["attempts"]) == ("bounced", 550, 1)
    assert last["state"] == "skipped"
    assert last["reply"] == "suppressed: hard bounce in this job"
    assert last["attempts"] == 0
    assert {r["state"] for r in journal.values()} == {"sent"}
    assert suppressions(tmp_path / "job.journal.db") == {bad: "hard bounce in this job"}
    assert script.seen[bad] == 1  # one RCPT to the bad address, and nothing delivered
    assert bad not in recipients(smtp_server)
    assert len(smtp_server.received) == 98


def test_hard_bounce_suppresses_the_next_rows_of_the_same_address(
    tmp_path: Path, smtp_server: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """Rows already rendered (read ahead) when the bounce comes are suppressed too."""
    bad = "bad@example.com"
    script = smtp_server.rcpt_replies = RcptScript({bad: [BAD.format(bad)]})
    job = keyed_job(
        tmp_path,
        _people(["a@example.com", bad, "c@example.com", bad.upper(), "e@example.com"]),
        extra_yaml=relays_yaml({"url": smtp_server.url, "connections": 1}),
    )
    result = cli(capsys, "run", job, "--concurrency", "1")
    assert result.code == 1, result.err
    assert script.seen[bad] == 1
    assert recipients(smtp_server) == {f"{c}@example.com": 1 for c in "ace"}
    journal = journal_rows(tmp_path / "job.journal.db")
    assert journal["2"]["state"] == "bounced"
    assert journal["4"]["state"] == "skipped"
    assert journal["4"]["reply"] == "suppressed: hard bounce in this job"
    assert suppressions(tmp_path / "job.journal.db") == {bad: "hard bounce in this job"}


def test_hard_bounce_is_remembered_by_later_runs(
    tmp_path: Path, smtp_server: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = "bad@example.com"
    script = smtp_server.rcpt_replies = RcptScript({bad: [BAD.format(bad)]})
    people = _people(["a@example.com", bad])
    job = keyed_job(tmp_path, people)
    assert cli(capsys, "run", job, "--relay", smtp_server.url).code == 1
    # the data file grows a new row for the same address: a new key, a changed job
    people.append({"id": "3", "email": bad, "first_name": "Again", "plan": "pro"})
    job = keyed_job(tmp_path, people)
    result = cli(capsys, "run", job, "--relay", smtp_server.url, "--force")
    assert result.code == 1, result.err  # the bounce of the first run is still there
    assert script.seen[bad] == 1
    journal = journal_rows(tmp_path / "job.journal.db")
    assert journal["3"]["state"] == "skipped"
    assert journal["3"]["reply"] == "suppressed: hard bounce in this job"
    assert journal["2"]["state"] == "bounced"


def test_bounce_after_a_deferral_is_recorded_once(
    tmp_path: Path, smtp_server: ScriptedServer
) -> None:
    """451 then 550 5.1.1 at RCPT: the retry bounces, the row is `bounced`, not re-claimed.

    In a subprocess with a timeout: a stale re-claim of the bounced row (suppressed, so
    admitted without ever yielding to the event loop) once spun the producer forever.
    """
    bad = "user1@example.com"
    script = smtp_server.rcpt_replies = RcptScript(
        {bad: ["451 4.3.0 try again later", BAD.format(bad)]}
    )
    job = write_job(tmp_path, rows=3, delivery=FAST_RETRY)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TXSEND_")}
    command = [sys.executable, "-m", "txsend", "run", str(job), "--relay", smtp_server.url]
    proc = subprocess.Popen(
        [*command, "--concurrency", "1", "--quiet"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)
    assert proc.returncode == 1, err
    assert script.seen[bad] == 2
    journal = journal_rows(tmp_path / "job.journal.db")
    row = journal.pop(bad)
    assert (row["state"], row["attempts"], row["code"]) == ("bounced", 2, 550)
    assert {r["state"] for r in journal.values()} == {"sent"}
    assert suppressions(tmp_path / "job.journal.db") == {bad: "hard bounce in this job"}


def test_suppression_files_skip_rows_before_sending(
    tmp_path: Path, smtp_server: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / "block.txt").write_text(
        "# complaints\n\nUser1 <User1@Example.com>\n", encoding="utf-8"
    )
    (tmp_path / "block.csv").write_text(
        "reason,email\ncomplaint,user3@example.com\n", encoding="utf-8"
    )
    job = write_job(
        tmp_path, rows=5, delivery=FAST_RETRY, extra_yaml="suppress: [block.txt, block.csv]\n"
    )
    result = cli(capsys, "run", job, "--relay", smtp_server.url, "--json")
    assert result.code == 0, result.err
    assert recipients(smtp_server) == {f"user{i}@example.com": 1 for i in (0, 2, 4)}
    journal = journal_rows(tmp_path / "job.journal.db")
    assert journal["user1@example.com"]["state"] == "skipped"
    assert journal["user1@example.com"]["reply"] == "suppressed: listed in block.txt"
    assert journal["user3@example.com"]["state"] == "skipped"
    assert journal["user3@example.com"]["reply"] == "suppressed: listed in block.csv"
    assert journal["user1@example.com"]["attempts"] == 0
    report = json.loads(result.out)
    assert report["counts"]["skipped"] == 2
    assert report["counts"]["sent"] == 3
    # listed addresses are not the job's own bounces
    assert suppressions(tmp_path / "job.journal.db") == {}


# --- relays: failover, circuits, weights ---------------------------------------------


def test_closed_primary_fails_over_to_backup(
    tmp_path: Path, smtp_server: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = 12
    primary = dead_url()
    primary_name = primary.removeprefix("smtp://").split("?")[0]
    job = write_job(
        tmp_path,
        rows=rows,
        delivery=FAST_RETRY,
        extra_yaml=relays_yaml(
            {"url": primary, "priority": 0, "connections": 2},
            {"url": smtp_server.url, "priority": 1, "connections": 2},
        ),
    )
    result = cli(capsys, "run", job, "--json")
    assert result.code == 0, result.err
    assert recipients(smtp_server) == {f"user{i}@example.com": 1 for i in range(rows)}
    backup_name = f"127.0.0.1:{smtp_server.port}"
    report = json.loads(result.out)
    relays = report["run"]["relays"]
    assert relays[primary_name]["outcomes"] == {}
    assert relays[primary_name]["connections"] == 0
    assert relays[primary_name]["connect_failures"] >= 1
    assert "connection refused" in relays[primary_name]["last_error"]
    assert relays[backup_name]["outcomes"] == {"sent": rows}
    journal = journal_rows(tmp_path / "job.journal.db")
    assert {(r["state"], r["relay"]) for r in journal.values()} == {("sent", backup_name)}


@pytest.mark.parametrize(
    "reply",
    ["421 4.3.2 shutting down", "451 4.7.1 throttled, slow down"],
    ids=["421", "4.7.1"],
)
def test_primary_refusing_at_mail_fails_over_to_backup(
    reply: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = 20
    with ScriptedServer() as primary, ScriptedServer() as backup:
        primary.mail_reply = reply
        job = write_job(
            tmp_path,
            rows=rows,
            delivery=FAST_RETRY,
            extra_yaml=relays_yaml(
                {"url": primary.url, "priority": 0, "connections": 2},
                {"url": backup.url, "priority": 1, "connections": 2},
            ),
        )
        started = time.monotonic()
        result = cli(capsys, "run", job, "--json")
        elapsed = time.monotonic() - started
        assert result.code == 0, result.err
        assert primary.received == []
        assert primary.connections >= 1
        assert recipients(backup) == {f"user{i}@example.com": 1 for i in range(rows)}
        report = json.loads(result.out)
        relays = report["run"]["relays"]
        primary_stats = relays[f"127.0.0.1:{primary.port}"]
        assert primary_stats["outcomes"] == {}
        if reply.startswith("421"):
            assert primary_stats["circuit"] == "open"
            assert any(e.startswith("circuit opened") for e in primary_stats["events"])
        # a throttling primary is paused rather than pressed: the backup takes its share
        assert relays[f"127.0.0.1:{backup.port}"]["outcomes"] == {"sent": rows}
    assert elapsed < 10
    journal = journal_rows(tmp_path / "job.journal.db")
    assert {r["state"] for r in journal.values()} == {"sent"}
    assert {r["relay"] for r in journal.values()} == {f"127.0.0.1:{backup.port}"}


class MailClock(ScriptedServer):
    """A ScriptedServer that notes when each MAIL command arrives (monotonic seconds)."""

    def __init__(self) -> None:
        self.mail_times: list[float] = []
        super().__init__()

    @property
    def mail_reply(self) -> str | None:
        self.mail_times.append(time.monotonic())
        return self._mail_reply

    @mail_reply.setter
    def mail_reply(self, value: str | None) -> None:
        self._mail_reply = value


def test_no_traffic_to_an_open_circuit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Once a relay's circuit opens (3rd refusal blaming it), it gets no MAIL until its
    2 s cool-down is over, not even from a connection that was already busy."""
    primary = MailClock()
    with primary, ScriptedServer() as backup:
        primary.mail_reply = "550 5.7.1 relaying denied"
        primary.mail_times.clear()
        job = write_job(
            tmp_path,
            rows=20,
            delivery=FAST_RETRY,
            extra_yaml=relays_yaml(
                {"url": primary.url, "priority": 0, "connections": 2},
                {"url": backup.url, "priority": 1, "connections": 2},
            ),
        )
        result = cli(capsys, "run", job)
        assert result.code == 0, result.err
        assert len(backup.received) == 20
        times = list(primary.mail_times)
    assert len(times) >= 3
    opened = times[2]
    late = [round(t - opened, 2) for t in times[3:] if 0.3 < t - opened < 2.0]
    assert late == [], f"MAIL to the primary {late} s after its circuit opened"


def test_auth_refused_primary_fails_over_to_backup(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TXSEND_TEST_PRIMARY_PASSWORD", "wrong")
    rows = 6
    with ScriptedServer() as primary, ScriptedServer() as backup:
        primary.credentials = {"mailer": "right"}
        job = write_job(
            tmp_path,
            rows=rows,
            delivery=FAST_RETRY,
            extra_yaml=relays_yaml(
                {
                    "url": f"smtp://mailer@127.0.0.1:{primary.port}?tls=none",
                    "password_env": "TXSEND_TEST_PRIMARY_PASSWORD",
                    "allow_insecure_auth": "true",
                    "priority": 0,
                },
                {"url": backup.url, "priority": 1},
            ),
        )
        result = cli(capsys, "run", job, "--json")
        assert result.code == 0, result.err
        assert primary.received == []
        assert recipients(backup) == {f"user{i}@example.com": 1 for i in range(rows)}
        relays = json.loads(result.out)["run"]["relays"]
        assert relays[f"127.0.0.1:{primary.port}"]["circuit"] == "dead"
        assert relays[f"127.0.0.1:{backup.port}"]["outcomes"] == {"sent": rows}
    assert "wrong" not in result.out + result.err


@pytest.mark.slow  # 4000 messages: 8-12 s
def test_weights_share_the_traffic(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = 4000
    with ScriptedServer() as heavy, ScriptedServer() as light:
        job = write_job(
            tmp_path,
            rows=rows,
            delivery=FAST_RETRY,
            extra_yaml=relays_yaml(
                {"url": heavy.url, "weight": 3, "connections": 4, "messages_per_connection": 1000},
                {"url": light.url, "weight": 1, "connections": 4, "messages_per_connection": 1000},
            ),
        )
        result = cli(capsys, "run", job, "--json", "--quiet")
        assert result.code == 0, result.err
        got_heavy, got_light = len(heavy.received), len(light.received)
        both = recipients(heavy) + recipients(light)
    assert got_heavy + got_light == rows
    assert both == {f"user{i}@example.com": 1 for i in range(rows)}
    assert abs(got_heavy - 3000) <= 300, (got_heavy, got_light)
    assert abs(got_light - 1000) <= 100, (got_heavy, got_light)
    assert state_counts(tmp_path / "job.journal.db") == {"sent": rows}


def test_spent_quota_moves_traffic_to_the_backup(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if _hour_boundary_is_near(15):
        pytest.skip("too close to the next UTC hour")
    with ScriptedServer() as primary, ScriptedServer() as backup:
        job = write_job(
            tmp_path,
            rows=10,
            delivery=FAST_RETRY,
            extra_yaml=relays_yaml(
                {"url": primary.url, "priority": 0, "connections": 2, "rate": "3/h"},
                {"url": backup.url, "priority": 1, "connections": 2},
            ),
        )
        started = time.monotonic()
        result = cli(capsys, "run", job)
        assert time.monotonic() - started < 10
        assert result.code == 0, result.err
        assert len(primary.received) == 3
        assert len(backup.received) == 7
        assert recipients(primary) + recipients(backup) == {
            f"user{i}@example.com": 1 for i in range(10)
        }
    assert state_counts(tmp_path / "job.journal.db") == {"sent": 10}


def test_unreachable_relay_does_not_spend_its_quota(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = dead_url()
    job = write_job(
        tmp_path,
        rows=5,
        delivery=FAST_RETRY,
        extra_yaml=relays_yaml({"url": url, "connections": 2, "rate": "5/h"}),
    )
    result = cli(capsys, "run", job)
    assert result.code == 69, result.err
    assert state_counts(tmp_path / "job.journal.db") == {"pending": 5}
    with sqlite3.connect(tmp_path / "job.journal.db") as db:
        (counted,) = db.execute(
            "SELECT coalesce(sum(accepted), 0) + (SELECT count(*) FROM rate_holds) "
            "FROM rate_buckets"
        ).fetchone()
    assert counted == 0, f"{counted} of the hour's 5 messages spent, none sent"


def test_unreachable_relay_gives_up_with_69(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job = write_job(tmp_path, rows=5, delivery=FAST_RETRY)
    started = time.monotonic()
    result = cli(capsys, "run", job, "--relay", dead_url())
    elapsed = time.monotonic() - started
    assert result.code == 69, result.err
    assert elapsed < 5
    assert "no relay reachable" in final_line(result.err)
    journal = journal_rows(tmp_path / "job.journal.db")
    assert {(r["state"], r["attempts"]) for r in journal.values()} == {("pending", 0)}


def test_refused_authentication_gives_up_at_once_with_69(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TXSEND_TEST_RELAY_PASSWORD", "wrong")
    with ScriptedServer() as server:
        server.credentials = {"mailer": "right"}
        job = write_job(
            tmp_path,
            rows=5,
            delivery="  give_up_unreachable: 1m\n",
            extra_yaml=relays_yaml(
                {
                    "url": f"smtp://mailer@127.0.0.1:{server.port}?tls=none",
                    "password_env": "TXSEND_TEST_RELAY_PASSWORD",
                    "allow_insecure_auth": "true",
                }
            ),
        )
        started = time.monotonic()
        result = cli(capsys, "run", job)
        elapsed = time.monotonic() - started
        assert server.received == []
    assert result.code == 69, result.err
    assert elapsed < 5  # a refused AUTH is final for the run: no waiting for give_up
    assert "authentication refused" in result.err
    assert "wrong" not in result.err
    assert state_counts(tmp_path / "job.journal.db") == {"pending": 5}


def test_relay_lost_midway_gives_up_with_75(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A relay that answered and then went away: exit 75 (not 69), the rest pending."""
    with ScriptedServer() as server:
        server.data_delay = 0.02
        job = write_job(
            tmp_path,
            rows=200,
            delivery=FAST_RETRY,
            extra_yaml=relays_yaml({"url": server.url, "connections": 1}),
        )

        def stop_after_five() -> None:
            server.wait_for(5)
            server.stop()

        stopper = threading.Thread(target=stop_after_five)
        stopper.start()
        try:
            result = cli(capsys, "run", job)
        finally:
            stopper.join(timeout=20)
        delivered = len(server.received)
    assert result.code == 75, result.err
    assert "no relay reachable" in final_line(result.err)
    counts = state_counts(tmp_path / "job.journal.db")
    assert counts["sent"] == delivered
    assert counts["sent"] + counts["pending"] + counts["deferred"] + counts["unknown"] == 200
    assert counts["pending"] > 100


# --- rate limits and quotas -----------------------------------------------------------


def test_rate_per_second_paces_the_run(
    tmp_path: Path, smtp_server: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = 300
    job = write_job(
        tmp_path,
        rows=rows,
        delivery=FAST_RETRY,
        extra_yaml=relays_yaml({"url": smtp_server.url, "connections": 4, "rate": "100/s"}),
    )
    started = time.monotonic()
    result = cli(capsys, "run", job)
    elapsed = time.monotonic() - started
    assert result.code == 0, result.err
    assert len(smtp_server.received) == rows
    # a burst of 10, then 290 at 100 a second
    assert elapsed >= 2.8
    assert elapsed < 10
    assert state_counts(tmp_path / "job.journal.db") == {"sent": rows}


def test_rate_per_minute_spaces_the_messages(
    tmp_path: Path, smtp_server: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """N/min is a pace without bursts: 600/min sends one message every 0.1 s."""
    job = write_job(
        tmp_path,
        rows=11,
        delivery=FAST_RETRY,
        extra_yaml=relays_yaml({"url": smtp_server.url, "connections": 4, "rate": "600/min"}),
    )
    started = time.monotonic()
    result = cli(capsys, "run", job)
    elapsed = time.monotonic() - started
    assert result.code == 0, result.err
    assert len(smtp_server.received) == 11
    assert 0.95 <= elapsed < 5


def test_a_stop_during_a_long_pace_wait_ends_the_run_at_once(
    tmp_path: Path, smtp_server: ScriptedServer
) -> None:
    """1/min: the second message waits a minute for its slot; SIGTERM ends that wait at
    once (it slept through the stop until the 10 s grace cancelled it)."""
    job = write_job(
        tmp_path,
        rows=3,
        delivery=FAST_RETRY,
        extra_yaml=relays_yaml({"url": smtp_server.url, "connections": 1, "rate": "1/min"}),
    )
    proc = txsend_subprocess("run", job)
    try:
        smtp_server.wait_for(1, timeout=30)
        time.sleep(1.0)  # the worker is in its minute's wait for the second slot
        stopped = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 143, err
    assert time.monotonic() - stopped < 6  # well within the 10 s grace
    assert len(smtp_server.received) == 1
    assert state_counts(tmp_path / "job.journal.db") == {"sent": 1, "pending": 2}


def _hour_boundary_is_near(margin: float) -> bool:
    """Whether the current UTC hour ends within `margin` seconds plus RATE_MAX_WAIT: that
    close to its end a spent hourly quota is waited for (it renews sooner than the engine
    gives up on a rate slot), so a test of what happens once it is spent cannot run."""
    return 3600 - time.time() % 3600 < margin + RATE_MAX_WAIT


@pytest.mark.skipif(_hour_boundary_is_near(15), reason="too close to the next UTC hour")
def test_hourly_quota_is_kept_across_runs(
    tmp_path: Path, smtp_server: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    job = write_job(
        tmp_path,
        rows=12,
        delivery=FAST_RETRY,
        extra_yaml=relays_yaml({"url": smtp_server.url, "connections": 2, "rate": "5/h"}),
    )
    journal = tmp_path / "job.journal.db"
    started = time.monotonic()
    first = cli(capsys, "run", job)
    assert time.monotonic() - started < 10
    assert first.code == 75, first.err
    assert len(smtp_server.received) == 5
    assert state_counts(journal) == {"sent": 5, "pending": 7}
    with sqlite3.connect(journal) as db:
        windows = db.execute("SELECT account, start, width, accepted FROM rate_buckets").fetchall()
        holds = db.execute("SELECT count(*) FROM rate_holds").fetchone()[0]
    assert windows == [(smtp_server.url, time.time() // 3600 * 3600, 3600.0, 5)]
    assert holds == 0

    second = cli(capsys, "run", job)
    assert second.code == 75, second.err
    assert len(smtp_server.received) == 5
    assert state_counts(journal) == {"sent": 5, "pending": 7}


@pytest.mark.skipif(_hour_boundary_is_near(15), reason="too close to the next UTC hour")
def test_spent_quota_ends_the_run_promptly(
    tmp_path: Path, smtp_server: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """With the default give_up_unreachable (2 minutes), a spent quota still ends the
    run at once: the relay is reachable, there is just nothing more it may take."""
    job = write_job(
        tmp_path,
        rows=4,
        delivery="  retry: {attempts: 3, backoff: 50ms, max_backoff: 200ms}\n",
        extra_yaml=relays_yaml({"url": smtp_server.url, "connections": 1, "rate": "2/h"}),
    )
    started = time.monotonic()
    result = cli(capsys, "run", job)
    elapsed = time.monotonic() - started
    assert result.code == 75, result.err
    assert len(smtp_server.received) == 2
    assert elapsed < 10, f"the run took {elapsed:.1f} s"


# --- error-rate abort -----------------------------------------------------------------


def _check_aborted(
    result_code: int, err: str, journal: Path, server: ScriptedServer, window: int, rows: int
) -> None:
    assert result_code == 75, err
    line = final_line(err)
    assert "error rate" in line, line
    counts = state_counts(journal)
    assert server.received == []
    bounced = counts["bounced"]
    # the window, plus what was in flight on the connections when the run stopped
    assert window <= bounced <= window + 4, counts
    assert counts == {"bounced": bounced, "pending": rows - bounced}


def test_error_rate_abort_from_the_job(
    tmp_path: Path, smtp_server: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    smtp_server.data_reply = "554 5.6.0 rejected"
    job = write_job(
        tmp_path,
        rows=200,
        delivery=FAST_RETRY + "  abort_on: {error_rate: 0.5, min_messages: 20}\n",
    )
    result = cli(capsys, "run", job, "--relay", smtp_server.url, "--concurrency", "2")
    journal = tmp_path / "job.journal.db"
    _check_aborted(result.code, result.err, journal, smtp_server, 20, 200)
    # the relay is fixed: resume sends exactly the rows the abort left pending
    bounced = state_counts(journal)["bounced"]
    smtp_server.data_reply = None
    again = cli(capsys, "resume", job, "--relay", smtp_server.url)
    assert again.code == 1, again.err  # the bounces of the first run stay
    assert len(smtp_server.received) == 200 - bounced
    assert sum(recipients(smtp_server).values()) == len(set(recipients(smtp_server)))
    assert state_counts(journal) == {"bounced": bounced, "sent": 200 - bounced}


def test_error_rate_is_judged_over_a_rolling_window(
    tmp_path: Path, smtp_server: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """50 good messages, then only bounces: the run stops once more than half of the last
    20 failed (the 11th bounce), not when half of all messages did."""
    smtp_server.rcpt_replies = RcptScript(
        {f"user{i}@example.com": [BAD.format(f"user{i}@example.com")] for i in range(50, 200)}
    )
    job = write_job(
        tmp_path,
        rows=200,
        delivery=FAST_RETRY + "  abort_on: {error_rate: 0.5, min_messages: 20}\n",
    )
    result = cli(capsys, "run", job, "--relay", smtp_server.url, "--concurrency", "1")
    assert result.code == 75, result.err
    assert "error rate 55% over the last 20 messages" in final_line(result.err)
    counts = state_counts(tmp_path / "job.journal.db")
    assert counts == {"sent": 50, "bounced": 11, "pending": 139}
    assert len(smtp_server.received) == 50


def test_error_rate_abort_from_the_command_line(
    tmp_path: Path, smtp_server: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """--abort-on-error-rate without abort_on in the job: the window is 100 messages."""
    smtp_server.data_reply = "554 5.6.0 rejected"
    job = write_job(tmp_path, rows=200, delivery=FAST_RETRY)
    result = cli(
        capsys,
        "run",
        job,
        "--relay",
        smtp_server.url,
        "--concurrency",
        "2",
        "--abort-on-error-rate",
        "0.5",
    )
    _check_aborted(result.code, result.err, tmp_path / "job.journal.db", smtp_server, 100, 200)


def test_error_rate_flag_overrides_the_job_rate(
    tmp_path: Path, smtp_server: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """The flag replaces abort_on.error_rate and keeps the job's min_messages."""
    smtp_server.data_reply = "554 5.6.0 rejected"
    job = write_job(
        tmp_path,
        rows=200,
        delivery=FAST_RETRY + "  abort_on: {error_rate: 1, min_messages: 20}\n",
    )
    common = ["--relay", smtp_server.url, "--concurrency", "2"]
    result = cli(capsys, "run", job, *common, "--abort-on-error-rate", "0.5")
    _check_aborted(result.code, result.err, tmp_path / "job.journal.db", smtp_server, 20, 200)


def test_deferrals_do_not_count_toward_the_error_rate(
    tmp_path: Path, smtp_server: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    smtp_server.data_reply = "451 4.3.0 try again later"
    job = write_job(
        tmp_path,
        rows=60,
        delivery="  retry: {backoff: 10m}\n  abort_on: {error_rate: 0.1, min_messages: 10}\n",
    )
    result = cli(capsys, "run", job, "--relay", smtp_server.url, "--concurrency", "2")
    assert result.code == 75, result.err
    assert "stopped" not in final_line(result.err)
    assert state_counts(tmp_path / "job.journal.db") == {"deferred": 60}


# --- Postfix smtp-sink as an independent peer -------------------------------------------

SMTP_SINK = shutil.which("smtp-sink")


@dataclass
class PostfixSink:
    port: int
    dumps: Path

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}?tls=none"

    def messages(self) -> list[str]:
        """Transactions smtp-sink received whole (its dump files with a message body)."""
        texts = [p.read_text(errors="replace") for p in self.dumps.iterdir()]
        return [t for t in texts if "\nMessage-ID: " in t]


@contextmanager
def postfix_sink(*flags: str) -> Iterator[PostfixSink]:
    assert SMTP_SINK is not None
    with ExitStack() as stack:
        dumps = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="txsend-smtp-sink-")))
        dumps.chmod(0o777)  # smtp-sink writes as nobody
        port = free_port()
        user = ["-u", "nobody"] if os.geteuid() == 0 else []
        command = [SMTP_SINK, *user, *flags, "-d", f"{dumps}/%H%M%S.", f"127.0.0.1:{port}", "64"]
        proc = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        try:
            deadline = time.monotonic() + 10
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        out, err = proc.communicate(timeout=5)
                        pytest.fail(f"smtp-sink did not start: {command}: {out!r} {err!r}")
                    time.sleep(0.02)
            yield PostfixSink(port, dumps)
        finally:
            proc.kill()
            proc.communicate(timeout=10)


@pytest.mark.skipif(SMTP_SINK is None, reason="Postfix's smtp-sink is not installed")
@pytest.mark.parametrize(
    ("flags", "code", "states", "reply"),
    [
        ([], 0, {"sent": 3}, "250 2.0.0 Ok"),
        (["-r", "rcpt"], 75, {"deferred": 3}, "450 4.3.0 Error: command failed"),
        (["-f", "rcpt"], 1, {"bounced": 3}, "500 5.3.0 Error: command failed"),
        (["-r", "."], 75, {"deferred": 3}, "450 4.3.0 Error: command failed"),
        (["-f", "."], 1, {"bounced": 3}, "500 5.3.0 Error: command failed"),
        (["-q", "."], 75, {"unknown": 3}, None),
    ],
    ids=["accept", "soft-rcpt", "hard-rcpt", "soft-dot", "hard-dot", "drop-after-dot"],
)
def test_smtp_sink_replies_are_classified(
    flags: list[str],
    code: int,
    states: dict[str, int],
    reply: str | None,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with postfix_sink(*flags) as sink:
        job = write_job(tmp_path, rows=3)
        result = cli(capsys, "run", job, "--relay", sink.url, "--concurrency", "1")
        received = sink.messages()
    assert result.code == code, result.err
    journal = journal_rows(tmp_path / "job.journal.db")
    assert Counter(r["state"] for r in journal.values()) == states
    if reply is not None:
        assert {r["reply"] for r in journal.values()} == {reply}
    # what smtp-sink got whole: everything but RCPT refusals (the dot came, then the verdict)
    whole = 0 if "rcpt" in flags else 3
    assert len(received) == whole
    if "-q" in flags:  # RFC 1047: it did get the messages, nobody knows if it kept them
        assert all(r["attempts"] == 1 for r in journal.values())


@pytest.mark.skipif(SMTP_SINK is None, reason="Postfix's smtp-sink is not installed")
def test_smtp_sink_421_and_disconnect(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """421 at RCPT closes the session. Every transaction counts as one of the row's
    attempts: each row ends failed after its 3 attempts, deferred, or still pending when
    the run gives up after give_up_unreachable (1 s) with no transaction accepted. Which
    of these depends on the machine's pace; the bounds do not."""
    with postfix_sink("-Q", "rcpt") as sink:
        job = write_job(tmp_path, rows=3, delivery=FAST_RETRY)
        started = time.monotonic()
        result = cli(capsys, "run", job, "--relay", sink.url, "--concurrency", "1", "--json")
        elapsed = time.monotonic() - started
        received = sink.messages()
    assert result.code in (1, 75), result.err  # it did answer: not 69
    # give_up_unreachable + a circuit cool-down + the backoffs, with room for a busy machine
    assert elapsed < 1 + 2 + 1 + 10
    assert received == []
    journal = journal_rows(tmp_path / "job.journal.db")
    for row in journal.values():
        assert row["attempts"] <= 3, row
        assert row["state"] in ("failed", "deferred", "pending"), row
        if row["attempts"]:
            assert row["code"] == 421 and "421" in row["reply"], row
    report = json.loads(result.out)
    relay = report["run"]["relays"][f"127.0.0.1:{sink.port}"]
    assert relay["attempts"] == sum(r["attempts"] for r in journal.values())
    if result.code == 75:
        assert report["run"]["stop_reason"].startswith("no relay reachable"), report["run"]
    else:
        assert {r["state"] for r in journal.values()} == {"failed"}


@pytest.mark.skipif(SMTP_SINK is None, reason="Postfix's smtp-sink is not installed")
def test_smtp_sink_421_defers_after_the_hand_backs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A 421 on a relay that was working is tried again at once on a new connection; a
    second one in a row defers the row, both counted as attempts."""
    with postfix_sink("-Q", "rcpt") as sink:
        job = write_job(
            tmp_path,
            rows=1,
            delivery="  retry: {backoff: 10m}\n  give_up_unreachable: 3s\n",
        )
        started = time.monotonic()
        result = cli(capsys, "run", job, "--relay", sink.url, "--concurrency", "1")
        elapsed = time.monotonic() - started
    assert result.code == 75, result.err
    assert elapsed < 10
    (row,) = journal_rows(tmp_path / "job.journal.db").values()
    # the lone 421 is tried once more on a new connection; the second one defers the row
    assert (row["state"], row["attempts"], row["code"]) == ("deferred", 2, 421)
    assert row["reply"] == "421 4.0.0 Server closing connection"


@pytest.mark.skipif(SMTP_SINK is None, reason="Postfix's smtp-sink is not installed")
def test_unknown_outcomes_count_toward_the_error_rate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with postfix_sink("-q", ".") as sink:
        job = write_job(
            tmp_path,
            rows=10,
            delivery=FAST_RETRY + "  abort_on: {error_rate: 0.5, min_messages: 3}\n",
        )
        result = cli(capsys, "run", job, "--relay", sink.url, "--concurrency", "1")
        received = sink.messages()
    assert result.code == 75, result.err
    assert "error rate" in final_line(result.err)
    counts = state_counts(tmp_path / "job.journal.db")
    assert counts == {"unknown": 3, "pending": 7}
    assert len(received) == 3


# --- RFC 2920 PIPELINING ---------------------------------------------------------------


def _outcome(tmp_path: Path) -> dict[str, tuple[str, int | None, str | None]]:
    journal = journal_rows(tmp_path / "job.journal.db")
    return {k: (r["state"], r["code"], r["reply"]) for k, r in journal.items()}


def _script(server: ScriptedServer) -> None:
    server.rcpt_replies["user1@example.com"] = "550 5.1.1 no such user"
    server.rcpt_replies["user3@example.com"] = "451 4.7.1 try again later"
    server.rcpt_replies["user5@example.com"] = "553 5.1.3 bad address syntax"


def test_pipelined_and_lockstep_sends_agree(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results = {}
    for pipelining in (True, False):
        server = ScriptedServer()
        server.pipelining = pipelining
        _script(server)
        folder = tmp_path / f"pipelining-{pipelining}"
        with server:
            job = write_job(folder, rows=12)
            result = cli(capsys, "run", job, "--relay", server.url, "--concurrency", "3")
        received = sorted(
            (r.rcpt_tos[0], r.message["Subject"], r.message["Message-ID"] is not None)
            for r in server.received
        )
        results[pipelining] = (result.code, received, _outcome(folder))
        # the server saw what was asked: MAIL with its RCPT in one write, or not at all
        assert (server.pipelined == 12) if pipelining else (server.pipelined == 0)
    assert results[True] == results[False]
    code, received, outcome = results[True]
    assert code == 75 and len(received) == 9
    assert outcome["user1@example.com"][:2] == ("bounced", 550)
    assert outcome["user3@example.com"][:2] == ("deferred", 451)
    assert outcome["user5@example.com"][:2] == ("bounced", 553)


def test_pipelined_mail_refusal_with_354_gets_an_empty_message(
    tmp_path: Path, smtp_server: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    # aiosmtpd answers a pipelined DATA after a refused MAIL with 503, as RFC 2920 asks;
    # either way the row is classified by the MAIL reply and the connection goes on.
    smtp_server.mail_reply = "451 4.3.2 not now"
    job = write_job(tmp_path, rows=3)
    result = cli(capsys, "run", job, "--relay", smtp_server.url, "--concurrency", "1")
    assert result.code == 75
    assert not smtp_server.received
    assert {v[:2] for v in _outcome(tmp_path).values()} == {("deferred", 451)}


def _one_connection(server: ScriptedServer, **relay: object) -> str:
    return relays_yaml({"url": server.url, "connections": 1, **relay})


@pytest.mark.parametrize(
    ("pipelining", "relay", "announces"),
    [(True, {}, True), (False, {}, False), (True, {"rate": "1000/s"}, False)],
    ids=["pipelining", "lockstep", "rate-limited"],
)
def test_the_next_transaction_rides_on_the_message_content(
    pipelining: bool,
    relay: dict[str, object],
    announces: bool,
    tmp_path: Path,
    smtp_server: ScriptedServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """RFC 2920 3.1: message content may start a group, so the next MAIL, RCPT and DATA
    go out behind the final dot; never without PIPELINING, never on a rate-limited relay
    (the limiter's slot comes just before each transaction)."""
    smtp_server.pipelining = pipelining
    job = write_job(tmp_path, rows=20, extra_yaml=_one_connection(smtp_server, **relay))
    result = cli(capsys, "run", job)
    assert result.code == 0, result.err
    assert recipients(smtp_server) == {f"user{i}@example.com": 1 for i in range(20)}
    assert {v[0] for v in _outcome(tmp_path).values()} == {"sent"}
    assert smtp_server.connections == 1
    assert (smtp_server.announced > 0) if announces else (smtp_server.announced == 0)


def test_messages_per_connection_holds_with_announced_transactions(
    tmp_path: Path, smtp_server: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    extra = _one_connection(smtp_server, messages_per_connection=3)
    job = write_job(tmp_path, rows=10, extra_yaml=extra)
    result = cli(capsys, "run", job)
    assert result.code == 0, result.err
    assert recipients(smtp_server) == {f"user{i}@example.com": 1 for i in range(10)}
    assert smtp_server.connections == 4  # 3 + 3 + 3 + 1
    assert not smtp_server.errors


def test_a_refused_final_dot_leaves_the_announced_message_to_a_new_connection(
    tmp_path: Path, smtp_server: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """A 5xx or 421 to the final dot while the next transaction's commands are on the
    wire: the refused row is classified as ever, the next one goes out exactly once."""
    smtp_server.data_replies = {
        "user2@example.com": "554 5.6.0 content rejected",
        "user5@example.com": "421 4.3.2 closing this connection",
    }
    job = write_job(tmp_path, rows=9, extra_yaml=_one_connection(smtp_server))
    result = cli(capsys, "run", job)
    assert result.code == 75, result.err  # user5 deferred, for a retry in 10 minutes
    delivered = {f"user{i}@example.com": 1 for i in (0, 1, 3, 4, 6, 7, 8)}
    assert recipients(smtp_server) == delivered
    outcome = _outcome(tmp_path)
    assert outcome["user2@example.com"][:2] == ("bounced", 554)
    assert outcome["user5@example.com"][:2] == ("deferred", 421)
    assert {k for k, v in outcome.items() if v[0] == "sent"} == set(delivered)
    assert journal_rows(tmp_path / "job.journal.db")["user3@example.com"]["attempts"] == 1
    assert smtp_server.connections >= 3  # the first, then one after each refusal


def test_a_lost_final_reply_leaves_only_its_own_row_unknown(
    tmp_path: Path, smtp_server: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """The connection drops after the 4th message's content, with the 5th's commands
    behind it: the 4th is in RFC 1047's window (unknown), the 5th was never started."""
    smtp_server.disconnect_after = 3
    job = write_job(tmp_path, rows=8, extra_yaml=_one_connection(smtp_server))
    result = cli(capsys, "run", job)
    assert result.code == 75, result.err  # an unknown row that resume resends
    assert [r.rcpt_tos[0] for r in smtp_server.dropped] == ["user3@example.com"]
    delivered = {f"user{i}@example.com": 1 for i in (0, 1, 2, 4, 5, 6, 7)}
    assert recipients(smtp_server) == delivered
    outcome = _outcome(tmp_path)
    assert outcome["user3@example.com"][0] == "unknown"
    assert {k for k, v in outcome.items() if v[0] == "sent"} == set(delivered)
    rows = journal_rows(tmp_path / "job.journal.db")
    assert rows["user4@example.com"]["attempts"] == 1
    assert smtp_server.connections == 2


@pytest.mark.skipif(SMTP_SINK is None, reason="Postfix's smtp-sink is not installed")
@pytest.mark.parametrize("refuse", [[], ["-r", "rcpt"], ["-f", "."]], ids=["ok", "450", "500"])
def test_smtp_sink_pipelined_and_not(
    refuse: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results = []
    for flags in (refuse, ["-p", *refuse]):  # -p: no PIPELINING in the EHLO reply
        folder = tmp_path / ("lockstep" if "-p" in flags else "pipelined")
        with postfix_sink(*flags) as sink:
            job = write_job(folder, rows=6)
            result = cli(capsys, "run", job, "--relay", sink.url, "--concurrency", "2")
            received = len(sink.messages())
        outcome = {k: (s, c, r) for k, (s, c, r) in _outcome(folder).items()}
        results.append((result.code, received, outcome))
    assert results[0] == results[1]
