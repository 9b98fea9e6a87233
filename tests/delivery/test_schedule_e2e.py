"""schedule: end to end into a real SMTP server: when each transaction BEGAN at the server
(`Received.mail_wall`), what the journal holds, the exit code and what the run says.

The CLI tests run on the real clock; the per-row zone test runs in-process "at" a fixed
moment through the run's injectable wall clock (shifted, so it still advances)."""

from __future__ import annotations

import csv
import datetime
import sqlite3
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.jobs import cli, write_job
from tests.smtpd import ScriptedServer
from txsend.app import sending
from txsend.app.requests import RunRequest
from txsend.cli.verdict import final_line
from txsend.job.schedule import load_zone
from txsend.models import State
from txsend.reporting.summary import schedule_note


def states(folder: Path) -> dict[str, str]:
    with sqlite3.connect(folder / "job.journal.db") as db:
        return dict(db.execute("SELECT key, state FROM messages"))


def iso(epoch: float) -> str:
    return datetime.datetime.fromtimestamp(epoch, datetime.UTC).isoformat(timespec="seconds")


def relay(server: ScriptedServer, rate: str | None = None) -> str:
    extra = f"\n    rate: {rate}" if rate else ""
    return f"relays:\n  - url: {server.url}\n    connections: 2{extra}\n"


def test_a_run_before_not_before_sends_nothing_and_says_when_it_opens(
    tmp_path: Path, smtp_server: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    opens = int(time.time()) + 2 * 86400
    job = write_job(
        tmp_path,
        rows=4,
        extra_yaml=relay(smtp_server)
        + f"schedule:\n  timezone: Asia/Tokyo\n  not_before: {iso(opens)}\n",
    )
    result = cli(capsys, "run", job)
    assert result.code == 75, result.err
    assert smtp_server.received == []
    assert set(states(tmp_path).values()) == {"pending"}
    when = datetime.datetime.fromtimestamp(opens, load_zone("Asia/Tokyo"))
    assert "outside the send window: 4 rows wait" in result.err
    assert f"opens {when:%a %Y-%m-%d %H:%M} JST" in result.err
    status = cli(capsys, "status", job)
    assert f"send window: closed now, opens {when:%a %Y-%m-%d %H:%M} JST" in status.out
    resumed = cli(capsys, "resume", job, "--json")
    assert resumed.code == 75 and smtp_server.received == []
    assert '"next_window_at": ' + str(float(opens)) in resumed.out


def test_no_transaction_begins_after_not_after_and_the_rest_expire(
    tmp_path: Path, smtp_server: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    # 5 messages a second for 3 seconds cannot send 40 rows
    not_after = time.time() + 3.0
    job = write_job(
        tmp_path,
        rows=40,
        extra_yaml=relay(smtp_server, "5/s") + f"schedule:\n  not_after: '{iso(not_after)}'\n",
    )
    not_after = datetime.datetime.fromisoformat(iso(not_after)).timestamp()  # whole seconds
    result = cli(capsys, "run", job)
    assert result.code == 1, result.err
    received = smtp_server.received
    assert received, "some rows fit before not_after"
    assert all(r.mail_wall is not None and r.mail_wall <= not_after for r in received)
    counts = Counter(states(tmp_path).values())
    assert counts == {"sent": len(received), "expired": 40 - len(received)}
    assert "expired: not sent before schedule.not_after" in result.err
    out = tmp_path / "failed.csv"
    assert cli(capsys, "report", job, "--failed-csv", out).code in (0, 1)
    with out.open(newline="", encoding="utf-8") as handle:
        exported = list(csv.DictReader(handle))
    assert len(exported) == 40 - len(received)
    assert all("not sent before schedule.not_after" in str(row.values()) for row in exported)
    # a later run sends nothing: everything is terminal
    assert cli(capsys, "run", job).code == 1
    assert len(smtp_server.received) == len(received)


def test_a_run_after_not_after_expires_everything_unsent(
    tmp_path: Path, smtp_server: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    job = write_job(tmp_path, rows=3, extra_yaml=relay(smtp_server))
    smtp_server.disconnect_after = 0  # the first message's reply is lost: unknown
    first = cli(capsys, "run", job, "--limit", "1")
    assert first.code == 75, first.err
    text = job.read_text() + f"schedule:\n  not_after: '{iso(time.time() - 60)}'\n"
    job.write_text(text)
    smtp_server.disconnect_after = None
    result = cli(capsys, "run", job, "--force")
    assert result.code == 1, result.err
    assert Counter(states(tmp_path).values()) == {"unknown": 1, "expired": 2}
    assert len(smtp_server.received) == 0


def shifted(start: float) -> Callable[[], float]:
    t0 = time.monotonic()
    return lambda: start + (time.monotonic() - t0)


def test_rows_go_in_their_own_zone_s_window_and_the_rest_wait(
    tmp_path: Path, smtp_server: ScriptedServer
) -> None:
    people = [
        (f"user{i}@example.com", zone)
        for i, zone in enumerate(["Asia/Tokyo", "America/Los_Angeles"] * 3)
    ]
    job = zoned_job(tmp_path, relay(smtp_server), people)
    tokyo = datetime.datetime(2026, 12, 7, 10, 0, tzinfo=load_zone("Asia/Tokyo")).timestamp()
    request = RunRequest(target=job, wall=shifted(tokyo))
    summary = sending.run(request, "run")
    assert summary.exit_code == 75
    tos = sorted(r.rcpt_tos[0] for r in smtp_server.received)
    assert tos == ["user0@example.com", "user2@example.com", "user4@example.com"]
    assert Counter(states(tmp_path).values()) == {"sent": 3, "pending": 3}
    note = schedule_note(summary)
    assert note is not None and "3 rows wait" in note
    assert "Mon 2026-12-07 09:00 PST" in note
    # later that day in Los Angeles: the rest go, each once
    la = datetime.datetime(2026, 12, 7, 9, 30, tzinfo=load_zone("America/Los_Angeles"))
    resumed = sending.run(
        RunRequest(target=job, resume=True, wall=shifted(la.timestamp())), "resume"
    )
    assert resumed.exit_code == 0
    assert Counter(r.rcpt_tos[0] for r in smtp_server.received) == {
        f"user{i}@example.com": 1 for i in range(6)
    }


def test_a_row_with_an_unknown_zone_is_skipped_with_the_reason(
    tmp_path: Path, smtp_server: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    people = [
        ("a@example.com", "Europe/Paris"),
        ("b@example.com", "Mars/Olympus"),
    ]
    job = zoned_job(tmp_path, relay(smtp_server), people, window="00:00-24:00")
    result = cli(capsys, "run", job)
    assert result.code == 1, result.err
    assert [r.rcpt_tos[0] for r in smtp_server.received] == ["a@example.com"]
    assert states(tmp_path)["b@example.com"] == "skipped"


class Shifted:
    """A wall clock started at `start` that advances with the monotonic clock: a moment the
    server saw (`Received.mail_at`, monotonic) maps onto it exactly."""

    def __init__(self, start: float) -> None:
        self.start, self.t0 = start, time.monotonic()

    def __call__(self) -> float:
        return self.start + (time.monotonic() - self.t0)

    def of(self, monotonic: float | None) -> float:
        assert monotonic is not None
        return self.start + (monotonic - self.t0)


def zone_column(job: Path) -> None:
    job.write_text(
        job.read_text().replace("  file: people.csv\n", "  file: people.csv\n  timezone: tz\n")
    )


def zoned_job(
    tmp_path: Path,
    relay_yaml: str,
    people: list[tuple[str, str]],
    window: str = "Mon-Fri 09:00-17:00",
) -> Path:
    """A job sending through `relay_yaml` in one weekly window, to `people` (address, zone),
    each row in its own zone (the column tz)."""
    records = [
        {"email": address, "first_name": address[:1].upper(), "plan": "p", "tz": zone}
        for address, zone in people
    ]
    schedule = f"schedule:\n  windows: ['{window}']\n"
    job = write_job(tmp_path, records=records, extra_yaml=relay_yaml + schedule)
    zone_column(job)
    return job


def local(zone: str, *parts: int) -> float:
    return datetime.datetime(*parts, tzinfo=load_zone(zone)).timestamp()  # type: ignore[misc]


def test_a_window_closing_mid_run_stops_new_transactions_before_it_closes(
    tmp_path: Path, smtp_server: ScriptedServer
) -> None:
    # 5 messages a second, the window closes 4 seconds into the run: 60 rows cannot fit
    job = write_job(
        tmp_path,
        rows=60,
        extra_yaml=relay(smtp_server, "5/s")
        + "schedule:\n  timezone: Europe/Paris\n  windows: ['Mon-Fri 09:00-17:00']\n",
    )
    closes = local("Europe/Paris", 2026, 12, 7, 17, 0)  # a Monday
    clock = Shifted(closes - 4.0)
    summary = sending.run(RunRequest(target=job, wall=clock), "run")
    assert summary.exit_code == 75
    received = smtp_server.received
    assert received, "some rows go before the window closes"
    assert all(clock.of(r.mail_at) < closes for r in received)  # BEGIN_MARGIN before it
    assert Counter(states(tmp_path).values()) == {
        "sent": len(received),
        "pending": 60 - len(received),
    }
    note = schedule_note(summary)
    assert note is not None and f"{60 - len(received)} rows wait" in note
    assert "Tue 2026-12-08 09:00 CET" in note


def test_a_limit_run_the_window_ends_before_the_limit_is_met_exits_75(
    tmp_path: Path, smtp_server: ScriptedServer
) -> None:
    # --limit 50 with room left when the window closes 4 seconds in: rows wait for the
    # window, not because the run was asked to leave them
    job = write_job(
        tmp_path,
        rows=60,
        extra_yaml=relay(smtp_server, "5/s")
        + "schedule:\n  timezone: Europe/Paris\n  windows: ['Mon-Fri 09:00-17:00']\n",
    )
    closes = local("Europe/Paris", 2026, 12, 7, 17, 0)  # a Monday
    summary = sending.run(RunRequest(target=job, limit=50, wall=Shifted(closes - 4.0)), "run")
    received = smtp_server.received
    assert 0 < len(received) < 50
    assert summary.exit_code == 75
    assert "continue with: txsend resume" in final_line(summary, job, "run")


def test_a_limit_run_before_not_before_exits_75_and_says_how_to_continue(
    tmp_path: Path, smtp_server: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    opens = int(time.time()) + 2 * 86400
    job = write_job(
        tmp_path,
        rows=10,
        extra_yaml=relay(smtp_server) + f"schedule:\n  not_before: {iso(opens)}\n",
    )
    result = cli(capsys, "run", job, "--limit", "5")
    assert result.code == 75, result.err
    assert smtp_server.received == []
    assert "outside the send window: 10 rows wait" in result.err
    assert "continue with: txsend resume" in result.err


def test_a_limit_run_that_took_its_rows_exits_0_though_the_window_then_closes(
    tmp_path: Path, smtp_server: ScriptedServer
) -> None:
    job = write_job(
        tmp_path,
        rows=10,
        extra_yaml=relay(smtp_server)
        + "schedule:\n  timezone: Europe/Paris\n  windows: ['Mon-Fri 09:00-17:00']\n",
    )
    noon = local("Europe/Paris", 2026, 12, 7, 12, 0)
    summary = sending.run(RunRequest(target=job, limit=4, wall=Shifted(noon)), "run")
    assert summary.exit_code == 0
    assert len(smtp_server.received) == 4


def test_a_run_ended_inside_its_window_says_the_window_closes_before_the_next_slot(
    tmp_path: Path, smtp_server: ScriptedServer
) -> None:
    # 3 a minute, 20 seconds before the close: 3 go, the next slot comes after the close
    job = write_job(
        tmp_path,
        rows=10,
        extra_yaml=relay(smtp_server, "3/1min")
        + "schedule:\n  timezone: Europe/Paris\n  windows: ['Mon-Fri 09:00-17:00']\n",
    )
    closes = local("Europe/Paris", 2026, 12, 7, 17, 0)  # a Monday
    summary = sending.run(RunRequest(target=job, wall=Shifted(closes - 20.0)), "run")
    assert summary.exit_code == 75
    assert len(smtp_server.received) == 3
    note = schedule_note(summary)
    assert note is not None
    assert note.startswith("the send window closes at 17:00 before the quota's next slot (17:00:")
    assert "CET): 7 rows wait; the next window opens Tue 2026-12-08 09:00 CET" in note
    assert "outside the send window" not in note


def test_rows_whose_own_window_opens_within_a_minute_go_in_the_same_run(
    tmp_path: Path, smtp_server: ScriptedServer
) -> None:
    zones = ["America/New_York", "America/Los_Angeles"] * 2
    people = [(f"u{i}@example.com", zone) for i, zone in enumerate(zones)]
    job = zoned_job(tmp_path, relay(smtp_server), people)
    opens = local("America/Los_Angeles", 2026, 12, 7, 9, 0)  # 12:00 in New York
    clock = Shifted(opens - 3.0)
    summary = sending.run(RunRequest(target=job, wall=clock), "run")
    assert summary.exit_code == 0, schedule_note(summary)
    assert Counter(states(tmp_path).values()) == {"sent": 4}
    by_to = {r.rcpt_tos[0]: clock.of(r.mail_at) for r in smtp_server.received}
    assert len(by_to) == 4 and len(smtp_server.received) == 4
    assert by_to["u0@example.com"] < opens and by_to["u2@example.com"] < opens
    assert by_to["u1@example.com"] >= opens and by_to["u3@example.com"] >= opens


def test_a_held_row_s_past_retry_does_not_stop_the_wait_for_other_retries(
    tmp_path: Path, smtp_server: ScriptedServer
) -> None:
    people = [
        ("paris@example.com", "Europe/Paris"),
        ("london@example.com", "Europe/London"),
    ]
    job = zoned_job(tmp_path, relay(smtp_server), people)
    smtp_server.mail_reply = "451 4.3.0 try again later"
    first = sending.run(
        RunRequest(target=job, wall=Shifted(local("Europe/Paris", 2026, 12, 7, 16, 30))), "run"
    )
    assert first.exit_code == 75
    assert set(states(tmp_path).values()) == {"deferred"}
    # Paris's retry time has passed (but its window is closed); London's comes in 2 s
    with sqlite3.connect(tmp_path / "job.journal.db") as db:
        db.execute(
            "UPDATE messages SET next_attempt_at = ? WHERE key = ?",
            (time.time() - 100, "paris@example.com"),
        )
        db.execute(
            "UPDATE messages SET next_attempt_at = ? WHERE key = ?",
            (time.time() + 2, "london@example.com"),
        )
    smtp_server.mail_reply = None
    # 17:30 in Paris (closed until Tuesday), 16:30 in London (open)
    clock = Shifted(local("Europe/Paris", 2026, 12, 7, 17, 30))
    started = time.monotonic()
    resumed = sending.run(RunRequest(target=job, resume=True, wall=clock), "resume")
    assert resumed.exit_code == 75
    assert [r.rcpt_tos[0] for r in smtp_server.received] == ["london@example.com"]
    assert states(tmp_path) == {"paris@example.com": "deferred", "london@example.com": "sent"}
    assert time.monotonic() - started < 30  # it waited for London's retry, not a minute


def test_limit_counts_only_rows_taken_and_dry_run_ignores_the_window(
    tmp_path: Path, smtp_server: ScriptedServer
) -> None:
    zones = ["Europe/Paris", "Asia/Tokyo", "Asia/Tokyo", "Europe/Paris", "Europe/Paris"]
    people = [(f"u{i}@example.com", zone) for i, zone in enumerate(zones)]
    job = zoned_job(tmp_path, relay(smtp_server), people)
    noon = local("Europe/Paris", 2026, 12, 7, 12, 0)  # 20:00 in Tokyo: closed
    # --dry-run renders every row whatever the window, and sends nothing
    dry = sending.run(RunRequest(target=job, dry_run=True, wall=Shifted(noon)), "run")
    assert dry.exit_code == 0 and dry.stats is not None and dry.stats.queued == 5
    assert smtp_server.received == [] and set(states(tmp_path).values()) == {"pending"}
    # --limit 2 takes two rows whose window is open, not the Tokyo rows it passes over
    limited = sending.run(RunRequest(target=job, limit=2, wall=Shifted(noon)), "run")
    assert limited.exit_code == 0  # as any --limit run that took its N rows
    assert sorted(r.rcpt_tos[0] for r in smtp_server.received) == [
        "u0@example.com",
        "u3@example.com",
    ]
    assert Counter(states(tmp_path).values()) == {"sent": 2, "pending": 3}


def test_a_dry_run_skips_a_row_with_an_unknown_zone_as_a_real_run_does(
    tmp_path: Path, smtp_server: ScriptedServer
) -> None:
    people = [
        ("a@example.com", "Europe/Paris"),
        ("b@example.com", "Mars/Olympus"),
    ]
    job = zoned_job(tmp_path, relay(smtp_server), people)
    night = local("Europe/Paris", 2026, 12, 7, 23, 0)  # closed: a dry run renders anyway
    dry = sending.run(RunRequest(target=job, dry_run=True, wall=Shifted(night)), "run")
    assert dry.stats is not None and dry.stats.queued == 1
    assert dry.stats.outcomes.get(State.SKIPPED) == 1
    assert states(tmp_path)["b@example.com"] == "skipped"
    assert smtp_server.received == []
