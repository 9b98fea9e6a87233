"""parse_message over a corpus of real-shaped bounces and complaints, and over hostile input.

The good reports are asserted field by field; the hostile ones must give no exception, an
Unparsed with a reason or a bounded result, and stay within generous CPU-time bounds.
"""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from txsend.feedback.events import Feedback, Kind, Unparsed
from txsend.feedback.reports import MAX_MESSAGE_BYTES, parse_message

CORPUS = Path(__file__).parent / "corpus"
T1 = "tx1fagujkaerukz4jvpg66ajdivtytk6n54sor6efvy5"  # welcome, <0123...cdef@acme.example>
T2 = "tx1fagujk73olvgdwkqzbb7w4xkmhmvbscaqmpgr7owb"  # welcome, <fedc...3210@acme.example>
MID1 = "<0123456789abcdef0123456789abcdef@acme.example>"
MID2 = "<fedcba9876543210fedcba9876543210@acme.example>"


def parsed(name: str) -> list[Feedback]:
    raw = (CORPUS / name).read_bytes()
    found = parse_message(raw, f"maildir:new/{name}")
    assert isinstance(found, list), found
    digest = hashlib.sha256(raw).hexdigest()
    assert [f.event_id for f in found] == [f"mail:{digest}:{i}" for i in range(len(found))]
    assert {f.source for f in found} == {f"maildir:new/{name}"}
    return found


def test_a_postfix_dsn_gives_every_field() -> None:
    [one] = parsed("postfix.eml")
    assert one.kind is Kind.FAILED and one.detector == "dsn"
    assert one.recipient == "nobody@example.org"
    assert one.original_recipient == "Nobody@example.org"
    assert one.status == "5.1.1" and one.code == 550
    assert one.diagnostic == (
        "smtp; 550 5.1.1 <nobody@example.org>: Recipient address rejected: "
        "User unknown in local recipient table"
    )
    assert one.reporting_mta == "dns; mx.example.org"
    assert one.remote_mta == "dns; mail.example.org"
    assert one.envid == T1 and one.tokens == (T1,)
    assert one.message_id == MID1  # from the text/rfc822-headers part
    assert one.occurred_at == 1793700901.0  # Arrival-Date: no Last-Attempt-Date
    assert one.complaint_type is None


def test_a_sendmail_dsn_returns_the_whole_message() -> None:
    [one] = parsed("sendmail.eml")
    assert (one.kind, one.recipient, one.status, one.code) == (
        Kind.FAILED,
        "gone@example.org",
        "5.2.1",
        550,
    )
    assert one.diagnostic == "SMTP; 550 5.2.1 Mailbox disabled for this recipient"
    assert one.remote_mta == "DNS; mx1.example.org"
    assert one.message_id == MID2  # from the message/rfc822 part
    assert one.tokens == () and one.envid is None
    assert one.occurred_at == 1793700961.0  # Last-Attempt-Date, +0100


def test_an_office365_dsn_inside_alternative_parts() -> None:
    [one] = parsed("office365.eml")
    assert (one.kind, one.recipient, one.status, one.code) == (
        Kind.FAILED,
        "alice@example.com",
        "5.1.10",
        550,
    )
    assert one.diagnostic is not None and one.diagnostic.startswith("smtp;550 5.1.10 RESOLVER.ADR")
    assert one.reporting_mta == "dns;AM0PR01MB1234.eurprd01.prod.exchangelabs.com"
    assert one.message_id == MID1 and one.tokens == (T1,)


def test_a_gmail_dsn_names_each_recipient_with_its_own_outcome() -> None:
    found = parsed("gmail_multi.eml")
    assert [(f.kind, f.recipient, f.status, f.code) for f in found] == [
        (Kind.FAILED, "carol@example.com", "5.1.1", 550),
        (Kind.FAILED, "dave@example.net", "5.7.1", 554),
        (Kind.DELIVERED, "erin@example.org", "2.0.0", None),
    ]
    assert {f.message_id for f in found} == {MID2}
    assert {f.tokens for f in found} == {(T2,)}  # Delivered-To and To
    assert found[0].occurred_at == 1793702407.0  # 02:40:07 -0800


def test_a_delayed_dsn_is_a_delay() -> None:
    [one] = parsed("delayed.eml")
    assert (one.kind, one.recipient, one.status, one.code) == (
        Kind.DELAYED,
        "slow@example.org",
        "4.4.1",
        None,
    )
    assert one.diagnostic == (
        "X-Postfix; connect to mail.example.org[192.0.2.25]:25: Connection timed out"
    )
    assert one.envid == T1 and one.tokens == (T1,) and one.message_id == MID1


def test_an_exim_text_bounce_is_read_by_flufl_bounce() -> None:
    [one] = parsed("exim.eml")
    assert (one.kind, one.detector, one.recipient) == (
        Kind.FAILED,
        "flufl.bounce",
        "unknown.user@example.net",
    )
    assert one.status is None and one.code is None and one.diagnostic is None
    assert one.tokens == (T2,)  # Envelope-to and To
    assert one.message_id == MID2  # the quoted copy's Message-ID, not the bounce's own


def test_a_qmail_bounce_names_both_addresses() -> None:
    found = parsed("qmail.eml")
    assert [(f.kind, f.detector, f.recipient) for f in found] == [
        (Kind.FAILED, "flufl.bounce", "alsogone@example.com"),
        (Kind.FAILED, "flufl.bounce", "nosuchuser@example.com"),
    ]
    assert {f.tokens for f in found} == {(T1,)} and {f.message_id for f in found} == {MID1}


def test_an_arf_report_is_a_complaint_with_the_envelope_sender_token() -> None:
    [one] = parsed("arf.eml")
    assert (one.kind, one.detector, one.complaint_type) == (Kind.COMPLAINT, "arf", "abuse")
    assert one.recipient == "frank@example.net" == one.original_recipient
    assert one.tokens == (T2,)  # Original-Mail-From (the report's To is the FBL address)
    assert one.message_id == MID2
    assert one.reporting_mta == "dns; mail.fbl.example.net"
    assert one.occurred_at == 1793886734.0


def test_an_arf_report_without_original_rcpt_to_uses_the_returned_to() -> None:
    raw = (CORPUS / "arf.eml").read_bytes().replace(b"Original-Rcpt-To: <frank@example.net>\n", b"")
    [one] = parse_message(raw, "x")  # type: ignore[misc]
    assert one.recipient == "frank@example.net" and one.original_recipient is None


def test_the_same_bytes_give_the_same_event_ids_and_other_bytes_others() -> None:
    raw = (CORPUS / "postfix.eml").read_bytes()
    first, again = parse_message(raw, "a"), parse_message(raw, "b")
    assert isinstance(first, list) and isinstance(again, list)
    assert [f.event_id for f in first] == [f.event_id for f in again]
    other = parse_message(raw + b"\n", "a")
    assert isinstance(other, list) and other[0].event_id != first[0].event_id


# --- hostile input ---------------------------------------------------------------------


def cpu(raw: bytes) -> tuple[list[Feedback] | Unparsed, float]:
    start = time.process_time()
    found = parse_message(raw, "hostile")
    return found, time.process_time() - start


def dsn(recipients: bytes, *, returned: bytes = b"", head: bytes = b"") -> bytes:
    return (
        b"From: MAILER-DAEMON@mx.example.org\nTo: news@acme.example\n"
        + head
        + b"MIME-Version: 1.0\n"
        b'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\n\n'
        b"--B\nContent-Type: text/plain\n\nfailed\n\n"
        b"--B\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx.example.org\n\n"
        + recipients
        + b"\n"
        + returned
        + b"--B--\n"
    )


def block(address: str, action: str = "failed", status: str = "5.1.1") -> bytes:
    return f"Final-Recipient: rfc822; {address}\nAction: {action}\nStatus: {status}\n\n".encode()


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "empty message"),
        (b"\r\n \r\n", "empty message"),
        (b"Subject: hello\n\nJust a letter.\n", "not a delivery report"),
        (bytes(range(256)) * 64, "not a delivery report"),
    ],
)
def test_what_is_not_a_report_is_unparsed_with_a_reason(raw: bytes, reason: str) -> None:
    found, seconds = cpu(raw)
    assert isinstance(found, Unparsed) and found.reason.startswith(reason), found
    assert found.source == "hostile" and "\n" not in found.reason and seconds < 2


def test_a_message_over_the_size_limit_is_not_parsed() -> None:
    found, seconds = cpu(b"Subject: x\n\n" + b"a" * MAX_MESSAGE_BYTES)
    assert isinstance(found, Unparsed) and found.reason.startswith("too large")
    assert seconds < 1


def test_truncated_mime_still_reads_the_blocks_that_arrived() -> None:
    cut = dsn(block("a@example.org")).split(b"--B--")[0]
    found, _ = cpu(cut)
    assert isinstance(found, list) and [f.recipient for f in found] == ["a@example.org"]


def test_truncated_mime_before_the_status_part_is_unparsed() -> None:
    raw = (
        b'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\n\n'
        b"--B\nContent-Type: text/plain\n\nYour message"
    )
    found, _ = cpu(raw)
    assert isinstance(found, Unparsed) and found.reason.startswith("truncated MIME")


def test_a_one_megabyte_header_line_is_parsed_quickly_and_clipped() -> None:
    huge = b"X-Junk: " + b"a" * 1_000_000 + b"\n"
    found, seconds = cpu(
        dsn(block("a@example.org"), head=huge + b"Delivered-To: " + b"b" * 1_000_000 + b"\n")
    )
    assert isinstance(found, list) and len(found) == 1 and seconds < 2
    found, seconds = cpu(
        dsn(b"Final-Recipient: rfc822; " + b"c" * 1_000_000 + b"@example.org\nAction: failed\n")
    )
    assert isinstance(found, list) and seconds < 2
    assert found[0].recipient is not None and len(found[0].recipient) <= 1000


def test_two_thousand_recipient_blocks_are_capped() -> None:
    raw = dsn(b"".join(block(f"r{i}@example.org") for i in range(2000)))
    found, seconds = cpu(raw)
    assert isinstance(found, list) and len(found) == 1000 and seconds < 5
    assert found[-1].recipient == "r999@example.org"


def test_a_dsn_whose_returned_part_is_malformed_keeps_its_recipients() -> None:
    returned = (
        b"--B\nContent-Type: message/rfc822\nContent-Transfer-Encoding: base64\n\n"
        b"!!!not base64\x00\xff\n"
    )
    found, _ = cpu(dsn(block("a@example.org"), returned=returned))
    assert isinstance(found, list) and found[0].recipient == "a@example.org"
    assert found[0].message_id is None
    returned = (
        b"--B\nContent-Type: text/rfc822-headers\n\n: no name\n\xff\xfe\nMessage-ID: broken <\n"
    )
    found, _ = cpu(dsn(block("a@example.org"), returned=returned))
    assert isinstance(found, list) and found[0].message_id is None


def test_non_utf8_bytes_in_headers_and_fields() -> None:
    head = b"Delivered-To: bounces+" + T1.encode() + b"\xff@acme.example\nSubject: caf\xe9\n"
    found, _ = cpu(
        dsn(
            b"Final-Recipient: rfc822; caf\xe9@example.org\nAction: failed\n"
            b"Status: 5.1.1\n\xff\xfe: x\n",
            head=head,
        )
    )
    assert isinstance(found, list) and found[0].tokens == (T1,)
    assert found[0].recipient == "caf\ufffd@example.org"


def test_an_encoded_word_bomb_costs_nothing() -> None:
    bomb = b"Subject: " + b" ".join([b"=?utf-8?b?" + b"QUFB" * 10 + b"?="] * 50_000) + b"\n"
    found, seconds = cpu(
        dsn(block("a@example.org"), head=bomb + b"To: =?utf-8?q?" + b"=41" * 100_000 + b"?=\n")
    )
    assert isinstance(found, list) and seconds < 2
    found, seconds = cpu(bomb + b"\nhello\n")
    assert isinstance(found, Unparsed) and seconds < 2


@pytest.mark.parametrize("depth", [200, 2000])
def test_deep_mime_nesting_is_bounded(depth: int) -> None:
    head = b"".join(
        b'--b%d\nContent-Type: multipart/mixed; boundary="b%d"\n\n' % (i, i + 1)
        for i in range(depth)
    )
    raw = b'Content-Type: multipart/mixed; boundary="b0"\n\n' + head + dsn(block("a@example.org"))
    found, seconds = cpu(raw)
    assert isinstance(found, Unparsed) and seconds < 5


def test_a_report_for_nobody_is_unparsed() -> None:
    found, _ = cpu(dsn(b"Reporting-MTA: dns; x\n\nX-Unknown: y\n"))
    assert (
        isinstance(found, Unparsed) and found.reason == "delivery-status report names no recipient"
    )


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=4096))
def test_arbitrary_bytes_never_raise(raw: bytes) -> None:
    found = parse_message(raw, "fuzz")
    assert isinstance(found, Unparsed | list)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            [
                b"--B\n",
                b"--B--\n",
                b"\n",
                b"Content-Type: message/delivery-status\n",
                b"Action: failed\n",
                b"Final-Recipient: rfc822; \xff@x\n",
                b"Content-Type: multipart/mixed; boundary=B\n",
                b"Content-Transfer-Encoding: base64\n",
                b"Status: 5.1.1\n",
                b"=?utf-8?q?=00?=\n",
            ]
        ),
        max_size=60,
    )
)
def test_report_shaped_garbage_never_raises(lines: list[bytes]) -> None:
    raw = (
        b'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\n\n'
        + b"".join(lines)
    )
    found = parse_message(raw, "fuzz")
    assert isinstance(found, Unparsed | list)


def test_a_detector_that_raises_leaves_no_traceback_in_the_logs() -> None:
    # flufl.bounce's Yale detector raises IndexError for a message without a From address,
    # and flufl.bounce logs it with a traceback before re-raising: nothing reaches the root
    seen: list[logging.LogRecord] = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = seen.append  # type: ignore[method-assign]
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        found = parse_message(b"Subject: no sender\n\nhello\n", "x")
    finally:
        root.removeHandler(handler)
    assert found == Unparsed("x", "not a delivery report (flufl.bounce: IndexError)")
    assert [r for r in seen if r.name.startswith("flufl")] == []
