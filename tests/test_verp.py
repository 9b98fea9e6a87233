"""VERP tokens: made for one job and row, found in addresses, verified against the secret."""

from __future__ import annotations

import base64
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from txsend.verp import (
    TokenCheck,
    base32,
    find_token,
    make_token,
    parse_token,
    token_message_hex,
    verify_token,
    verp_address,
)

SECRET = bytes(range(32))
MID = "<" + "0123456789abcdef" * 2 + "@acme.example>"


def test_a_token_names_the_message_and_verifies_for_its_job_only() -> None:
    token = make_token(SECRET, "welcome", MID)
    assert token.startswith("tx1") and len(token) == 44
    assert token_message_hex(token) == "0123456789abcdef" * 2
    assert verify_token(token, SECRET, "welcome") is TokenCheck.OK
    assert verify_token(token, SECRET, "another job") is TokenCheck.OTHER_JOB
    assert verify_token(token, os.urandom(32), "welcome") is TokenCheck.FORGED
    assert verify_token("tx1abc", SECRET, "welcome") is TokenCheck.MALFORMED


def test_a_changed_character_anywhere_is_refused() -> None:
    token = make_token(SECRET, "welcome", MID)
    for i in range(3, len(token)):
        changed = token[:i] + ("a" if token[i] != "a" else "b") + token[i + 1 :]
        assert verify_token(changed, SECRET, "welcome") is not TokenCheck.OK


def test_the_token_is_found_in_an_address_whatever_its_case() -> None:
    token = make_token(SECRET, "welcome", MID)
    address = verp_address("bounces+{token}@acme.example", token)
    assert address == f"bounces+{token}@acme.example"
    assert len(address.partition("@")[0]) <= 64
    assert find_token(address.upper()) == token
    assert find_token(f"Delivered-To: <{address}>") == token
    assert find_token("bounces@acme.example") is None
    assert parse_token(token.upper()) == parse_token(token)


def test_a_message_id_not_made_by_txsend_has_no_token() -> None:
    with pytest.raises(ValueError):
        make_token(SECRET, "welcome", "<abc@acme.example>")


@given(st.binary(min_size=16, max_size=16), st.text(min_size=1, max_size=40))
def test_every_message_id_round_trips(raw: bytes, job: str) -> None:
    token = make_token(SECRET, job, f"<{raw.hex()}@example.com>")
    assert find_token(token) == token
    assert token_message_hex(token) == raw.hex()
    assert verify_token(token, SECRET, job) is TokenCheck.OK


@given(st.binary(max_size=40))
def test_base32_is_rfc_4648(data: bytes) -> None:
    assert base32(data) == base64.b32encode(data).decode().rstrip("=").lower()
