"""JobOverrides from the command line to the journal and back, and JournalLocation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from txsend.job.loading import load_job
from txsend.job.location import JournalLocation, default_journal, redact_url
from txsend.job.spec import JobOverrides

FLAGS = JobOverrides(
    from_addr="Acme <noreply@acme.example>",
    subject="Hello {{ first_name }}",
    text=Path("/jobs/t.txt"),
    html=Path("/jobs/t.html"),
    relays=("smtp://a.example:587,smtp://b.example:587", "smtps://c.example"),
    name="spring",
    abort_on_error_rate=0.25,
)


def test_stored_flags_come_back_the_same_through_json() -> None:
    stored = json.loads(json.dumps(FLAGS.to_stored()))  # as the journal keeps them
    back = JobOverrides.from_stored(stored)
    # --relay A,B is two relays either way; apart from that, the same flags
    assert back.relays == ("smtp://a.example:587", "smtp://b.example:587", "smtps://c.example")
    assert back == JobOverrides(**{**FLAGS.__dict__, "relays": back.relays})


def test_stored_form_is_the_journals_since_the_first_release() -> None:
    # Journals written before JobOverrides had a codec hold exactly this; they must resume.
    legacy = {
        "name": "spring",
        "from": "Acme <noreply@acme.example>",
        "subject": "Hello {{ first_name }}",
        "text": "/jobs/t.txt",
        "html": "/jobs/t.html",
        "relay": "smtp://a.example:587,smtp://b.example:587,smtps://c.example",
        "abort_on_error_rate": "0.25",
    }
    assert FLAGS.to_stored() == legacy
    back = JobOverrides.from_stored(legacy)
    assert back.relays == ("smtp://a.example:587", "smtp://b.example:587", "smtps://c.example")
    assert back.abort_on_error_rate == 0.25 and back.text == Path("/jobs/t.txt")


def test_no_flags_store_nothing_and_the_journal_is_never_stored() -> None:
    assert JobOverrides().to_stored() == {}
    located = JobOverrides(journal=JournalLocation(url="postgresql://db.example/mail"))
    assert located.to_stored() == {}


def test_todays_flags_win_over_the_stored_ones() -> None:
    today = JobOverrides(subject="Changed", relays=("smtp://d.example",), abort_on_error_rate=0.0)
    merged = today.over(FLAGS)
    assert merged.subject == "Changed" and merged.relays == ("smtp://d.example",)
    assert merged.abort_on_error_rate == 0.0  # a rate of 0 given today is not "unset"
    assert merged.from_addr == FLAGS.from_addr and merged.name == "spring"


def test_a_csv_alone_job_keeps_its_flags_resolved(tmp_path: Path) -> None:
    data = tmp_path / "list.csv"
    data.write_text("email\na@example.com\n")
    (tmp_path / "t.txt").write_text("hi")
    flags = JobOverrides(
        from_addr="a@acme.example",
        subject="s",
        text=tmp_path / "sub" / ".." / "t.txt",
        relays=("smtp://x:25",),
    )
    (tmp_path / "sub").mkdir()
    job = load_job(data, flags, env={})
    assert job.flags.text == tmp_path / "t.txt"  # absolute and normalised, for resume
    assert JobOverrides.from_stored(job.flags.to_stored()).relays == ("smtp://x:25",)
    assert job.journal == JournalLocation(path=default_journal(data))


@pytest.mark.parametrize(
    ("value", "shared"),
    [
        ("postgresql://db.example/mail", True),
        ("  postgres://db.example/mail", True),
        ("POSTGRESQL:/typo", True),  # a URL typed wrong is no file name
        ("state/job.db", False),
        ("postgresql.db", False),
    ],
)
def test_journal_location_tells_a_url_from_a_path(value: str, shared: bool) -> None:
    location = JournalLocation.parse(value, Path("/jobs"))
    assert location.shared is shared
    if not shared:
        assert location.path == Path("/jobs") / value and location.url is None


def test_journal_location_never_shows_a_password() -> None:
    location = JournalLocation.parse("postgresql://mail:s3cret@db.example/mail")
    assert "s3cret" not in location.display and "s3cret" not in str(location)
    assert redact_url("postgresql://mail@db.example/mail") == "postgresql://mail@db.example/mail"


def test_journal_location_is_a_file_or_a_url() -> None:
    with pytest.raises(ValueError):
        JournalLocation()
    with pytest.raises(ValueError):
        JournalLocation(path=Path("j.db"), url="postgresql://db/x")
