"""Tests for txsend.reporting.schema: the typed report and its defensive reader."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from tests.reporting.mangled import REPORTS
from tests.reports import EXAMPLE_REPORT
from txsend.models import State
from txsend.reporting.schema import (
    STATES,
    Bucket,
    ErrorCounts,
    Percentiles,
    ProblemReport,
    ReplyCode,
    read_report,
)


def example() -> dict[str, Any]:
    return copy.deepcopy(EXAMPLE_REPORT)


def test_example_reads_as_typed_values() -> None:
    report = read_report(example())
    assert report.job == "welcome-2026-11"
    assert (report.run_id, report.command, report.exit_code) == (3.0, "run", 1.0)
    assert (report.started_at, report.ended_at) == ("2026-11-28T12:00:00Z", "2026-11-28T12:00:41Z")
    assert report.dry_run is False and report.next_attempt_at is None and report.warnings == ()
    assert list(report.counts) == list(STATES) == [state.value for state in State]
    assert report.counts["sent"] == 19890 and report.counts["pending"] == 0
    run = report.run
    assert run is not None
    assert run.outcomes["sent"] == 19890 and run.outcomes["deferred"] == 0.0
    assert (run.seconds, run.messages_per_second, run.retries) == (41.2, 482.8, 130)
    assert run.latency_ms == Percentiles(12.1, 40.3, 95.0)
    assert run.latency_histogram is not None and run.latency_histogram[0] == Bucket(10.5, 8000)
    assert run.errors == ErrorCounts(130, 100, 0)
    assert run.reply_codes is not None
    assert run.reply_codes[2] == ReplyCode("550 5.1.1", 80, "550 5.1.1 User unknown")
    assert [step.t for step in run.timeline] == [0, 1, 2]
    assert run.stop_reason is None and run.latency_sum_seconds is None
    backup = run.relays["backup.acme.example:465"]
    assert backup.connect_failures == 2 and backup.last_error == "connection refused"
    assert backup.circuit == "closed" and len(backup.events) == 2
    assert report.reported_relays is run.relays
    assert report.reported_reply_codes == run.reply_codes
    assert report.runs is None and report.relays == {} and report.reply_codes is None
    assert report.problems.count == 100 and report.problems.rows[1].code is None
    assert report.problems.truncated is False


def test_json_round_trip_reads_the_same() -> None:
    assert read_report(json.loads(json.dumps(EXAMPLE_REPORT))) == read_report(example())


def test_an_empty_report_reads_as_missing_everywhere() -> None:
    report = read_report({})
    assert report.job is None and report.run_id is None and report.exit_code is None
    assert report.dry_run is False and report.warnings == ()
    assert dict(report.counts) == dict.fromkeys(STATES, 0.0)
    assert report.run is None and report.runs is None
    assert report.reported_relays == {} and report.reported_reply_codes == ()
    assert report.problems == ProblemReport(count=None, rows=(), truncated=False, export=None)


@pytest.mark.parametrize(
    "value",
    [None, True, False, "12", float("nan"), float("inf"), -float("inf"), 10**400, [], {}],
)
def test_a_number_of_the_wrong_type_reads_as_none(value: object) -> None:
    data = example()
    data.update(exit_code=value, next_attempt_at=value, run_id=value)
    data["run"].update(seconds=value, retries=value, queue_depth=value)
    data["run"]["relays"]["smtp.acme.example:587"]["connections"] = value
    report = read_report(data)
    assert report.exit_code is None and report.next_attempt_at is None and report.run_id is None
    assert report.run is not None
    assert (report.run.seconds, report.run.retries, report.run.queue_depth) == (None,) * 3
    assert report.run.relays["smtp.acme.example:587"].connections is None


def test_numbers_are_taken_as_the_report_states_them() -> None:
    """Negative and fractional counts stay; the page rounds them, the exporter does not."""
    data = example()
    data["counts"] = {"sent": -4, "bounced": 2.7, "failed": True, "bogus": 9}
    data["run"]["queue_depth"] = -2.5
    report = read_report(data)
    assert report.counts["sent"] == -4 and report.counts["bounced"] == 2.7
    assert report.counts["failed"] == 0.0 and "bogus" not in report.counts
    assert report.run is not None and report.run.queue_depth == -2.5


def test_texts_of_the_wrong_type_read_as_none() -> None:
    data = example()
    data.update(job=5, command=None, started_at=["x"])
    data["run"]["stop_reason"] = 7
    data["run"]["relays"]["smtp.acme.example:587"].update(circuit=3, last_error={})
    data["run"]["reply_codes"][0]["code"] = 250
    report = read_report(data)
    assert (report.job, report.command, report.started_at) == (None, None, None)
    assert report.run is not None and report.run.stop_reason is None
    relay = report.run.relays["smtp.acme.example:587"]
    assert relay.circuit is None and relay.last_error is None
    assert report.run.reply_codes is not None and report.run.reply_codes[0].code is None


def test_string_lists_keep_other_entries_as_text() -> None:
    data = example()
    data["warnings"] = ["kept", 5, None]
    data["run"]["relays"]["smtp.acme.example:587"]["events"] = "not a list"
    report = read_report(data)
    assert report.warnings == ("kept", "5", "None")
    assert report.run is not None and report.run.relays["smtp.acme.example:587"].events == ()


def test_entries_that_are_not_objects_read_as_empty_ones() -> None:
    data = example()
    data["run"]["relays"] = {"odd:25": "x", "ok:25": {"connections": 1}}
    data["run"]["reply_codes"] = ["nope", {"code": "250", "count": "many"}]
    data["run"]["timeline"] = [None]
    data["problems"]["rows"] = [None]
    report = read_report(data)
    run = report.run
    assert run is not None
    assert run.relays["odd:25"].outcomes == dict.fromkeys(STATES, 0.0)
    assert run.relays["odd:25"].errors is None and run.relays["ok:25"].connections == 1
    assert run.reply_codes == (ReplyCode(None, None, None), ReplyCode("250", None, None))
    assert run.timeline[0].t is None
    assert report.problems.rows[0].key is None


def test_members_whose_presence_counts() -> None:
    """`errors`, the histogram, `reply_codes` and `runs` tell "absent" from "empty"."""
    data = example()
    run = data["run"]
    del run["errors"], run["latency_histogram"], run["reply_codes"]
    parsed = read_report(data).run
    assert parsed is not None
    assert parsed.errors is None and parsed.latency_histogram is None
    assert parsed.reply_codes is None

    run.update(errors="x", latency_histogram="x", reply_codes=None)
    data["runs"] = None
    report = read_report(data)
    assert report.run is not None
    assert report.run.errors is None and report.run.latency_histogram is None
    assert report.run.reply_codes == () and report.runs == ()

    run.update(errors={"permanent": 3}, latency_histogram=[])
    parsed = read_report(data).run
    assert parsed is not None
    assert parsed.errors == ErrorCounts(permanent=3) and parsed.latency_histogram == ()


def test_bucket_bounds_keep_infinity_and_nan() -> None:
    data = example()
    data["run"]["latency_histogram"] = [
        {"le_ms": float("inf"), "count": 1},
        {"le_ms": float("nan"), "count": float("nan")},
        {"le_ms": True, "count": 2},
    ]
    report = read_report(data)
    assert report.run is not None and report.run.latency_histogram is not None
    infinite, nan, boolean = report.run.latency_histogram
    assert infinite == Bucket(float("inf"), 1)
    assert nan.le_ms != nan.le_ms and nan.count is None  # NaN
    assert boolean == Bucket(None, 2)


def test_a_report_without_run_reports_the_journal_members() -> None:
    data = example()
    run = data.pop("run")
    data.update(relays=run["relays"], reply_codes=run["reply_codes"], runs=[{"run_id": 1}, 5])
    report = read_report(data)
    assert report.run is None
    assert list(report.reported_relays) == list(run["relays"])
    assert [c.code for c in report.reported_reply_codes] == [c["code"] for c in run["reply_codes"]]
    assert report.runs is not None and [r.run_id for r in report.runs] == [1, None]


def test_a_run_that_is_not_an_object_is_no_run() -> None:
    data = example()
    data["run"] = ["x"]
    data["relays"] = {"journal:25": {}}
    report = read_report(data)
    assert report.run is None and list(report.reported_relays) == ["journal:25"]


@pytest.mark.parametrize("name", REPORTS)
def test_reading_never_raises_and_is_immutable(name: str) -> None:
    report = read_report(REPORTS[name]())
    with pytest.raises(AttributeError):
        report.job = "changed"  # type: ignore[misc]


def test_not_a_mapping_at_all_reads_as_empty() -> None:
    assert read_report([]) == read_report({})  # type: ignore[arg-type]


def test_quotas_read_as_typed_entries() -> None:
    data = example()
    data["quotas"].append("not an object")
    quotas = read_report(data).quotas
    assert [
        (q.kind, q.relay, q.used, q.held, q.held_until, q.limit, q.frees_at) for q in quotas
    ] == [
        ("warmup", None, 312.0, 0.0, None, 1125.0, None),
        (
            "rolling",
            "smtp.acme.example:587",
            9998.0,
            2.0,
            "2026-05-04T12:10:07Z",
            10000.0,
            "2026-05-04T12:31:00Z",
        ),
        (None, None, None, None, None, None, None),
    ]
    assert quotas[0].warmup["day"] == 3 and quotas[1].warmup == {}
    assert read_report({}).quotas == ()
