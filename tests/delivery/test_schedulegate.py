"""The engine's schedule gate on an injected clock: which rows are held, which are kept for
a window opening within the run's horizon, and when they are released."""

from __future__ import annotations

import datetime

from txsend.delivery.schedulegate import ScheduleGate
from txsend.job.schedule import Schedule, load_zone, parse_window
from txsend.journal.records import Claimed
from txsend.models import State

WINDOWS = (parse_window("Mon-Fri 09:00-17:00"),)


def row(key: str, zone: str) -> Claimed:
    return Claimed(key, 1, f"{key}@example.com", {"TZ": zone}, f"<{key}@x>", 0, State.PENDING)


def at(zone: str, hour: int, minute: int = 0, second: int = 0) -> float:
    moment = datetime.datetime(2026, 12, 7, hour, minute, second, tzinfo=load_zone(zone))
    return moment.timestamp()


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_a_row_whose_window_opens_within_the_horizon_is_kept_and_released() -> None:
    # 16:59:30 in London is 17:59:30 in Paris and 08:59:30 in Los Angeles (a Monday)
    clock = Clock(at("Europe/London", 16, 59, 30))
    gate = ScheduleGate(Schedule(windows=WINDOWS), "tz", clock, horizon=60.0)
    london, paris = row("a", "Europe/London"), row("b", "Europe/Paris")
    la = row("c", "America/Los_Angeles")
    assert gate.admit(london)
    assert not gate.admit(paris)  # closed until Tuesday 09:00: for resume
    assert not gate.admit(la)  # opens in 30 s: kept
    assert gate.held == {"b", "c"}
    assert gate.release_in() == 30.0
    assert gate.release() == []
    clock.now += 29.0
    assert gate.release_in() == 1.0 and gate.release() == []
    clock.now += 1.0
    assert gate.release_in() == 0.0
    assert gate.release() == [la]
    assert gate.held == {"b"} and gate.release_in() is None
    assert gate.admit(la)  # its window is open now
    stats = gate.figures()
    assert stats is not None
    assert stats.waiting == 1
    assert stats.next_window == at("Europe/Paris", 9) + 86400 and stats.next_zone == "Europe/Paris"


def test_without_a_horizon_nothing_is_kept() -> None:
    clock = Clock(at("Europe/London", 16, 59, 30))
    gate = ScheduleGate(Schedule(windows=WINDOWS), "tz", clock)
    assert not gate.admit(row("c", "America/Los_Angeles"))
    assert gate.release_in() is None
    clock.now += 60
    assert gate.release() == []
    stats = gate.figures()
    assert stats is not None
    assert stats.waiting == 1 and stats.next_window == at("America/Los_Angeles", 9)


def test_kept_rows_the_run_did_not_reach_are_reported_waiting() -> None:
    clock = Clock(at("America/Los_Angeles", 8, 59, 50))
    gate = ScheduleGate(Schedule(windows=WINDOWS), "tz", clock, horizon=60.0)
    assert not gate.admit(row("c", "America/Los_Angeles"))
    stats = gate.figures()
    assert stats is not None  # the run stopped (a signal) before the window opened
    assert stats.waiting == 1 and stats.next_window == at("America/Los_Angeles", 9)
    assert stats.next_zone == "America/Los_Angeles"
