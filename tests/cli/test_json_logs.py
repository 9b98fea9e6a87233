"""`--log-format json`: every line on stderr is one JSON object, from the first to the last.

Against the real CLI (in this process, and once as a child process) and real SMTP servers:
the ingest line, warnings, the summary, the final verdict and the error a command ends
with are events too, never plain text or Rich tables.
"""

from __future__ import annotations

import json
import logging
import socket
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from tests.jobs import cli, txsend_subprocess, write_job
from tests.sinks import running_sink
from tests.smtpd import ScriptedServer
from txsend.cli.verdict import final_and_next
from txsend.models import State
from txsend.reporting.stats import RunStats
from txsend.reporting.summary import Summary

COMMON = {"ts", "level", "event", "message"}


def events(err: str) -> list[dict[str, Any]]:
    """Every stderr line as JSON; fails on a blank line or one that is not an object."""
    assert err.endswith("\n"), repr(err[-200:])
    parsed = []
    for line in err.splitlines():
        assert line.strip(), f"blank line on stderr: {err!r}"
        data = json.loads(line)  # raises on a plain-text line
        assert isinstance(data, dict), line
        assert set(data) >= COMMON, line
        parsed.append(data)
    return parsed


def names(evs: list[dict[str, Any]]) -> list[str]:
    return [e["event"] for e in evs]


def one(evs: list[dict[str, Any]], name: str) -> dict[str, Any]:
    found = [e for e in evs if e["event"] == name]
    assert len(found) == 1, (name, names(evs))
    return found[0]


def in_order(evs: list[dict[str, Any]], *wanted: str) -> None:
    order = names(evs)
    positions = [order.index(name) for name in wanted]
    assert positions == sorted(positions), order


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --------------------------------------------------------------------------- whole runs


def test_run_into_a_sink_is_json_from_first_to_last_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job = write_job(tmp_path, rows=6)
    with running_sink(tmp_path) as sink:
        result = cli(
            capsys, "run", job, "--relay", sink.url, "--log-format", "json", "--log-level", "info"
        )
        stats = sink.finish()
    assert result.code == 0, result.err
    assert stats.messages == 6
    assert result.out == ""
    evs = events(result.err)
    in_order(evs, "ingest", "run_start", "run_end", "summary", "verdict")
    assert names(evs)[0] == "ingest" and names(evs)[-1] == "verdict"

    ingest = one(evs, "ingest")
    assert ingest["journal"] == str(tmp_path / "job.journal.db")
    assert ingest["new"] == 6 and ingest["existing"] == 0
    assert ingest["duplicates"] == 0 and ingest["invalid"] == 0
    assert ingest["by_other"] is False and ingest["problems"] == []
    assert ingest["message"].startswith("journal ") and "6 new rows" in ingest["message"]

    summary = one(evs, "summary")
    assert summary["job"] == "test-job"
    assert summary["outcomes"]["sent"] == 6 and summary["outcomes"]["bounced"] == 0
    assert summary["counts"]["sent"] == 6
    assert summary["seconds"] > 0 and summary["messages_per_second"] > 0
    assert summary["latency_ms"]["p50"] > 0 and summary["latency_ms"]["p95"] > 0
    assert summary["abandoned"] == 0 and summary["dry_run"] is False
    (relay,) = summary["relays"]
    assert relay["relay"] == f"127.0.0.1:{sink.port}"
    assert relay["sent"] == 6 and relay["failed"] == 0 and relay["deferred"] == 0
    assert relay["connections"] >= 1 and relay["connect_failures"] == 0
    assert relay["circuit"] == "closed" and relay["error_rate"] == 0.0

    verdict = one(evs, "verdict")
    assert verdict["exit_code"] == 0 and verdict["level"] == "info"
    assert verdict["message"] == "test-job: 6 sent (exit 0)"
    assert verdict["stop_reason"] is None and verdict["next_command"] is None
    assert one(evs, "run_end")["exit_code"] == 0


def test_deferred_and_bounced_rows_give_a_verdict_with_the_next_command(
    tmp_path: Path, smtp_server: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    smtp_server.rcpt_replies["user1@example.com"] = "550 5.1.1 <user1@example.com> no such user"
    smtp_server.rcpt_replies["user2@example.com"] = "451 4.7.1 try again later"
    job = write_job(tmp_path, rows=4)
    result = cli(capsys, "run", job, "--relay", smtp_server.url, "--log-format", "json")
    assert result.code == 75, result.err
    evs = events(result.err)
    in_order(evs, "ingest", "summary", "verdict")
    summary = one(evs, "summary")
    assert summary["outcomes"]["sent"] == 2
    assert summary["outcomes"]["bounced"] == 1 and summary["outcomes"]["deferred"] == 1
    (relay,) = summary["relays"]
    assert relay["sent"] == 2 and relay["failed"] == 1 and relay["deferred"] == 1
    assert relay["error_rate"] == 0.5
    verdict = one(evs, "verdict")
    assert verdict["exit_code"] == 75 and verdict["level"] == "warning"
    assert "\ncontinue with: txsend resume" in verdict["message"]  # the whole text
    assert verdict["next_command"] == f"txsend resume {job}"
    assert verdict["next_attempt_at"] is not None

    # the deferred row is not due for 10 minutes: the resume sends nothing, says so in JSON
    again = cli(capsys, "resume", job, "--relay", smtp_server.url, "--log-format", "json")
    assert again.code == 75
    evs = events(again.err)
    assert "ingest" not in names(evs)  # resume ingests nothing
    assert one(evs, "verdict")["next_command"] == f"txsend resume {job}"


def test_only_bounces_point_at_status(
    tmp_path: Path, smtp_server: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    smtp_server.rcpt_replies["user0@example.com"] = "550 5.1.1 <user0@example.com> no such user"
    job = write_job(tmp_path, rows=2)
    result = cli(capsys, "run", job, "--relay", smtp_server.url, "--log-format", "json")
    assert result.code == 1, result.err
    verdict = one(events(result.err), "verdict")
    assert verdict["next_command"] == f"txsend status {job}"


def test_skipped_rows_are_inside_the_ingest_event(
    tmp_path: Path, smtp_server: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    records = [
        {"email": "a@example.com", "first_name": "A", "plan": "pro"},
        {"email": "a@example.com", "first_name": "A again", "plan": "pro"},
        {"email": "not an address", "first_name": "B", "plan": "pro"},
        {"email": "c@example.com", "first_name": "C", "plan": "pro"},
    ]
    job = write_job(tmp_path, records=records)
    result = cli(capsys, "run", job, "--relay", smtp_server.url, "--log-format", "json")
    assert len(smtp_server.received) == 2, result.err
    evs = events(result.err)
    assert one(evs, "verdict")["exit_code"] == result.code
    ingest = one(evs, "ingest")
    assert ingest["new"] == 2 and ingest["duplicates"] == 1 and ingest["invalid"] == 1
    assert len(ingest["problems"]) == 2
    assert any("not an address" in problem for problem in ingest["problems"])
    assert not any(e["message"].lstrip().startswith("skipped") for e in evs)  # no line each
    assert one(evs, "summary")["counts"]["skipped"] == 2


def test_rows_left_mid_send_are_a_recovered_event(
    tmp_path: Path, smtp_server: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    job = write_job(tmp_path, rows=2)
    assert cli(capsys, "run", job, "--relay", smtp_server.url, "--dry-run").code == 0
    with sqlite3.connect(tmp_path / "job.journal.db") as db:  # as a killed run leaves it
        db.execute("UPDATE messages SET state = 'sending' WHERE key = 'user0@example.com'")
    result = cli(capsys, "resume", job, "--relay", smtp_server.url, "--log-format", "json")
    evs = events(result.err)
    recovered = one(evs, "recovered")
    assert recovered["recovered"] == 1 and recovered["level"] == "warning"
    assert recovered["on_unknown"] in ("resend", "skip")
    in_order(evs, "recovered", "summary", "verdict")


def test_unreachable_relay_exit_69_is_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    port = closed_port()
    job = write_job(
        tmp_path,
        rows=3,
        delivery="  give_up_unreachable: 1s\n",
        extra_yaml=f"relays:\n  - url: smtp://127.0.0.1:{port}?tls=none\n",
    )
    result = cli(capsys, "run", job, "--log-format", "json")
    assert result.code == 69, result.err
    evs = events(result.err)
    in_order(evs, "ingest", "relay_down", "summary", "verdict")
    (relay,) = one(evs, "summary")["relays"]
    assert relay["connections"] == 0 and relay["connect_failures"] >= 1
    assert "refused" in (relay["last_error"] or "")
    verdict = one(evs, "verdict")
    assert verdict["exit_code"] == 69 and verdict["level"] == "error"
    assert verdict["next_command"] == f"txsend resume {job}"


def test_quiet_keeps_only_the_verdict(
    tmp_path: Path, smtp_server: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    job = write_job(tmp_path, rows=3)
    result = cli(capsys, "run", job, "--relay", smtp_server.url, "--log-format", "json", "--quiet")
    assert result.code == 0, result.err
    assert names(events(result.err)) == ["verdict"]
    # --quiet keeps the log events the level asks for, still without ingest or summary
    more = cli(
        capsys,
        "run",
        write_job(tmp_path / "b", rows=2),
        "--relay",
        smtp_server.url,
        "--log-format",
        "json",
        "--log-level",
        "info",
        "-q",
    )
    assert more.code == 0, more.err
    assert names(events(more.err)) == ["run_start", "relay_up", "run_end", "verdict"]


def test_json_report_on_stdout_is_unchanged(
    tmp_path: Path, smtp_server: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    job = write_job(tmp_path, rows=2)
    result = cli(capsys, "run", job, "--relay", smtp_server.url, "--log-format", "json", "--json")
    assert result.code == 0
    report = json.loads(result.out)  # one indented object, as without --log-format
    assert report["schema"] == 1 and report["counts"]["sent"] == 2
    assert result.out.startswith("{\n")
    events(result.err)


# --------------------------------------------------------------------------- errors


def test_bad_job_file_exit_65_is_one_error_event(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job = write_job(tmp_path, rows=1)
    job.write_text("name: broken\nfrom: [not, an, address\n", encoding="utf-8")
    result = cli(
        capsys, "run", job, "--relay", "smtp://127.0.0.1:1?tls=none", "--log-format", "json"
    )
    assert result.code == 65
    (error,) = events(result.err)
    assert error["event"] == "error" and error["level"] == "error"
    assert error["exit_code"] == 65 and "job.yaml" in error["message"]
    assert "hint" in error
    assert not error["message"].startswith("txsend: error:")


def test_missing_secret_exit_78_is_one_error_event(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TXSEND_NOPE", raising=False)
    job = write_job(
        tmp_path,
        rows=1,
        extra_yaml="relays:\n  - url: smtps://u@127.0.0.1:2525\n    password_env: TXSEND_NOPE\n",
    )
    result = cli(capsys, "run", job, "--log-format", "json")
    assert result.code == 78
    (error,) = events(result.err)
    assert error["event"] == "error" and error["exit_code"] == 78
    assert "TXSEND_NOPE" in error["message"] + (error["hint"] or "")


def test_bad_relay_url_exit_78_is_one_error_event(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job = write_job(tmp_path, rows=1)
    result = cli(capsys, "run", job, "--relay", "ftp://127.0.0.1:25", "--log-format", "json")
    assert result.code == 78, result.err
    (error,) = events(result.err)
    assert error["event"] == "error" and error["exit_code"] == 78


def test_bad_flag_values_with_json_are_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job = write_job(tmp_path, rows=1)
    relay = "smtp://127.0.0.1:1?tls=none"
    for flag, value in (("--log-level", "loud"), ("--grace", "soon")):
        result = cli(capsys, "run", job, "--relay", relay, "--log-format", "json", flag, value)
        assert result.code == 64
        (error,) = events(result.err)
        assert error["exit_code"] == 64 and flag in error["message"]
    # click's own usage errors come before the command runs: argv says json
    result = cli(capsys, "resume", job, "--log-format=json", "--no-such-flag")
    assert result.code == 64
    (error,) = events(result.err)
    assert "--no-such-flag" in error["message"] and error["hint"] == "see: txsend resume --help"


def test_internal_error_is_one_error_event(
    tmp_path: Path,
    smtp_server: ScriptedServer,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from txsend.app import sending

    def broken(*args: object, **kwargs: object) -> None:
        # another library's warning (asyncio's "Task exception was never retrieved", ...)
        logging.getLogger("asyncio").warning("something odd\non two lines")
        raise RuntimeError("a bug somewhere")

    monkeypatch.setattr(sending, "send", broken)
    job = write_job(tmp_path, rows=1)
    result = cli(capsys, "run", job, "--relay", smtp_server.url, "--log-format", "json")
    assert result.code == 70
    evs = events(result.err)
    assert names(evs) == ["ingest", "log", "error"]
    assert evs[1]["logger"] == "asyncio" and evs[1]["message"] == "something odd\non two lines"
    error = evs[-1]
    assert error["exit_code"] == 70 and "a bug somewhere" in error["message"]
    assert "bug" in error["hint"]


def test_text_mode_is_back_after_a_json_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job = write_job(tmp_path, rows=1)
    job.write_text("name: broken\nfrom: [\n", encoding="utf-8")
    assert cli(capsys, "run", job, "--log-format", "json").code == 65
    text = cli(capsys, "run", job)
    assert text.code == 65
    assert text.err.startswith("txsend: error: ")
    plain = cli(capsys, "run", job, "--bogus")
    assert plain.code == 64 and not plain.err.startswith("{")


# --------------------------------------------------------------------------- a real process


def test_child_process_stderr_is_json_lines(tmp_path: Path) -> None:
    job = write_job(tmp_path, rows=4)
    with running_sink(tmp_path) as sink:
        proc = txsend_subprocess(
            "run", job, "--relay", sink.url, "--log-format", "json", "--log-level", "debug"
        )
        out, err = proc.communicate(timeout=60)
        stats = sink.finish()
    assert proc.returncode == 0, err
    assert out == "" and stats.messages == 4
    evs = events(err)
    in_order(evs, "ingest", "run_start", "run_end", "summary", "verdict")
    assert names(evs).count("message") == 4
    assert names(evs)[-1] == "verdict"


def _summary(counts: dict[str, int], exit_code: int, next_attempt_at: float | None) -> Summary:
    return Summary(
        "j",
        1,
        {state: counts.get(state.value, 0) for state in State},
        RunStats(),
        next_attempt_at,
        exit_code,
    )


@pytest.mark.parametrize(
    ("counts", "exit_code", "next_at", "target", "command", "expected"),
    [
        ({"sent": 2}, 0, None, "a/job.yaml", "run", None),
        ({"deferred": 1}, 75, None, "a/job.yaml", "run", "txsend resume a/job.yaml"),
        ({"deferred": 1}, 75, 1893492000.0, "a/job.yaml", "run", "txsend resume a/job.yaml"),
        ({"bounced": 1}, 1, None, "job.yaml", "run", "txsend status job.yaml"),
        (
            {"deferred": 1, "unknown": 1},
            75,
            None,
            "--journal postgresql://u@db/mail",
            "worker",
            "txsend worker --journal postgresql://u@db/mail",
        ),
    ],
)
def test_next_command_is_the_one_the_final_text_names(
    counts: dict[str, int],
    exit_code: int,
    next_at: float | None,
    target: str,
    command: str,
    expected: str | None,
) -> None:
    resume_target = "job.yaml" if command == "worker" else None
    final, next_command = final_and_next(
        _summary(counts, exit_code, next_at), target, command, resume_target
    )
    assert next_command == expected
    if expected is not None:
        # the text names it, on the line after the counts, before any "(next retry due"
        assert f": {expected}" in final.splitlines()[-1]
