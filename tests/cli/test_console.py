"""Tests for txsend.cli.console: the live view's per-domain lines."""

from __future__ import annotations

from txsend.cli.console import DOMAINS_SHOWN, domain_lines
from txsend.models import State
from txsend.reporting.stats import RunStats


def test_one_domain_shows_no_lines() -> None:
    stats = RunStats()
    stats.domain("a.example").attempts = 5
    assert domain_lines(stats) == []


def test_the_busiest_domains_and_every_slowed_one_are_shown() -> None:
    stats = RunStats()
    for n in range(20):
        domain = stats.domain(f"d{n:02}.example")
        domain.attempts = n
        domain.outcomes[State.SENT] = n
    slow = stats.domain("d00.example")
    slow.slowed, slow.pace, slow.waiting, slow.skipped = True, 2.5, 3, 40
    busy = stats.domain("google")
    busy.configured, busy.in_flight, busy.pace = True, 4, 40.0
    lines = domain_lines(stats)
    assert len(lines) == DOMAINS_SHOWN + 1
    assert lines[0] == "  google: sent 0, 4 in flight, pace 40/s"
    assert lines[1].startswith("  d19.example: sent 19")
    assert lines[-1] == "  d00.example: sent 0, 0 in flight, pace 2.5/s (slowed down), 43 waiting"
