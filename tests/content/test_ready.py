"""A ready message (`txsend send --stdin`): what is read from its header, what is sent."""

from __future__ import annotations

import pytest

from txsend.content.ready import address_list, parse_ready
from txsend.errors import JobError


def test_address_lists() -> None:
    assert address_list('Ann <a@example.com>, "Doe, J" <j@example.com>, b@x.example', "To") == [
        ("Ann", "a@example.com"),
        ("Doe, J", "j@example.com"),
        ("", "b@x.example"),
    ]
    assert address_list("team: a@example.com, b@example.com;", "To") == [
        ("", "a@example.com"),
        ("", "b@example.com"),
    ]
    assert address_list("undisclosed-recipients:;", "To") == []
    assert address_list("=?utf-8?q?Zo=C3=AB?= <z@example.com>", "To") == [("Zoë", "z@example.com")]
    assert address_list("bücher@bücher.example", "To") == [("", "bücher@xn--bcher-kva.example")]


@pytest.mark.parametrize(
    "value",
    ["a@example.com b@example.com", "x@", "@", "<a@example.com", "a@example.com\nBcc: b@x", "a"],
)
def test_address_lists_refused(value: str) -> None:
    with pytest.raises(JobError, match=r"^--to: "):
        address_list(value, "--to")


def test_folded_bcc_is_removed_whole_and_its_addresses_kept() -> None:
    ready = parse_ready(
        b"From: a@acme.example\r\nBcc: one@example.com,\r\n two@example.com\r\n"
        b"To: t@example.com\r\nX-After: yes\r\n\r\nbody\r\n"
    )
    assert ready.head == b"From: a@acme.example\r\nTo: t@example.com\r\nX-After: yes\r\n"
    assert ready.recipients == (
        ("one@example.com", "bcc"),
        ("two@example.com", "bcc"),
        ("t@example.com", "to"),
    )
    assert ready.data("<m@x>", "Tue") == (
        b"From: a@acme.example\r\nTo: t@example.com\r\nX-After: yes\r\n"
        b"Date: Tue\r\nMessage-ID: <m@x>\r\n\r\nbody\r\n"
    )


def test_a_recipient_named_twice_is_one_recipient_of_its_first_field() -> None:
    ready = parse_ready(
        b"From: a@acme.example\nTo: X@example.com\nCc: x@example.com, y@example.com\n\n"
    )
    assert ready.recipients == (("X@example.com", "to"), ("y@example.com", "cc"))


def test_line_ends_become_crlf_and_bytes_stay() -> None:
    ready = parse_ready(b"From: a@acme.example\nTo: t@example.com\n\n\xff\xfe raw\rx\r\ny\nz")
    assert ready.body == b"\r\n\xff\xfe raw\r\nx\r\ny\r\nz"
    assert ready.sender == "a@acme.example"


def test_headers_only_and_no_body() -> None:
    ready = parse_ready(b"From: a@acme.example\nTo: t@example.com\nMessage-ID: <k@x>\nDate: Mon")
    assert ready.body == b""
    assert ready.message_id == "<k@x>" and ready.has_date
    assert ready.data("<other@x>", "Tue") == ready.head


def test_utf8_header_text_is_kept() -> None:
    ready = parse_ready("From: a@acme.example\nTo: t@example.com\nSubject: Ça va ✓\n\n".encode())
    assert "Subject: Ça va ✓\r\n".encode() in ready.head
