"""`txsend status`, `txsend report` and the run's report show each quota's window: used of
its limit, held slots, when a spent one frees, and the warm-up's day and caps; read from
the journal's ledger after real runs into a scripted server ("days later" is made by
moving the ledger's history back, not by waiting)."""

from __future__ import annotations

import datetime
import json
import math
import sqlite3
import time
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from tests.delivery.test_delivery import relays_yaml, state_counts
from tests.delivery.test_quotas_e2e import DELIVERY, _near_utc_midnight, _shift_ledger
from tests.jobs import cli, write_job
from tests.smtpd import ScriptedServer

SCHEMA = json.loads((Path(__file__).parents[2] / "docs" / "report.schema.json").read_text())
WARMUP = "warmup: {start: 5/day, growth: 1.5, until: 50/day}\n"  # 5, 7, 11, 16, 25, 37, 50
BOUNCE = "550 5.1.1 no such user"

pytestmark = pytest.mark.skipif(_near_utc_midnight(180), reason="too close to the next UTC day")


def _job(folder: Path, server: ScriptedServer, rate: str, rows: int, extra: str = WARMUP) -> Path:
    return write_job(
        folder,
        rows=rows,
        delivery=DELIVERY,
        extra_yaml=relays_yaml({"url": server.url, "connections": 1, "rate": rate}) + extra,
    )


def _warmup(used: int, limit: int, day: int, tomorrow: int, started: bool = True) -> dict[str, Any]:
    return {
        "kind": "warmup",
        "relay": None,
        "account": "warmup:acme.example",
        "rate": "warm-up",
        "window": "today (UTC)",
        "used": used,
        "held": 0,
        "held_until": None,
        "limit": limit,
        "frees_at": None,
        "warmup": {
            "started": started,
            "day": day,
            "cap": limit,
            "tomorrow": tomorrow,
            "full": 50,
            "full_day": 7,
        },
    }


def _rolling(
    server: ScriptedServer, used: int, limit: int, frees_at: str | None = None
) -> dict[str, Any]:
    return {
        "kind": "rolling",
        "relay": f"127.0.0.1:{server.port}",
        "account": server.url,
        "rate": f"{limit}/24h",
        "window": "the last 24 h",
        "used": used,
        "held": 0,
        "held_until": None,
        "limit": limit,
        "frees_at": frees_at,
    }


def _quotas(out: str) -> list[dict[str, Any]]:
    """The `quotas` of a report on stdout, which must follow docs/report.schema.json."""
    report = json.loads(out)
    jsonschema.Draft202012Validator(SCHEMA).validate(report)
    quotas: list[dict[str, Any]] = report["quotas"]
    return quotas


def _lines(out: str, *starts: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith(starts)]


def test_status_and_reports_show_the_rolling_quota_and_the_warmup(
    tmp_path: Path, smtp_server: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    smtp_server.rcpt_replies = {"user1@example.com": BOUNCE}  # refused: counts nowhere
    job = _job(tmp_path, smtp_server, "10/24h", rows=4)
    journal = tmp_path / "job.journal.db"
    run = cli(capsys, "run", job, "--json")
    assert run.code == 1, run.err
    assert state_counts(journal) == {"sent": 3, "bounced": 1}
    expected = [_warmup(3, 5, day=1, tomorrow=7), _rolling(smtp_server, 3, 10)]
    assert _quotas(run.out) == expected

    status = cli(capsys, "status", job)
    assert status.code == 0, status.err
    relay = f"relay 127.0.0.1:{smtp_server.port}"
    assert _lines(status.out, "warm-up", relay) == [
        "warm-up acme.example: day 1, today's cap 5 (3 used), tomorrow 7, full 50 on day 7",
        f"{relay}: 3 of 10 accepted in the last 24 h (10/24h)",
    ]
    assert _quotas(cli(capsys, "status", job, "--json").out) == expected
    assert _quotas(cli(capsys, "report", job, "--json").out) == expected
    report = cli(capsys, "report", job)
    assert _lines(report.out, "warm-up", f"{relay}: 3 of") == _lines(status.out, "warm-up", relay)

    # two days later: warm-up day 3, nothing used today; the rolling window is empty
    _shift_ledger(journal, "warmup:acme.example", 2 * 86400.0)
    _shift_ledger(journal, smtp_server.url, 86400.0 + 120.0)
    later = _quotas(cli(capsys, "status", job, "--json").out)
    assert later == [_warmup(0, 11, day=3, tomorrow=16), _rolling(smtp_server, 0, 10)]
    assert _lines(cli(capsys, "status", job).out, "warm-up") == [
        "warm-up acme.example: day 3, today's cap 11 (0 used), tomorrow 16, full 50 on day 7"
    ]


def test_a_spent_quota_says_when_its_next_slot_frees(
    tmp_path: Path, smtp_server: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    job = _job(tmp_path, smtp_server, "2/24h", rows=3, extra="")
    journal = tmp_path / "job.journal.db"
    assert cli(capsys, "run", job).code == 75
    assert state_counts(journal) == {"sent": 2, "pending": 1}
    with sqlite3.connect(journal) as db:
        (ends,) = db.execute("SELECT min(start + width) FROM rate_buckets").fetchone()
    frees = ends + 86400.0  # the oldest bucket leaves the window
    frees = math.ceil(frees)  # told to the second, rounded up
    iso = datetime.datetime.fromtimestamp(frees, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    status = cli(capsys, "status", job, "--json")
    assert _quotas(status.out) == [_rolling(smtp_server, 2, 2, frees_at=iso)]
    second = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(frees))
    assert _lines(cli(capsys, "status", job).out, "relay") == [
        f"relay 127.0.0.1:{smtp_server.port}: 2 of 2 accepted in the last 24 h (2/24h); "
        f"none left: the next slot frees at {second}"
    ]


def _back_to_schema_4(journal: Path) -> None:
    """Make the journal one written before the ledger: the fixed windows' table."""
    with sqlite3.connect(journal) as db:
        db.execute("DROP TABLE rate_buckets")
        db.execute("DROP TABLE rate_holds")
        db.execute(
            "CREATE TABLE rate_windows (relay TEXT NOT NULL, window_start REAL NOT NULL, "
            "count INTEGER NOT NULL, PRIMARY KEY (relay, window_start))"
        )
        db.execute("UPDATE meta SET value = '4' WHERE name = 'schema'")


def test_a_journal_from_before_the_ledger_shows_nothing_used(
    tmp_path: Path, smtp_server: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    plain = write_job(
        tmp_path, rows=2, delivery=DELIVERY, extra_yaml=relays_yaml({"url": smtp_server.url})
    )
    assert cli(capsys, "run", plain).code == 0
    journal = tmp_path / "job.journal.db"
    _back_to_schema_4(journal)
    job = _job(tmp_path, smtp_server, "10/24h", rows=2)  # the same job, with quotas now
    status = cli(capsys, "status", job, "--json")
    assert status.code == 0, status.err
    # the warm-up counts the journal's own sent rows (its day 1 is their day); the relay
    # quota's old windows were not kept
    assert _quotas(status.out) == [_warmup(2, 5, day=1, tomorrow=7), _rolling(smtp_server, 0, 10)]
    assert len(smtp_server.received) == 2  # status sent nothing


def test_a_warmup_before_any_sending_has_not_started(
    tmp_path: Path, smtp_server: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    smtp_server.rcpt_replies = {f"user{i}@example.com": BOUNCE for i in range(3)}
    job = _job(tmp_path, smtp_server, "10/24h", rows=2)
    cli(capsys, "run", job)
    assert set(state_counts(tmp_path / "job.journal.db")) == {"bounced"}
    status = cli(capsys, "status", job, "--json")
    assert status.code == 0, status.err
    assert _quotas(status.out) == [
        _warmup(0, 5, day=1, tomorrow=7, started=False),
        _rolling(smtp_server, 0, 10),
    ]
    assert _lines(cli(capsys, "status", job).out, "warm-up") == [
        "warm-up acme.example: not started: day 1 begins with the first accepted recipient; cap 5"
    ]


def _ledger_rows(journal: Path, account: str) -> list[tuple[float, int]]:
    with sqlite3.connect(journal) as db:
        rows = db.execute(
            "SELECT start, accepted FROM rate_buckets WHERE account = ? ORDER BY start",
            (account,),
        ).fetchall()
    return [(float(start), int(n)) for start, n in rows]


LATE_WARMUP = "warmup: {start: 2/day, growth: 2, until: 100/day}\n"  # 2, 4, 8, ...


@pytest.mark.parametrize("days_ago", [0, 1])
def test_a_warmup_added_later_counts_what_the_journal_sent_before(
    tmp_path: Path, smtp_server: ScriptedServer, capsys: pytest.CaptureFixture[str], days_ago: int
) -> None:
    """7 sent, then a warm-up added: its day 1 is the day they were sent, and they count
    against that day's cap (the warm-up began as if nothing had been sent: 9 of 2)."""
    plain = _job(tmp_path, smtp_server, "100/24h", rows=12, extra="")
    assert cli(capsys, "run", plain, "--limit", "7").code == 0
    journal = tmp_path / "job.journal.db"
    assert state_counts(journal) == {"sent": 7, "pending": 5}
    with sqlite3.connect(journal) as db:  # sent `days_ago` UTC days before today
        db.execute("UPDATE messages SET sent_at = sent_at - ?", (days_ago * 86400.0,))
    job = _job(tmp_path, smtp_server, "100/24h", rows=12, extra=LATE_WARMUP)
    account = "warmup:acme.example"
    cap, used = (2, 7) if days_ago == 0 else (4, 0)
    status = cli(capsys, "status", job, "--json")
    assert status.code == 0, status.err
    (warmup,) = [q for q in _quotas(status.out) if q["kind"] == "warmup"]
    assert (warmup["used"], warmup["limit"]) == (used, cap)
    assert warmup["warmup"]["started"] and warmup["warmup"]["day"] == days_ago + 1
    assert _ledger_rows(journal, account) == []  # status writes nothing

    resumed = cli(capsys, "resume", job)
    assert resumed.code == 75, resumed.err
    assert len(smtp_server.received) == 7 + max(0, cap - used)
    today = time.time() // 86400 * 86400
    history = [(today - days_ago * 86400.0, 7)] + ([(today, cap)] if days_ago else [])
    assert _ledger_rows(journal, account) == history
    assert f"warm-up day {days_ago + 1}: today's cap of {cap} " in resumed.err
    # a second run counts them once (the carrying over is idempotent)
    assert cli(capsys, "resume", job).code == 75
    assert len(smtp_server.received) == 7 + max(0, cap - used)
    assert _ledger_rows(journal, account) == history


def test_status_reads_the_quotas_of_a_postgresql_journal(
    tmp_path: Path,
    smtp_server: ScriptedServer,
    capsys: pytest.CaptureFixture[str],
    pg_url: str,
) -> None:
    job = _job(tmp_path, smtp_server, "10/24h", rows=3, extra=WARMUP + f"journal: {pg_url}\n")
    run = cli(capsys, "run", job)
    assert run.code == 0, run.err
    expected = [_warmup(3, 5, day=1, tomorrow=7), _rolling(smtp_server, 3, 10)]
    assert _quotas(cli(capsys, "status", job, "--json").out) == expected
    assert _quotas(cli(capsys, "report", job, "--json").out) == expected
    assert _lines(cli(capsys, "status", job).out, "warm-up") == [
        "warm-up acme.example: day 1, today's cap 5 (3 used), tomorrow 7, full 50 on day 7"
    ]


def test_a_warmup_added_later_counts_the_jobs_sent_rows_on_postgresql(
    tmp_path: Path,
    smtp_server: ScriptedServer,
    capsys: pytest.CaptureFixture[str],
    pg_url: str,
) -> None:
    extra = f"journal: {pg_url}\n"
    plain = _job(tmp_path, smtp_server, "100/24h", rows=12, extra=extra)
    assert cli(capsys, "run", plain, "--limit", "7").code == 0
    job = _job(tmp_path, smtp_server, "100/24h", rows=12, extra=LATE_WARMUP + extra)
    (warmup,) = [
        q for q in _quotas(cli(capsys, "status", job, "--json").out) if q["kind"] == "warmup"
    ]
    assert (warmup["used"], warmup["limit"], warmup["warmup"]["day"]) == (7, 2, 1)
    resumed = cli(capsys, "resume", job)
    assert resumed.code == 75, resumed.err
    assert len(smtp_server.received) == 7  # 7 of 2 already: nothing more today
    assert "warm-up day 1: today's cap of 2 " in resumed.err
    (warmup,) = [
        q for q in _quotas(cli(capsys, "status", job, "--json").out) if q["kind"] == "warmup"
    ]
    assert warmup["used"] == 7  # carried into the ledger once


def test_status_says_when_held_slots_lapse(
    tmp_path: Path, smtp_server: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """Slots a killed run held: status counts them and says when the last one lapses
    (its expiry rounded up to the second), in words and as `held_until`."""
    job = _job(tmp_path, smtp_server, "10/24h", rows=2, extra="")
    journal = tmp_path / "job.journal.db"
    assert cli(capsys, "run", job).code == 0
    now = time.time()
    lapse = math.floor(now) + 600.25  # the later of the two holds
    with sqlite3.connect(journal) as db:
        db.executemany(
            "INSERT INTO rate_holds(account, expires_at) VALUES (?, ?)",
            [(smtp_server.url, lapse), (smtp_server.url, now + 300)],
        )
    last = datetime.datetime.fromtimestamp(math.ceil(lapse), datetime.UTC)
    (quota,) = _quotas(cli(capsys, "status", job, "--json").out)
    assert quota == {
        **_rolling(smtp_server, 2, 10),
        "held": 2,
        "held_until": last.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    relay = f"relay 127.0.0.1:{smtp_server.port}"
    held = f"2 held, lapse by {last:%H:%M:%S} UTC"
    assert _lines(cli(capsys, "status", job).out, relay) == [
        f"{relay}: 2 of 10 accepted in the last 24 h (10/24h), {held}"
    ]


def test_status_says_when_a_slot_frees_as_the_run_said_it(
    tmp_path: Path, smtp_server: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """Within the hour, to the second, in the run's final line and in status alike (status
    once rounded to the minute: 01:01 beside the run's 01:00:20)."""
    job = _job(tmp_path, smtp_server, "2/1h", rows=3, extra="")
    run = cli(capsys, "run", job)
    assert run.code == 75, run.err
    said = run.err.split("the next slot frees at ", 1)[1].split(" UTC", 1)[0]
    assert len(said) == len("2026-12-07 01:00:20"), said
    status = cli(capsys, "status", job).out
    assert f"none left: the next slot frees at {said} UTC" in status, status
