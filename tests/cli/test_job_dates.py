"""Unquoted dates in a job file that are no dates (2026-13-45, 2026-02-30, 10:00:61):
YAML would make them dates and fail while loading; they stay text, and `schedule:` says
which is wrong, on which line (exit 65), whether to `validate` or to `run`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.jobs import cli, write_job
from txsend.job.loading import load_job

BAD = {
    "2026-13-45": "month must be in 1..12",
    "2026-12-32": "day is out of range for month",
    "2026-02-30": "day is out of range for month",
    "2026-12-08 10:00:61": "second must be in 0..59",
}


def _line(job: Path, text: str) -> int:
    return next(n for n, line in enumerate(job.read_text().splitlines(), 1) if text in line)


@pytest.mark.parametrize("value", sorted(BAD))
@pytest.mark.parametrize("command", ["validate", "run"])
def test_a_date_that_is_none_is_a_job_error_with_its_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], value: str, command: str
) -> None:
    job = write_job(tmp_path, extra_yaml=f"schedule:\n  not_after: {value}\n")
    line = _line(job, "not_after:")
    options = ["--log-format", "json"] if command == "run" else []
    result = cli(capsys, command, job, *options)
    assert result.code == 65, result.err
    assert "Traceback" not in result.err and "internal error" not in result.err
    if command == "run":  # JSON logs stay JSON: one event a line
        events = [json.loads(text) for text in result.err.splitlines() if text.strip()]
        message = " ".join(str(e.get("message", "")) for e in events)
    else:
        message = result.err
    assert f"job.yaml:{line}: schedule.not_after: '{value}' is not a date" in message
    assert BAD[value] in message


def test_a_text_value_that_looks_like_a_bad_date_is_kept_as_text(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job = write_job(tmp_path)
    job.write_text(
        job.read_text().replace("subject: 'Welcome, {{ first_name }}!'", "subject: 2026-02-30")
    )
    assert load_job(job).subject.source == "2026-02-30"
    result = cli(capsys, "validate", job)
    assert result.code == 0, result.err
