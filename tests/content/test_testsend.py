"""The renderer of a test send: a real row's message, to a reviewer, marked as a test."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.content.test_renderer import DATE, MID, assert_equivalent, make_job, make_row, parse
from txsend.content.renderer import Renderer
from txsend.content.testsend import INTENDED_HEADER, TestSendRenderer, reviewer_key
from txsend.errors import RowError
from txsend.models import Row

REVIEWER = "reviewer@review.example"


def for_reviewer(original: Row, address: str = REVIEWER) -> Row:
    return Row(original.number, reviewer_key(address, original.key), address, original.data)


@pytest.mark.parametrize(
    ("subject", "headers"),
    [
        ("Hello {{ first_name }}", {"X-Campaign": "{{ last_name }}"}),
        ("A constant subject", {"X-Campaign": "constant"}),
        ("Ünïcödé {{ first_name }}", {}),
    ],
)
def test_only_the_address_the_subject_and_one_header_change(
    tmp_path: Path, subject: str, headers: dict[str, str]
) -> None:
    job = make_job(tmp_path, subject=subject, headers=headers)
    original = make_row()
    real = parse(Renderer(job).render(original, MID, date=DATE).data)
    test = for_reviewer(original)
    renderer = TestSendRenderer(job, {test.key: original})
    rendered = renderer.render(test, MID, date=DATE)
    assert rendered.rcpt_to == REVIEWER
    msg = assert_equivalent(renderer, test)  # the fast path is the reference's
    assert msg["To"] == REVIEWER
    assert msg["Subject"] == "[TEST] " + real["Subject"]
    assert msg[INTENDED_HEADER] == "Alice Smith <alice@example.com>"
    same = [k for k in real if k not in ("To", "Subject")]
    assert [(k, str(msg[k])) for k in same] == [(k, str(real[k])) for k in same]
    assert msg.get_content() == real.get_content()


def test_intended_recipients_with_unusual_names(tmp_path: Path) -> None:
    job = make_job(tmp_path)
    for first, last, shown in [
        ("Smith,", "Jo", '"Smith, Jo" <alice@example.com>'),
        ("Zoë", "Ünal", "Zoë Ünal <alice@example.com>"),
    ]:
        original = make_row(first_name=first, last_name=last)
        test = for_reviewer(original)
        msg = parse(TestSendRenderer(job, {test.key: original}).render(test, MID).data)
        assert msg[INTENDED_HEADER] == shown
    nameless = make_job(tmp_path, name=None)
    original = make_row()
    test = for_reviewer(original)
    msg = parse(TestSendRenderer(nameless, {test.key: original}).render(test, MID).data)
    assert msg[INTENDED_HEADER] == "alice@example.com"


def test_a_row_error_names_the_original_row(tmp_path: Path) -> None:
    job = make_job(tmp_path, subject="Hi {{ nope }}")
    original = make_row()
    test = for_reviewer(original)
    with pytest.raises(RowError) as info:
        TestSendRenderer(job, {test.key: original}).render(test, MID)
    assert (info.value.row, info.value.key) == (7, "alice@example.com")
