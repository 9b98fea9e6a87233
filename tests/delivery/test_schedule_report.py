"""`schedule` in the reports: a run's `--json`, `status --json` and `report --json`, each
checked against docs/report.schema.json after real runs into a scripted server."""

from __future__ import annotations

import datetime
import json
import time
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from tests.delivery.test_schedule_e2e import iso, relay
from tests.jobs import cli, write_job
from tests.smtpd import ScriptedServer

SCHEMA = json.loads((Path(__file__).parents[2] / "docs" / "report.schema.json").read_text())


def _report(out: str) -> dict[str, Any]:
    report: dict[str, Any] = json.loads(out)
    jsonschema.Draft202012Validator(SCHEMA).validate(report)
    return report


def test_a_run_outside_the_window_reports_every_row_waiting_and_when_to_come_back(
    tmp_path: Path, smtp_server: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    opens = int(time.time()) + 2 * 86400
    job = write_job(
        tmp_path,
        rows=2,
        extra_yaml=relay(smtp_server) + f"schedule:\n  not_before: {iso(opens)}\n",
    )
    run = cli(capsys, "run", job, "--json")
    assert run.code == 75, run.err
    report = _report(run.out)
    assert report["schedule"]["waiting"] == 2
    assert report["schedule"]["next_window_at"] == float(opens)
    assert report["next_window_at"] == float(opens)
    status = _report(cli(capsys, "status", job, "--json").out)
    assert status["schedule"]["open"] is False
    reported = _report(cli(capsys, "report", job, "--json").out)
    assert reported["schedule"] == status["schedule"]


def test_the_schema_describes_both_shapes_of_schedule() -> None:
    validator = jsonschema.Draft202012Validator(SCHEMA["properties"]["schedule"])
    run = {"timezone": "UTC", "waiting": 2, "next_window": None, "next_window_at": None}
    validator.validate({**run, "not_after": None, "expired": 3, "past_not_after": False})
    status = {"timezone": "UTC", "open": True, "closes_at": None, "opens_at": None}
    end = {"not_after": None, "expired": 0, "past_not_after": False}
    validator.validate({**status, **end, "windows": []})
    # `expired` is a count in every report, the flag is `past_not_after`
    for wrong in ({**end, "expired": True}, {**end, "expired": "no"}, {**end, "past_not_after": 1}):
        with pytest.raises(jsonschema.ValidationError):
            validator.validate({**run, **wrong})


def test_a_run_that_expires_rows_counts_them_and_says_why_unknown_rows_stay(
    tmp_path: Path, smtp_server: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    job = write_job(
        tmp_path,
        rows=3,
        extra_yaml=relay(smtp_server) + "delivery:\n  on_unknown: resend\n",
        delivery="",
    )
    smtp_server.disconnect_after = 0  # the first message's reply is lost: unknown
    assert cli(capsys, "run", job, "--limit", "1").code == 75
    job.write_text(job.read_text() + f"schedule:\n  not_after: '{iso(time.time() - 60)}'\n")
    smtp_server.disconnect_after = None
    result = cli(capsys, "resume", job, "--force", "--json")
    report = _report(result.out)
    assert report["run"]["outcomes"].get("expired") == 2
    assert report["schedule"]["expired"] == 2
    assert report["schedule"]["past_not_after"] is True
    status = _report(cli(capsys, "status", job, "--json").out)["schedule"]
    assert status["expired"] == 2 and status["past_not_after"] is True
    assert "schedule.not_after has passed" in result.err
    assert "on_unknown: skip" not in result.err
    assert smtp_server.received == []


def test_a_run_with_no_window_before_not_after_says_the_rows_will_expire(
    tmp_path: Path, smtp_server: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    not_before = int(time.time()) + 86400
    job = write_job(
        tmp_path,
        rows=2,
        extra_yaml=relay(smtp_server)
        + f"schedule:\n  not_before: {iso(not_before)}\n  not_after: {iso(not_before + 3600)}\n"
        + f"  windows: ['{(time.gmtime(not_before).tm_hour + 2) % 24:02d}:30-"
        + f"{(time.gmtime(not_before).tm_hour + 2) % 24:02d}:31']\n",
    )
    result = cli(capsys, "run", job)
    assert result.code == 75, result.err
    assert "no send window opens before not_after" in result.err
    assert "the 2 rows waiting will expire then" in result.err


def test_status_judges_the_rows_zones_not_only_the_jobs(
    tmp_path: Path, smtp_server: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    # a two-hour window starting this UTC hour: open in UTC, closed at UTC+12 and UTC-6
    hour = time.gmtime().tm_hour
    window = f"{hour:02d}:00-{(hour + 2) % 24:02d}:00"
    zones = ["UTC", "UTC", "Etc/GMT-12", "", "Etc/GMT-12", "Etc/GMT-12"]
    records = [
        {"email": f"u{i}@example.com", "first_name": f"U{i}", "plan": "p", "TZ": zone}
        for i, zone in enumerate(zones)
    ]
    job = write_job(
        tmp_path,
        records=records,
        extra_yaml=relay(smtp_server)
        + f"schedule:\n  timezone: Etc/GMT+6\n  windows: ['{window}']\n",
    )
    job.write_text(
        job.read_text().replace("  file: people.csv\n", "  file: people.csv\n  timezone: tz\n")
    )
    smtp_server.mail_reply = "451 4.3.0 try later"  # the UTC rows go out and stay due: deferred
    assert cli(capsys, "run", job).code == 75
    assert len(smtp_server.received) == 0
    status = _report(cli(capsys, "status", job, "--json").out)
    schedule = status["schedule"]
    assert schedule["open"] is False  # the job's own zone (UTC-6) is closed
    zones_now = schedule["zones"]
    assert zones_now["column"] == "tz" and zones_now["due"] == 6
    assert zones_now["zones_open"] == 1 and zones_now["rows_open"] == 2
    assert zones_now["rows_closed"] == 4  # three at UTC+12, one empty: the job's zone
    by_zone = {z["timezone"]: z for z in zones_now["zones"]}
    assert set(by_zone) == {"UTC", "Etc/GMT-12", "Etc/GMT+6"}
    assert by_zone["UTC"]["open"] and by_zone["UTC"]["rows"] == 2
    assert by_zone["Etc/GMT-12"]["rows"] == 3 and by_zone["Etc/GMT+6"]["rows"] == 1
    # local time at UTC-6 reaches this hour again in 6 h, at UTC+12 in 12 h
    assert zones_now["next_opens_zone"] == "Etc/GMT+6"
    reported = _report(cli(capsys, "report", job, "--json").out)
    assert reported["schedule"]["zones"] == zones_now
    text = cli(capsys, "status", job).out
    assert "send window in Etc/GMT+6 (the job's zone): closed now" in text
    assert "rows' zones (tz): 1 of 3 open now (UTC); 2 of 6 rows due are in open zones" in text
    assert "next opening among closed zones: Etc/GMT+6," in text


def test_deferred_rows_retried_after_not_after_are_said_to_expire_then(
    tmp_path: Path, smtp_server: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    # a retry 10 min after a 451 (write_job's backoff) falls after a not_after 5 min away
    not_after = int(time.time()) + 300
    job = write_job(
        tmp_path,
        rows=2,
        extra_yaml=relay(smtp_server) + f"schedule:\n  not_after: '{iso(not_after)}'\n",
    )
    smtp_server.mail_reply = "451 4.3.0 try later"
    result = cli(capsys, "run", job)
    assert result.code == 75, result.err
    when = datetime.datetime.fromtimestamp(not_after, datetime.UTC)
    assert (
        "the 2 deferred rows' next retries fall after schedule.not_after: they will expire "
        f"at {when:%a %Y-%m-%d %H:%M} UTC" in result.err
    ), result.err
    assert "next retry due" not in result.err
