"""Tests for txsend.delivery.mxwait: rows parked while their domain's MX is looked up, the
lookups side by side (at most CONCURRENT at once), the rows back when a lookup ends."""

from __future__ import annotations

import asyncio

from txsend.delivery.domains import DomainGate
from txsend.delivery.mx import MxLookup
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
