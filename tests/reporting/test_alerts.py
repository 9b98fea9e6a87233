"""The alert evaluator on an injected clock: every time is passed in, nothing sleeps."""

from __future__ import annotations

import time

import pytest

from txsend.job.alerts import AlertRule, Alerts
from txsend.models import State
from txsend.reporting.alerts import SLOTS, AlertMonitor, describe_value, describe_window

ERROR_RATE = AlertRule("error_rate", 0.1, 60.0)
DEFERRED = AlertRule("deferred_share", 0.2, 60.0)
P95 = AlertRule("p95_transaction_time", 2.0, 60.0)
FLOOR = AlertRule("throughput", 10.0, 60.0, above=False)


def monitor(*rules: AlertRule, min_messages: int = 10, start: float = 1000.0) -> AlertMonitor:
    return AlertMonitor(Alerts(rules=rules, min_messages=min_messages), start)


def feed(
    m: AlertMonitor,
    state: State,
    count: int,
    at: float,
    seconds: float | None = None,
    spread: float = 0.0,
) -> None:
    for i in range(count):
        m.outcome(state, seconds if state is State.SENT else None, at + spread * i / count)


def test_error_rate_fires_once_then_resolves() -> None:
    m = monitor(ERROR_RATE)
    feed(m, State.SENT, 8, 1000.0, 0.01)
    feed(m, State.BOUNCED, 2, 1001.0)
    [change] = m.evaluate(1002.0)
    assert (change.name, change.state, change.value, change.messages) == (
        "error_rate",
        "firing",
        0.2,
        10,
    )
    assert "20% of 10 transactions refused or failed in the last 1m (above 10%)" in change.text
    # still above: no second firing on the next ticks
    feed(m, State.FAILED, 1, 1003.0)
    assert m.evaluate(1003.5) == []
    assert m.evaluate(1004.0) == []
    # enough accepted messages bring it under: resolved, once
    feed(m, State.SENT, 30, 1005.0, 0.01)
    [resolved] = m.evaluate(1006.0)
    assert resolved.state == "resolved" and resolved.value == pytest.approx(3 / 41)
    assert m.evaluate(1007.0) == []
    report = m.to_json()[0]
    assert report["fired"] == 1 and report["active"] is False
    assert [e["state"] for e in report["events"]] == ["firing", "resolved"]


def test_the_threshold_itself_does_not_fire() -> None:
    m = monitor(ERROR_RATE)
    feed(m, State.SENT, 9, 1000.0, 0.01)
    feed(m, State.BOUNCED, 1, 1000.0)
    assert m.evaluate(1001.0) == []  # 10% is not above 10%


def test_unknown_and_failed_count_as_errors_skipped_does_not_count() -> None:
    m = monitor(ERROR_RATE, min_messages=4)
    feed(m, State.UNKNOWN, 1, 1000.0)
    feed(m, State.FAILED, 1, 1000.0)
    feed(m, State.SKIPPED, 50, 1000.0)  # suppressed or invalid rows are no transaction
    feed(m, State.SENT, 2, 1000.0, 0.01)
    [change] = m.evaluate(1001.0)
    assert change.value == 0.5 and change.messages == 4


def test_min_messages_holds_back_a_handful() -> None:
    m = monitor(ERROR_RATE, min_messages=50)
    feed(m, State.BOUNCED, 49, 1000.0)
    assert m.evaluate(1001.0) == []
    assert m.to_json()[0]["value"] is None
    feed(m, State.BOUNCED, 1, 1001.0)
    assert [c.state for c in m.evaluate(1002.0)] == ["firing"]


def test_outcomes_slide_out_of_the_window() -> None:
    m = monitor(ERROR_RATE, min_messages=5)
    feed(m, State.BOUNCED, 10, 1000.0)
    assert [c.state for c in m.evaluate(1001.0)] == ["firing"]
    # a minute later the bounces are out of the window; the accepted ones are in it
    feed(m, State.SENT, 10, 1062.0, 0.01)
    [change] = m.evaluate(1063.0)
    assert change.state == "resolved" and change.value == 0.0 and change.messages == 10


def test_the_window_slides_in_steps_of_a_sixtieth() -> None:
    m = monitor(ERROR_RATE, min_messages=1)
    feed(m, State.BOUNCED, 1, 1000.0)
    step = 60.0 / SLOTS
    assert [c.state for c in m.evaluate(1000.0 + 60.0 - 2 * step)] == ["firing"]
    feed(m, State.SENT, 1, 1000.0 + 60.0 + 2 * step, 0.01)
    assert [c.state for c in m.evaluate(1000.0 + 60.0 + 2 * step)] == ["resolved"]


def test_too_little_to_judge_changes_nothing() -> None:
    m = monitor(ERROR_RATE, min_messages=5)
    feed(m, State.BOUNCED, 5, 1000.0)
    assert [c.state for c in m.evaluate(1001.0)] == ["firing"]
    # the window empties: nothing to judge, so the alert stays firing
    assert m.evaluate(2000.0) == []
    assert m.firing == ["error_rate"]


def test_a_window_a_long_time_later_is_empty() -> None:
    m = monitor(DEFERRED, min_messages=1)
    feed(m, State.DEFERRED, 100, 1000.0)
    m.evaluate(1000.5)
    feed(m, State.SENT, 1, 10_000.0, 0.01)  # far past every slot: all of them emptied
    [change] = m.evaluate(10_000.0)
    assert change.state == "resolved" and change.messages == 1


def test_deferred_share() -> None:
    m = monitor(DEFERRED)
    feed(m, State.SENT, 7, 1000.0, 0.01)
    feed(m, State.DEFERRED, 3, 1000.0)
    [change] = m.evaluate(1001.0)
    assert change.name == "deferred_share" and change.value == pytest.approx(0.3)
    assert "30% of 10 transactions deferred" in change.text


def test_p95_transaction_time_counts_accepted_transactions_only() -> None:
    m = monitor(P95, min_messages=20)
    feed(m, State.SENT, 19, 1000.0, 0.05)
    feed(m, State.BOUNCED, 40, 1000.0)  # refused ones carry no time
    assert m.evaluate(1001.0) == []  # 19 timed transactions: fewer than min_messages
    feed(m, State.SENT, 1, 1001.0, 5.0)
    assert m.evaluate(1002.0) == []  # p95 of 20: the 19th, 0.05 s
    feed(m, State.SENT, 2, 1002.0, 5.0)
    [change] = m.evaluate(1003.0)  # 22: the 21st is slow
    assert change.state == "firing" and change.messages == 22
    assert 5.0 <= change.value <= 5.0 * 1.05  # the bucket's upper edge, within 5%
    # the slow ones slide out; fast ones come in
    feed(m, State.SENT, 30, 1070.0, 0.05)
    [resolved] = m.evaluate(1071.0)
    assert resolved.state == "resolved" and resolved.value < 0.06


def test_throughput_floor_waits_a_whole_window_after_the_start() -> None:
    m = monitor(FLOOR, start=1000.0)
    feed(m, State.SENT, 60, 1000.0, 0.01, spread=59.0)  # 1/s, under the 10/s floor
    assert m.evaluate(1030.0) == []  # warming up: no judgement before a whole window
    assert m.evaluate(1059.0) == []
    [change] = m.evaluate(1060.0)
    assert change.state == "firing" and change.value == pytest.approx(1.0, rel=0.05)
    # the oldest second has slid out: 58 messages over the 59 s the window covers
    assert change.messages == 58
    assert "throughput 0.983/s (58 messages accepted) in the last 1m (below 10/s)" in change.text
    feed(m, State.SENT, 1200, 1060.0, 0.01, spread=60.0)  # 20/s
    [resolved] = m.evaluate(1120.0)
    assert resolved.state == "resolved" and resolved.value > 10


def test_throughput_floor_counts_no_waiting_and_warms_up_again() -> None:
    m = monitor(FLOOR, start=1000.0)
    feed(m, State.SENT, 1200, 1000.0, 0.01, spread=60.0)
    assert m.evaluate(1060.0) == []  # 20/s: fine
    # nothing to send (retries not due): not slowness, and the clock stops
    m.waiting(True, 1061.0)
    assert m.evaluate(1100.0) == []
    assert m.evaluate(1200.0) == []
    # sending again: judged only a whole window after it resumed
    m.waiting(False, 1200.0)
    m.waiting(False, 1230.0)  # (told on every tick; the first one counts)
    feed(m, State.SENT, 30, 1200.0, 0.01, spread=59.0)
    assert m.evaluate(1259.0) == []
    [change] = m.evaluate(1260.0)
    assert change.state == "firing" and change.value == pytest.approx(0.5, rel=0.05)


def test_throughput_floor_needs_no_min_messages() -> None:
    m = monitor(FLOOR, min_messages=1000, start=1000.0)
    [change] = m.evaluate(1060.0)  # nothing accepted in a whole minute of sending
    assert change.state == "firing" and change.value == 0.0 and change.messages == 0


def test_rules_with_the_same_window_share_it_and_each_fires_on_its_own() -> None:
    m = monitor(ERROR_RATE, DEFERRED, min_messages=10)
    feed(m, State.DEFERRED, 5, 1000.0)
    feed(m, State.SENT, 5, 1000.0, 0.01)
    changes = m.evaluate(1001.0)
    assert [(c.name, c.state) for c in changes] == [("deferred_share", "firing")]
    feed(m, State.BOUNCED, 10, 1002.0)
    changes = m.evaluate(1003.0)
    assert [(c.name, c.state) for c in changes] == [("error_rate", "firing")]
    assert m.fired == ["error_rate", "deferred_share"]


def test_flapping_is_counted_and_the_report_keeps_the_last_events() -> None:
    m = monitor(ERROR_RATE, min_messages=1)
    t = 1000.0
    for _ in range(60):
        feed(m, State.BOUNCED, 1, t)
        assert [c.state for c in m.evaluate(t)] == ["firing"]
        t += 61.0
        feed(m, State.SENT, 1, t, 0.01)
        assert [c.state for c in m.evaluate(t)] == ["resolved"]
        t += 61.0
    report = m.to_json()[0]
    assert report["fired"] == 60
    assert len(report["events"]) == 50  # bounded
    assert report["events"][-1]["state"] == "resolved"


def test_events_carry_wall_time() -> None:
    wall = time.time()
    m = AlertMonitor(Alerts(rules=(ERROR_RATE,), min_messages=1), 5.0, wall_offset=wall - 5.0)
    feed(m, State.BOUNCED, 1, 6.0)
    [change] = m.evaluate(7.0)
    assert change.at == pytest.approx(wall + 2.0)
    assert m.to_json()[0]["events"][0]["at"].endswith("Z")


def test_describing_values_and_windows() -> None:
    assert describe_value(0.125, "ratio") == "12.5%"
    assert describe_value(2.5, "seconds") == "2.5s"
    assert describe_value(0.35, "seconds") == "350ms"
    assert describe_value(20, "per_second") == "20/s"
    assert describe_window(300) == "5m"
    assert describe_window(5400) == "1h30m"
    assert describe_window(90) == "1m30s"
    assert describe_window(1.5) == "1.5s"
