"""Reports mangled in every way the readers must survive, for the snapshot and schema tests:
wrong types, negative and fractional counts, NaN and infinity, entries that are not objects."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from tests.reports import EXAMPLE_REPORT


def example() -> dict[str, Any]:
    return copy.deepcopy(EXAMPLE_REPORT)


def mangled() -> dict[str, Any]:
    """The example with a wrong type or value in almost every field the renderers read."""
    report = example()
    report.update(
        run_id=3.9,
        command=7,
        started_at="not a time",
        ended_at=None,
        exit_code=2.5,
        dry_run="yes",
        counts={"sent": -4, "bounced": 2.7, "failed": True, "bogus": 9, "pending": "12"},
        next_attempt_at=1e300,
        warnings=["kept", 5, None],
    )
    run = report["run"]
    run.update(
        outcomes=[1],
        rendered=-1,
        not_sent=None,
        unknown_from_previous_run="3",
        seconds="41",
        messages_per_second=float("nan"),
        error_rate=float("inf"),
        retries=True,
        queue_depth=-2.5,
        latency_sum_seconds="x",
        latency_ms={"p50": "1", "p95": None},
        errors={"transient": "x", "permanent": 3.5},
        stop_reason=5,
    )
    run["latency_histogram"] = [
        {"le_ms": 0, "count": 5},
        {"le_ms": float("inf"), "count": 1},
        {"le_ms": -1, "count": 2},
        {"le_ms": "5", "count": 3},
        {"le_ms": 7.5, "count": 0},
        {"le_ms": 7.5, "count": -2},
        {"le_ms": float("nan"), "count": 4},
        None,
        {"le_ms": True, "count": 1},
        {"le_ms": 12, "count": 2.5},
    ]
    run["reply_codes"] = [
        {"code": "250", "count": "many"},
        {"code": "250", "count": 3},
        {"code": "250", "count": 4, "example": 5},
        "nope",
        {"count": 2},
        {"code": "451 4.7.1", "count": -1, "example": "451 later"},
    ]
    run["timeline"] = [
        {"t": "x", "seconds": 1, "outcomes": {}},
        {"t": 1, "seconds": 0, "outcomes": {"sent": -4, "bogus": 3, "bounced": True}},
        None,
        {"t": 2, "seconds": -1, "outcomes": None},
        {"t": 0.5, "seconds": "1", "outcomes": {"deferred": 2.5, "sent": 3}},
    ]
    run["relays"] = {
        "odd:25": {
            "outcomes": [1],
            "attempts": "x",
            "connections": "8",
            "connect_failures": -1,
            "connect_ms": {"p50": True, "p95": 1.5, "p99": float("nan")},
            "latency_ms": None,
            "messages_per_second": "x",
            "errors": [],
            "error_rate": None,
            "last_error": 5,
            "circuit": 3,
            "events": ["kept", 7, None],
        },
        "half:25": {
            "outcomes": {"sent": 3.5, "failed": -1},
            "attempts": -2.5,
            "connections": 2.5,
            "circuit": "half-open",
            "errors": {"unknown": 2, "transient": None},
            "latency_ms": {"p50": 0.5, "p95": 2.1, "p99": 1e300},
        },
        "empty:25": {},
    }
    report["problems"] = {
        "count": "100",
        "rows": [
            {"key": 5, "code": "550", "state": 3},
            None,
            {"key": "k", "code": 550.7, "state": "bounced", "reply": None, "address": ["x"]},
        ],
        "truncated": "yes",
        "export": None,
    }
    return report


def mangled_without_run() -> dict[str, Any]:
    """A `txsend report` object (no run) whose runs, relays and codes are mangled."""
    report = mangled()
    run = report.pop("run")
    report["runs"] = [
        {
            "run_id": 1.5,
            "command": None,
            "started_at": "2026-11-27T09:00:00Z",
            "ended_at": "2026-11-27T10:00:00+01:00",
            "exit_code": "75",
        },
        None,
        {"started_at": "2026-11-27T09:00:00", "ended_at": "2026-11-27T09:00:05Z"},
        {"run_id": 4, "started_at": "2026-11-27T09:00:00", "ended_at": "2026-11-27T08:00:00"},
    ]
    report["relays"] = run["relays"]
    report["reply_codes"] = "nope"
    return report


def runs_not_a_list() -> dict[str, Any]:
    report = mangled_without_run()
    report.update(runs=None, relays=[], next_attempt_at=1_795_867_500)
    return report


REPORTS: dict[str, Callable[[], dict[str, Any]]] = {
    "example": example,
    "mangled": mangled,
    "mangled-without-run": mangled_without_run,
    "runs-not-a-list": runs_not_a_list,
    "empty": dict,
}
