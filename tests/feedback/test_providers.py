"""read_events over samples shaped as SES, SNS, Postmark, SendGrid and Mailgun publish them."""

from __future__ import annotations

from pathlib import Path

import pytest

from txsend.errors import JobError, MissingInputError, UsageError
from txsend.feedback.events import Feedback, Kind, Unparsed
from txsend.feedback.providers import read_events

SAMPLES = Path(__file__).parent / "samples"
T1 = "tx1fagujkaerukz4jvpg66ajdivtytk6n54sor6efvy5"
T2 = "tx1fagujk73olvgdwkqzbb7w4xkmhmvbscaqmpgr7owb"
MID1 = "<0123456789abcdef0123456789abcdef@acme.example>"
MID2 = "<fedcba9876543210fedcba9876543210@acme.example>"


def events(name: str, provider: str | None = None) -> list[Feedback | Unparsed]:
    return list(read_events(SAMPLES / name, provider))


def summary(found: list[Feedback | Unparsed]) -> list[tuple[object, ...]]:
    return [
        (f.kind, f.recipient, f.status, f.code, f.event_id)
        if isinstance(f, Feedback)
        else ("unparsed", f.source.rsplit(":", 1)[1], f.reason)
        for f in found
    ]


def test_an_ses_bounce_inside_an_sns_notification() -> None:
    found = events("ses_bounce_sns.json")
    fid = "ses:0102019a3f6b2e3f-11112222-3333-4444-5555-666677778888-000000"
    assert summary(found) == [
        (Kind.FAILED, "nobody@example.com", "5.1.1", 550, f"{fid}:0"),
        (Kind.FAILED, "gone@example.org", "5.1.2", 550, f"{fid}:1"),
    ]
    first = found[0]
    assert isinstance(first, Feedback)
    assert first.detector == "ses" and first.tokens == (T1,) and first.message_id == MID1
    assert first.diagnostic == "smtp; 550 5.1.1 user unknown"
    assert first.reporting_mta == "dsn; a4-8.smtp-out.eu-west-1.amazonses.example"
    assert first.occurred_at == pytest.approx(1793700906.477)
    assert first.source == f"events:{SAMPLES / 'ses_bounce_sns.json'}:1"


def test_an_ses_complaint_notification() -> None:
    [one] = events("ses_complaint.json")
    assert isinstance(one, Feedback)
    assert (one.kind, one.recipient, one.complaint_type) == (
        Kind.COMPLAINT,
        "frank@example.net",
        "abuse",
    )
    assert one.event_id == "ses:0102019a3f7c4d5e-aaaabbbb-cccc-dddd-eeee-ffff00001111-000000:0"
    assert one.tokens == (T2,) and one.message_id == MID2


def test_ses_event_publishing_lines_each_judged_alone() -> None:
    found = events("ses_events.jsonl")
    assert [s[:4] for s in summary(found)] == [
        (Kind.DELAYED, "full@example.com", "4.2.2", 452),  # a Transient bounce
        (Kind.DELAYED, "slow@example.com", "4.4.1", 421),  # DeliveryDelay
        (Kind.DELIVERED, "ok@example.com", "2.6.0", 250),
        ("unparsed", "4", "ses: Open events say nothing about delivery"),
        ("unparsed", "5", "not JSON: Expecting property name enclosed in double quotes"),
        ("unparsed", "6", "not an event of SES, Postmark, SendGrid or Mailgun"),
    ]
    delay = found[1]
    assert (
        isinstance(delay, Feedback)
        and delay.event_id.startswith("ses:")
        and len(delay.event_id) == 4 + 64 + 2
    )


def test_postmark_bounce_spam_complaint_and_an_ignored_type() -> None:
    [bounce] = events("postmark_bounce.json")
    assert isinstance(bounce, Feedback)
    assert summary([bounce]) == [
        (Kind.FAILED, "john@example.com", "5.1.1", 550, "postmark:4323372036854775807")
    ]
    assert bounce.tokens == (T1,)  # from Metadata
    assert bounce.occurred_at == pytest.approx(1793896434.907026)
    assert summary(events("postmark_more.jsonl")) == [
        (Kind.COMPLAINT, "john@example.com", None, None, "postmark:42"),
        ("unparsed", "2", "postmark: AutoResponder bounces are not delivery failures"),
    ]


def test_a_sendgrid_array_with_each_event_kind() -> None:
    found = events("sendgrid_events.json")
    assert summary(found) == [
        (Kind.FAILED, "nobody@example.com", "5.1.1", 550, "sendgrid:6g4ZI7SA-xmRDv57GoPIPw=="),
        (Kind.DELAYED, "blocked@example.com", "5.7.1", 554, "sendgrid:rWVYmVk90MjZJ9iohOBa3w=="),
        (Kind.FAILED, "dropped@example.com", "5.0.0", None, "sendgrid:zmzJhfJgAfUSOW80yEbPyw=="),
        (Kind.DELAYED, "later@example.com", None, 400, "sendgrid:t7LEShmowp86DTdUW8M-GQ=="),
        (Kind.DELIVERED, "ok@example.com", None, 250, "sendgrid:rWVYmVk90MjZJ9iohOBa3x=="),
        (Kind.COMPLAINT, "angry@example.com", None, None, "sendgrid:37nvH5QBz858KGVYCM4uOA=="),
        ("unparsed", "8", "sendgrid: open events say nothing about delivery"),
        ("unparsed", "9", "not an event of SES, Postmark, SendGrid or Mailgun"),
    ]
    first = found[0]
    assert isinstance(first, Feedback) and first.tokens == (T1,)  # a custom argument
    assert first.message_id == MID1 and first.occurred_at == 1793700900.0


def test_mailgun_webhooks() -> None:
    found = events("mailgun_events.jsonl")
    assert summary(found) == [
        (Kind.FAILED, "alice@example.com", "5.1.1", 550, "mailgun:G9Bn5sl1TC6nu79C8C0bwg"),
        (Kind.DELAYED, "alice@example.com", "4.2.2", 452, "mailgun:Fs7-5t81S2ioObflTnr7Iw"),
        (Kind.FAILED, "alice@example.com", None, None, "mailgun:SuPpReSsEdBoUnCe000001"),
        (Kind.COMPLAINT, "alice@example.com", None, None, "mailgun:-Agny091SquKnsrW2NEKUA"),
    ]
    first = found[0]
    assert isinstance(first, Feedback)
    assert first.tokens == (T2,) and first.message_id == MID2  # <> added
    assert first.remote_mta == "mx.example.com"


def test_a_named_provider_is_the_only_reader_tried() -> None:
    found = events("postmark_bounce.json", provider="sendgrid")
    assert summary(found) == [("unparsed", "1", "sendgrid: None events say nothing about delivery")]
    with pytest.raises(UsageError, match="unknown event provider 'nope'"):
        read_events(SAMPLES / "postmark_bounce.json", provider="nope")


def test_reading_twice_gives_the_same_event_ids(tmp_path: Path) -> None:
    first = [f.event_id for f in events("ses_events.jsonl") if isinstance(f, Feedback)]
    again = [f.event_id for f in events("ses_events.jsonl") if isinstance(f, Feedback)]
    assert first == again and len(set(first)) == 3
    # the same events reformatted keep their ids: canonical JSON, not the file's bytes
    reformatted = tmp_path / "events.json"
    lines = (SAMPLES / "ses_events.jsonl").read_text().splitlines()[:3]
    reformatted.write_text("[" + ",\n\n".join(lines) + "]")
    assert [f.event_id for f in read_events(reformatted) if isinstance(f, Feedback)] == first


def test_a_missing_file_and_a_file_that_is_not_json(tmp_path: Path) -> None:
    with pytest.raises(MissingInputError, match=r"nothing\.json"):
        read_events(tmp_path / "nothing.json")
    bad = tmp_path / "bad.json"
    bad.write_text('\n\n<html>{"not": "json"}</html>\n')
    with pytest.raises(JobError, match=r"bad.json:3: not JSON"):
        read_events(bad)
    broken = tmp_path / "broken.json"
    broken.write_text('[{"a": 1},\n {"b": 2\n')
    with pytest.raises(JobError, match=r"broken.json:\d+: not JSON"):
        read_events(broken)
    latin = tmp_path / "latin.json"
    latin.write_bytes(b'{"a": 1}\n{"b": "caf\xe9"}\n')
    with pytest.raises(JobError, match=r"latin\.json:2: not UTF-8"):
        read_events(latin)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", []),
        ("[]", []),
        ("42", [("unparsed", "1", "not a JSON object but int")]),
        (
            '[1, "x"]',
            [
                ("unparsed", "1", "not a JSON object but int"),
                ("unparsed", "1", "not a JSON object but str"),
            ],
        ),
        (
            '{"Type": "SubscriptionConfirmation", "Message": "x", "TopicArn": "t"}',
            [("unparsed", "1", "ses: an SNS SubscriptionConfirmation, not an event")],
        ),
        (
            '{"Type": "Notification", "Message": "{nope", "TopicArn": "t"}',
            [("unparsed", "1", "ses: the SNS Message is not a JSON object")],
        ),
        (
            '{"notificationType": "Bounce", "mail": {}, '
            '"bounce": {"bounceType": "Odd", "bouncedRecipients": [{}]}}',
            [("unparsed", "1", "ses: unknown bounceType 'Odd'")],
        ),
        (
            '{"notificationType": "Bounce", "mail": {}, "bounce": {"bouncedRecipients": "x"}}',
            [("unparsed", "1", "ses: the event names no recipient")],
        ),
        (
            '{"RecordType": "Open"}',
            [("unparsed", "1", "postmark: Open records say nothing about delivery")],
        ),
        (
            '{"event-data": {"event": "failed"}}',
            [("unparsed", "1", "mailgun: a failed event of unknown severity None")],
        ),
        (
            '{"event-data": {"event": "opened"}}\n[{"sg_event_id": "x", "event": "open"}]',
            [
                ("unparsed", "1", "mailgun: opened events say nothing about delivery"),
                ("unparsed", "2", "sendgrid: open events say nothing about delivery"),
            ],
        ),
    ],
)
def test_objects_not_understood_are_unparsed_with_their_line(
    tmp_path: Path, text: str, expected: list[tuple[object, ...]]
) -> None:
    path = tmp_path / "events.json"
    path.write_text(text)
    assert summary(list(read_events(path))) == expected
