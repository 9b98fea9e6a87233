"""`seeds:` and `seeds_every:` in a job: copies to inbox-monitoring addresses, journalled as
rows of their own, exactly once, counted apart; the real CLI against a real SMTP server."""

from __future__ import annotations

import json
import signal
import sqlite3
from collections import Counter
from pathlib import Path

import pytest

from tests.jobs import cli, txsend_subprocess, write_job
from tests.smtpd import ScriptedServer

SEED_A, SEED_B = "seed-a@monitor.example", "seed-b@monitor.example"
SEEDS_YAML = f"seeds: [{SEED_A}, {SEED_B}]\n"
SCHEMA = json.loads((Path(__file__).parents[2] / "docs" / "report.schema.json").read_text())


def journal_rows(path: Path) -> dict[str, tuple[str, str | None, int]]:
    """key -> (state, seed_of, row)"""
    with sqlite3.connect(path) as db:
        return {
            k: (s, o, r)
            for k, s, o, r in db.execute("SELECT key, state, seed_of, row FROM messages")
        }


def seed_copies(server: ScriptedServer) -> list[tuple[str, str]]:
    """(seed address, Subject) of each copy the server got, in arrival order."""
    return [
        (r.rcpt_tos[0], r.message["Subject"])
        for r in server.received
        if r.rcpt_tos[0].startswith("seed-")
    ]


def test_seeds_get_the_first_and_every_nth_message(
    tmp_path: Path, smtp_server: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    job = write_job(tmp_path, rows=10, extra_yaml=SEEDS_YAML + "seeds_every: 3\n")
    result = cli(capsys, "run", job, "--relay", smtp_server.url, "--json")
    assert result.code == 0, result.err
    # the 1st, 4th, 7th and 10th message, to each seed
    copies = Counter(seed_copies(smtp_server))
    expected = {(s, f"Welcome, User{n}!") for s in (SEED_A, SEED_B) for n in (0, 3, 6, 9)}
    assert copies == Counter(expected)
    real = [r for r in smtp_server.received if not r.rcpt_tos[0].startswith("seed-")]
    assert sorted(r.rcpt_tos[0] for r in real) == sorted(f"user{i}@example.com" for i in range(10))
    for r in smtp_server.received:
        if r.rcpt_tos[0].startswith("seed-"):
            msg = r.message
            assert msg["To"].endswith(f"<{r.rcpt_tos[0]}>")  # addressed to the seed
            assert msg["X-Campaign"] == "test"
    assert len({r.message["Message-ID"] for r in smtp_server.received}) == 18
    rows = journal_rows(tmp_path / "job.journal.db")
    assert rows[f"seed:{SEED_A}:user3@example.com"] == ("sent", "user3@example.com", 4)
    assert sum(1 for _, seed_of, _ in rows.values() if seed_of) == 8
    report = json.loads(result.out)
    assert report["counts"]["sent"] == 18 and report["seeds"]["sent"] == 8
    assert "test-job: 10 sent (exit 0); seeds: 8 sent" in result.err
    assert "of which 8 seed copies" in result.err
    status = cli(capsys, "status", job, "--json")
    assert json.loads(status.out)["seeds"]["sent"] == 8
    report_all = cli(capsys, "report", job, "--json")
    assert json.loads(report_all.out)["seeds"]["sent"] == 8
    human = cli(capsys, "report", job)
    assert "of which seeds" in human.out


def test_without_seeds_every_only_the_first_message_is_copied(
    tmp_path: Path, smtp_server: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    job = write_job(tmp_path, rows=4, extra_yaml=f"seeds: [{SEED_A}]\n")
    assert cli(capsys, "run", job, "--relay", smtp_server.url).code == 0
    assert seed_copies(smtp_server) == [(SEED_A, "Welcome, User0!")]
    # the copy goes right behind the message it copies, not at the end of the job
    order = [r.rcpt_tos[0] for r in smtp_server.received]
    assert order.index(SEED_A) <= 2


def test_a_bounced_seed_makes_exit_1_and_is_reported_apart(
    tmp_path: Path, smtp_server: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    smtp_server.rcpt_replies[SEED_B] = "550 5.1.1 no such seed"
    job = write_job(tmp_path, rows=3, extra_yaml=SEEDS_YAML)
    result = cli(capsys, "run", job, "--relay", smtp_server.url, "--json")
    assert result.code == 1, result.err
    assert "test-job: 3 sent (exit 1); seeds: 1 sent, 1 bounced" in result.err
    report = json.loads(result.out)
    assert report["seeds"] == {**dict.fromkeys(report["seeds"], 0), "sent": 1, "bounced": 1}
    assert [p["address"] for p in report["problems"]["rows"]] == [SEED_B]
    # the failed-rows export is for a new job of real recipients: no seed copies in it
    out = tmp_path / "failed.csv"
    assert cli(capsys, "report", job, "--failed-csv", out).code == 0
    assert len(out.read_text().splitlines()) == 1  # the header alone


def test_limit_counts_recipients_and_takes_their_seed_copies_along(
    tmp_path: Path, smtp_server: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    job = write_job(tmp_path, rows=10, extra_yaml=SEEDS_YAML + "seeds_every: 3\n")
    first = cli(capsys, "run", job, "--relay", smtp_server.url, "--limit", "4")
    assert first.code == 0, first.err
    real = [r.rcpt_tos[0] for r in smtp_server.received if not r.rcpt_tos[0].startswith("seed-")]
    assert sorted(real) == [f"user{i}@example.com" for i in range(4)]
    # the copies of the 1st and the 4th message went with them
    assert sorted(s for _, s in seed_copies(smtp_server)) == sorted(
        ["Welcome, User0!", "Welcome, User3!"] * 2
    )
    second = cli(capsys, "run", job, "--relay", smtp_server.url, "--limit", "3")
    assert second.code == 0, second.err
    assert len(smtp_server.received) == 8 + 3 + 2  # rows 5-7, the copies of the 7th
    rest = cli(capsys, "run", job, "--relay", smtp_server.url)
    assert rest.code == 0, rest.err
    assert len(smtp_server.received) == 18
    assert set(Counter(r.message["Message-ID"] for r in smtp_server.received).values()) == {1}


@pytest.mark.parametrize(
    ("yaml", "line", "words"),
    [
        ("seeds: seed@monitor.example\n", 13, "seeds: expected a list, got the string"),
        ("seeds: [seed@monitor.example, 42]\n", 13, "seeds[1]: expected an email address"),
        ("seeds:\n  - ok@monitor.example\n  - not-an-address\n", 15, "seeds[1]: invalid"),
        ("seeds:\n  - Seed <s@monitor.example>\n", 14, "seeds[0]: invalid email address"),
        ("seeds: [a@monitor.example, A@MONITOR.example]\n", 13, "listed twice"),
        ("seeds: ['']\n", 13, "seeds[0]: expected an email address"),
        ("seeds: [a@monitor.example]\nseeds_every: 0\n", 14, "must be at least 1"),
        ("seeds: [a@monitor.example]\nseeds_every: often\n", 14, "expected a whole number"),
        ("seeds: [a@monitor.example]\nseeds_every: 2.5\n", 14, "expected a whole number"),
        ("seeds_every: 10\n", 13, "seeds_every: has no seeds"),
        ("seed: [a@monitor.example]\n", 13, "did you mean 'seeds'"),
    ],
)
def test_bad_seeds_are_job_errors_with_file_and_line(
    tmp_path: Path,
    smtp_server: ScriptedServer,
    capsys: pytest.CaptureFixture[str],
    yaml: str,
    line: int,
    words: str,
) -> None:
    job = write_job(tmp_path, rows=2, extra_yaml=yaml)
    for command in (["run", job, "--relay", smtp_server.url], ["validate", job]):
        result = cli(capsys, *command)
        assert result.code == 65, result.err
        assert f"{job}:{line}" in result.err
        assert words in result.err
        assert "Traceback" not in result.err
    assert smtp_server.received == []


def test_seeds_added_to_a_job_already_run_need_force(
    tmp_path: Path, smtp_server: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    job = write_job(tmp_path, rows=3)
    assert cli(capsys, "run", job, "--relay", smtp_server.url).code == 0
    job.write_text(job.read_text() + f"seeds: [{SEED_A}]\n")
    changed = cli(capsys, "run", job, "--relay", smtp_server.url)
    assert changed.code == 65 and "seeds was added" in changed.err
    forced = cli(capsys, "run", job, "--relay", smtp_server.url, "--force")
    assert forced.code == 0, forced.err
    assert seed_copies(smtp_server) == [(SEED_A, "Welcome, User0!")]
    assert len(smtp_server.received) == 4


@pytest.mark.slow
def test_a_run_killed_and_resumed_sends_no_seed_copy_twice(
    tmp_path: Path, smtp_server: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = 40
    smtp_server.data_delay = 0.05
    job = write_job(tmp_path, rows=rows, extra_yaml=SEEDS_YAML + "seeds_every: 2\n")
    proc = txsend_subprocess("run", job, "--relay", smtp_server.url, "--concurrency", "4")
    smtp_server.wait_for(20, timeout=30)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=10)
    journal = tmp_path / "job.journal.db"
    states = journal_rows(journal)
    in_window = {k for k, (s, _, _) in states.items() if s == "sending"}
    sent_before = {k for k, (s, o, _) in states.items() if s == "sent" and o}
    assert sent_before, "some seed copies should have gone before the kill"

    smtp_server.data_delay = 0
    result = cli(capsys, "resume", job, "--relay", smtp_server.url)
    assert result.code == 0, result.err
    copies = Counter(
        (r.rcpt_tos[0], r.message["Message-ID"])
        for r in smtp_server.received
        if r.rcpt_tos[0].startswith("seed-")
    )
    assert len(copies) == 2 * rows // 2  # every copy arrived
    twice = {key for key, n in copies.items() if n > 1}
    # only a copy in RFC 1047's window (its reply lost) may arrive twice
    assert len(twice) <= len(in_window)
    final = journal_rows(journal)
    assert {s for s, _, _ in final.values()} == {"sent"}
    assert sum(1 for _, o, _ in final.values() if o) == rows


def test_seeds_on_a_postgresql_journal(
    tmp_path: Path,
    smtp_server: ScriptedServer,
    capsys: pytest.CaptureFixture[str],
    pg_url: str,
) -> None:
    extra = f"journal: {pg_url}\n" + SEEDS_YAML + "seeds_every: 2\n"
    job = write_job(tmp_path, rows=5, extra_yaml=extra)
    result = cli(capsys, "run", job, "--relay", smtp_server.url, "--json")
    assert result.code == 0, result.err
    assert Counter(seed_copies(smtp_server)) == Counter(
        (s, f"Welcome, User{n}!") for s in (SEED_A, SEED_B) for n in (0, 2, 4)
    )
    assert json.loads(result.out)["seeds"]["sent"] == 6
    status = cli(capsys, "status", job, "--json")
    assert json.loads(status.out)["seeds"]["sent"] == 6
    assert len(smtp_server.received) == 11
