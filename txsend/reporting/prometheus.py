"""Prometheus metrics for a run, built from its JSON report (the `--json` / `--report` object).

`registry_for` turns one report into a fresh `CollectorRegistry`; `MetricsExporter` keeps
the latest report and writes it as a node_exporter textfile and/or serves it on
127.0.0.1. The exposition text always comes from prometheus-client's own writers.

Each report is read (`txsend.reporting.schema.read_report`) and converted into metric
families once, in `MetricsExporter.update` (the caller's thread); the HTTP thread only
reads the resulting immutable tuple, which is swapped under a lock. Label values come only
from the report's `job`, the fixed sets of states, error classes and quantiles, the relay
names (host:port), the reply codes ("550 5.1.1") and the alert names of the job's `alerts:`
(error_rate, ...): never from reply texts, addresses, problems or events.

Relay metrics come from `run.relays` (this run) or, for a report without `run` (the
output of `txsend report`), from the top-level `relays` (all runs of the journal).
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server, write_to_textfile
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from txsend.errors import UsageError
from txsend.reporting.schema import (
    STATES,
    Alert,
    Bucket,
    Domain,
    ErrorCounts,
    Percentiles,
    Relay,
    ReplyCode,
    Report,
    Run,
    StateCounts,
    read_report,
)

__all__ = ["STATES", "MetricsExporter", "registry_for"]

# Every journal state (STATES, in the report's order) is always exported; a domain counts
# its transactions' outcomes only: never pending, sending, skipped or expired.
DOMAIN_STATES = tuple(
    s for s in STATES if s in {"sent", "deferred", "bounced", "failed", "unknown"}
)
QUANTILES = {"p50": "0.5", "p95": "0.95", "p99": "0.99"}
HOST = "127.0.0.1"  # never 0.0.0.0: the metrics name the job and its relays
JOIN_SECONDS = 5.0

_Family = GaugeMetricFamily | CounterMetricFamily


def registry_for(report: Mapping[str, Any]) -> CollectorRegistry:
    """A fresh registry holding the report's metrics, stamped with the current time."""
    families = _families(read_report(report), time.time())
    registry = CollectorRegistry()
    registry.register(_Collector(lambda: families))
    return registry


class MetricsExporter:
    """Keeps the latest report; writes it to a textfile and/or serves it on 127.0.0.1.

    `update` and `write` are called from the asyncio thread; the HTTP server's threads
    only read the snapshot `update` swapped in. Until the first `update` the registry is
    empty and `write` writes nothing.
    """

    def __init__(self, *, path: Path | None = None, port: int | None = None) -> None:
        self.path = path
        self._requested_port = port
        self._lock = threading.Lock()
        self._families: tuple[Metric, ...] | None = None
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None
        self.registry = CollectorRegistry()
        self.registry.register(_Collector(self._current))

    def start(self) -> None:
        """Serve /metrics on 127.0.0.1:port when a port was given (0: any free port).

        UsageError (64) when the port cannot be bound. Starting twice does nothing.
        """
        port = self._requested_port
        if port is None or self._server is not None:
            return
        if not 0 <= port <= 65535:
            raise UsageError(f"--metrics-port {port}: not a port number (0-65535)")
        try:
            server, thread = start_http_server(port, addr=HOST, registry=self.registry)
        except (OSError, OverflowError) as e:
            reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
            raise UsageError(f"--metrics-port {port}: {reason}") from e
        with self._lock:
            self._server, self._thread = server, thread

    @property
    def port(self) -> int | None:
        """The bound port once started (the real one when started with port 0), else None."""
        server = self._server
        if server is None:
            return None
        return int(server.server_address[1])

    def update(self, report: Mapping[str, Any]) -> None:
        """Keep `report` as the latest: what /metrics serves and `write` writes from now on."""
        families = _families(read_report(report), time.time())
        with self._lock:
            self._families = families

    def write(self) -> None:
        """Write the latest report to `path` atomically (temp file in the same folder + rename).

        Does nothing without a path or before the first `update`. UsageError (64) naming the
        file when it cannot be written.
        """
        if self.path is None or self._current_or_none() is None:
            return
        try:
            write_to_textfile(str(self.path), self.registry)
        except OSError as e:
            reason = e.strerror or str(e)
            raise UsageError(f"--metrics-file {self.path}: {reason}") from e

    def close(self) -> None:
        """Stop the HTTP server and join its thread; idempotent, never raises."""
        with self._lock:
            server, thread = self._server, self._thread
            self._server = self._thread = None
        if server is not None:
            # close() runs on the way out, often after an error: it must not raise its own
            with contextlib.suppress(Exception):
                server.shutdown()
            with contextlib.suppress(Exception):
                server.server_close()
        if thread is not None:
            thread.join(JOIN_SECONDS)

    def _current_or_none(self) -> tuple[Metric, ...] | None:
        with self._lock:
            return self._families

    def _current(self) -> Sequence[Metric]:
        return self._current_or_none() or ()


class _Collector(Collector):
    """Yields whatever metric families `source` returns at collection time."""

    def __init__(self, source: Callable[[], Sequence[Metric]]) -> None:
        self._source = source

    def collect(self) -> Iterable[Metric]:
        return iter(self._source())


# -- conversion ---------------------------------------------------------------------------


def _families(report: Report, now: float) -> tuple[Metric, ...]:
    """All metric families of one report; missing or malformed optional parts are skipped."""
    job = report.job or ""
    out: list[Metric] = []

    messages = GaugeMetricFamily(
        "txsend_messages", "Messages in the job's journal, by state.", labels=["job", "state"]
    )
    _add_states(messages, [job], report.counts)
    out.append(messages)

    if report.run is not None:
        out.extend(_run_families(job, report.run))
        out.extend(_domain_families(job, report.run.domains))
    out.extend(_relay_families(job, report.reported_relays))

    if report.alerts:
        out.extend(_alert_families(job, report.alerts))

    if report.exit_code is not None:
        out.append(
            _gauge(
                "txsend_exit_code",
                "The run's exit code; -1 while it is running.",
                job,
                report.exit_code,
            )
        )
    out.append(
        _gauge(
            "txsend_last_update_timestamp_seconds",
            "When these metrics were last updated from the run's report (Unix time).",
            job,
            now,
        )
    )
    if report.next_attempt_at is not None:
        out.append(
            _gauge(
                "txsend_next_attempt_timestamp_seconds",
                "When the next deferred message is due for a retry (Unix time).",
                job,
                report.next_attempt_at,
            )
        )
    return tuple(out)


def _run_families(job: str, run: Run) -> list[Metric]:
    """The txsend_run_* families and the SMTP transaction histogram of one run."""
    outcomes = CounterMetricFamily(
        "txsend_run_outcomes_total",
        "Messages this run settled, by the state they ended in.",
        labels=["job", "state"],
    )
    _add_states(outcomes, [job], run.outcomes)
    out: list[Metric] = [outcomes, *_run_gauges(job, run)]

    if run.retries is not None:
        family = CounterMetricFamily(
            "txsend_run_retries_total",
            "Delivery attempts after a message's first in this run.",
            labels=["job"],
        )
        family.add_metric([job], run.retries)
        out.append(family)

    if run.errors is not None:
        family = CounterMetricFamily(
            "txsend_run_errors_total",
            "SMTP transactions of this run that were not accepted, by error class "
            "(transient: retried; permanent: bounced or failed; unknown: lost after DATA).",
            labels=["job", "class"],
        )
        _add_classes(family, [job], run.errors)
        out.append(family)

    if run.latency_histogram is not None:
        out.append(_histogram(job, run.latency_histogram, run.latency_sum_seconds))
    if run.reply_codes is not None:
        out.append(_reply_codes(job, run.reply_codes))
    return out


def _run_gauges(job: str, run: Run) -> list[Metric]:
    """The run's duration, rate, error ratio and queue depth, those the report has."""
    gauges = (
        (
            run.seconds,
            "txsend_run_duration_seconds",
            "How long the run has taken so far (its whole length once it has ended).",
        ),
        (
            run.messages_per_second,
            "txsend_run_messages_per_second",
            "Messages settled per second over the run.",
        ),
        (
            run.error_rate,
            "txsend_run_error_ratio",
            "Share of this run's SMTP transactions that were not accepted (0 to 1).",
        ),
        (
            run.queue_depth,
            "txsend_run_queue_depth",
            "Messages rendered and waiting for a relay connection.",
        ),
    )
    return [
        _gauge(name, documentation, job, value)
        for value, name, documentation in gauges
        if value is not None
    ]


def _reply_codes(job: str, entries: Sequence[ReplyCode]) -> Metric:
    """`txsend_run_reply_codes_total`; entries repeating a code are added up."""
    codes: dict[str, float] = {}
    for entry in entries:
        if entry.code is not None and entry.count is not None:
            codes[entry.code] = codes.get(entry.code, 0.0) + entry.count
    family = CounterMetricFamily(
        "txsend_run_reply_codes_total",
        "SMTP replies of this run by code and enhanced status "
        '("none": no reply); the report keeps the most frequent only.',
        labels=["job", "code"],
    )
    for code, count in codes.items():
        family.add_metric([job, code], count)
    return family


def _histogram(job: str, entries: Sequence[Bucket], sum_seconds: float | None) -> Metric:
    """`txsend_smtp_transaction_seconds` from the report's non-cumulative `le_ms` buckets.

    Prometheus buckets are cumulative, in seconds, with +Inf holding the total count. When
    the report has no `latency_sum_seconds`, the sum is estimated from the bucket upper
    bounds (each transaction counted at its bucket's `le`): an overestimate by at most the
    bucket width, about 5% with txsend's log-spaced buckets.
    """
    per_le: dict[float, float] = {}
    total = 0.0
    for entry in entries:
        count, le_ms = entry.count, entry.le_ms
        if count is None or le_ms is None:
            continue
        total += count
        if math.isnan(le_ms) or le_ms < 0 or math.isinf(le_ms):
            continue  # counted in +Inf only
        le = _seconds(le_ms)
        per_le[le] = per_le.get(le, 0.0) + count

    buckets: list[tuple[str, float]] = []
    cumulative = 0.0
    estimate = 0.0
    for le in sorted(per_le):
        cumulative += per_le[le]
        estimate += le * per_le[le]
        buckets.append((repr(le), cumulative))
    buckets.append(("+Inf", total))

    family = HistogramMetricFamily(
        "txsend_smtp_transaction_seconds",
        "Duration of this run's SMTP transactions, one per delivery attempt.",
        labels=["job"],
    )
    family.add_metric([job], buckets, estimate if sum_seconds is None else sum_seconds)
    return family


def _relay_families(job: str, relays: Mapping[str, Relay]) -> list[Metric]:
    """Per-relay families; label `relay` is the relay's name (host:port) from the report."""
    labels = ["job", "relay"]
    outcomes = CounterMetricFamily(
        "txsend_relay_outcomes_total",
        "Messages settled through each relay, by the state they ended in.",
        labels=[*labels, "state"],
    )
    connections = CounterMetricFamily(
        "txsend_relay_connections_total", "SMTP connections opened to each relay.", labels=labels
    )
    connect_failures = CounterMetricFamily(
        "txsend_relay_connect_failures_total",
        "Attempts to open a connection to each relay that failed.",
        labels=labels,
    )
    errors = CounterMetricFamily(
        "txsend_relay_errors_total",
        "SMTP transactions through each relay that were not accepted, by error class.",
        labels=[*labels, "class"],
    )
    error_ratio = GaugeMetricFamily(
        "txsend_relay_error_ratio",
        "Share of each relay's SMTP transactions that were not accepted (0 to 1).",
        labels=labels,
    )
    rate = GaugeMetricFamily(
        "txsend_relay_messages_per_second",
        "Messages settled per second through each relay.",
        labels=labels,
    )
    latency = GaugeMetricFamily(
        "txsend_relay_latency_seconds",
        "Percentiles of each relay's SMTP transaction time (within about 5%).",
        labels=[*labels, "quantile"],
    )
    connect = GaugeMetricFamily(
        "txsend_relay_connect_seconds",
        "Percentiles of the time to open a connection to each relay.",
        labels=[*labels, "quantile"],
    )
    circuit = GaugeMetricFamily(
        "txsend_relay_circuit_open",
        "1 when the relay's circuit breaker is not closed (open, half-open or dead), else 0.",
        labels=labels,
    )

    for name, relay in relays.items():
        key = [job, name]
        _add_states(outcomes, key, relay.outcomes)
        _add_value(connections, key, relay.connections)
        _add_value(connect_failures, key, relay.connect_failures)
        if relay.errors is not None:
            _add_classes(errors, key, relay.errors)
        _add_value(error_ratio, key, relay.error_rate)
        _add_value(rate, key, relay.messages_per_second)
        _add_quantiles(latency, key, relay.latency_ms)
        _add_quantiles(connect, key, relay.connect_ms)
        if relay.circuit is not None:
            circuit.add_metric(key, 0.0 if relay.circuit == "closed" else 1.0)

    families = [outcomes, connections, connect_failures, errors, error_ratio, rate]
    return [*families, latency, connect, circuit]


def _domain_families(job: str, domains: Mapping[str, Domain]) -> list[Metric]:
    """Per recipient domain; label `domain` is an entry of the job's `domains:`, one of the
    busiest other domains, or "other" (the report bounds them: about 20 besides the job's)."""
    labels = ["job", "domain"]
    attempts = CounterMetricFamily(
        "txsend_domain_attempts_total",
        "SMTP transactions started for each recipient domain.",
        labels=labels,
    )
    outcomes = CounterMetricFamily(
        "txsend_domain_outcomes_total",
        "Transactions of each recipient domain, by the state they ended in.",
        labels=[*labels, "state"],
    )
    throttles = CounterMetricFamily(
        "txsend_domain_throttles_total",
        "Throttling replies to each recipient domain's recipients (RCPT, DATA).",
        labels=labels,
    )
    pace = GaugeMetricFamily(
        "txsend_domain_pace_per_second",
        "Messages a second each domain may start now (absent: no pace).",
        labels=labels,
    )
    slowed = GaugeMetricFamily(
        "txsend_domain_slowed",
        "1 while a throttling reply keeps the domain's pace lowered, else 0.",
        labels=labels,
    )
    in_flight = GaugeMetricFamily(
        "txsend_domain_in_flight", "Transactions of each domain under way.", labels=labels
    )
    waiting = GaugeMetricFamily(
        "txsend_domain_waiting",
        "Messages of each domain waiting for its pace, connections or backlog.",
        labels=labels,
    )
    for name, domain in domains.items():
        key = [job, name]
        _add_value(attempts, key, domain.attempts)
        _add_states(outcomes, key, domain.outcomes, DOMAIN_STATES)
        _add_value(throttles, key, domain.throttles)
        _add_value(pace, key, domain.pace)
        slowed.add_metric(key, 1.0 if domain.slowed else 0.0)
        _add_value(in_flight, key, domain.in_flight)
        _add_value(waiting, key, domain.waiting)
    return [attempts, outcomes, throttles, pace, slowed, in_flight, waiting]


def _alert_families(job: str, alerts: Sequence[Alert]) -> list[Metric]:
    """The job's alerts (`alerts:`); label `alert` is the alert's name (error_rate, ...)."""
    labels = ["job", "alert"]
    active = GaugeMetricFamily(
        "txsend_alert_active",
        "1 while the job's alert is firing (its threshold crossed over its window), else 0.",
        labels=labels,
    )
    fired = CounterMetricFamily(
        "txsend_alerts_total", "Times the job's alert fired in this run.", labels=labels
    )
    value = GaugeMetricFamily(
        "txsend_alert_value",
        "The alert's last judged value (a ratio, seconds or messages per second).",
        labels=labels,
    )
    threshold = GaugeMetricFamily(
        "txsend_alert_threshold", "The alert's threshold, in the unit of its value.", labels=labels
    )
    for alert in alerts:
        if alert.name is None:
            continue
        key = [job, alert.name]
        active.add_metric(key, 1.0 if alert.active else 0.0)
        _add_value(fired, key, alert.fired)
        _add_value(value, key, alert.value)
        _add_value(threshold, key, alert.threshold)
    return [active, fired, value, threshold]


# -- helpers ------------------------------------------------------------------------------


def _gauge(name: str, documentation: str, job: str, value: float) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation, labels=["job"])
    family.add_metric([job], value)
    return family


def _add_states(
    family: _Family, labels: list[str], counts: StateCounts, states: Sequence[str] = STATES
) -> None:
    """One sample per journal state (0 for those the report leaves out)."""
    for state in states:
        family.add_metric([*labels, state], counts[state])


def _add_classes(family: _Family, labels: list[str], errors: ErrorCounts) -> None:
    for error_class, count in errors.items():
        family.add_metric([*labels, error_class], count)


def _add_quantiles(family: GaugeMetricFamily, labels: list[str], percentiles: Percentiles) -> None:
    """The p50/p95/p99 milliseconds as seconds; null percentiles are left out."""
    for name, value in percentiles.items():
        if value is not None:
            family.add_metric([*labels, QUANTILES[name]], _seconds(value))


def _add_value(family: _Family, labels: list[str], value: float | None) -> None:
    if value is not None:
        family.add_metric(labels, value)


def _seconds(ms: float) -> float:
    """Milliseconds as seconds without binary noise: 2.1 ms is 0.0021, not 0.0021000000000000003."""
    return float(Decimal(repr(ms)) / 1000)
