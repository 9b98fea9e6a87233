"""The envelope sender and ENVID a rendered message carries: return_path, verp, the token."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from tests.content.test_renderer import MID, make_job, make_row
from txsend.content.renderer import Renderer
from txsend.delivery.smtp.connection import dsn_parameters, xtext
from txsend.errors import JobError
from txsend.models import Content, Envelope, RenderedMessage
from txsend.verp import TokenCheck, find_token, token_message_hex, verify_token

SECRET = b"k" * 32


def _with(tmp_path: Path, envelope: Envelope, **kw: str) -> Renderer:
    job = make_job(tmp_path, **kw)
    return Renderer(replace(job, content=Content(envelope=envelope)), verp_secret=SECRET)


def test_without_a_secret_the_envelope_is_the_from_address(tmp_path: Path) -> None:
    message = Renderer(make_job(tmp_path)).render(make_row(), MID)
    assert (message.mail_from, message.envid) == ("noreply@acme.example", None)


def test_return_path_sets_mail_from_and_the_token_is_the_envid(tmp_path: Path) -> None:
    renderer = _with(tmp_path, Envelope(return_path="bounces@acme.example"))
    message = renderer.render(make_row(), MID)
    assert message.mail_from == "bounces@acme.example"
    assert message.envid is not None
    assert verify_token(message.envid, SECRET, "t") is TokenCheck.OK
    assert token_message_hex(message.envid) == MID[1:33]
    assert b"bounces@" not in message.data  # the From header is unchanged
    assert b"From: Acme <noreply@acme.example>" in message.data


@pytest.mark.parametrize(
    ("envelope", "shape"),
    [
        (Envelope(verp=True), "noreply+{}@acme.example"),
        (Envelope(return_path="b@bounce.acme.example", verp=True), "b+{}@bounce.acme.example"),
        (Envelope(verp=True, verp_pattern="rt-{token}@acme.example"), "rt-{}@acme.example"),
    ],
)
def test_verp_gives_each_row_its_own_envelope_sender(
    tmp_path: Path, envelope: Envelope, shape: str
) -> None:
    renderer = _with(tmp_path, envelope)
    other = "<" + "f" * 32 + "@acme.example>"
    one, two = renderer.render(make_row(), MID), renderer.render(make_row("b@example.com"), other)
    assert one.envid is not None and two.envid is not None and one.envid != two.envid
    assert one.mail_from == shape.format(one.envid)
    assert two.mail_from == shape.format(two.envid)
    assert find_token(one.mail_from) == one.envid
    assert renderer.envelope_sender(MID) == one.mail_from


def test_a_verp_pattern_too_long_for_a_local_part_is_a_job_error(tmp_path: Path) -> None:
    long_from = "Acme <a-very-long-local-part-for-noreply@acme.example>"
    with pytest.raises(JobError, match="over 64 octets"):
        _with(tmp_path, Envelope(verp=True), from_addr=long_from)


def test_dsn_parameters_are_xtext() -> None:
    message = RenderedMessage("k", "b+x@acme.example", "a+b=c@example.com", b"", envid="tx1abc")
    mail, rcpt = dsn_parameters(
        b"MAIL FROM:<b+x@acme.example>", b"RCPT TO:<a+b=c@example.com>", message
    )
    assert mail == b"MAIL FROM:<b+x@acme.example> RET=HDRS ENVID=tx1abc"
    assert (
        rcpt
        == b"RCPT TO:<a+b=c@example.com> NOTIFY=FAILURE,DELAY ORCPT=rfc822;a+2Bb+3Dc@example.com"
    )
    assert xtext("é ") == b"+C3+A9+20"
    utf8 = RenderedMessage("k", "b@acme.example", "josé@example.com", b"", smtputf8=True)
    _mail, rcpt = dsn_parameters(b"MAIL FROM:<b@acme.example>", b"RCPT TO:<x>", utf8)
    assert rcpt == b"RCPT TO:<x> NOTIFY=FAILURE,DELAY"  # no ORCPT: it would need RFC 6533
