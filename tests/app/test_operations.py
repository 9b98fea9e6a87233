"""Operations: the JSON report and its schema, Prometheus metrics, JSON logs, `txsend report`,
--failed-csv, signals, and secrets kept out of every output.
"""

from __future__ import annotations

import base64
import csv
import json
import signal
import sqlite3
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.jobs import cli, txsend_subprocess, write_job
from tests.smtpd import ScriptedServer

REPO = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((REPO / "docs" / "report.schema.json").read_text())
PASSWORD = "s3cr3t-Pa55-Wrd"
USER = "mailer"


def validate_report(data: dict[str, Any]) -> None:
    jsonschema.Draft202012Validator(SCHEMA).validate(data)


def journal_counts(path: Path) -> Counter[str]:
    with sqlite3.connect(path) as db:
        return Counter(dict(db.execute("SELECT state, count(*) FROM messages GROUP BY state")))


def script_failures(server: ScriptedServer) -> None:
    server.rcpt_replies["user1@example.com"] = "550 5.1.1 <user1@example.com> no such user"
    server.rcpt_replies["user3@example.com"] = "550 5.1.1 <user3@example.com> no such user"
    server.rcpt_replies["user4@example.com"] = "451 4.7.1 try again later"


# --------------------------------------------------------------------------- reports


def test_run_report_matches_schema_and_journal(
    tmp_path: Path, smtp_server: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    script_failures(smtp_server)
    job = write_job(tmp_path, rows=8)
    report = tmp_path / "out" / "report.json"
    report.parent.mkdir()
    result = cli(capsys, "run", job, "--relay", smtp_server.url, "--json", "--report", report)
    assert result.code == 75, result.err  # user4 deferred
    data = json.loads(report.read_text())
    assert json.loads(result.out) == data  # --json prints the same object
    validate_report(data)
    assert data["schema"] == 1 and data["command"] == "run" and data["exit_code"] == 75
    counts = journal_counts(tmp_path / "job.journal.db")
    assert {k: v for k, v in data["counts"].items() if v} == dict(counts)
    run = data["run"]
    assert run["outcomes"] == {"bounced": 2, "deferred": 1, "sent": 5}
    codes = {c["code"]: c["count"] for c in run["reply_codes"]}
    assert codes["550 5.1.1"] == 2 and codes["451 4.7.1"] == 1 and codes["250"] == 5
    assert run["errors"] == {"transient": 1, "permanent": 2, "unknown": 0}
    assert sum(b["count"] for b in run["latency_histogram"]) == 5  # accepted ones
    assert sum(sum(step["outcomes"].values()) for step in run["timeline"]) == 8
    (relay,) = run["relays"].values()
    assert relay["attempts"] == 8 and relay["connections"] >= 1
    assert relay["connect_ms"]["p50"] is not None
    problems = data["problems"]
    assert problems["count"] == 2
    assert sorted(r["key"] for r in problems["rows"]) == ["user1@example.com", "user3@example.com"]
    assert problems["export"] == f"txsend report {job} --failed-csv failed.csv"


def test_report_command_over_all_runs(
    tmp_path: Path, smtp_server: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    script_failures(smtp_server)
    job = write_job(tmp_path, rows=8)
    assert cli(capsys, "run", job, "--relay", smtp_server.url, "--limit", "3").code == 1
    assert cli(capsys, "run", job, "--relay", smtp_server.url).code == 75
    result = cli(capsys, "report", job, "--json")
    assert result.code == 0, result.err
    data = json.loads(result.out)
    validate_report(data)
    assert [r["run_id"] for r in data["runs"]] == [1, 2]
    assert [r["exit_code"] for r in data["runs"]] == [1, 75]
    assert "run" not in data
    codes = {c["code"]: c["count"] for c in data["reply_codes"]}
    assert codes == {"250": 5, "550 5.1.1": 2, "451 4.7.1": 1}
    (outcomes,) = [r["outcomes"] for r in data["relays"].values()]
    assert outcomes == {"sent": 5, "bounced": 2, "deferred": 1}
    status = json.loads(cli(capsys, "status", job, "--json").out)
    validate_report(status)
    assert status["command"] == "status" and status["problems"]["count"] == 2
    text = cli(capsys, "report", job)
    assert "2 rows failed, bounced or unknown" in text.out
    assert "--failed-csv" in text.out


def test_failed_csv_is_a_recipients_file(
    tmp_path: Path, smtp_server: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    script_failures(smtp_server)
    job = write_job(tmp_path, rows=8)
    cli(capsys, "run", job, "--relay", smtp_server.url)
    failed = tmp_path / "failed.csv"
    result = cli(capsys, "report", job, "--failed-csv", failed)
    assert result.code == 0, result.err
    assert "2 rows written" in result.err
    with failed.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["email"] for r in rows] == ["user1@example.com", "user3@example.com"]
    assert rows[0]["first_name"] == "User1" and rows[0]["plan"] == "pro"
    assert rows[0]["txsend_state"] == "bounced" and rows[0]["txsend_code"] == "550"
    assert "no such user" in rows[0]["txsend_reply"]
    # fix nothing, send again: the export is itself a valid job
    smtp_server.rcpt_replies.clear()
    again = cli(
        capsys,
        "run",
        failed,
        "--from",
        "Acme <noreply@acme.example>",
        "--subject",
        "Hello {{ first_name }}",
        "--text",
        tmp_path / "t.txt",
        "--relay",
        smtp_server.url,
    )
    assert again.code == 0, again.err
    assert sorted(r.rcpt_tos[0] for r in smtp_server.received[-2:]) == [
        "user1@example.com",
        "user3@example.com",
    ]


def test_html_report_is_self_contained(
    tmp_path: Path, smtp_server: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    script_failures(smtp_server)
    job = write_job(tmp_path, rows=8)
    page = tmp_path / "report.html"
    assert cli(capsys, "run", job, "--relay", smtp_server.url, "--report-html", page).code == 75
    html = page.read_text()

    class Refs(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.tags: Counter[str] = Counter()
            self.external: list[str] = []

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            self.tags[tag] += 1
            for name, value in attrs:
                if name in ("src", "href") and value and "//" in value:
                    self.external.append(value)

    refs = Refs()
    refs.feed(html)
    assert refs.tags["svg"] >= 4
    assert refs.tags["link"] == 0 and not refs.external
    assert "test-job" in html and "550 5.1.1" in html
    report_page = tmp_path / "all.html"
    assert cli(capsys, "report", job, "--report-html", report_page).code == 0
    assert "<svg" in report_page.read_text()


# --------------------------------------------------------------------------- metrics


def test_metrics_file_parses_and_matches_journal(
    tmp_path: Path, smtp_server: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    script_failures(smtp_server)
    job = write_job(tmp_path, rows=8)
    metrics = tmp_path / "txsend.prom"
    cli(capsys, "run", job, "--relay", smtp_server.url, "--metrics-file", metrics)
    families = {f.name: f for f in text_string_to_metric_families(metrics.read_text())}
    messages = {s.labels["state"]: s.value for s in families["txsend_messages"].samples}
    counts = journal_counts(tmp_path / "job.journal.db")
    assert {k: int(v) for k, v in messages.items() if v} == dict(counts)
    assert all(s.labels["job"] == "test-job" for s in families["txsend_messages"].samples)
    exit_code = families["txsend_exit_code"].samples[0].value
    assert exit_code == 75
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*tmp"))


def test_metrics_port_in_use_is_a_usage_error(
    tmp_path: Path, smtp_server: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        job = write_job(tmp_path, rows=2)
        result = cli(capsys, "run", job, "--relay", smtp_server.url, "--metrics-port", port)
    assert result.code == 64
    assert f"--metrics-port {port}" in result.err
    assert not smtp_server.received


# --------------------------------------------------------------------------- logs


def test_json_logs_one_object_per_line(
    tmp_path: Path, smtp_server: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    script_failures(smtp_server)
    job = write_job(tmp_path, rows=8)
    result = cli(
        capsys,
        "run",
        job,
        "--relay",
        smtp_server.url,
        "--log-format",
        "json",
        "--log-level",
        "debug",
        "--quiet",
    )
    lines = [line for line in result.err.splitlines() if line.startswith("{")]
    events = [json.loads(line) for line in lines]
    names = Counter(e["event"] for e in events)
    assert names["run_start"] == 1 and names["run_end"] == 1 and names["relay_up"] == 1
    assert names["message"] == 8
    bounced = [e for e in events if e["event"] == "message" and e["state"] == "bounced"]
    assert {e["key"] for e in bounced} == {"user1@example.com", "user3@example.com"}
    assert all({"ts", "level", "message"} <= set(e) for e in events)
    end = next(e for e in events if e["event"] == "run_end")
    assert end["exit_code"] == 75 and end["counts"]["sent"] == 5
    # the default level (warning) logs no per-message lines
    quiet = cli(capsys, "resume", job, "--relay", smtp_server.url, "--log-format", "json")
    assert '"event": "message"' not in quiet.err


def test_relay_down_is_logged(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    job = write_job(tmp_path, rows=2)
    result = cli(
        capsys, "run", job, "--relay", f"smtp://127.0.0.1:{port}?tls=none", "--log-format", "json"
    )
    assert result.code == 69
    events = [json.loads(x) for x in result.err.splitlines() if x.startswith("{")]
    down = [e for e in events if e["event"] == "relay_down"]
    assert len(down) == 1 and down[0]["relay"] == f"127.0.0.1:{port}"
    assert "refused" in down[0]["reason"]
    assert any(e["event"] == "circuit_opened" for e in events)


@pytest.mark.parametrize(
    ("flag", "value"), [("--log-format", "xml"), ("--log-level", "loud"), ("--grace", "soon")]
)
def test_bad_log_and_grace_flags(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str, value: str
) -> None:
    job = write_job(tmp_path, rows=1)
    result = cli(capsys, "run", job, "--relay", "smtp://127.0.0.1:1?tls=none", flag, value)
    assert result.code == 64
    assert flag in result.err and "Traceback" not in result.err


# --------------------------------------------------------------------------- secrets


def test_no_secret_in_any_output(
    tmp_path: Path,
    smtp_server: ScriptedServer,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    smtp_server.credentials = {USER: PASSWORD}
    script_failures(smtp_server)
    monkeypatch.setenv("TXSEND_TEST_PASSWORD", PASSWORD)
    url = f"smtp://{USER}@127.0.0.1:{smtp_server.port}?tls=none"
    job = write_job(
        tmp_path,
        rows=8,
        extra_yaml="relays:\n"
        f"  - url: {url}\n"
        "    password_env: TXSEND_TEST_PASSWORD\n"
        "    allow_insecure_auth: true\n",
    )
    files = {name: tmp_path / name for name in ("r.json", "r.html", "m.prom", "f.csv")}
    result = cli(
        capsys,
        "run",
        job,
        "--json",
        "--report",
        files["r.json"],
        "--report-html",
        files["r.html"],
        "--metrics-file",
        files["m.prom"],
        "--log-format",
        "json",
        "--log-level",
        "debug",
    )
    assert result.code == 75, result.err
    assert [r.login for r in smtp_server.received] == [USER] * 5
    report = cli(capsys, "report", job, "--json", "--failed-csv", files["f.csv"])
    status = cli(capsys, "status", job, "--json")
    auth_plain = base64.b64encode(f"\0{USER}\0{PASSWORD}".encode())
    needles = [PASSWORD.encode(), auth_plain, base64.b64encode(PASSWORD.encode())]
    haystacks = {
        "stdout": (result.out + report.out + status.out).encode(),
        "stderr": (result.err + report.err + status.err).encode(),
        **{name: path.read_bytes() for name, path in files.items()},
    }
    for path in tmp_path.iterdir():  # the journal, its WAL and lock files
        if path.name.startswith("job.journal.db"):
            haystacks[path.name] = path.read_bytes()
    assert "job.journal.db" in haystacks
    for name, data in haystacks.items():
        for needle in needles:
            assert needle not in data, f"secret found in {name}"


# --------------------------------------------------------------------------- signals


@pytest.mark.slow
def test_sigterm_against_slow_server_then_resume(
    tmp_path: Path, smtp_server: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    smtp_server.data_delay = 0.1
    job = write_job(tmp_path, rows=100)
    report = tmp_path / "r.json"
    proc = txsend_subprocess(
        "run", job, "--relay", smtp_server.url, "--concurrency", "4", "--report", report
    )
    smtp_server.wait_for(8, timeout=30)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 143, err
    assert "Traceback" not in err and "txsend resume" in err
    counts = journal_counts(tmp_path / "job.journal.db")
    assert "sending" not in counts  # the grace period let in-flight messages finish
    assert counts["sent"] == len(smtp_server.received)
    assert sum(counts.values()) == 100  # no row lost
    data = json.loads(report.read_text())
    assert data["exit_code"] == 143 and data["run"]["stop_reason"] == "interrupted"
    smtp_server.data_delay = 0
    assert cli(capsys, "resume", job, "--relay", smtp_server.url).code == 0
    delivered = Counter(r.rcpt_tos[0] for r in smtp_server.received)
    assert len(delivered) == 100 and max(delivered.values()) == 1


@pytest.mark.slow
def test_second_signal_stops_at_once(
    tmp_path: Path, smtp_server: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    smtp_server.data_delay = 3.0  # every transaction outlasts the test's patience
    job = write_job(tmp_path, rows=20)
    proc = txsend_subprocess(
        "run", job, "--relay", smtp_server.url, "--concurrency", "2", "--grace", "60s"
    )
    import time

    def in_flight() -> bool:
        try:
            return "sending" in journal_counts(tmp_path / "job.journal.db")
        except sqlite3.Error:  # not created yet
            return False

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not in_flight():
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.3)
    started = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=20)
    assert time.monotonic() - started < 10  # not the 60 s grace
    assert proc.returncode == 130, err
    counts = journal_counts(tmp_path / "job.journal.db")
    assert sum(counts.values()) == 20
    assert "sending" not in counts  # abandoned after DATA began: unknown, said so
    assert counts["unknown"] >= 1
    assert "abandoned after DATA began" in err
    smtp_server.data_delay = 0
    result = cli(capsys, "resume", job, "--relay", smtp_server.url)
    assert result.code == 0, result.err
    assert set(journal_counts(tmp_path / "job.journal.db")) == {"sent"}


@pytest.mark.slow
def test_metrics_port_serves_during_the_run(
    tmp_path: Path, smtp_server: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    import urllib.request

    smtp_server.data_delay = 0.05
    job = write_job(tmp_path, rows=60)
    proc = txsend_subprocess(
        "run",
        job,
        "--relay",
        smtp_server.url,
        "--concurrency",
        "1",
        "--metrics-port",
        "0",
        "--log-format",
        "json",
        "--log-level",
        "info",
    )
    try:
        assert proc.stderr is not None
        port = None
        for line in proc.stderr:
            if line.startswith("{") and json.loads(line)["event"] == "metrics_serving":
                port = json.loads(line)["port"]
                break
        assert port is not None
        smtp_server.wait_for(3, timeout=30)
        import time

        deadline = time.monotonic() + 20
        body = ""
        while time.monotonic() < deadline:  # the first update comes with the first tick
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                body = r.read().decode()
            if "txsend_messages" in body:
                break
            time.sleep(0.2)
        families = {f.name: f for f in text_string_to_metric_families(body)}
        assert families["txsend_exit_code"].samples[0].value == -1  # still running
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    with pytest.raises(OSError):  # the endpoint ends with the run
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2)


def test_live_view_shows_rate_latency_errors_and_queue() -> None:
    import io
    import time

    from rich.console import Console

    from txsend.cli.console import ProgressView
    from txsend.models import State
    from txsend.reporting.stats import RunStats

    stats = RunStats()
    now = time.monotonic()
    for _ in range(30):
        stats.outcomes[State.SENT] += 1
        stats.timeline.add(State.SENT, now)
        stats.latency.add(0.012)
    relay = stats.relay("relay.example:587")
    relay.attempts = 32
    stats.errors["transient"] = 2
    stats.queue_depth = 7
    out = io.StringIO()
    view = ProgressView(Console(file=out, force_terminal=True, width=200))
    view.start(100)
    view.update(stats)
    view._progress.refresh()
    view.stop()
    text = out.getvalue()
    assert "msg/s (avg" in text
    assert "p95 13 ms" in text or "p95 12 ms" in text
    assert "errors 6.2%" in text
    assert "queue 7" in text
