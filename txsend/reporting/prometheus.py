"""Prometheus metrics for a run, built from its JSON report (the `--json` / `--report` object).

`registry_for` turns one report into a fresh `CollectorRegistry`; `MetricsExporter` keeps
the latest report and writes it as a node_exporter textfile and/or serves it on
127.0.0.1. The exposition text always comes from prometheus-client's own writers.

Each report is converted into metric families once, in `MetricsExporter.update` (the
caller's thread); the HTTP thread only reads the resulting immutable tuple, which is
swapped under a lock. Label values come only from the report's `job`, the fixed sets of
states, error classes and quantiles, the relay names (host:port) and the reply codes
("550 5.1.1"): never from reply texts, addresses, problems or events.

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

__all__ = ["STATES", "MetricsExporter", "registry_for"]

# The journal states, in the report's order; every one is always exported.
STATES = ("pending", "sending", "sent", "bounced", "deferred", "failed", "skipped", "unknown")
ERROR_CLASSES = ("transient", "permanent", "unknown")
QUANTILES = (("p50", "0.5"), ("p95", "0.95"), ("p99", "0.99"))
HOST = "127.0.0.1"  # never 0.0.0.0: the metrics name the job and its relays
JOIN_SECONDS = 5.0

_Family = GaugeMetricFamily | CounterMetricFamily


def registry_for(report: Mapping[str, Any]) -> CollectorRegistry:
    """A fresh registry holding the report's metrics, stamped with the current time."""
    families = _families(report, time.time())
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
        families = _families(report, time.time())
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


def _families(report: Mapping[str, Any], now: float) -> tuple[Metric, ...]:
    """All metric families of one report; missing or malformed optional parts are skipped."""
    job = str(report.get("job", ""))
    out: list[Metric] = []

    messages = GaugeMetricFamily(
        "txsend_messages", "Messages in the job's journal, by state.", labels=["job", "state"]
    )
    _add_states(messages, [job], _mapping(report.get("counts")))
    out.append(messages)

    run = report.get("run")
    if isinstance(run, Mapping):
        out.extend(_run_families(job, run))
        relays = run.get("relays")
    else:
        relays = report.get("relays")
    out.extend(_relay_families(job, _mapping(relays)))

    exit_code = _num(report.get("exit_code"))
    if exit_code is not None:
        out.append(
            _gauge(
                "txsend_exit_code", "The run's exit code; -1 while it is running.", job, exit_code
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
    next_attempt = _num(report.get("next_attempt_at"))
    if next_attempt is not None:
        out.append(
            _gauge(
                "txsend_next_attempt_timestamp_seconds",
                "When the next deferred message is due for a retry (Unix time).",
                job,
                next_attempt,
            )
        )
    return tuple(out)


def _run_families(job: str, run: Mapping[str, Any]) -> list[Metric]:
    """The txsend_run_* families and the SMTP transaction histogram of one run."""
    out: list[Metric] = []

    outcomes = CounterMetricFamily(
        "txsend_run_outcomes_total",
        "Messages this run settled, by the state they ended in.",
        labels=["job", "state"],
    )
    _add_states(outcomes, [job], _mapping(run.get("outcomes")))
    out.append(outcomes)

    gauges = (
        (
            "seconds",
            "txsend_run_duration_seconds",
            "How long the run has taken so far (its whole length once it has ended).",
        ),
        (
            "messages_per_second",
            "txsend_run_messages_per_second",
            "Messages settled per second over the run.",
        ),
        (
            "error_rate",
            "txsend_run_error_ratio",
            "Share of this run's SMTP transactions that were not accepted (0 to 1).",
        ),
        (
            "queue_depth",
            "txsend_run_queue_depth",
            "Messages rendered and waiting for a relay connection.",
        ),
    )
    for key, name, documentation in gauges:
        value = _num(run.get(key))
        if value is not None:
            out.append(_gauge(name, documentation, job, value))

    retries = _num(run.get("retries"))
    if retries is not None:
        family = CounterMetricFamily(
            "txsend_run_retries_total",
            "Delivery attempts after a message's first in this run.",
            labels=["job"],
        )
        family.add_metric([job], retries)
        out.append(family)

    errors = run.get("errors")
    if isinstance(errors, Mapping):
        family = CounterMetricFamily(
            "txsend_run_errors_total",
            "SMTP transactions of this run that were not accepted, by error class "
            "(transient: retried; permanent: bounced or failed; unknown: lost after DATA).",
            labels=["job", "class"],
        )
        _add_classes(family, [job], errors)
        out.append(family)

    histogram = run.get("latency_histogram")
    if isinstance(histogram, list | tuple):
        out.append(_histogram(job, histogram, _num(run.get("latency_sum_seconds"))))

    codes: dict[str, float] = {}
    for entry in _sequence(run.get("reply_codes")):
        if isinstance(entry, Mapping) and isinstance(entry.get("code"), str):
            count = _num(entry.get("count"))
            if count is not None:
                codes[entry["code"]] = codes.get(entry["code"], 0.0) + count
    if "reply_codes" in run:
        family = CounterMetricFamily(
            "txsend_run_reply_codes_total",
            "SMTP replies of this run by code and enhanced status "
            '("none": no reply); the report keeps the most frequent only.',
            labels=["job", "code"],
        )
        for code, count in codes.items():
            family.add_metric([job, code], count)
        out.append(family)
    return out


def _histogram(job: str, entries: Sequence[Any], sum_seconds: float | None) -> Metric:
    """`txsend_smtp_transaction_seconds` from the report's non-cumulative `le_ms` buckets.

    Prometheus buckets are cumulative, in seconds, with +Inf holding the total count. When
    the report has no `latency_sum_seconds`, the sum is estimated from the bucket upper
    bounds (each transaction counted at its bucket's `le`): an overestimate by at most the
    bucket width, about 5% with txsend's log-spaced buckets.
    """
    per_le: dict[float, float] = {}
    total = 0.0
    for entry in entries:
        if not isinstance(entry, Mapping):
            continue
        count = _num(entry.get("count"))
        le_ms = entry.get("le_ms")
        if count is None or isinstance(le_ms, bool) or not isinstance(le_ms, int | float):
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


def _relay_families(job: str, relays: Mapping[str, Any]) -> list[Metric]:
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
        if not isinstance(name, str) or not isinstance(relay, Mapping):
            continue
        key = [job, name]
        _add_states(outcomes, key, _mapping(relay.get("outcomes")))
        _add_value(connections, key, relay.get("connections"))
        _add_value(connect_failures, key, relay.get("connect_failures"))
        if isinstance(relay.get("errors"), Mapping):
            _add_classes(errors, key, relay["errors"])
        _add_value(error_ratio, key, relay.get("error_rate"))
        _add_value(rate, key, relay.get("messages_per_second"))
        _add_quantiles(latency, key, relay.get("latency_ms"))
        _add_quantiles(connect, key, relay.get("connect_ms"))
        state = relay.get("circuit")
        if isinstance(state, str):
            circuit.add_metric(key, 0.0 if state == "closed" else 1.0)

    families = [outcomes, connections, connect_failures, errors, error_ratio, rate]
    return [*families, latency, connect, circuit]


# -- helpers ------------------------------------------------------------------------------


def _gauge(name: str, documentation: str, job: str, value: float) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation, labels=["job"])
    family.add_metric([job], value)
    return family


def _add_states(family: _Family, labels: list[str], counts: Mapping[str, Any]) -> None:
    """One sample per journal state, 0 for those the report leaves out."""
    for state in STATES:
        family.add_metric([*labels, state], _num(counts.get(state)) or 0.0)


def _add_classes(family: _Family, labels: list[str], errors: Mapping[str, Any]) -> None:
    for error_class in ERROR_CLASSES:
        family.add_metric([*labels, error_class], _num(errors.get(error_class)) or 0.0)


def _add_quantiles(family: GaugeMetricFamily, labels: list[str], percentiles: Any) -> None:
    """The p50/p95/p99 milliseconds as seconds; null percentiles are left out."""
    for key, quantile in QUANTILES:
        value = _num(_mapping(percentiles).get(key))
        if value is not None:
            family.add_metric([*labels, quantile], _seconds(value))


def _add_value(family: _Family, labels: list[str], value: Any) -> None:
    number = _num(value)
    if number is not None:
        family.add_metric(labels, number)


def _seconds(ms: float) -> float:
    """Milliseconds as seconds without binary noise: 2.1 ms is 0.0021, not 0.0021000000000000003."""
    return float(Decimal(repr(ms)) / 1000)


def _num(value: Any) -> float | None:
    """A finite JSON number as float; None for null, booleans, strings and NaN/infinity."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _sequence(value: Any) -> Sequence[Any]:
    return value if isinstance(value, list | tuple) else ()
