"""Tests for txsend.content.headers: folding, RFC 2047 encoding and header checks."""

from __future__ import annotations

from email.header import decode_header, make_header

import pytest

from txsend.content.headers import (
    FOLD_AT,
    check_header,
    encoded_words,
    fold,
    header_value,
    mailbox,
    unstructured,
    unsubscribe_problem,
)
from txsend.errors import RowError
from txsend.models import Row

ROW = Row(number=3, key="k", address="a@example.com", data={})


def decoded(value: str) -> str:
    return str(make_header(decode_header(value.replace("\r\n", ""))))


def test_short_ascii_is_kept() -> None:
    assert unstructured("Subject", "Hello Alice") == "Hello Alice"


def test_long_ascii_folds_at_whitespace() -> None:
    value = " ".join(["word"] * 40)
    folded = unstructured("Subject", value)
    lines = folded.split("\r\n")
    assert len(lines) > 1
    assert len("Subject: " + lines[0]) <= FOLD_AT
    assert all(len(line) <= FOLD_AT and line.startswith(" ") for line in lines[1:])
    assert folded.replace("\r\n", "") == value


def test_unbreakable_line_is_encoded() -> None:
    value = "x" * 1200
    assert fold(len("Subject: "), value) is None
    encoded = unstructured("Subject", value)
    assert all(len(line) <= FOLD_AT for line in encoded.split("\r\n"))
    assert decoded(encoded) == value


@pytest.mark.parametrize(
    "value", ["Grüße aus Köln", "日本語の件名 " * 10, "looks =?utf-8?q?x?= like"]
)
def test_encoded_words_round_trip(value: str) -> None:
    encoded = unstructured("Subject", value)
    assert encoded.startswith("=?utf-8?b?")
    assert all(len(line) <= FOLD_AT for line in encoded.split("\r\n")[1:])
    assert decoded(encoded) == value


def test_encoded_words_never_split_a_character() -> None:
    for word in encoded_words(9, "é" * 100).split("\r\n "):
        assert decoded(word)  # each word decodes on its own


def test_mailbox() -> None:
    assert mailbox("To", "", "a@example.com") == "a@example.com"
    assert mailbox("To", "Alice Smith", "a@example.com") == "Alice Smith <a@example.com>"
    assert mailbox("To", "Smith, Alice", "a@example.com") == '"Smith, Alice" <a@example.com>'
    assert mailbox("To", "Zoë", "a@example.com").endswith(" <a@example.com>")


def test_list_unsubscribe_folds_only_between_entries() -> None:
    value = "<https://acme.example/u/" + "x" * 40 + ">, <mailto:u@acme.example>"
    assert header_value("List-Unsubscribe", value) == value.replace(", ", ",\r\n ")
    assert header_value("List-Unsubscribe", "<mailto:u@a.example>") == "<mailto:u@a.example>"


@pytest.mark.parametrize(
    ("value", "kind"), [("a\r\nBcc: x@y", "line break"), ("a\x00b", "control character")]
)
def test_check_header(value: str, kind: str) -> None:
    check_header("fine", "Subject", ROW)
    with pytest.raises(RowError, match=f"{kind} in Subject from data"):
        check_header(value, "Subject", ROW)


@pytest.mark.parametrize(
    ("value", "one_click", "problem"),
    [
        ("<https://acme.example/u>, <mailto:u@acme.example>", True, None),
        ("<http://acme.example/u>", False, None),
        ("<http://acme.example/u>", True, "is not an https:// or mailto: address"),
        ("https://acme.example/u", False, "is not one <address>"),
        ("<https://acme.example/a b>", False, "has a space"),
        ("<mailto:nobody>", False, "is not an email address"),
        ("<ftp://acme.example/u>", False, "is not an https:// or mailto: address"),
        ("<mailto:u+Zo\u00eb@acme.example>", False, "is not ASCII"),
        ("<https://acme.example/Zo\u00eb>", False, "is not ASCII"),
    ],
)
def test_unsubscribe_problem(value: str, one_click: bool, problem: str | None) -> None:
    found = unsubscribe_problem(value, one_click=one_click)
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found
