"""A report object as `txsend run --json` prints it (docs/report.schema.json), shared
by the tests of the metrics and of the HTML page. Its numbers are illustrative: the
per-relay attempts, reply codes and histogram need not add up to the outcomes."""

from __future__ import annotations

from typing import Any

EXAMPLE_REPORT: dict[str, Any] = {
    "schema": 1,
    "job": "welcome-2026-11",
    "run_id": 3,
    "command": "run",
    "started_at": "2026-11-28T12:00:00Z",
    "ended_at": "2026-11-28T12:00:41Z",
    "exit_code": 1,
    "dry_run": False,
    "counts": {
        "pending": 0,
        "sending": 0,
        "sent": 19890,
        "bounced": 80,
        "deferred": 0,
        "failed": 20,
        "skipped": 10,
        "unknown": 0,
        "expired": 0,
    },
    "next_attempt_at": None,
    "warnings": [],
    "run": {
        "outcomes": {"sent": 19890, "bounced": 80, "failed": 20, "skipped": 10},
        "rendered": 19990,
        "not_sent": 0,
        "unknown_from_previous_run": 0,
        "seconds": 41.2,
        "messages_per_second": 482.8,
        "latency_ms": {"p50": 12.1, "p95": 40.3, "p99": 95.0},
        "latency_histogram": [
            {"le_ms": 10.5, "count": 8000},
            {"le_ms": 11.0, "count": 6000},
            {"le_ms": 42.0, "count": 5000},
            {"le_ms": 100.0, "count": 990},
        ],
        "retries": 130,
        "errors": {"transient": 130, "permanent": 100, "unknown": 0},
        "error_rate": 0.0114,
        "reply_codes": [
            {"code": "250", "count": 19890, "example": "250 2.0.0 Ok: queued as 4F2"},
            {"code": "451 4.7.1", "count": 130, "example": "451 4.7.1 Try again later"},
            {"code": "550 5.1.1", "count": 80, "example": "550 5.1.1 User unknown"},
            {"code": "none", "count": 20, "example": "timed out"},
        ],
        "timeline": [
            {"t": 0, "seconds": 1, "outcomes": {"sent": 300}},
            {"t": 1, "seconds": 1, "outcomes": {"sent": 520, "bounced": 2}},
            {"t": 2, "seconds": 1, "outcomes": {"sent": 510, "failed": 1}},
        ],
        "queue_depth": 0,
        "stop_reason": None,
        "relays": {
            "smtp.acme.example:587": {
                "outcomes": {"sent": 15000, "bounced": 60, "failed": 15},
                "attempts": 15170,
                "connections": 8,
                "connect_failures": 0,
                "connect_ms": {"p50": 35.0, "p95": 80.0, "p99": 80.0},
                "latency_ms": {"p50": 12.0, "p95": 38.0, "p99": 90.0},
                "messages_per_second": 364.1,
                "errors": {"transient": 95, "permanent": 75, "unknown": 0},
                "error_rate": 0.0112,
                "last_error": None,
                "circuit": "closed",
                "events": [],
            },
            "backup.acme.example:465": {
                "outcomes": {"sent": 4890, "bounced": 20, "failed": 5},
                "attempts": 4950,
                "connections": 4,
                "connect_failures": 2,
                "connect_ms": {"p50": 60.0, "p95": 120.0, "p99": 120.0},
                "latency_ms": {"p50": 14.0, "p95": 45.0, "p99": 110.0},
                "messages_per_second": 118.7,
                "errors": {"transient": 35, "permanent": 25, "unknown": 0},
                "error_rate": 0.0121,
                "last_error": "connection refused",
                "circuit": "closed",
                "events": [
                    "circuit opened at 12:00:05 (connection refused)",
                    "circuit closed at 12:00:35",
                ],
            },
        },
    },
    "problems": {
        "count": 100,
        "rows": [
            {
                "key": "bob@example.com",
                "address": "bob@example.com",
                "state": "bounced",
                "code": 550,
                "reply": "550 5.1.1 User unknown",
            },
            {
                "key": "carol@example.org",
                "address": "carol@example.org",
                "state": "failed",
                "code": None,
                "reply": "timed out",
            },
        ],
        "truncated": False,
        "export": "txsend report welcome.yaml --failed-csv failed.csv",
    },
}
