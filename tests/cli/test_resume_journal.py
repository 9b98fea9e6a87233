"""`txsend resume JOB.journal.db`: the journal's path instead of the job's, for any job."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.jobs import cli, write_job
from tests.smtpd import ScriptedServer
from txsend.journal.rules import describe_changes


def test_resume_by_the_journal_of_a_job_with_an_inline_template(
    tmp_path: Path,
    smtp_server: ScriptedServer,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    job = write_job(tmp_path, rows=3, extra_yaml=f"relays:\n  - url: {smtp_server.url}\n")
    text = job.read_text().replace("text: t.txt\n", "text_inline: 'Hi {{ first_name }}'\n")
    job.write_text(text)
    monkeypatch.chdir(tmp_path)  # the job named as job.yaml, its journal by its full path
    first = cli(capsys, "run", "job.yaml", "--limit", "1")
    assert first.code == 0, first.err
    resumed = cli(capsys, "resume", tmp_path / "job.journal.db")
    assert resumed.code == 0, resumed.err
    assert len(smtp_server.received) == 3


def test_a_template_seen_under_another_name_with_the_same_text_is_no_change() -> None:
    stored = {"text template job.yaml:4": "abc", "subject": "s"}
    now = {"text template /tmp/x/job.yaml:4": "abc", "subject": "s"}
    assert describe_changes(stored, now) == []
    changed = {"text template /tmp/x/job.yaml:4": "def", "subject": "s"}
    assert describe_changes(stored, changed) == [
        "text template /tmp/x/job.yaml:4 was added",
        "text template job.yaml:4 is no longer used",
    ]
