"""Summaries of a run and of a journal: the exit code decision and the JSON object."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from txsend.errors import ExitCode
from txsend.models import State
from txsend.stats import RunStats

SCHEMA = 1


@dataclass(frozen=True)
class Summary:
    """Everything the CLI prints at the end of a run."""

    job: str
    run_id: int | None
    counts: dict[State, int]  # journal totals after the run
    stats: RunStats | None  # this run's observations (None for `status`)
    next_attempt_at: float | None
    exit_code: int
    dry_run: bool = False
    warnings: tuple[str, ...] = ()  # about the job (e.g. a DKIM key others can read)

    def to_json(self) -> dict[str, Any]:
        """The `--json` object (schema 1)."""
        data: dict[str, Any] = {
            "schema": SCHEMA,
            "job": self.job,
            "run_id": self.run_id,
            "exit_code": self.exit_code,
            "dry_run": self.dry_run,
            "counts": {state.value: self.counts.get(state, 0) for state in State},
            "next_attempt_at": self.next_attempt_at,
            "warnings": list(self.warnings),
        }
        stats = self.stats
        if stats is not None:
            data["run"] = {
                "outcomes": {s.value: n for s, n in sorted(stats.outcomes.items()) if n},
                "rendered": stats.queued,
                "not_sent": stats.not_sent,
                "unknown_from_previous_run": stats.unknown_recovered,
                "seconds": round(stats.elapsed, 3),
                "messages_per_second": round(stats.rate, 1),
                "latency_ms": {f"p{p}": _ms(stats.latency.percentile(p)) for p in (50, 95, 99)},
                "stop_reason": stats.stop_reason,
                "relays": {
                    name: {
                        "connections": r.connections,
                        "connect_failures": r.connect_failures,
                        "outcomes": {s.value: n for s, n in sorted(r.outcomes.items()) if n},
                        "last_error": r.last_error,
                        "circuit": r.circuit,
                        "events": r.events,
                    }
                    for name, r in stats.relays.items()
                },
            }
        return data


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


def decide_exit_code(counts: dict[State, int], stats: RunStats, *, resend_unknown: bool) -> int:
    """SPEC.md's exit code for a finished run, from the journal's counts and the run."""
    if stats.signal is not None:
        return ExitCode.SIGTERM if stats.signal == 15 else ExitCode.SIGINT
    if stats.unreachable:
        return ExitCode.TEMPFAIL if stats.ever_connected else ExitCode.UNAVAILABLE
    waiting = counts[State.DEFERRED] + counts[State.SENDING]
    if resend_unknown:
        waiting += counts[State.UNKNOWN]
    if waiting or stats.stop_reason:
        return ExitCode.TEMPFAIL
    if counts[State.BOUNCED] or counts[State.FAILED]:
        return ExitCode.SOME_FAILED
    return ExitCode.OK
