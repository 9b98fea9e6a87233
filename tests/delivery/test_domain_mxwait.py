"""Tests for txsend.delivery.mxwait: rows parked while their domain's MX is looked up, the
lookups side by side (at most CONCURRENT at once), the rows back when a lookup ends; and
txsend.delivery.mx's reading of TXSEND_DNS."""

from __future__ import annotations

import asyncio

import pytest

from txsend.delivery.domains import DomainGate
from txsend.delivery.mx import MxLookup, dns_problem, nameservers
from txsend.delivery.mxwait import MxWaits
from txsend.job.domains import DomainRule
from txsend.reporting.stats import RunStats


class Lookups(MxLookup):
    """MX lookups that end when the test says so."""

    def __init__(self) -> None:
        super().__init__(timeout=1.0, servers="127.0.0.1")
        self.answers: dict[str, asyncio.Future[list[str]]] = {}
        self.started: list[str] = []

    async def hosts(self, domain: str) -> list[str]:
        self.started.append(domain)
        return await self.answers.setdefault(domain, asyncio.get_running_loop().create_future())

    def answer(self, domain: str, hosts: list[str]) -> None:
        self.answers[domain].set_result(hosts)


def gate() -> DomainGate:
    google = DomainRule("google", mx=(".google.test",), connections=1)
    return DomainGate([google], RunStats(), lambda: 0.0)


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_lookups_run_side_by_side_and_a_slow_one_holds_up_nobody() -> None:
    async def scenario() -> None:
        lookups, domains, woken = Lookups(), gate(), []
        waits = MxWaits(lookups, domains, lambda: woken.append(1), concurrent=3)
        for i in range(5):
            waits.park(f"d{i}.example", f"k{i}")
        waits.park("d0.example", "k0b")  # a second row of a domain: no second lookup
        await settle()
        assert lookups.started == ["d0.example", "d1.example", "d2.example"]  # 3 at once
        assert waits.busy and waits.waiting == 6 and waits.take(10) == []
        lookups.answer("d2.example", ["aspmx.l.google.test"])  # d0 and d1 still hang
        await settle()
        assert woken == [1]
        assert waits.take(10) == ["k2"]
        assert lookups.started[3:] == ["d3.example"]  # the next one began
        assert domains.domain_of("u@d2.example").name == "google"
        lookups.answer("d0.example", [])
        await settle()
        assert waits.take(1) == ["k0"] and waits.take(1) == ["k0b"]
        assert domains.domain_of("u@d0.example").name == "d0.example"
        assert domains.needs_mx("u@d0.example") is None  # known now
        assert lookups.started[4:] == ["d4.example"]
        await waits.close()  # d1, d3 and d4 still wait: stopped, nothing left running
        assert all(lookups.answers[d].cancelled() for d in ("d1.example", "d3.example"))

    asyncio.run(scenario())


def test_a_lookup_that_fails_lets_its_rows_go_on_matched_by_name() -> None:
    async def scenario() -> None:
        lookups, domains = Lookups(), gate()
        waits = MxWaits(lookups, domains, lambda: None)
        waits.park("x.example", "k")
        await settle()
        lookups.answers["x.example"].set_exception(RuntimeError("resolver broke"))
        await settle()
        assert waits.take(5) == ["k"] and not waits.busy
        assert domains.domain_of("u@x.example").name == "x.example"

    asyncio.run(scenario())


# --- TXSEND_DNS -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "servers"),
    [
        ("127.0.0.1", [("127.0.0.1", 53)]),
        ("127.0.0.1:5353, ::1", [("127.0.0.1", 5353), ("::1", 53)]),
        ("[::1]:5353,10.0.0.2:65535", [("::1", 5353), ("10.0.0.2", 65535)]),
        ("[2001:db8::1]", [("2001:db8::1", 53)]),
    ],
)
def test_txsend_dns_names_resolvers_by_address(text: str, servers: list[tuple[str, int]]) -> None:
    assert nameservers(text) == servers
    assert dns_problem({"TXSEND_DNS": text}) is None


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("garbage", "TXSEND_DNS='garbage' is not an IPv4 or IPv6 address"),
        ("1.2.3.4.5", "TXSEND_DNS='1.2.3.4.5' is not an IPv4 or IPv6 address"),
        ("127.0.0.1:abc", "port 'abc' is not a number from 1 to 65535"),
        ("127.0.0.1:99999", "port '99999' is not a number from 1 to 65535"),
        ("127.0.0.1:0", "port '0' is not a number"),
        ("", "is empty"),
        ("127.0.0.1,", "has an empty entry"),
        ("[::1", "is not written [IPv6]:port"),
        ("dns.example:53", "'dns.example' is not an IPv4 or IPv6 address"),
        (":99999", "port '99999' is not a number from 1 to 65535"),
        (":53", "names no host before the port"),
        ("127.0.0.1,nope", "entry 'nope' is not an IPv4 or IPv6 address"),
    ],
)
def test_a_bad_txsend_dns_is_explained(text: str, why: str) -> None:
    problem = dns_problem({"TXSEND_DNS": text})
    assert problem is not None and why in problem, problem
    assert problem.startswith(f"TXSEND_DNS={text!r}")
    assert problem.count(repr(text)) == 1 or "," in text, problem  # said once
    assert "host[:port][,host...]" in problem
    assert dns_problem({}) is None
