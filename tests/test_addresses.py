"""Tests for txsend.addresses: the one address rule the loader and the renderer share."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from txsend.addresses import a_label, envelope_address, mailbox_problem, split_mailbox

REPO = Path(__file__).resolve().parents[1]
HINT = "(write e.g. 'Acme <noreply@acme.example>')"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Acme <noreply@acme.example>", ("Acme", "noreply@acme.example")),
        ('"Acme, Inc." <noreply@acme.example>', ("Acme, Inc.", "noreply@acme.example")),
        ('"Say \\"hi\\"" <a@acme.example>', ('Say "hi"', "a@acme.example")),
        ("  <a@acme.example>  ", ("", "a@acme.example")),
        ("  a@acme.example ", ("", "a@acme.example")),
        ("Äcme <noreply@bücher.example>", ("Äcme", "noreply@bücher.example")),
        ("a@acme.example (Acme)", ("", "a@acme.example (Acme)")),
    ],
)
def test_split_mailbox(value: str, expected: tuple[str, str]) -> None:
    assert split_mailbox(value) == expected


def test_a_label() -> None:
    assert a_label("bücher.example") == "xn--bcher-kva.example"
    assert a_label("BÜCHER.example") == "xn--bcher-kva.example"  # UTS 46 maps case
    with pytest.raises(ValueError, match="invalid international domain name"):
        a_label("\u2603.example")


@pytest.mark.parametrize(
    ("addr", "envelope"),
    [
        ("o'brien+tag@example.com", "o'brien+tag@example.com"),
        ("first.last@sub.example.co.uk", "first.last@sub.example.co.uk"),
        ("user@bücher.example", "user@xn--bcher-kva.example"),
        ("jürgen@bücher.example", "jürgen@xn--bcher-kva.example"),
        ("x@[192.0.2.1]", "x@[192.0.2.1]"),
    ],
)
def test_envelope_address(addr: str, envelope: str) -> None:
    assert envelope_address(addr) == envelope


@pytest.mark.parametrize(
    ("addr", "reason"),
    [
        ("alice.example.com", "no '@' in address"),
        ("a@b@example.com", "more than one '@' in address"),
        ("al ice@example.com", "space in address"),
        ("<alice@example.com>", "'<' or '>' in address"),
        ("@example.com", "empty local part"),
        ("alice@", "empty domain"),
        ("j\u00fcr,gen@example.com", "invalid character in local part"),
        ("al,ice@example.com", "invalid character in local part"),
        ("alice@\u2603.example", "invalid international domain name"),
        ("alice@example..com", "invalid domain"),
        ("alice@example.com\r\nRCPT TO:<x@y>", "line break in address"),
        ("alice\x01@example.com", "control character in address"),
        ("", "empty address"),
    ],
)
def test_envelope_address_refuses(addr: str, reason: str) -> None:
    with pytest.raises(ValueError) as info:
        envelope_address(addr)
    assert str(info.value).startswith(reason)


@pytest.mark.parametrize(
    ("value", "single"),
    [
        ("Acme <noreply@acme.example>", True),
        ("noreply@acme.example", True),
        ('"Acme, Inc." <noreply@acme.example>', True),
        ("Äcme <noreply@bücher.example>", True),
        ("a@acme.example, Help <b@acme.example>", False),
        ("support@acme.example", False),
    ],
)
def test_mailbox_problem_accepts(value: str, single: bool) -> None:
    assert mailbox_problem(value, single=single) is None


@pytest.mark.parametrize(
    ("value", "single", "problem"),
    [
        ("{{ sender }}", True, "must be a fixed address, not a template"),
        (
            "Acme <{% if x %}a@b.example{% endif %}>",
            False,
            "must be a fixed address, not a template",
        ),
        ("nobody", False, f"not an email address: 'nobody' {HINT}"),
        ("", True, f"not an email address: '' {HINT}"),
        ("a@x.example, nobody", False, f"not an email address: 'a@x.example, nobody' {HINT}"),
        ("a@x.example, b@x.example", True, "expected one address, got 2"),
        (
            "Acme <no reply@acme.example>",
            True,
            f"invalid email address 'no reply@acme.example': space in address {HINT}",
        ),
        (
            "Acme <noreply@acme..example>",
            True,
            f"invalid email address 'noreply@acme..example': invalid domain {HINT}",
        ),
        (
            "a@x.example, b@x..example",
            False,
            f"invalid email address 'b@x..example': invalid domain {HINT}",
        ),
    ],
)
def test_mailbox_problem_refuses(value: str, single: bool, problem: str) -> None:
    assert mailbox_problem(value, single=single) == problem


def test_one_mailbox_is_checked_as_the_renderer_reads_it() -> None:
    # getaddresses takes "(Acme)" for a comment; the renderer would take it for part of
    # the address and refuse it, so the loader refuses it too.
    problem = mailbox_problem("noreply@acme.example (Acme)", single=True)
    assert problem == (
        f"invalid email address 'noreply@acme.example (Acme)': space in address {HINT}"
    )
    assert mailbox_problem("noreply@acme.example (Acme)", single=False) == problem


def test_international_domain_problem_is_explained() -> None:
    problem = mailbox_problem("Acme <noreply@\u2603.example>", single=True)
    assert problem is not None
    assert problem.startswith(
        "invalid email address 'noreply@\u2603.example': invalid international"
    )
    assert problem.endswith(HINT)


@pytest.mark.parametrize("job", sorted((REPO / "sample_jobs").glob("*.yaml")), ids=lambda p: p.name)
def test_sample_jobs_pass(job: Path) -> None:
    data = yaml.safe_load(job.read_text(encoding="utf-8"))
    assert mailbox_problem(data["from"], single=True) is None
    if "reply_to" in data:
        assert mailbox_problem(data["reply_to"], single=False) is None
