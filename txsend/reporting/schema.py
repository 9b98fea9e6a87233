"""The report object (docs/report.schema.json) as typed, read-only data, and its one reader.

`read_report` turns the mapping that `--json` prints (or `txsend report` builds) into a
`Report` for the Prometheus exporter and the HTML page. It never raises: a member that is
absent, null or of the wrong type reads as None, zero or empty, and each consumer decides
what that means (the page shows "—", the exporter leaves the sample out). An entry of a list
or of `relays` that is not an object reads as an empty one.

Numbers read as floats, the way JSON has them: finite, or None for null, booleans, strings,
NaN, infinity and integers too large for a float (a bucket's `le_ms` alone keeps infinity
and NaN: those count only towards the histogram's total). Otherwise values are taken as the
report states them: a negative or fractional count stays what it is, and the page, which
shows whole counts, rounds it there.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from txsend.models import State

__all__ = [
    "ERROR_CLASSES",
    "STATES",
    "Alert",
    "AlertEvent",
    "Bucket",
    "ErrorCounts",
    "Percentiles",
    "ProblemReport",
    "ProblemRow",
    "Quota",
    "Relay",
    "ReplyCode",
    "Report",
    "Run",
    "RunRecord",
    "StateCounts",
    "TimelineStep",
    "read_report",
]

# The journal states in the report's order.
STATES: tuple[str, ...] = tuple(state.value for state in State)
ERROR_CLASSES = ("transient", "permanent", "unknown")

# Rows per journal state: every state of STATES, 0.0 for those the report leaves out.
StateCounts = Mapping[str, float]

_Entry = TypeVar("_Entry")


@dataclass(frozen=True)
class Percentiles:
    """A `percentiles_ms` object: milliseconds, None when not measured."""

    p50: float | None = None
    p95: float | None = None
    p99: float | None = None

    def items(self) -> tuple[tuple[str, float | None], ...]:
        """(name, milliseconds) pairs: p50, p95, p99."""
        return (("p50", self.p50), ("p95", self.p95), ("p99", self.p99))


@dataclass(frozen=True)
class ErrorCounts:
    """An `errors` object: transactions that were not accepted, by error class."""

    transient: float = 0.0
    permanent: float = 0.0
    unknown: float = 0.0

    def items(self) -> tuple[tuple[str, float], ...]:
        """(class, count) pairs in ERROR_CLASSES order."""
        return (
            ("transient", self.transient),
            ("permanent", self.permanent),
            ("unknown", self.unknown),
        )


@dataclass(frozen=True)
class ReplyCode:
    """One `reply_codes` entry: a code such as "550 5.1.1", how often, one reply text."""

    code: str | None
    count: float | None
    example: str | None


@dataclass(frozen=True)
class Bucket:
    """One `latency_histogram` entry: transactions at or under `le_ms` (not cumulative)."""

    le_ms: float | None  # may be infinite or NaN: such a bucket counts only in the total
    count: float | None


@dataclass(frozen=True)
class TimelineStep:
    """One `timeline` entry: the outcomes of `seconds` seconds from `t` into the run."""

    t: float | None
    seconds: float | None
    outcomes: StateCounts


@dataclass(frozen=True)
class Relay:
    """One relay's entry in `relays`, keyed by its name (host:port)."""

    outcomes: StateCounts
    attempts: float | None
    connections: float | None
    connect_failures: float | None
    connect_ms: Percentiles
    latency_ms: Percentiles
    messages_per_second: float | None
    errors: ErrorCounts | None  # None: not in the report
    error_rate: float | None
    last_error: str | None
    circuit: str | None
    events: tuple[str, ...]


@dataclass(frozen=True)
class Domain:
    """One entry of `run.domains`: a recipient domain, or a group of the job's `domains:`."""

    configured: bool
    attempts: float | None
    outcomes: StateCounts
    throttles: float | None
    pace: float | None  # messages a second (None: no pace)
    slowed: bool
    in_flight: float | None
    waiting: float | None


@dataclass(frozen=True)
class Run:
    """The `run` member: what one run did and measured."""

    outcomes: StateCounts
    rendered: float | None
    not_sent: float | None
    unknown_from_previous_run: float | None
    seconds: float | None
    messages_per_second: float | None
    latency_ms: Percentiles
    latency_histogram: tuple[Bucket, ...] | None  # None: absent or not a list
    latency_sum_seconds: float | None
    retries: float | None
    errors: ErrorCounts | None  # None: not in the report
    error_rate: float | None
    reply_codes: tuple[ReplyCode, ...] | None  # None: no such member at all
    timeline: tuple[TimelineStep, ...]
    queue_depth: float | None
    stop_reason: str | None
    relays: Mapping[str, Relay]
    domains: Mapping[str, Domain]


@dataclass(frozen=True)
class RunRecord:
    """One `runs` entry (`txsend report`): a run of the journal as it was recorded."""

    run_id: float | None
    command: str | None
    started_at: str | None
    ended_at: str | None
    exit_code: float | None


@dataclass(frozen=True)
class ProblemRow:
    """One row in failed, bounced or unknown state."""

    key: str | None
    address: str | None
    state: str | None
    code: float | None
    reply: str | None


@dataclass(frozen=True)
class ProblemReport:
    """The `problems` member: how many rows failed, the first of them, how to export all."""

    count: float | None
    rows: tuple[ProblemRow, ...]
    truncated: bool
    export: str | None


@dataclass(frozen=True)
class AlertEvent:
    """One `alerts[].events` entry: the alert fired or resolved."""

    state: str | None  # "firing" or "resolved"
    at: str | None
    value: float | None
    messages: float | None


@dataclass(frozen=True)
class Alert:
    """One `alerts` entry: a threshold of the job's `alerts:` and what it did in the run."""

    name: str | None  # error_rate, p95_transaction_time, throughput, deferred_share
    condition: str | None  # "above" or "below"
    threshold: float | None
    unit: str | None  # "ratio", "seconds" or "per_second"
    window_seconds: float | None
    active: bool  # firing at the end of the report
    fired: float | None
    value: float | None  # the last value judged
    messages: float | None
    events: tuple[AlertEvent, ...]


@dataclass(frozen=True)
class Quota:
    """One `quotas` entry: a quota's window when the report was made."""

    kind: str | None  # "fixed", "rolling" or "warmup"
    relay: str | None
    account: str | None
    rate: str | None
    window: str | None
    used: float | None
    held: float | None
    held_until: str | None
    limit: float | None
    frees_at: str | None
    warmup: Mapping[str, Any]  # the warm-up's day and caps; empty for a relay's quota


@dataclass(frozen=True)
class Report:
    """A whole report: one run's (`run` set) or all runs of a journal's (`runs` set)."""

    job: str | None
    run_id: float | None
    command: str | None
    started_at: str | None
    ended_at: str | None
    exit_code: float | None
    dry_run: bool
    counts: StateCounts  # journal totals after the run
    next_attempt_at: float | None
    warnings: tuple[str, ...]
    run: Run | None
    runs: tuple[RunRecord, ...] | None  # None: no such member (only `txsend report` has it)
    relays: Mapping[str, Relay]  # over all runs (`txsend report` only)
    reply_codes: tuple[ReplyCode, ...] | None  # over all runs (`txsend report` only)
    problems: ProblemReport
    feedback: Mapping[str, float | None]  # `txsend bounces` totals; empty when absent
    alerts: tuple[Alert, ...] = ()  # the job's alerts (a run's report only)
    quotas: tuple[Quota, ...] = ()  # the job's quotas when the report was made

    @property
    def reported_relays(self) -> Mapping[str, Relay]:
        """The run's relays, or those over all runs for a report without a run."""
        return self.run.relays if self.run is not None else self.relays

    @property
    def reported_reply_codes(self) -> tuple[ReplyCode, ...]:
        """The run's reply codes, or those over all runs for a report without a run."""
        codes = self.run.reply_codes if self.run is not None else self.reply_codes
        return codes or ()


def read_report(data: Mapping[str, Any]) -> Report:
    """The report in `data`, read defensively: never raises, whatever the members hold."""
    data = _mapping(data)
    run = data.get("run")
    return Report(
        job=_text(data.get("job")),
        run_id=_number(data.get("run_id")),
        command=_text(data.get("command")),
        started_at=_text(data.get("started_at")),
        ended_at=_text(data.get("ended_at")),
        exit_code=_number(data.get("exit_code")),
        dry_run=data.get("dry_run") is True,
        counts=_state_counts(data.get("counts")),
        next_attempt_at=_number(data.get("next_attempt_at")),
        warnings=_strings(data.get("warnings")),
        run=_run(run) if isinstance(run, Mapping) else None,
        runs=_entries(data["runs"], _run_record) if "runs" in data else None,
        relays=_relays(data.get("relays")),
        reply_codes=_entries(data["reply_codes"], _reply_code) if "reply_codes" in data else None,
        problems=_problems(_mapping(data.get("problems"))),
        feedback={str(k): _number(v) for k, v in _mapping(data.get("feedback")).items()},
        alerts=_entries(data.get("alerts"), _alert),
        quotas=_entries(data.get("quotas"), _quota),
    )


# -- the parts ----------------------------------------------------------------------------


def _run(data: Mapping[str, Any]) -> Run:
    histogram = data.get("latency_histogram")
    return Run(
        outcomes=_state_counts(data.get("outcomes")),
        rendered=_number(data.get("rendered")),
        not_sent=_number(data.get("not_sent")),
        unknown_from_previous_run=_number(data.get("unknown_from_previous_run")),
        seconds=_number(data.get("seconds")),
        messages_per_second=_number(data.get("messages_per_second")),
        latency_ms=_percentiles(data.get("latency_ms")),
        latency_histogram=(
            _entries(histogram, _bucket) if isinstance(histogram, list | tuple) else None
        ),
        latency_sum_seconds=_number(data.get("latency_sum_seconds")),
        retries=_number(data.get("retries")),
        errors=_errors(data.get("errors")),
        error_rate=_number(data.get("error_rate")),
        reply_codes=_entries(data["reply_codes"], _reply_code) if "reply_codes" in data else None,
        timeline=_entries(data.get("timeline"), _timeline_step),
        queue_depth=_number(data.get("queue_depth")),
        stop_reason=_text(data.get("stop_reason")),
        relays=_relays(data.get("relays")),
        domains=_domains(data.get("domains")),
    )


def _domains(value: object) -> dict[str, Domain]:
    return {
        name: _domain(_mapping(domain))
        for name, domain in _mapping(value).items()
        if isinstance(name, str)
    }


def _domain(data: Mapping[str, Any]) -> Domain:
    return Domain(
        configured=data.get("configured") is True,
        attempts=_number(data.get("attempts")),
        outcomes=_state_counts(data.get("outcomes")),
        throttles=_number(data.get("throttles")),
        pace=_number(data.get("pace")),
        slowed=data.get("slowed") is True,
        in_flight=_number(data.get("in_flight")),
        waiting=_number(data.get("waiting")),
    )


def _relays(value: object) -> dict[str, Relay]:
    # JSON object keys are always strings; another key can only come from Python callers.
    return {
        name: _relay(_mapping(relay))
        for name, relay in _mapping(value).items()
        if isinstance(name, str)
    }


def _relay(data: Mapping[str, Any]) -> Relay:
    return Relay(
        outcomes=_state_counts(data.get("outcomes")),
        attempts=_number(data.get("attempts")),
        connections=_number(data.get("connections")),
        connect_failures=_number(data.get("connect_failures")),
        connect_ms=_percentiles(data.get("connect_ms")),
        latency_ms=_percentiles(data.get("latency_ms")),
        messages_per_second=_number(data.get("messages_per_second")),
        errors=_errors(data.get("errors")),
        error_rate=_number(data.get("error_rate")),
        last_error=_text(data.get("last_error")),
        circuit=_text(data.get("circuit")),
        events=_strings(data.get("events")),
    )


def _reply_code(data: Mapping[str, Any]) -> ReplyCode:
    return ReplyCode(
        code=_text(data.get("code")),
        count=_number(data.get("count")),
        example=_text(data.get("example")),
    )


def _bucket(data: Mapping[str, Any]) -> Bucket:
    return Bucket(le_ms=_bound(data.get("le_ms")), count=_number(data.get("count")))


def _timeline_step(data: Mapping[str, Any]) -> TimelineStep:
    return TimelineStep(
        t=_number(data.get("t")),
        seconds=_number(data.get("seconds")),
        outcomes=_state_counts(data.get("outcomes")),
    )


def _run_record(data: Mapping[str, Any]) -> RunRecord:
    return RunRecord(
        run_id=_number(data.get("run_id")),
        command=_text(data.get("command")),
        started_at=_text(data.get("started_at")),
        ended_at=_text(data.get("ended_at")),
        exit_code=_number(data.get("exit_code")),
    )


def _alert(data: Mapping[str, Any]) -> Alert:
    return Alert(
        name=_text(data.get("name")),
        condition=_text(data.get("condition")),
        threshold=_number(data.get("threshold")),
        unit=_text(data.get("unit")),
        window_seconds=_number(data.get("window_seconds")),
        active=data.get("active") is True,
        fired=_number(data.get("fired")),
        value=_number(data.get("value")),
        messages=_number(data.get("messages")),
        events=_entries(data.get("events"), _alert_event),
    )


def _alert_event(data: Mapping[str, Any]) -> AlertEvent:
    return AlertEvent(
        state=_text(data.get("state")),
        at=_text(data.get("at")),
        value=_number(data.get("value")),
        messages=_number(data.get("messages")),
    )


def _quota(data: Mapping[str, Any]) -> Quota:
    warmup = _mapping(data.get("warmup"))
    return Quota(
        kind=_text(data.get("kind")),
        relay=_text(data.get("relay")),
        account=_text(data.get("account")),
        rate=_text(data.get("rate")),
        window=_text(data.get("window")),
        used=_number(data.get("used")),
        held=_number(data.get("held")),
        held_until=_text(data.get("held_until")),
        limit=_number(data.get("limit")),
        frees_at=_text(data.get("frees_at")),
        warmup={str(k): v for k, v in warmup.items()},
    )


def _problems(data: Mapping[str, Any]) -> ProblemReport:
    return ProblemReport(
        count=_number(data.get("count")),
        rows=_entries(data.get("rows"), _problem_row),
        truncated=data.get("truncated") is True,
        export=_text(data.get("export")),
    )


def _problem_row(data: Mapping[str, Any]) -> ProblemRow:
    return ProblemRow(
        key=_text(data.get("key")),
        address=_text(data.get("address")),
        state=_text(data.get("state")),
        code=_number(data.get("code")),
        reply=_text(data.get("reply")),
    )


def _percentiles(value: object) -> Percentiles:
    data = _mapping(value)
    return Percentiles(_number(data.get("p50")), _number(data.get("p95")), _number(data.get("p99")))


def _errors(value: object) -> ErrorCounts | None:
    if not isinstance(value, Mapping):
        return None
    counts = [_number(value.get(name)) or 0.0 for name in ERROR_CLASSES]
    return ErrorCounts(*counts)


def _state_counts(value: object) -> dict[str, float]:
    data = _mapping(value)
    return {state: _number(data.get(state)) or 0.0 for state in STATES}


# -- JSON values --------------------------------------------------------------------------


def _entries(value: object, read: Callable[[Mapping[str, Any]], _Entry]) -> tuple[_Entry, ...]:
    """A list's entries, each read from its object (an empty one when it is not)."""
    if not isinstance(value, list | tuple):
        return ()
    return tuple(read(_mapping(item)) for item in value)


def _strings(value: object) -> tuple[str, ...]:
    # A list of strings; any other entry is shown as its text rather than lost.
    return tuple(str(item) for item in value) if isinstance(value, list | tuple) else ()


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _number(value: object) -> float | None:
    """A finite JSON number as a float; None for anything else."""
    number = _bound(value)
    return number if number is not None and math.isfinite(number) else None


def _bound(value: object) -> float | None:
    """A JSON number as a float, infinity and NaN included; None for anything else."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        return float(value)
    except OverflowError:  # an integer beyond the float range
        return None
