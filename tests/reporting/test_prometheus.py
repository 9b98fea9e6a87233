"""Prometheus metrics from a run report: values, the textfile writer and the HTTP endpoint."""

from __future__ import annotations

import copy
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.error import URLError
from urllib.request import urlopen

import pytest
from prometheus_client import generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families

from tests.reports import EXAMPLE_REPORT
from txsend.errors import UsageError
from txsend.reporting.prometheus import STATES, MetricsExporter, registry_for

EXAMPLE: dict[str, Any] = EXAMPLE_REPORT

JOB = EXAMPLE["job"]
RELAYS = ("smtp.acme.example:587", "backup.acme.example:465")

Key = tuple[str, frozenset[tuple[str, str]]]


def parse(text: str) -> dict[Key, float]:
    """Every sample of an exposition text, keyed by (sample name, labels)."""
    samples: dict[Key, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = (sample.name, frozenset(sample.labels.items()))
            assert key not in samples, f"duplicate series {key}"
            samples[key] = sample.value
    return samples


def value(samples: dict[Key, float], name: str, **labels: str) -> float:
    return samples[(name, frozenset({"job": JOB, **labels}.items()))]


def scrape(port: int) -> dict[Key, float]:
    with urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        assert response.status == 200
        return parse(response.read().decode())


def example_samples() -> dict[Key, float]:
    return parse(generate_latest(registry_for(EXAMPLE)).decode())


def histogram_buckets(samples: dict[Key, float]) -> list[tuple[float, float]]:
    """(le, cumulative count) of txsend_smtp_transaction_seconds, in exposition order."""
    buckets = [
        (float(dict(labels)["le"]), count)
        for (name, labels), count in samples.items()
        if name == "txsend_smtp_transaction_seconds_bucket"
    ]
    return sorted(buckets)


def test_journal_counts_every_state() -> None:
    samples = example_samples()
    for state in STATES:
        assert value(samples, "txsend_messages", state=state) == EXAMPLE["counts"][state]


def test_run_values_equal_the_report() -> None:
    samples = example_samples()
    run = EXAMPLE["run"]
    for state in STATES:
        expected = run["outcomes"].get(state, 0)
        assert value(samples, "txsend_run_outcomes_total", state=state) == expected
    assert value(samples, "txsend_run_duration_seconds") == 41.2
    assert value(samples, "txsend_run_messages_per_second") == 482.8
    assert value(samples, "txsend_run_retries_total") == 130
    assert value(samples, "txsend_run_error_ratio") == 0.0114
    assert value(samples, "txsend_run_queue_depth") == 0
    for error_class, count in run["errors"].items():
        assert value(samples, "txsend_run_errors_total", **{"class": error_class}) == count
    codes = {
        dict(labels)["code"]: count
        for (name, labels), count in samples.items()
        if name == "txsend_run_reply_codes_total"
    }
    assert codes == {entry["code"]: entry["count"] for entry in run["reply_codes"]}
    assert value(samples, "txsend_exit_code") == 1
    assert value(samples, "txsend_last_update_timestamp_seconds") > 1.7e9
    assert not [key for key in samples if key[0] == "txsend_next_attempt_timestamp_seconds"]


def test_relay_values_equal_the_report() -> None:
    samples = example_samples()
    for relay in RELAYS:
        report = EXAMPLE["run"]["relays"][relay]
        for state in STATES:
            expected = report["outcomes"].get(state, 0)
            got = value(samples, "txsend_relay_outcomes_total", relay=relay, state=state)
            assert got == expected
        got = value(samples, "txsend_relay_connections_total", relay=relay)
        assert got == report["connections"]
        got = value(samples, "txsend_relay_connect_failures_total", relay=relay)
        assert got == report["connect_failures"]
        for error_class, count in report["errors"].items():
            labels = {"relay": relay, "class": error_class}
            assert value(samples, "txsend_relay_errors_total", **labels) == count
        assert value(samples, "txsend_relay_error_ratio", relay=relay) == report["error_rate"]
        got = value(samples, "txsend_relay_messages_per_second", relay=relay)
        assert got == report["messages_per_second"]
        for key, quantile in (("p50", "0.5"), ("p95", "0.95"), ("p99", "0.99")):
            labels = {"relay": relay, "quantile": quantile}
            got = value(samples, "txsend_relay_latency_seconds", **labels)
            assert got == report["latency_ms"][key] / 1000
            got = value(samples, "txsend_relay_connect_seconds", **labels)
            assert got == report["connect_ms"][key] / 1000
        assert value(samples, "txsend_relay_circuit_open", relay=relay) == 0
    # milliseconds become seconds without binary noise
    assert value(samples, "txsend_relay_latency_seconds", relay=RELAYS[1], quantile="0.99") == 0.11


def test_latency_histogram_is_cumulative_in_seconds() -> None:
    samples = example_samples()
    entries = EXAMPLE["run"]["latency_histogram"]
    total = sum(entry["count"] for entry in entries)
    buckets = histogram_buckets(samples)
    assert buckets[-1] == (float("inf"), total)
    assert value(samples, "txsend_smtp_transaction_seconds_count") == total
    assert [le for le, _ in buckets[:-1]] == [entry["le_ms"] / 1000 for entry in entries]
    counts = [count for _, count in buckets]
    assert counts == sorted(counts)
    running = 0
    for (_, count), entry in zip(buckets, entries, strict=False):
        running += entry["count"]
        assert count == running
    # no latency_sum_seconds in the report: estimated from the bucket upper bounds
    estimate = sum(entry["le_ms"] / 1000 * entry["count"] for entry in entries)
    assert value(samples, "txsend_smtp_transaction_seconds_sum") == pytest.approx(estimate)
    family = next(
        family
        for family in text_string_to_metric_families(
            generate_latest(registry_for(EXAMPLE)).decode()
        )
        if family.name == "txsend_smtp_transaction_seconds"
    )
    assert family.type == "histogram"


def test_histogram_unsorted_buckets_and_a_reported_sum() -> None:
    report = copy.deepcopy(EXAMPLE)
    report["run"]["latency_histogram"] = [
        {"le_ms": 2.1, "count": 3},
        {"le_ms": 0.5, "count": 1},
        {"le_ms": 2.1, "count": 2},
        {"le_ms": float("inf"), "count": 4},  # Python's json reads and writes Infinity
    ]
    report["run"]["latency_sum_seconds"] = 0.0123
    samples = parse(generate_latest(registry_for(report)).decode())
    assert histogram_buckets(samples) == [(0.0005, 1), (0.0021, 6), (float("inf"), 10)]
    assert value(samples, "txsend_smtp_transaction_seconds_count") == 10
    assert value(samples, "txsend_smtp_transaction_seconds_sum") == 0.0123


def test_types_and_openmetrics() -> None:
    registry = registry_for(EXAMPLE)
    types = {
        family.name: family.type
        for family in text_string_to_metric_families(generate_latest(registry).decode())
    }
    assert types["txsend_messages"] == "gauge"
    assert types["txsend_run_outcomes"] == "counter"
    assert types["txsend_relay_latency_seconds"] == "gauge"
    assert all(name.startswith("txsend_") for name in types)
    # Prometheus may negotiate OpenMetrics; its strict parser must accept the same families
    text = generate_openmetrics(registry).decode()  # type: ignore[no-untyped-call]
    names = {family.name for family in parse_openmetrics(text)}  # type: ignore[no-untyped-call]
    assert names == set(types)


def test_label_values_come_only_from_the_named_fields() -> None:
    report = copy.deepcopy(EXAMPLE)
    allowed = {
        JOB,
        *STATES,
        *RELAYS,
        "transient",
        "permanent",
        "unknown",
        "0.5",
        "0.95",
        "0.99",
        *(entry["code"] for entry in report["run"]["reply_codes"]),
        *report["run"]["domains"],  # the report bounds them (configured + busiest others)
    }
    samples = example_samples()
    values = {
        label_value
        for (name, labels), _ in samples.items()
        for label, label_value in labels
        if label != "le"
    }
    assert values <= allowed
    # reply texts, problem rows, events and errors never reach a label
    text = generate_latest(registry_for(report)).decode()
    for secret in ("queued as", "bob@example.com", "connection refused", "circuit opened"):
        assert secret not in text


def test_a_domain_has_series_only_for_what_a_transaction_ends_in() -> None:
    samples = example_samples()
    states = {
        dict(labels)["state"]
        for (name, labels), _ in samples.items()
        if name == "txsend_domain_outcomes_total"
    }
    assert states == {"sent", "deferred", "bounced", "failed", "unknown"}
    domains = {
        dict(labels)["domain"]
        for (name, labels), _ in samples.items()
        if name == "txsend_domain_outcomes_total"
    }
    assert domains == set(EXAMPLE["run"]["domains"])  # every domain still has its series


def test_report_without_run() -> None:
    """`txsend report JOB --json`: no `run`; relays and reply codes over all runs."""
    report = copy.deepcopy(EXAMPLE)
    run = report.pop("run")
    report.update(
        run_id=None,
        command="report",
        next_attempt_at=1_795_000_000.5,
        runs=[
            {"run_id": 3, "command": "run", "started_at": None, "ended_at": None, "exit_code": 1}
        ],
        relays=run["relays"],
        reply_codes=run["reply_codes"],
    )
    samples = parse(generate_latest(registry_for(report)).decode())
    assert not [name for name, _ in samples if name.startswith(("txsend_run_", "txsend_smtp_"))]
    assert value(samples, "txsend_messages", state="sent") == 19890
    assert value(samples, "txsend_next_attempt_timestamp_seconds") == 1_795_000_000.5
    got = value(samples, "txsend_relay_outcomes_total", relay=RELAYS[0], state="sent")
    assert got == 15000

    bare = {key: report[key] for key in ("schema", "job", "run_id", "exit_code", "counts")}
    samples = parse(generate_latest(registry_for(bare)).decode())
    assert {name for name, _ in samples} == {
        "txsend_messages",
        "txsend_exit_code",
        "txsend_last_update_timestamp_seconds",
    }


def test_missing_optional_keys() -> None:
    report = copy.deepcopy(EXAMPLE)
    report["counts"] = {"sent": 5}
    run = report["run"]
    del run["latency_histogram"], run["retries"], run["queue_depth"]
    run["latency_ms"] = {"p50": None, "p95": None, "p99": None}
    relay = run["relays"][RELAYS[1]]
    del relay["connect_ms"], relay["errors"], relay["error_rate"], relay["messages_per_second"]
    relay["latency_ms"] = {"p50": 14.0, "p95": None, "p99": None}
    relay["circuit"] = "half-open"
    samples = parse(generate_latest(registry_for(report)).decode())
    assert value(samples, "txsend_messages", state="sent") == 5
    assert value(samples, "txsend_messages", state="pending") == 0
    names = {name for name, _ in samples}
    assert not names & {"txsend_run_retries_total", "txsend_run_queue_depth"}
    assert not [name for name in names if name.startswith("txsend_smtp_transaction_seconds")]
    latency = {
        dict(labels)["quantile"]: got
        for (name, labels), got in samples.items()
        if name == "txsend_relay_latency_seconds" and dict(labels)["relay"] == RELAYS[1]
    }
    assert latency == {"0.5": 0.014}
    assert not [
        labels
        for (name, labels) in samples
        if name == "txsend_relay_connect_seconds" and ("relay", RELAYS[1]) in labels
    ]
    assert value(samples, "txsend_relay_circuit_open", relay=RELAYS[1]) == 1
    assert value(samples, "txsend_relay_circuit_open", relay=RELAYS[0]) == 0


# -- textfile -----------------------------------------------------------------------------


def test_write_replaces_the_file_atomically(tmp_path: Path) -> None:
    path = tmp_path / "txsend.prom"
    exporter = MetricsExporter(path=path)
    exporter.write()
    assert not path.exists()  # nothing to write before the first update
    exporter.update(EXAMPLE)
    exporter.write()
    assert os.listdir(tmp_path) == ["txsend.prom"]
    assert value(parse(path.read_text()), "txsend_messages", state="sent") == 19890

    changed = copy.deepcopy(EXAMPLE)
    changed["counts"]["sent"] = 20000
    changed["exit_code"] = -1
    exporter.update(changed)
    exporter.write()
    assert os.listdir(tmp_path) == ["txsend.prom"]
    samples = parse(path.read_text())
    assert value(samples, "txsend_messages", state="sent") == 20000
    assert value(samples, "txsend_exit_code") == -1


def test_write_errors_name_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-folder" / "txsend.prom"
    exporter = MetricsExporter(path=missing)
    exporter.update(EXAMPLE)
    with pytest.raises(UsageError, match="No such file") as info:
        exporter.write()
    assert str(info.value).startswith(f"--metrics-file {missing}: ")

    # the rename fails (the target is a folder): the temp file is removed
    blocked = tmp_path / "blocked.prom"
    blocked.mkdir()
    exporter = MetricsExporter(path=blocked)
    exporter.update(EXAMPLE)
    with pytest.raises(UsageError) as info:
        exporter.write()
    assert str(blocked) in str(info.value)
    assert sorted(os.listdir(tmp_path)) == ["blocked.prom"]


# -- HTTP ---------------------------------------------------------------------------------


@pytest.fixture
def exporter() -> Iterator[MetricsExporter]:
    started = MetricsExporter(port=0)
    started.start()
    try:
        yield started
    finally:
        started.close()


def test_http_serves_the_latest_update(exporter: MetricsExporter) -> None:
    port = exporter.port
    assert port is not None and port > 0
    exporter.update(EXAMPLE)
    assert value(scrape(port), "txsend_messages", state="sent") == 19890

    changed = copy.deepcopy(EXAMPLE)
    changed["counts"].update(sent=19000, pending=890)
    changed["run"]["outcomes"]["sent"] = 19000
    exporter.update(changed)
    samples = scrape(port)
    assert value(samples, "txsend_messages", state="sent") == 19000
    assert value(samples, "txsend_messages", state="pending") == 890
    assert value(samples, "txsend_run_outcomes_total", state="sent") == 19000

    servers = [thread for thread in threading.enumerate() if "serve_forever" in thread.name]
    assert servers
    exporter.close()
    assert exporter.port is None
    assert not [thread for thread in servers if thread.is_alive()]
    with pytest.raises(URLError):
        scrape(port)
    exporter.close()


def test_updates_while_scraping_are_consistent(exporter: MetricsExporter) -> None:
    """Each scrape sees one whole report, never half of one and half of the next."""
    port = exporter.port
    assert port is not None
    exporter.update(EXAMPLE)
    stop = threading.Event()
    seen: list[tuple[float, float]] = []

    def scraper() -> None:
        while True:  # at least once, then until the updates are done
            samples = scrape(port)
            sent = value(samples, "txsend_messages", state="sent")
            seen.append((sent, value(samples, "txsend_run_outcomes_total", state="sent")))
            if stop.is_set():
                return

    thread = threading.Thread(target=scraper)
    thread.start()
    try:
        for i in range(200):
            report = copy.deepcopy(EXAMPLE)
            report["counts"]["sent"] = report["run"]["outcomes"]["sent"] = i
            exporter.update(report)
    finally:
        stop.set()
        thread.join(10)
    assert seen
    assert all(sent == outcome for sent, outcome in seen)


def test_port_in_use_is_a_usage_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        exporter = MetricsExporter(port=port)
        with pytest.raises(UsageError, match=rf"^--metrics-port {port}: .*in use"):
            exporter.start()
        assert exporter.port is None
        exporter.close()
    with pytest.raises(UsageError, match="--metrics-port 70000: "):
        MetricsExporter(port=70000).start()


def test_without_a_port_nothing_is_served(tmp_path: Path) -> None:
    exporter = MetricsExporter(path=tmp_path / "m.prom")
    exporter.start()
    assert exporter.port is None
    exporter.close()
