"""The relay probe below the command line: its limits (each phase, the whole probe), its
clock, the EHLO parser, when a password may go out without TLS, and the certificate
descriptions."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import ssl
import time
from pathlib import Path

import pytest

from tests.certs import make_dated_tls_files
from tests.faultserver import HANG, FaultServer, drip
from tests.smtpd import ScriptedServer
from txsend.delivery.smtp.certificates import describe, verify_problem
from txsend.delivery.smtp.probe import (
    ProbeEnvelope,
    ProbeLimits,
    ProbePhase,
    RelayProbe,
    ehlo_offers,
    insecure_auth_problem,
    probe,
)
from txsend.job.relays import parse_relay_url
from txsend.models import TlsMode


def run_probe(url: str, limits: ProbeLimits, **kwargs: object) -> RelayProbe:
    return asyncio.run(probe(parse_relay_url(url), None, limits, **kwargs))  # type: ignore[arg-type]


def test_the_whole_probe_is_bounded_even_when_each_phase_may_take_longer() -> None:
    with FaultServer({"CONNECT": drip("220-slow", every=0.05, forever=True)}) as server:
        started = time.monotonic()
        result = run_probe(server.url, ProbeLimits(connect=30, command=30, total=0.5))
        elapsed = time.monotonic() - started
    assert elapsed < 3
    assert [p.name for p in result.phases] == [ProbePhase.CONNECT, ProbePhase.GREETING]
    failed = result.failed
    assert failed is not None and failed.name is ProbePhase.GREETING
    assert failed.text == "no reply: the whole probe's limit of 0.5 s ran out"


def test_a_phase_limit_cuts_a_silent_server() -> None:
    with FaultServer({"EHLO": HANG}) as server:
        started = time.monotonic()
        result = run_probe(server.url, ProbeLimits(connect=5, command=0.3))
        elapsed = time.monotonic() - started
    assert elapsed < 3
    assert result.failed is not None and result.failed.name is ProbePhase.EHLO
    assert result.failed.text == "no reply within 0.3 s"


def test_phase_times_come_from_the_clock_given() -> None:
    ticks = itertools.count(0.0, 0.5)
    with ScriptedServer() as server:
        result = run_probe(
            server.url,
            ProbeLimits(connect=5, command=5),
            envelope=ProbeEnvelope("a@acme.example", "b@example.com"),
            clock=lambda: next(ticks),
        )
        assert server.received == []
    assert result.failed is None
    assert [p.name for p in result.phases] == [
        ProbePhase.CONNECT,
        ProbePhase.GREETING,
        ProbePhase.EHLO,
        ProbePhase.MAIL,
        ProbePhase.RCPT,
        ProbePhase.QUIT,
    ]
    assert {p.seconds for p in result.phases} == {0.5}


def test_days_left_come_from_the_date_given(tmp_path: Path) -> None:
    now = dt.datetime.now(dt.UTC)
    files = make_dated_tls_files(
        tmp_path, not_before=now - dt.timedelta(days=1), not_after=now + dt.timedelta(days=90)
    )
    later = now + dt.timedelta(days=100)
    with ScriptedServer(tls_context=files.server_context(), implicit_tls=True) as server:
        relay = parse_relay_url(f"smtps://127.0.0.1:{server.port}", ca_file=files.ca_file)
        result = asyncio.run(probe(relay, None, ProbeLimits(5, 5), now=lambda: later))
    assert result.failed is None
    tls = next(p for p in result.phases if p.name is ProbePhase.TLS)
    assert tls.details["certificates"][0]["days_left"] == -10


def test_ehlo_offers() -> None:
    offers = ehlo_offers(
        "mx.example.com at your service\nSIZE 35882577\n8BITMIME\nAUTH LOGIN PLAIN XOAUTH2\n"
        "AUTH=LOGIN\nENHANCEDSTATUSCODES\npipelining\nCHUNKING\nSMTPUTF8\nX-EXPS GSSAPI"
    )
    assert offers["server"] == "mx.example.com at your service"
    assert offers["size"] == 35882577
    assert offers["auth"] == ["LOGIN", "PLAIN", "XOAUTH2"]
    assert offers["offers"] == {
        "SIZE": True,
        "PIPELINING": True,
        "STARTTLS": False,
        "AUTH": True,
        "SMTPUTF8": True,
        "DSN": False,
        "8BITMIME": True,
        "CHUNKING": True,
        "ENHANCEDSTATUSCODES": True,
    }
    assert offers["other"] == ["AUTH=LOGIN", "X-EXPS"]
    assert offers["extensions"]["X-EXPS"] == "GSSAPI"
    assert ehlo_offers("lonely")["extensions"] == {}
    assert ehlo_offers("x\nSIZE")["size"] is None


@pytest.mark.parametrize(
    ("url", "options", "peer", "allowed"),
    [
        ("smtp://u@mail.example:587", {}, "192.0.2.1", True),  # STARTTLS
        ("smtps://u@mail.example", {}, "192.0.2.1", True),
        ("smtp://u@mail.example?tls=none", {}, "192.0.2.1", False),
        ("smtp://u@mail.example?tls=none", {}, "127.0.0.1", True),
        ("smtp://u@mail.example?tls=none", {}, "::1", True),
        ("smtp://u@mail.example?tls=none", {}, None, False),
        ("smtp://u@mail.example?tls=none", {"allow_insecure_auth": True}, "192.0.2.1", True),
    ],
)
def test_when_a_password_may_go_without_tls(
    url: str, options: dict[str, object], peer: str | None, allowed: bool
) -> None:
    relay = parse_relay_url(url, **options)
    assert (insecure_auth_problem(relay, peer) is None) is allowed


def test_limits_of_the_whole_probe() -> None:
    limits = ProbeLimits(connect=2, command=10)
    plain = parse_relay_url("smtp://127.0.0.1:25")
    assert plain.tls is TlsMode.NONE
    # connect + greeting, then EHLO and QUIT; no certificate to show
    assert limits.whole(plain, mail=False) == 2 * 2 + 2 * 10
    starttls = parse_relay_url("smtp://u@mail.example:587")
    assert limits.whole(starttls, mail=True) > limits.whole(starttls, mail=False)
    assert ProbeLimits(1, 1, total=7).whole(starttls, mail=True) == 7


def test_a_certificate_described(tmp_path: Path) -> None:
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    files = make_dated_tls_files(
        tmp_path,
        not_before=now - dt.timedelta(days=1),
        not_after=now + dt.timedelta(days=30),
        dns_names=("mail.example", "smtp.example"),
        ip_addresses=("192.0.2.7",),
        common_name="mail.example",
    )
    der = ssl.PEM_cert_to_DER_cert(files.cert_file.read_text(encoding="ascii"))
    info = describe(der)
    assert info.subject == "CN=mail.example"
    assert info.issuer == "CN=txsend dated test CA"
    assert info.dns_names == ("mail.example", "smtp.example")
    assert info.ip_addresses == ("192.0.2.7",)
    assert info.not_after == now + dt.timedelta(days=30)
    assert info.days_left(now) == 30
    assert info.to_json(now)["days_left"] == 30
    with pytest.raises(ValueError):
        describe(b"not a certificate")


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        (62, "wrong_host_name"),
        (64, "wrong_host_name"),
        (10, "expired"),
        (20, "unknown_ca"),
        (2, "other"),
    ],
)
def test_verify_problems_by_kind(code: int, kind: str) -> None:
    exc = ssl.SSLCertVerificationError(1, "certificate verify failed")
    exc.verify_code = code
    exc.verify_message = "what OpenSSL said"
    assert verify_problem(exc) == (kind, "what OpenSSL said")
