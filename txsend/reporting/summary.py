"""Summaries of a run and of a journal: the exit code decision and the JSON object."""

from __future__ import annotations

import datetime
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from txsend.errors import ExitCode
from txsend.job.schedule import describe_instant, describe_wait, iso_instant, load_zone
from txsend.models import RunInfo, State
from txsend.reporting.stats import (
    ErrorClass,
    LatencyHistogram,
    RunStats,
    ScheduleStats,
    busiest_domains,
    reply_code,
)
from txsend.units import iso_utc

SCHEMA = 1


PROBLEMS_LISTED = 1000  # rows listed in a report; all of them go to --failed-csv


@dataclass(frozen=True)
class Problems:
    """Rows in failed, bounced or unknown state: how many, the first few, how to export."""

    count: int
    rows: list[dict[str, Any]]
    export: str  # the command that writes them all as CSV

    def to_json(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "rows": self.rows,
            "truncated": self.count > len(self.rows),
            "export": self.export,
        }


@dataclass(frozen=True)
class Summary:
    """Everything the CLI prints at the end of a run, and the report (docs/report.schema.json)."""

    job: str
    run_id: int | None
    counts: dict[State, int]  # journal totals after the run
    stats: RunStats | None  # this run's observations (None for `status`)
    next_attempt_at: float | None
    exit_code: int
    dry_run: bool = False
    warnings: tuple[str, ...] = ()  # about the job (e.g. a DKIM key others can read)
    command: str = "run"
    problems: Problems | None = None
    workers: tuple[dict[str, Any], ...] = ()  # a shared journal's processes (`status`)
    skipped_by_error: int = 0  # skipped rows not skipped by policy (they make exit 1)
    resend_unknown: bool = True  # delivery.on_unknown: resend (resume sends them again)
    feedback: dict[str, int] | None = None  # `txsend bounces` totals (journal.feedback_counts)
    alerts: tuple[dict[str, Any], ...] | None = None  # the job's alerts (AlertMonitor.to_json)
    seeds: dict[State, int] | None = None  # of `counts`, the seed copies (None: the job has none)
    quotas: tuple[dict[str, Any], ...] = ()  # the job's quotas now (QuotaUsage.to_json)
    schedule: dict[str, Any] | None = None  # `status`: the job's schedule now (schedule_status)

    def to_json(self) -> dict[str, Any]:
        """The report object of `--json` and `--report` (schema 1)."""
        stats = self.stats
        data: dict[str, Any] = {
            "schema": SCHEMA,
            "job": self.job,
            "run_id": self.run_id,
            "command": self.command,
            "started_at": iso_utc(stats.started_at) if stats is not None else None,
            "ended_at": iso_utc(stats.ended_at) if stats is not None else None,
            "exit_code": self.exit_code,
            "dry_run": self.dry_run,
            "counts": state_counts(self.counts),
            **seeds_json(self.seeds),
            "skipped_by_error": self.skipped_by_error,
            "next_attempt_at": self.next_attempt_at,
            "warnings": list(self.warnings),
        }
        if stats is not None:
            data["run"] = run_json(stats)
            if stats.schedule is not None:
                left = self.counts.get(State.PENDING, 0) + self.counts.get(State.DEFERRED, 0)
                data["schedule"] = schedule_json(stats.schedule, left)
                # when to come back: the next window, beside the next retry
                data["next_window_at"] = data["schedule"]["next_window_at"]
        elif self.schedule is not None:
            data["schedule"] = dict(self.schedule)
        if self.alerts is not None:
            data["alerts"] = list(self.alerts)
        if self.feedback and self.feedback.get("events"):
            data["feedback"] = dict(self.feedback)
        if self.quotas:
            data["quotas"] = list(self.quotas)
        if self.workers:
            data["workers"] = [
                {
                    **w,
                    "started_at": iso_utc(w["started_at"]),
                    "renewed_at": iso_utc(w["renewed_at"]),
                }
                for w in self.workers
            ]
        data["problems"] = (
            self.problems.to_json()
            if self.problems is not None
            else {"count": 0, "rows": [], "truncated": False, "export": ""}
        )
        return data


def schedule_json(schedule: ScheduleStats, left: int = 0) -> dict[str, Any]:
    """The report's `schedule` member: rows left for their window, the next opening.

    `left`: the journal's rows still pending or deferred. With a window ahead they all
    wait for it, also those the run never took (it began outside the window)."""
    zone = schedule.next_zone or schedule.zone
    opens = schedule.next_window
    waiting = max(schedule.waiting, left) if opens is not None else schedule.waiting
    return {
        "timezone": schedule.zone,
        "waiting": waiting,
        "next_window": iso_instant(opens, zone) if opens is not None else None,
        "next_window_at": opens,
        "not_after": iso_instant(schedule.not_after, schedule.zone)
        if schedule.not_after is not None
        else None,
        "expired": schedule.expired,
        "past_not_after": schedule.not_after is not None
        and schedule.at is not None
        and schedule.at >= schedule.not_after,
    }


def schedule_note(summary: Summary) -> str | None:
    """'outside the send window: 120 rows wait; the next window opens Mon 2026-12-07 08:00
    CET (in 9 h 12 min)', when the run left rows for a window; else None."""
    stats = summary.stats
    schedule = stats.schedule if stats is not None else None
    if schedule is None:
        return None
    counts = summary.counts
    rows = counts.get(State.PENDING, 0) + counts.get(State.DEFERRED, 0)
    if not rows:
        return None
    if schedule.next_window is None:
        ends = schedule.not_after
        if not schedule.shut or ends is None or schedule.at is None or schedule.at >= ends:
            return None
        return (
            f"no send window opens before not_after ({describe_instant(ends, schedule.zone)}): "
            f"the {rows} rows waiting will expire then"
        )
    zone = schedule.next_zone or schedule.zone
    now = schedule.at if schedule.at is not None else schedule.next_window
    return (
        f"{_why_waiting(schedule)}: {rows} rows wait; the next window opens "
        f"{describe_instant(schedule.next_window, zone)} "
        f"(in {describe_wait(schedule.next_window - now)})"
    )


def _why_waiting(schedule: ScheduleStats) -> str:
    """'outside the send window', or, for a run that ended inside its window because the
    window closes before the next rate or quota slot, 'the send window closes at 00:05
    before the quota's next slot (00:05:38 UTC)'."""
    closes, slot = schedule.closes_at, schedule.slot_at
    if closes is None or slot is None or schedule.at is None or schedule.at >= closes:
        return "outside the send window"
    zone = load_zone(schedule.zone)
    close_time = datetime.datetime.fromtimestamp(closes, zone)
    slot_time = datetime.datetime.fromtimestamp(math.ceil(slot), zone)
    return (
        f"the send window closes at {close_time:%H:%M} before {schedule.slot_of} next slot "
        f"({slot_time:%H:%M:%S %Z})"
    )


def seeds_json(seeds: Mapping[State, int] | None) -> dict[str, Any]:
    """The report's `seeds` member (the part of `counts` that are seed copies), if any."""
    if not seeds or not any(seeds.values()):
        return {}
    return {"seeds": state_counts(seeds)}


def state_counts(counts: Mapping[State, int]) -> dict[str, int]:
    """Every state with its count, in the order of State."""
    return {state.value: counts.get(state, 0) for state in State}


def run_json(stats: RunStats) -> dict[str, Any]:
    """The `run` member of the report: what one run did and measured."""
    attempts = sum(r.attempts for r in stats.relays.values())
    errors = _errors(stats.errors)
    elapsed = stats.elapsed
    return {
        "outcomes": {s.value: n for s, n in sorted(stats.outcomes.items()) if n},
        "rendered": stats.queued,
        "not_sent": stats.not_sent,
        "unknown_from_previous_run": stats.unknown_recovered,
        "abandoned_in_flight": stats.abandoned,
        "seconds": round(elapsed, 3),
        "messages_per_second": round(stats.rate, 1),
        "latency_ms": _percentiles(stats.latency),
        "latency_histogram": [
            {"le_ms": round(edge * 1000, 3), "count": n} for edge, n in stats.latency.buckets()
        ],
        "latency_sum_seconds": round(stats.latency.total, 6),
        "retries": stats.retries,
        "errors": errors,
        "error_rate": round(sum(errors.values()) / attempts, 4) if attempts else 0.0,
        "reply_codes": stats.reply_codes.top(20),
        "timeline": stats.timeline.as_list(),
        "queue_depth": stats.queue_depth,
        "stop_reason": stats.stop_reason,
        "relays": {
            name: {
                "outcomes": {s.value: n for s, n in sorted(r.outcomes.items()) if n},
                "attempts": r.attempts,
                "connections": r.connections,
                "connect_failures": r.connect_failures,
                "connect_ms": _percentiles(r.connect_time),
                "latency_ms": _percentiles(r.latency),
                "messages_per_second": round(r.outcomes[State.SENT] / elapsed, 1)
                if elapsed > 0
                else 0.0,
                "errors": _errors(r.errors),
                "error_rate": round(sum(r.errors.values()) / r.attempts, 4) if r.attempts else 0.0,
                "last_error": r.last_error,
                "circuit": r.circuit,
                "events": r.events,
            }
            for name, r in stats.relays.items()
        },
        "domains": {name: d.to_json() for name, d in busiest_domains(stats.domains)},
    }


def journal_json(
    job: str,
    counts: dict[State, int],
    runs: list[RunInfo],
    relays: dict[str, dict[str, int]],
    replies: list[tuple[int | None, str, int]],
    next_attempt_at: float | None,
    problems: Problems,
    feedback: Mapping[str, int] | None = None,
    seeds: Mapping[State, int] | None = None,
    quotas: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """The report of `txsend report`: all runs of a journal, from the journal alone."""
    codes: dict[str, dict[str, Any]] = {}
    for code, example, n in replies:
        text = example.split(" ", 1)[1] if code is not None and " " in example else example
        key = reply_code(code, text)
        entry = codes.setdefault(key, {"code": key, "count": 0, "example": example[:300]})
        entry["count"] += n
    last = runs[-1] if runs else None
    return {
        "schema": SCHEMA,
        "job": job,
        "run_id": None,
        "command": "report",
        "started_at": iso_utc(runs[0].started_at) if runs else None,
        "ended_at": iso_utc(last.ended_at) if last is not None else None,
        "exit_code": last.exit_code if last is not None and last.exit_code is not None else 0,
        "dry_run": False,
        "counts": state_counts(counts),
        **seeds_json(seeds),
        "next_attempt_at": next_attempt_at,
        "warnings": [],
        "runs": [
            {
                "run_id": r.id,
                "command": r.command,
                "started_at": iso_utc(r.started_at),
                "ended_at": iso_utc(r.ended_at),
                "exit_code": r.exit_code,
            }
            for r in runs
        ],
        "relays": {
            name: {"outcomes": outcomes, "connections": 0, "connect_failures": 0}
            for name, outcomes in sorted(relays.items())
        },
        "reply_codes": sorted(codes.values(), key=lambda c: -int(c["count"]))[:20],
        "problems": problems.to_json(),
        **({"feedback": dict(feedback)} if feedback and feedback.get("events") else {}),
        **({"quotas": [dict(q) for q in quotas]} if quotas else {}),
    }


def _percentiles(histogram: LatencyHistogram) -> dict[str, float | None]:
    return {f"p{p}": _ms(histogram.percentile(p)) for p in (50, 95, 99)}


def _errors(counter: Counter[str]) -> dict[str, int]:
    return {
        k: counter.get(k, 0)
        for k in (ErrorClass.TRANSIENT, ErrorClass.PERMANENT, ErrorClass.UNKNOWN)
    }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


def decide_exit_code(
    counts: dict[State, int],
    stats: RunStats,
    *,
    resend_unknown: bool,
    skipped_by_error: int = 0,
    pending_ok: bool = False,
) -> int:
    """SPEC.md's exit code for a finished run, from the journal's counts and the run.

    0 only when every row is delivered or skipped by policy (suppressed, duplicate key).
    `unknown` rows are 75 while `resume` will resend them, 1 when they are terminal by
    policy (`on_unknown: skip`); rows skipped by an error (invalid address, template or
    header injection) are 1, like bounced, failed and expired ones. Rows still `pending` are 75
    unless the run was asked to leave them (`pending_ok`: --limit, --dry-run), and with
    --limit still 75 when the send window, not the limit, ended the run."""
    if stats.signal is not None:
        return ExitCode.SIGTERM if stats.signal == 15 else ExitCode.SIGINT
    waiting = counts[State.DEFERRED] + counts[State.SENDING]
    if resend_unknown:
        waiting += counts[State.UNKNOWN]
    if stats.unreachable:
        # the run gave up on its relays: 69/75 while rows are left to send, else the rows
        # decide (every one was settled before the give-up)
        if waiting or counts[State.PENDING]:
            return ExitCode.TEMPFAIL if stats.ever_connected else ExitCode.UNAVAILABLE
    elif stats.stop_reason:
        return ExitCode.TEMPFAIL
    if not pending_ok or (stats.schedule is not None and stats.schedule.limit_unmet):
        # --limit leaves rows by request; not those its window left before the limit was met
        waiting += counts[State.PENDING]
    if waiting:
        return ExitCode.TEMPFAIL
    if (
        counts[State.BOUNCED]
        or counts[State.FAILED]
        or counts[State.UNKNOWN]
        or counts[State.EXPIRED]
        or skipped_by_error
    ):
        return ExitCode.SOME_FAILED
    return ExitCode.OK
