"""Tests for txsend.content.ids: the Message-ID domain and fresh random Message-IDs."""

from __future__ import annotations

import re

import pytest

from txsend.content.ids import MessageIds, message_id_domain, new_message_id
from txsend.errors import JobError


def test_message_ids() -> None:
    assert message_id_domain("Acme <noreply@Acme.Example>") == "acme.example"
    assert message_id_domain("x@bücher.example") == "xn--bcher-kva.example"
    mid = new_message_id("acme.example")
    assert re.fullmatch(r"<[0-9a-f]{32}@acme\.example>", mid)
    assert mid != new_message_id("acme.example")
    with pytest.raises(JobError):
        message_id_domain("nobody")


def test_message_ids_one_at_a_time_or_many() -> None:
    ids = MessageIds("acme.example")
    many = ids.many(1000)
    assert len(set(many)) == 1000
    assert all(re.fullmatch(r"<[0-9a-f]{32}@acme\.example>", mid) for mid in [*many, ids()])
    assert ids.many(0) == []
