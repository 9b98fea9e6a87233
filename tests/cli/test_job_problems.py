"""A job file with problems in several sections: `validate` (and `run`) report the first
of each section together, each with its file:line, and exit 65."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.jobs import cli

JOB = """\
name: many
from: a@acme.example
subject: hi
text_inline: hello
recipients:
  file: people.csv
  colour: blue
relays:
  - url: smtp://127.0.0.1:9?tls=none
    rate: 5/fortnight
domains:
  "@gmail.com": {rate: 10/s}
  yahoo.com: {rate: 10/h, connections: -1}
delivery:
  on_unknown: maybe
warmup: {start: 500/day, growth: 0.5, until: 100/day}
schedule:
  timezone: Mars/Olympus
  not_after: 2026-13-45
headers: {X-Ok: 1, "Bad Name": 2}
"""

# each section's first problem: (line, what the message names)
EXPECTED = [
    (7, "recipients.colour: unknown key"),
    (10, "relays[0].rate:"),
    (12, "domains.@gmail.com:"),
    (15, "delivery.on_unknown:"),
    (16, "warmup.growth:"),
    (18, "schedule.timezone:"),
]


def _job(tmp_path: Path) -> Path:
    (tmp_path / "people.csv").write_text("email\na@example.com\n")
    job = tmp_path / "job.yaml"
    job.write_text(JOB)
    return job


def test_validate_lists_the_first_problem_of_every_section_with_its_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job = _job(tmp_path)
    result = cli(capsys, "validate", job)
    assert result.code == 65, result.err
    errors = [line for line in result.err.splitlines() if line.startswith("txsend: error:")]
    for line, text in EXPECTED:
        assert any(f"job.yaml:{line}: {text}" in error for error in errors), (text, result.err)
    assert any("headers" in error for error in errors), result.err
    lines = [int(e.split("job.yaml:")[1].split(":")[0]) for e in errors]
    assert lines == sorted(lines)  # in the file's order
    assert "Traceback" not in result.err


def test_run_reports_them_all_too_as_json_events(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job = _job(tmp_path)
    result = cli(capsys, "run", job, "--log-format", "json")
    assert result.code == 65, result.err
    events = [json.loads(line) for line in result.err.splitlines() if line.strip()]
    messages = [e["message"] for e in events if e["event"] == "error"]
    for line, text in EXPECTED:
        assert any(f"job.yaml:{line}: {text}" in m for m in messages), (text, messages)
    assert all(e["exit_code"] == 65 for e in events if e["event"] == "error")
    assert not (tmp_path / "job.journal.db").exists()  # nothing was ingested
