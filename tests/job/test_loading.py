"""Tests for txsend.job.loading: job loading with file:line errors, overrides, relay URLs."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from txsend.errors import ConfigError, JobError, MissingInputError, RowError, UsageError
from txsend.job.loading import load_job
from txsend.job.location import JournalLocation
from txsend.job.recipients import iter_rows
from txsend.job.relays import parse_relay_url
from txsend.job.spec import Job, JobOverrides
from txsend.models import AbortPolicy, Delivery, RetryPolicy, Row, TlsMode
from txsend.units import parse_duration, parse_size

REPO = Path(__file__).resolve().parents[2]

FULL_JOB = """\
name: welcome-2026-11
from: "Acme <noreply@acme.example>"
reply_to: support@acme.example
subject: "Welcome, {{ first_name }}!"
text: templates/welcome.txt
html: templates/welcome.html
recipients:
  file: recipients.csv
  to: email
  name: "{{ first_name }} {{ last_name }}"
  key: id
headers: {X-Campaign: welcome, X-Priority: 3}
inline_css: true
transactional: false
feedback_id: "welcome:acme:mail:acme"
max_message_size: 512KB
attachments:
  - path: files/terms.pdf
unsubscribe: {url: "https://acme.example/u/{{ token }}", one_click: true}
dkim: {domain: acme.example, selector: s1, key_file: dkim.pem}
relays:
  - url: smtp://mailer@smtp.acme.example:587?tls=starttls
    password_env: SMTP_PASSWORD
    ca_file: ca.pem
    connections: 8
    rate: 50/s
    messages_per_connection: 100
    priority: 0
    weight: 2
  - url: smtps://backup.acme.example
    priority: 1
delivery:
  retry: {attempts: 4, backoff: 10s, max_backoff: 5m, max_age: 1d}
  abort_on: {error_rate: 0.2, min_messages: 50}
  on_unknown: skip
  give_up_unreachable: 2m
  timeouts: {connect: 10s, command: 1m, data_end: 600}
suppress: [suppressed.csv, lists/bounced.txt]
journal: state/welcome.db
"""

RECIPIENTS = "id,email,first_name,last_name\n1,ada@example.com,Ada,Lovelace\n"


def make_job(
    folder: Path,
    job: str,
    *,
    name: str = "job.yaml",
    recipients: str = RECIPIENTS,
    templates: bool = True,
) -> Path:
    """Write a job file, a recipients.csv, two suppression lists and (optionally) two
    templates into folder."""
    (folder / "recipients.csv").write_text(recipients, encoding="utf-8")
    (folder / "suppressed.csv").write_text("email,reason\nbob@example.com,complaint\n")
    (folder / "lists").mkdir(exist_ok=True)
    (folder / "lists" / "bounced.txt").write_text("carol@example.com\n")
    if templates:
        (folder / "templates").mkdir(exist_ok=True)
        (folder / "templates" / "welcome.txt").write_text("Hi {{ first_name }}\n")
        (folder / "templates" / "welcome.html").write_text("<p>Hi {{ first_name }}</p>\n")
    (folder / "files").mkdir(exist_ok=True)
    (folder / "files" / "terms.pdf").write_bytes(b"%PDF-1.4 terms\n")
    (folder / "dkim.pem").write_text("key file contents are checked when the job is rendered\n")
    path = folder / name
    path.write_text(textwrap.dedent(job), encoding="utf-8")
    return path


MINIMAL_JOB = """\
from: noreply@acme.example
subject: Hello
text_inline: Hi {{ first_name }}
recipients: {file: recipients.csv}
"""


def rows_of(job: Job) -> list[Row | RowError]:
    return list(iter_rows(job))


# --------------------------------------------------------------------------- YAML jobs


def test_full_yaml_job_round_trip(tmp_path: Path) -> None:
    path = make_job(tmp_path, FULL_JOB)
    job = load_job(path, env={})

    assert job.name == "welcome-2026-11"
    assert job.source == path
    assert job.base_dir == tmp_path
    assert job.from_addr == "Acme <noreply@acme.example>"
    assert job.reply_to == "support@acme.example"
    assert job.subject.source == "Welcome, {{ first_name }}!"
    assert job.subject.origin == f"{path}:4"
    assert job.subject.path is None
    assert job.text is not None and job.html is not None
    assert job.text.source == "Hi {{ first_name }}\n"
    assert job.text.origin == "templates/welcome.txt"
    assert job.text.path == tmp_path / "templates" / "welcome.txt"
    assert job.html.origin == "templates/welcome.html"
    assert job.recipients.file == tmp_path / "recipients.csv"
    assert job.recipients.to == "email"
    assert job.recipients.name == "{{ first_name }} {{ last_name }}"
    assert job.recipients.key == "id"
    assert job.headers == {"X-Campaign": "welcome", "X-Priority": "3"}
    assert job.max_message_size == 512 * 1024
    assert job.journal.path == tmp_path / "state" / "welcome.db"
    assert job.delivery.on_unknown == "skip"
    assert job.delivery.timeouts.connect == 10.0
    assert job.delivery.timeouts.command == 60.0
    assert job.delivery.timeouts.data_end == 600.0
    assert job.delivery.retry == RetryPolicy(
        attempts=4, backoff=10.0, max_backoff=300.0, max_age=86400.0
    )
    assert job.delivery.abort_on == AbortPolicy(error_rate=0.2, min_messages=50)
    assert job.delivery.give_up_unreachable == 120.0
    assert job.suppress == (tmp_path / "suppressed.csv", tmp_path / "lists" / "bounced.txt")
    assert job.flags.to_stored() == {}

    first, second = job.relays
    assert first.url == "smtp://mailer@smtp.acme.example:587?tls=starttls"
    assert (first.host, first.port, first.tls) == ("smtp.acme.example", 587, TlsMode.STARTTLS)
    assert first.username == "mailer"
    assert first.password_env == "SMTP_PASSWORD"
    assert first.ca_file == tmp_path / "ca.pem"
    assert (first.connections, first.rate, first.messages_per_connection) == (8, "50/s", 100)
    assert (first.priority, first.weight) == (0, 2)
    assert (second.host, second.port, second.tls, second.priority) == (
        "backup.acme.example",
        465,
        TlsMode.IMPLICIT,
        1,
    )
    assert job.input_files() == [
        path,
        tmp_path / "templates" / "welcome.txt",
        tmp_path / "templates" / "welcome.html",
        tmp_path / "recipients.csv",
    ]

    [row] = rows_of(job)
    assert row == Row(
        number=1,
        key="1",
        address="ada@example.com",
        data={"id": "1", "email": "ada@example.com", "first_name": "Ada", "last_name": "Lovelace"},
    )


def test_defaults(tmp_path: Path) -> None:
    path = make_job(tmp_path, MINIMAL_JOB, name="spring-sale.yml", templates=False)
    job = load_job(path, env={})
    assert job.name == "spring-sale"
    assert job.journal.path == tmp_path / "spring-sale.journal.db"
    assert job.relays == ()
    assert job.text is not None and job.text.origin == f"{path}:3"
    assert job.html is None
    assert job.recipients.to == "email" and job.recipients.key is None
    assert job.max_message_size == 10 * 1024 * 1024
    assert job.delivery == Delivery()
    assert job.delivery.retry == RetryPolicy()
    assert job.delivery.abort_on is None
    assert job.delivery.give_up_unreachable == 120.0
    assert job.suppress == ()


def test_numeric_name_is_accepted(tmp_path: Path) -> None:
    path = make_job(tmp_path, "name: 2026\n" + MINIMAL_JOB, templates=False)
    assert load_job(path, env={}).name == "2026"


@pytest.mark.parametrize(
    ("job", "expected"),
    [
        (
            MINIMAL_JOB.replace("subject: Hello", "subject: [a, b]"),
            "job.yaml:2: subject: expected a string",
        ),
        (MINIMAL_JOB + "subjct: x\n", "job.yaml:5: subjct: unknown key (did you mean 'subject'?)"),
        (
            MINIMAL_JOB + "relays:\n  - url: smtp://h\n    conections: 2\n",
            "job.yaml:7: relays[0].conections: unknown key (did you mean 'connections'?)",
        ),
        (
            MINIMAL_JOB + "relays:\n  - url: smtp://a\n  - url: smtp://b\n    connections: 0\n",
            "job.yaml:8: relays[1].connections: must be between 1 and 1000",
        ),
        (
            MINIMAL_JOB + "relays:\n  - url: smtp://a\n    weight: 0\n",
            "job.yaml:7: relays[0].weight: must be at least 1",
        ),
        (
            MINIMAL_JOB + "relays:\n  - url: smtp://a\n    messages_per_connection: 0\n",
            "job.yaml:7: relays[0].messages_per_connection: must be at least 1",
        ),
        (
            MINIMAL_JOB + "relays:\n  - url: smtp://a\n    priority: high\n",
            "job.yaml:7: relays[0].priority: expected a whole number",
        ),
        (
            MINIMAL_JOB + "relays:\n  - url: smtp://a\n    rate: fast\n",
            "job.yaml:7: relays[0].rate: expected a rate like 50/s",
        ),
        (MINIMAL_JOB + "relays:\n  - 42\n", "job.yaml:6: relays[0]: expected a mapping with url:"),
        (MINIMAL_JOB + "relays: smtp://a\n", "job.yaml:5: relays: expected a list"),
        (
            MINIMAL_JOB + "delivery:\n  on_unknown: maybe\n",
            "job.yaml:6: delivery.on_unknown: expected resend or skip",
        ),
        (
            MINIMAL_JOB + "delivery:\n  timeouts: {connect: soon}\n",
            "job.yaml:6: delivery.timeouts.connect: not a duration",
        ),
        (MINIMAL_JOB + "delivery:\n  retry: 5\n", "job.yaml:6: delivery.retry: expected a mapping"),
        (
            MINIMAL_JOB + "relays:\n  - url: smtp://a\n    rate: 0/s\n",
            "job.yaml:7: relays[0].rate: a rate must be positive",
        ),
        (
            MINIMAL_JOB + "relays:\n  - url: smtp://a\n    rate: 5\n",
            "job.yaml:7: relays[0].rate: expected a rate like 50/s",
        ),
        (
            MINIMAL_JOB + "relays:\n  - url: smtp://a\n    rate: 99999999999999999999999/24h\n",
            "job.yaml:7: relays[0].rate: a rate counts at most 1,000,000,000,000",
        ),
        (
            MINIMAL_JOB + "warmup: {start: 2/day, growth: .inf, until: 9/day}\n",
            "job.yaml:5: warmup.growth: must be a finite number above 1",
        ),
        (MINIMAL_JOB + "max_message_size: huge\n", "job.yaml:5: max_message_size: not a size"),
        (MINIMAL_JOB + "dkim: yes\n", "job.yaml:5: dkim: expected a mapping"),
        (MINIMAL_JOB + "inline_css: 1\n", "job.yaml:5: inline_css: expected true or false"),
        (
            MINIMAL_JOB + "headers:\n  From: x@y.example\n",
            "job.yaml:6: headers.From: cannot be set",
        ),
        (
            MINIMAL_JOB + "headers:\n  Content-Type: text/plain\n",
            "job.yaml:6: headers.Content-Type: cannot be set",
        ),
        (
            MINIMAL_JOB + "headers:\n  Bad Name: x\n",
            "job.yaml:6: headers.Bad Name: not a valid header name",
        ),
        (MINIMAL_JOB + "headers:\n  X-A: [1]\n", "job.yaml:6: headers.X-A: expected a string"),
        (MINIMAL_JOB + "text: t.txt\n", "job.yaml:3: text_inline: set either text or text_inline"),
        (MINIMAL_JOB + "reply_to: nobody\n", "job.yaml:5: reply_to: not an email address"),
        (
            MINIMAL_JOB.replace("noreply@acme.example", "a@x.example, b@x.example"),
            "job.yaml:1: from: expected one address",
        ),
        (
            MINIMAL_JOB.replace(
                "recipients: {file: recipients.csv}", "recipients: {file: recipients.csv, too: x}"
            ),
            "job.yaml:4: recipients.too: unknown key (did you mean 'to'?)",
        ),
        (
            MINIMAL_JOB + "from: again@acme.example\n",
            "job.yaml:5: from: duplicate key (first set on line 1)",
        ),
        (MINIMAL_JOB.replace("subject: Hello", "subject:"), "job.yaml:2: subject: is empty"),
    ],
)
def test_errors_name_file_and_line(tmp_path: Path, job: str, expected: str) -> None:
    path = make_job(tmp_path, job, templates=False)
    with pytest.raises(JobError) as caught:
        load_job(path, env={})
    assert str(caught.value).startswith(str(tmp_path) + "/" + expected)
    assert caught.value.file == str(path)


def test_unknown_key_without_suggestion_lists_keys(tmp_path: Path) -> None:
    path = make_job(tmp_path, MINIMAL_JOB + "zzz: 1\n", templates=False)
    with pytest.raises(JobError, match="zzz: unknown key") as caught:
        load_job(path, env={})
    assert caught.value.line == 5
    assert caught.value.hint is not None and "subject" in caught.value.hint


@pytest.mark.parametrize(
    ("missing", "message"),
    [("from", "missing required key 'from'"), ("subject", "missing required key 'subject'")],
)
def test_missing_required_key(tmp_path: Path, missing: str, message: str) -> None:
    job = "".join(line + "\n" for line in MINIMAL_JOB.splitlines() if not line.startswith(missing))
    path = make_job(tmp_path, job, templates=False)
    with pytest.raises(JobError, match=message):
        load_job(path, env={})


def test_a_body_is_required(tmp_path: Path) -> None:
    path = make_job(tmp_path, MINIMAL_JOB.replace("text_inline: Hi {{ first_name }}\n", ""))
    with pytest.raises(JobError, match="needs a body"):
        load_job(path, env={})


def test_yaml_syntax_error_reports_line(tmp_path: Path) -> None:
    path = make_job(tmp_path, MINIMAL_JOB + "headers:\n  X-A: [unclosed\nfoo: bar\n")
    with pytest.raises(JobError, match="invalid YAML") as caught:
        load_job(path, env={})
    assert caught.value.file == str(path)
    assert caught.value.line == 7  # where the parser found the problem


def test_yaml_bad_indentation_line(tmp_path: Path) -> None:
    path = make_job(tmp_path, "from: a@b.example\nsubject: x\n  text_inline: y\n")
    with pytest.raises(JobError) as caught:
        load_job(path, env={})
    assert caught.value.line == 3


def test_job_file_that_is_not_a_mapping(tmp_path: Path) -> None:
    path = make_job(tmp_path, "- a\n- b\n", templates=False)
    with pytest.raises(JobError, match="expected a mapping"):
        load_job(path, env={})
    path.write_text("")
    with pytest.raises(JobError, match="empty"):
        load_job(path, env={})


def test_missing_job_file(tmp_path: Path) -> None:
    with pytest.raises(MissingInputError, match="job file not found") as caught:
        load_job(tmp_path / "nope.yaml")
    assert caught.value.hint
    assert caught.value.exit_code == 66


def test_missing_template_file_names_file_and_line(tmp_path: Path) -> None:
    path = make_job(
        tmp_path, MINIMAL_JOB.replace("text_inline: Hi {{ first_name }}", "text: t/missing.txt")
    )
    with pytest.raises(MissingInputError) as caught:
        load_job(path, env={})
    message = str(caught.value)
    assert f"{path}:3: text" in message
    assert "t/missing.txt" in message


def test_missing_recipients_file_names_file_and_line(tmp_path: Path) -> None:
    path = make_job(tmp_path, MINIMAL_JOB.replace("recipients.csv}", "people.csv}"))
    with pytest.raises(MissingInputError, match=r"job\.yaml:4: recipients\.file.*people\.csv"):
        load_job(path, env={})


def test_template_must_be_utf8(tmp_path: Path) -> None:
    path = make_job(
        tmp_path, MINIMAL_JOB.replace("text_inline: Hi {{ first_name }}", "text: latin1.txt")
    )
    (tmp_path / "latin1.txt").write_bytes("line one\nGr\u00fc\u00dfe\n".encode("latin-1"))
    with pytest.raises(JobError, match=r"latin1\.txt:2: not valid UTF-8"):
        load_job(path, env={})


def test_template_bom_is_stripped(tmp_path: Path) -> None:
    path = make_job(
        tmp_path, MINIMAL_JOB.replace("text_inline: Hi {{ first_name }}", "text: bom.txt")
    )
    (tmp_path / "bom.txt").write_bytes(b"\xef\xbb\xbfHello\n")
    job = load_job(path, env={})
    assert job.text is not None and job.text.source == "Hello\n"


def test_content_keys_are_loaded(tmp_path: Path) -> None:
    job = load_job(make_job(tmp_path, FULL_JOB), env={})
    content = job.content
    assert content.inline_css is True
    assert content.transactional is False
    assert content.feedback_id == "welcome:acme:mail:acme"
    assert [a.path for a in content.attachments] == ["files/terms.pdf"]
    assert content.attachments[0].origin == f"{tmp_path / 'job.yaml'}:18"
    assert content.unsubscribe is not None
    assert content.unsubscribe.url == "https://acme.example/u/{{ token }}"
    assert content.unsubscribe.one_click is True
    assert content.dkim is not None
    assert (content.dkim.domain, content.dkim.selector) == ("acme.example", "s1")
    assert content.dkim.key_file == tmp_path / "dkim.pem"
    assert content.dkim.algorithm == "rsa-sha256"


def test_postgres_journal_url_from_job_or_flag(tmp_path: Path) -> None:
    path = make_job(tmp_path, MINIMAL_JOB + "journal: postgresql://db.example/mail\n")
    job = load_job(path, env={})
    assert job.journal == JournalLocation(url="postgresql://db.example/mail")
    assert job.journal.shared
    flagged = load_job(
        path, JobOverrides(journal=JournalLocation.parse("postgresql://other/db")), env={}
    )
    assert flagged.journal == JournalLocation(url="postgresql://other/db")
    # a file flag replaces the job's URL
    local_file = JournalLocation.parse(tmp_path / "j.db")
    local = load_job(path, JobOverrides(journal=local_file), env={})
    assert not local.journal.shared and local.journal.path == tmp_path / "j.db"


def test_postgres_journal_password_in_job_is_refused(tmp_path: Path) -> None:
    path = make_job(tmp_path, MINIMAL_JOB + "journal: postgresql://u:pw@db.example/mail\n")
    with pytest.raises(ConfigError, match=r"job\.yaml:5: journal: a password") as caught:
        load_job(path, env={})
    assert "pw" not in str(caught.value).replace("password", "")
    assert caught.value.hint is not None and "TXSEND_PG_PASSWORD" in caught.value.hint


def test_relay_url_error_in_job_names_line(tmp_path: Path) -> None:
    path = make_job(tmp_path, MINIMAL_JOB + "relays:\n  - url: smtp://u:secret@h.example\n")
    with pytest.raises(ConfigError) as caught:
        load_job(path, env={})
    assert "job.yaml:6: relays[0].url" in str(caught.value)
    assert "secret" not in str(caught.value)
    assert caught.value.exit_code == 78


def test_address_column_missing_is_a_job_error(tmp_path: Path) -> None:
    path = make_job(tmp_path, MINIMAL_JOB, recipients="mail,name\na@example.com,A\n")
    with pytest.raises(
        JobError, match=r"no column 'email' in the header \(columns: mail, name\)"
    ) as caught:
        load_job(path, env={})
    assert caught.value.hint is not None and "job.yaml:4" in caught.value.hint


# --------------------------------------------------------------------------- delivery, suppress

DELIVERY_JOB = (
    MINIMAL_JOB
    + """\
delivery:
  retry:
    attempts: 3
    backoff: 1m
    max_backoff: 1h
    max_age: 12h
  abort_on:
    error_rate: 0.05
  give_up_unreachable: 10m
"""
)


def test_delivery_block_mappings(tmp_path: Path) -> None:
    job = load_job(make_job(tmp_path, DELIVERY_JOB, templates=False), env={})
    assert job.delivery.retry == RetryPolicy(
        attempts=3, backoff=60.0, max_backoff=3600.0, max_age=43200.0
    )
    assert job.delivery.abort_on == AbortPolicy(error_rate=0.05, min_messages=100)
    assert job.delivery.give_up_unreachable == 600.0
    assert job.delivery.on_unknown == "resend"


def test_retry_keys_left_out_keep_defaults(tmp_path: Path) -> None:
    job = load_job(
        make_job(tmp_path, MINIMAL_JOB + "delivery: {retry: {attempts: 2}}\n", templates=False),
        env={},
    )
    assert job.delivery.retry == RetryPolicy(attempts=2)
    assert job.delivery.abort_on is None


def test_long_backoff_alone_raises_the_default_ceiling(tmp_path: Path) -> None:
    job = load_job(
        make_job(tmp_path, MINIMAL_JOB + "delivery: {retry: {backoff: 2h}}\n", templates=False),
        env={},
    )
    assert (job.delivery.retry.backoff, job.delivery.retry.max_backoff) == (7200.0, 7200.0)


def test_abort_on_error_rate_of_one_and_integer_forms(tmp_path: Path) -> None:
    job = load_job(
        make_job(
            tmp_path,
            MINIMAL_JOB + "delivery: {abort_on: {error_rate: 1, min_messages: 1}}\n",
            templates=False,
        ),
        env={},
    )
    assert job.delivery.abort_on == AbortPolicy(error_rate=1.0, min_messages=1)


@pytest.mark.parametrize(
    ("delivery", "expected"),
    [
        ("  retry: {attempts: 0}\n", "job.yaml:6: delivery.retry.attempts: must be at least 1"),
        ("  retry: {attempts: five}\n", "job.yaml:6: delivery.retry.attempts: expected a whole"),
        ("  retry: {attempts: 2.5}\n", "job.yaml:6: delivery.retry.attempts: expected a whole"),
        ("  retry: {attempts: true}\n", "job.yaml:6: delivery.retry.attempts: expected a whole"),
        ("  retry: {backoff: soon}\n", "job.yaml:6: delivery.retry.backoff: not a duration"),
        ("  retry: {backoff: 0}\n", "job.yaml:6: delivery.retry.backoff: a duration must be"),
        ("  retry: {max_age: -1d}\n", "job.yaml:6: delivery.retry.max_age: not a duration"),
        (
            "  retry:\n    backoff: 1m\n    max_backoff: 30s\n",
            "job.yaml:8: delivery.retry.max_backoff: must be at least backoff (60s), got 30s",
        ),
        (
            "  retry: {attempt: 3}\n",
            "job.yaml:6: delivery.retry.attempt: unknown key (did you mean 'attempts'?)",
        ),
        ("  abort_on: 0.2\n", "job.yaml:6: delivery.abort_on: expected a mapping"),
        (
            "  abort_on: {error_rate: 0}\n",
            "job.yaml:6: delivery.abort_on.error_rate: must be above 0 and at most 1, got 0",
        ),
        (
            "  abort_on: {error_rate: 1.5}\n",
            "job.yaml:6: delivery.abort_on.error_rate: must be above 0 and at most 1, got 1.5",
        ),
        (
            "  abort_on: {error_rate: 20}\n",
            "job.yaml:6: delivery.abort_on.error_rate: must be above 0 and at most 1, got 20 "
            "(for 20% write 0.2)",
        ),
        ("  abort_on: {error_rate: -0.1}\n", "job.yaml:6: delivery.abort_on.error_rate: must be"),
        ("  abort_on: {error_rate: .nan}\n", "job.yaml:6: delivery.abort_on.error_rate: must be"),
        (
            "  abort_on: {error_rate: high}\n",
            "job.yaml:6: delivery.abort_on.error_rate: expected a number between 0 and 1",
        ),
        (
            "  abort_on: {error_rate: 20%}\n",
            "job.yaml:6: delivery.abort_on.error_rate: expected a number between 0 and 1",
        ),
        (
            "  abort_on:\n    min_messages: 10\n",
            "job.yaml:6: missing required key 'delivery.abort_on.error_rate'",
        ),
        (
            "  abort_on:\n    error_rate: 0.1\n    min_messages: 0\n",
            "job.yaml:8: delivery.abort_on.min_messages: must be at least 1, got 0",
        ),
        (
            "  abort_on: {error_rate: 0.1, min_messages: lots}\n",
            "job.yaml:6: delivery.abort_on.min_messages: expected a whole number",
        ),
        (
            "  abort_on: {error_rate: 0.1, max_messages: 3}\n",
            "job.yaml:6: delivery.abort_on.max_messages: unknown key "
            "(did you mean 'min_messages'?)",
        ),
        (
            "  on_unknown: skip\n  give_up_unreachable: never\n",
            "job.yaml:7: delivery.give_up_unreachable: not a duration",
        ),
        (
            "  give_up_unreachable: 0s\n",
            "job.yaml:6: delivery.give_up_unreachable: a duration must be positive",
        ),
    ],
)
def test_delivery_errors_name_file_and_line(tmp_path: Path, delivery: str, expected: str) -> None:
    path = make_job(tmp_path, MINIMAL_JOB + "delivery:\n" + delivery, templates=False)
    with pytest.raises(JobError) as caught:
        load_job(path, env={})
    assert str(caught.value).startswith(f"{tmp_path}/{expected}")
    assert caught.value.file == str(path)


def test_suppress_single_string(tmp_path: Path) -> None:
    job = load_job(
        make_job(tmp_path, MINIMAL_JOB + "suppress: lists/bounced.txt\n", templates=False),
        env={},
    )
    assert job.suppress == (tmp_path / "lists" / "bounced.txt",)


def test_suppress_paths_are_absolute_and_deduplicated(tmp_path: Path) -> None:
    (tmp_path / "job").mkdir()
    path = make_job(
        tmp_path / "job",
        MINIMAL_JOB
        + "suppress:\n  - suppressed.csv\n  - ./suppressed.csv\n  - ../global.txt\n  - "
        + str(tmp_path / "abs.txt")
        + "\n",
        templates=False,
    )
    (tmp_path / "global.txt").write_text("x@example.com\n")
    (tmp_path / "abs.txt").write_text("y@example.com\n")
    job = load_job(path, env={})
    assert job.suppress == (
        tmp_path / "job" / "suppressed.csv",
        tmp_path / "global.txt",
        tmp_path / "abs.txt",
    )
    assert all(p.is_absolute() for p in job.suppress)


@pytest.mark.parametrize(
    ("suppress", "store"),
    [
        ("suppress: {store: true}\n", "default"),
        ("suppress: {store: default}\n", "default"),
        ("suppress: {store: postgresql://db.example/txsend}\n", "postgresql://db.example/txsend"),
        ("suppress: {store: false}\n", None),
    ],
)
def test_suppress_store_forms(tmp_path: Path, suppress: str, store: str | None) -> None:
    job = load_job(make_job(tmp_path, MINIMAL_JOB + suppress, templates=False), env={})
    assert job.suppress_store == store
    assert job.suppress == ()


def test_suppress_store_path_is_relative_to_the_job_and_files_still_read(tmp_path: Path) -> None:
    (tmp_path / "lists.txt").write_text("x@example.com\n")
    job = load_job(
        make_job(
            tmp_path,
            MINIMAL_JOB + "suppress: {store: state/supp.db, files: [lists.txt]}\n",
            templates=False,
        ),
        env={},
    )
    assert job.suppress_store == str(tmp_path / "state" / "supp.db")
    assert job.suppress == (tmp_path / "lists.txt",)


@pytest.mark.parametrize(
    ("yaml", "return_path", "verp", "pattern"),
    [
        ("", None, False, None),
        ("return_path: bounces@acme.example\n", "bounces@acme.example", False, None),
        ("return_path: <b@acme.example>\nverp: true\n", "b@acme.example", True, None),
        ("verp: 'b-{token}@acme.example'\n", None, True, "b-{token}@acme.example"),
        ("verp: false\n", None, False, None),
    ],
)
def test_envelope_forms(
    tmp_path: Path, yaml: str, return_path: str | None, verp: bool, pattern: str | None
) -> None:
    job = load_job(make_job(tmp_path, MINIMAL_JOB + yaml, templates=False), env={})
    envelope = job.content.envelope
    assert (envelope.return_path, envelope.verp, envelope.verp_pattern) == (
        return_path,
        verp,
        pattern,
    )


@pytest.mark.parametrize(
    ("yaml", "expected"),
    [
        ("return_path: not-an-address\n", "job.yaml:5: return_path: no '@' in address"),
        ("return_path: 'a@b@c'\n", "job.yaml:5: return_path: more than one '@'"),
        ("verp: 3\n", "job.yaml:5: verp: expected true, false or an address with {token}"),
        ("verp: 'bounces@acme.example'\n", "job.yaml:5: verp: must hold {token} once"),
        ("verp: 'b@{token}.example'\n", "job.yaml:5: verp: {token} belongs in the local part"),
        (
            "verp: 'a-very-long-prefix-for-bounces-{token}@acme.example'\n",
            "job.yaml:5: verp: with its 44-character token the local part is over 64",
        ),
        ("verp: 'b {token}@acme.example'\n", "job.yaml:5: verp: does not make an address"),
    ],
)
def test_envelope_errors_name_the_line(tmp_path: Path, yaml: str, expected: str) -> None:
    with pytest.raises(JobError) as caught:
        load_job(make_job(tmp_path, MINIMAL_JOB + yaml, templates=False), env={})
    assert str(caught.value).startswith(str(tmp_path / expected)), str(caught.value)


def test_suppress_empty_list(tmp_path: Path) -> None:
    job = load_job(make_job(tmp_path, MINIMAL_JOB + "suppress: []\n", templates=False), env={})
    assert job.suppress == ()


def test_missing_suppression_file_names_file_and_line(tmp_path: Path) -> None:
    path = make_job(
        tmp_path, MINIMAL_JOB + "suppress:\n  - suppressed.csv\n  - gone.txt\n", templates=False
    )
    with pytest.raises(MissingInputError) as caught:
        load_job(path, env={})
    assert str(caught.value) == f"{path}:7: suppress[1]: suppression file not found: gone.txt"
    assert caught.value.hint is not None and str(tmp_path / "gone.txt") in caught.value.hint
    assert caught.value.exit_code == 66

    path = make_job(tmp_path, MINIMAL_JOB + "suppress: gone.txt\n", templates=False)
    with pytest.raises(MissingInputError, match=r"job\.yaml:5: suppress: suppression file not fo"):
        load_job(path, env={})


@pytest.mark.parametrize(
    ("suppress", "expected"),
    [
        ("suppress: 5\n", "job.yaml:5: suppress: expected a list, got the number 5"),
        ("suppress: {file: a.csv}\n", "job.yaml:5: suppress.file: unknown key (did you mean"),
        ("suppress: {store: 5}\n", "job.yaml:5: suppress.store: expected true, a file path"),
        ("suppress: {store: 'mysql://x/y'}\n", "job.yaml:5: suppress.store: a store URL is"),
        ("suppress: {files: [7]}\n", "job.yaml:5: suppress.files[0]: expected a file path"),
        ("suppress:\n  - suppressed.csv\n  - 7\n", "job.yaml:7: suppress[1]: expected a file path"),
        ('suppress: [""]\n', "job.yaml:5: suppress[0]: expected a file path"),
        ("suppress: [lists]\n", "job.yaml:5: suppress[0]: lists is not a file"),
    ],
)
def test_suppress_errors_name_file_and_line(tmp_path: Path, suppress: str, expected: str) -> None:
    path = make_job(tmp_path, MINIMAL_JOB + suppress, templates=False)
    with pytest.raises(JobError) as caught:
        load_job(path, env={})
    assert str(caught.value).startswith(f"{tmp_path}/{expected}")


def test_missing_fixed_attachment_is_found_at_load(tmp_path: Path) -> None:
    path = make_job(tmp_path, MINIMAL_JOB + "attachments: [{path: nowhere.pdf}]\n")
    with pytest.raises(MissingInputError, match=r"job\.yaml:5: attachments\[0\]\.path: "):
        load_job(path, env={})
    # a per-recipient path is checked per row, when it is rendered
    path.write_text(MINIMAL_JOB + "attachments: ['{{ email }}.pdf']\n")
    assert load_job(path, env={}).content.attachments[0].path == "{{ email }}.pdf"


# --------------------------------------------------------------------------- overrides


def test_overrides_win(tmp_path: Path) -> None:
    path = make_job(tmp_path, FULL_JOB)
    (tmp_path / "other.txt").write_text("other body")
    overrides = JobOverrides(
        from_addr="Other <other@acme.example>",
        subject="Override {{ x }}",
        text=tmp_path / "other.txt",
        relays=("smtp://127.0.0.1:2525",),
        journal=JournalLocation.parse(tmp_path / "j.db"),
        name="renamed",
    )
    job = load_job(path, overrides, env={"TXSEND_RELAY": "smtp://ignored.example"})
    assert job.name == "renamed"
    assert job.from_addr == "Other <other@acme.example>"
    assert job.subject.source == "Override {{ x }}" and job.subject.origin == "--subject"
    assert job.text is not None and job.text.source == "other body"
    assert job.html is not None and job.html.origin == "templates/welcome.html"
    assert [r.url for r in job.relays] == ["smtp://127.0.0.1:2525"]
    assert job.journal.path == tmp_path / "j.db"
    assert job.flags.to_stored() == {
        "from": "Other <other@acme.example>",
        "subject": "Override {{ x }}",
        "text": str(tmp_path / "other.txt"),
        "relay": "smtp://127.0.0.1:2525",
        "name": "renamed",
    }


def test_overrides_fill_required_keys(tmp_path: Path) -> None:
    path = make_job(tmp_path, "recipients: recipients.csv\n")
    (tmp_path / "b.html").write_text("<p>hi</p>")
    job = load_job(
        path,
        JobOverrides(from_addr="a@acme.example", subject="S", html=tmp_path / "b.html"),
        env={},
    )
    assert job.text is None and job.html is not None


def test_txsend_relay_env_is_the_default(tmp_path: Path) -> None:
    path = make_job(tmp_path, MINIMAL_JOB)
    job = load_job(path, env={"TXSEND_RELAY": "smtp://localhost:2525"})
    [relay] = job.relays
    assert (relay.host, relay.port, relay.tls) == ("localhost", 2525, TlsMode.NONE)
    assert job.flags.to_stored() == {}
    assert load_job(path, env={}).relays == ()


def test_txsend_relay_env_does_not_replace_job_relays(tmp_path: Path) -> None:
    path = make_job(tmp_path, MINIMAL_JOB + "relays: [smtp://relay.example]\n")
    job = load_job(path, env={"TXSEND_RELAY": "smtp://localhost:2525"})
    assert [r.host for r in job.relays] == ["relay.example"]


def test_a_relay_flag_naming_a_job_relay_keeps_its_settings(tmp_path: Path) -> None:
    """--relay replaces the relays; one with the same scheme, user, host and port as a
    job relay is that relay (its rate, connections, password source); others are new."""
    path = make_job(
        tmp_path,
        MINIMAL_JOB + "relays:\n"
        "  - url: smtp://mailer@SMTP.acme.example:587\n"
        "    rate: 100/day\n    connections: 2\n    password_env: ACME_PW\n",
    )
    flags = JobOverrides(
        relays=(
            "smtp://mailer@smtp.acme.example,smtp://other@smtp.acme.example:587,"
            "smtps://mailer@smtp.acme.example:587",
        )
    )
    same, other_user, other_scheme = load_job(path, flags, env={}).relays
    assert (same.url, same.rate, same.connections, same.password_env) == (
        "smtp://mailer@SMTP.acme.example:587",
        "100/day",
        2,
        "ACME_PW",
    )
    assert (other_user.rate, other_user.username, other_user.connections) == (None, "other", 4)
    assert (other_scheme.rate, other_scheme.tls) == (None, TlsMode.IMPLICIT)


def test_bad_txsend_relay_is_a_config_error(tmp_path: Path) -> None:
    path = make_job(tmp_path, MINIMAL_JOB)
    with pytest.raises(ConfigError, match="TXSEND_RELAY"):
        load_job(path, env={"TXSEND_RELAY": "http://x"})


def test_csv_alone_job(tmp_path: Path) -> None:
    data = tmp_path / "list.csv"
    data.write_text("email,first_name\nada@example.com,Ada\n")
    (tmp_path / "t.txt").write_text("Hi {{ first_name }}")
    overrides = JobOverrides(
        from_addr="Acme <noreply@acme.example>",
        subject="Hello {{ first_name }}",
        text=tmp_path / "t.txt",
        relays=("smtp://127.0.0.1:2525", "smtps://backup.example"),
    )
    job = load_job(data, overrides, env={})
    assert job.name == "list"
    assert job.source == data and job.recipients.file == data
    assert job.journal.path == tmp_path / "list.journal.db"
    assert job.subject.origin == "--subject"
    assert job.text is not None and job.text.path == tmp_path / "t.txt"
    assert len(job.relays) == 2
    assert job.flags.to_stored() == {
        "from": "Acme <noreply@acme.example>",
        "subject": "Hello {{ first_name }}",
        "text": str(tmp_path / "t.txt"),
        "relay": "smtp://127.0.0.1:2525,smtps://backup.example",
    }
    assert job.input_files() == [data, tmp_path / "t.txt"]
    [row] = rows_of(job)
    assert isinstance(row, Row) and row.address == "ada@example.com"


def test_jsonl_alone_job(tmp_path: Path) -> None:
    data = tmp_path / "list.jsonl"
    data.write_text('{"email": "a@example.com"}\n')
    job = load_job(data, JobOverrides(from_addr="a@acme.example", subject="s", html=data), env={})
    assert [r.address for r in rows_of(job) if isinstance(r, Row)] == ["a@example.com"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (JobOverrides(subject="s", text=Path("t.txt")), "a CSV-alone job needs --from$"),
        (JobOverrides(from_addr="a@acme.example", text=Path("t.txt")), "needs --subject$"),
        (JobOverrides(from_addr="a@acme.example", subject="s"), "needs --text or --html$"),
        (JobOverrides(), "needs --from, --subject and --text or --html$"),
    ],
)
def test_csv_alone_job_needs_flags(tmp_path: Path, overrides: JobOverrides, message: str) -> None:
    data = tmp_path / "list.csv"
    data.write_text("email\na@example.com\n")
    with pytest.raises(UsageError, match=message) as caught:
        load_job(data, overrides, env={})
    assert caught.value.exit_code == 64


def test_csv_alone_missing_text_file(tmp_path: Path) -> None:
    data = tmp_path / "list.csv"
    data.write_text("email\na@example.com\n")
    overrides = JobOverrides(from_addr="a@acme.example", subject="s", text=tmp_path / "no.txt")
    with pytest.raises(MissingInputError, match="--text"):
        load_job(data, overrides, env={})


def test_unknown_job_suffix(tmp_path: Path) -> None:
    path = tmp_path / "job.conf"
    path.write_text("x")
    with pytest.raises(UsageError):
        load_job(path)


# --------------------------------------------------------------------------- relay URLs


@pytest.mark.parametrize(
    ("url", "host", "port", "tls", "username"),
    [
        ("smtp://smtp.example.com", "smtp.example.com", 587, TlsMode.STARTTLS, None),
        ("smtp://smtp.example.com:2587", "smtp.example.com", 2587, TlsMode.STARTTLS, None),
        ("smtp://mx.example.com?tls=none", "mx.example.com", 25, TlsMode.NONE, None),
        ("smtp://mx.example.com:25?tls=none", "mx.example.com", 25, TlsMode.NONE, None),
        (
            "smtp://u@smtp.example.com:587?tls=starttls",
            "smtp.example.com",
            587,
            TlsMode.STARTTLS,
            "u",
        ),
        ("smtp://127.0.0.1:2525", "127.0.0.1", 2525, TlsMode.NONE, None),
        ("smtp://127.0.0.1", "127.0.0.1", 25, TlsMode.NONE, None),
        ("smtp://localhost:1025", "localhost", 1025, TlsMode.NONE, None),
        ("smtp://[::1]:2525", "::1", 2525, TlsMode.NONE, None),
        ("smtp://127.0.0.1:2525?tls=starttls", "127.0.0.1", 2525, TlsMode.STARTTLS, None),
        ("smtps://smtp.example.com", "smtp.example.com", 465, TlsMode.IMPLICIT, None),
        ("smtps://u@smtp.example.com:4650", "smtp.example.com", 4650, TlsMode.IMPLICIT, "u"),
        ("SMTP://Smtp.Example.com", "smtp.example.com", 587, TlsMode.STARTTLS, None),
        (
            "smtp://apikey%40acme@smtp.example.com",
            "smtp.example.com",
            587,
            TlsMode.STARTTLS,
            "apikey@acme",
        ),
    ],
)
def test_parse_relay_url(
    url: str, host: str, port: int, tls: TlsMode, username: str | None
) -> None:
    relay = parse_relay_url(url)
    assert (relay.host, relay.port, relay.tls, relay.username) == (host, port, tls, username)
    assert relay.url == url
    assert relay.name == f"{host}:{port}"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://smtp.example.com", "unsupported scheme http://"),
        ("smtp.example.com:587", "unsupported scheme"),
        ("smtp://smtp.example.com:99999", "bad relay URL"),
        ("smtp://smtp.example.com:port", "bad relay URL"),
        ("smtp://smtp.example.com:0", "port 0"),
        ("smtp://127.0.0.1:?tls=none", "the port after .:. is empty"),
        ("smtps://user@smtp.example.com:", "the port after .:. is empty"),
        ("smtp://", "no host"),
        ("smtp://smtp.example.com/path", "unexpected path"),
        ("smtp://smtp.example.com?tls=implicit", "tls must be starttls or none"),
        ("smtp://smtp.example.com?verify=no", "unknown query parameter 'verify'"),
        ("smtps://smtp.example.com?tls=none", "unknown query parameter 'tls'"),
    ],
)
def test_parse_relay_url_errors(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        parse_relay_url(url)
    assert url in str(caught.value)
    assert caught.value.exit_code == 78


@pytest.mark.parametrize(
    "url",
    ["smtp://user:hunter2@smtp.example.com", "smtps://u:pa/ss@h.example", "smtp://u:@h.example"],
)
def test_password_in_url_is_refused_and_not_shown(url: str) -> None:
    with pytest.raises(ConfigError, match="passwords do not belong in relay URLs") as caught:
        parse_relay_url(url)
    message = str(caught.value) + str(caught.value.hint)
    assert "hunter2" not in message and "pa/ss" not in message


def test_parse_relay_url_options() -> None:
    relay = parse_relay_url(
        "smtp://u@smtp.example.com",
        password_env="SMTP_PASSWORD",
        connections=16,
        messages_per_connection=50,
        rate="600/min",
        priority=2,
        weight=3,
        ca_file="ca.pem",
    )
    assert relay.password_env == "SMTP_PASSWORD"
    assert (relay.connections, relay.messages_per_connection, relay.rate) == (16, 50, "600/min")
    assert (relay.priority, relay.weight, relay.ca_file) == (2, 3, Path("ca.pem"))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"connections": 1001}, "between 1 and 1000"),
        ({"connections": True}, "whole number"),
        ({"bogus": 1}, "unknown option 'bogus'"),
        ({"password_env": "A", "password_file": "f"}, "only one of"),
        ({"rate": "5 per second"}, "expected a rate"),
    ],
)
def test_parse_relay_url_bad_options(options: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_relay_url("smtp://u@smtp.example.com", **options)


def test_password_source_needs_user_and_tls() -> None:
    with pytest.raises(ConfigError, match="no user name"):
        parse_relay_url("smtp://smtp.example.com", password_env="P")
    with pytest.raises(ConfigError, match="without TLS"):
        parse_relay_url("smtp://u@127.0.0.1:2525", password_env="P")
    relay = parse_relay_url("smtp://u@127.0.0.1:2525", password_env="P", allow_insecure_auth=True)
    assert relay.allow_insecure_auth is True


# --------------------------------------------------------------------------- sizes, durations


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1000, 1000),
        ("1000", 1000),
        ("10MB", 10 * 1024 * 1024),
        ("512KB", 512 * 1024),
        ("512 kb", 512 * 1024),
        ("1.5M", 1536 * 1024),
        ("2MiB", 2 * 1024 * 1024),
        ("1GB", 1024**3),
        ("100B", 100),
    ],
)
def test_parse_size(value: str | int, expected: int) -> None:
    assert parse_size(value) == expected


@pytest.mark.parametrize("value", ["", "MB", "10XB", "-5MB", 0, -1, "0KB"])
def test_parse_size_errors(value: str | int) -> None:
    with pytest.raises(ValueError):
        parse_size(value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(30, 30.0), (1.5, 1.5), ("30s", 30.0), ("2m", 120.0), ("2min", 120.0), ("1h", 3600.0),
     ("1h30m", 5400.0), ("500ms", 0.5), ("2d", 172800.0), ("45", 45.0)],
)  # fmt: skip
def test_parse_duration(value: str | float, expected: float) -> None:
    assert parse_duration(value) == expected


@pytest.mark.parametrize(
    "value",
    ["", "soon", "5 parsecs", 0, "-1s", "1h junk", "nan", "inf", "Infinity", "1e400",
     float("nan"), float("inf")],
)  # fmt: skip
def test_parse_duration_errors(value: str | float) -> None:
    # nan and inf are no limit at all: every wait must end
    with pytest.raises(ValueError):
        parse_duration(value)


# --------------------------------------------------------------------------- sample jobs


def test_sample_welcome_job() -> None:
    path = REPO / "sample_jobs" / "welcome.yaml"
    job = load_job(path, JobOverrides(relays=("smtp://127.0.0.1:2525",)), env={})
    assert job.journal.path == path.parent / "welcome.journal.db"
    assert job.text is not None and job.html is not None
    rows = rows_of(job)
    assert all(isinstance(r, Row) for r in rows)
    assert len(rows) >= 40
    domains = {r.address.rpartition("@")[2] for r in rows if isinstance(r, Row)}
    assert domains <= {"example.com", "example.org", "example.net"}
    names = [r.data["last_name"] for r in rows if isinstance(r, Row)]
    assert "Smith, Jr." in names
    assert any(not name.isascii() for name in names)
    assert load_job(path, env={}).relays == ()


def test_sample_newsletter_job() -> None:
    folder = REPO / "sample_jobs"
    overrides = JobOverrides(
        from_addr="Acme <news@acme.example>",
        subject="News for {{ first_name }}",
        text=folder / "newsletter.txt",
    )
    job = load_job(folder / "newsletter.csv", overrides, env={})
    rows = rows_of(job)
    assert rows and all(isinstance(r, Row) for r in rows)


# --------------------------------------------------------------------------- --abort-on-error-rate


def test_abort_on_error_rate_override_keeps_min_messages(tmp_path: Path) -> None:
    path = make_job(tmp_path, FULL_JOB)
    job = load_job(path, JobOverrides(abort_on_error_rate=0.5), env={})
    assert job.delivery.abort_on == AbortPolicy(error_rate=0.5, min_messages=50)
    assert job.delivery.retry.attempts == 4  # the rest of delivery untouched
    assert job.delivery.on_unknown == "skip"
    assert job.flags.to_stored() == {"abort_on_error_rate": "0.5"}


def test_abort_on_error_rate_override_without_abort_on(tmp_path: Path) -> None:
    job = load_job(make_job(tmp_path, MINIMAL_JOB), JobOverrides(abort_on_error_rate=1.0), env={})
    assert job.delivery.abort_on == AbortPolicy(error_rate=1.0, min_messages=100)
    assert job.flags.to_stored() == {"abort_on_error_rate": "1.0"}
    stored = JobOverrides.from_stored(job.flags.to_stored())  # round-trips for resume
    assert stored.abort_on_error_rate == 1.0


def test_abort_on_error_rate_override_on_csv_alone_job(tmp_path: Path) -> None:
    data = tmp_path / "list.csv"
    data.write_text("email\na@example.com\n")
    overrides = JobOverrides(
        from_addr="a@acme.example", subject="s", html=data, abort_on_error_rate=0.25
    )
    job = load_job(data, overrides, env={})
    assert job.delivery.abort_on == AbortPolicy(error_rate=0.25)
    assert job.flags.to_stored()["abort_on_error_rate"] == "0.25"
    assert job.suppress == ()


@pytest.mark.parametrize("rate", [0.0, -0.5, 1.01, 20.0, float("nan"), float("inf")])
def test_bad_abort_on_error_rate_override_is_a_usage_error(tmp_path: Path, rate: float) -> None:
    with pytest.raises(UsageError, match="--abort-on-error-rate must be above 0 and at most 1"):
        load_job(make_job(tmp_path, MINIMAL_JOB), JobOverrides(abort_on_error_rate=rate), env={})
