"""A paced relay when the window closes (or not_after passes): the messages queued behind
the rate are given back to the journal at once, the run does not wait out their slots.

Each run's duration is bounded by the schedule: (close - start) plus generous slack, far
below what waiting out the queue's rate slots takes (30 rows at 30/min: a minute)."""

from __future__ import annotations

import itertools
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.delivery.test_schedule_e2e import (
    Shifted,
    iso,
    local,
    relay,
    states,
    zoned_job,
)
from tests.jobs import cli, write_job
from tests.smtpd import ScriptedServer
from txsend.app import sending
from txsend.app.requests import RunRequest

ROWS = 30
SLACK = 12.0  # seconds past the close; the queue's rate slots would take about 60


def test_a_paced_run_ends_soon_after_not_after_not_when_its_queue_drains(
    tmp_path: Path, smtp_server: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    started = time.time()
    not_after = int(started) + 5
    job = write_job(
        tmp_path,
        rows=ROWS,
        extra_yaml=relay(smtp_server, "30/min") + f"schedule:\n  not_after: '{iso(not_after)}'\n",
    )
    result = cli(capsys, "run", job)
    ended = time.time()
    assert result.code == 1, result.err
    assert ended - started < (not_after - started) + SLACK, ended - started
    received = smtp_server.received
    assert received and all(r.mail_wall is not None and r.mail_wall <= not_after for r in received)
    assert Counter(states(tmp_path).values()) == {
        "sent": len(received),
        "expired": ROWS - len(received),
    }


def test_a_paced_run_ends_soon_after_its_window_closes(
    tmp_path: Path, smtp_server: ScriptedServer
) -> None:
    job = write_job(
        tmp_path,
        rows=ROWS,
        extra_yaml=relay(smtp_server, "30/min")
        + "schedule:\n  timezone: Europe/Paris\n  windows: ['Mon-Fri 09:00-17:00']\n",
    )
    closes = local("Europe/Paris", 2026, 12, 7, 17, 0)  # a Monday
    clock = Shifted(closes - 5.0)
    started = time.monotonic()
    summary = sending.run(RunRequest(target=job, wall=clock), "run")
    assert time.monotonic() - started < 5.0 + SLACK, time.monotonic() - started
    assert summary.exit_code == 75
    received = smtp_server.received
    assert received and all(clock.of(r.mail_at) < closes for r in received)
    assert Counter(states(tmp_path).values()) == {
        "sent": len(received),
        "pending": ROWS - len(received),
    }


def test_rows_of_a_closed_zone_take_no_rate_slot(
    tmp_path: Path, smtp_server: ScriptedServer
) -> None:
    # Tokyo is closed (20:00) when Paris is open (12:00): Paris's rows go 2 s apart, the
    # Tokyo rows between them in the queue do not take a slot each
    zones = ["Europe/Paris", "Asia/Tokyo"] * 4
    people = [(f"u{i}@example.com", zone) for i, zone in enumerate(zones)]
    job = zoned_job(tmp_path, relay(smtp_server, "30/min"), people)
    noon = local("Europe/Paris", 2026, 12, 7, 12, 0)
    clock = Shifted(noon)
    summary = sending.run(RunRequest(target=job, wall=clock), "run")
    assert summary.exit_code == 75
    times = sorted(clock.of(r.mail_at) for r in smtp_server.received)
    assert len(times) == 4
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(gap < 3.5 for gap in gaps), gaps  # 2 s apart, not 4 (a slot for each Tokyo row)
