"""The journal contract: every test runs on the SQLite and the PostgreSQL backend.

The tests at the end are for the PostgreSQL journal only: several workers on one job
(fencing, leases, abort, the shared GCRA, concurrent ingest).
"""

from __future__ import annotations

import dataclasses
import itertools
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import pytest

from txsend.errors import RowError
from txsend.job.location import JournalLocation
from txsend.journal.api import JournalBackend
from txsend.journal.opening import open_journal
from txsend.journal.records import Claimed, FeedbackEntry, FeedbackRow, IngestStats, Record
from txsend.models import Row, State

if TYPE_CHECKING:
    from txsend.journal.postgres.journal import PgJournal

JOB = "contract"
LEASE = 2.0  # seconds: short, so that a dead worker's lease expires within a test


def key(i: int) -> str:
    return f"k{i}@example.com"


def rows(n: int, start: int = 1) -> list[Row]:
    return [Row(i, key(i), key(i), {"n": i}) for i in range(start, start + n)]


def ids(prefix: str) -> Callable[[], str]:
    counter = itertools.count()
    return lambda: f"<{prefix}.{next(counter)}@example.com>"


def keys(claimed: list[Claimed]) -> list[str]:
    return [c.key for c in claimed]


def found(journal: JournalBackend, k: str) -> Claimed:
    row = journal.find(k)
    assert row is not None, k
    return row


def bound(journal: JournalBackend) -> JournalBackend:
    journal.bind_job(JOB, {"data file p.csv": "1"}, {"source": "p.csv"})
    return journal


def reopen(journal: JournalBackend) -> JournalBackend:
    """Another journal object on the same location: a new run, or another worker."""
    return bound(open_journal(JournalLocation.parse(journal.location), job_name=JOB, lease=LEASE))


def die(journal: JournalBackend) -> None:
    """Simulate a killed process: a PostgreSQL worker stops renewing, releasing nothing."""
    if journal.shared:
        pg = cast("PgJournal", journal)
        pg.lease._stop.set()
        if pg.lease._heartbeat is not None:
            pg.lease._heartbeat.join()
        time.sleep(LEASE + 0.5)


def wait_for(condition: Callable[[], bool], timeout: float = 2.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.fixture(params=["sqlite", "postgresql"])
def journal(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[JournalBackend]:
    if request.param == "sqlite":
        j = open_journal(JournalLocation.parse(tmp_path / "j.db"), job_name=JOB)
    else:
        url = request.getfixturevalue("pg_url")
        j = open_journal(JournalLocation.parse(url), job_name=JOB, lease=LEASE)
    bound(j)
    yield j
    j.close()


# --- ingest ------------------------------------------------------------------------


def test_ingest_adds_pending_rows_with_no_attempts(journal: JournalBackend) -> None:
    assert not journal.ingest_complete()
    stats = journal.ingest(rows(3), ids("a"))
    assert (stats.new, stats.duplicates, stats.invalid) == (3, 0, 0)
    assert journal.ingest_complete()
    first = found(journal, key(1))
    assert (first.state, first.attempts, first.row, first.address) == (
        State.PENDING,
        0,
        1,
        key(1),
    )
    assert first.data == {"n": 1}
    assert first.first_attempt_at is None
    assert journal.counts()[State.PENDING] == 3
    assert journal.find("nobody@example.com") is None


def test_second_ingest_adds_nothing_and_keeps_message_ids(journal: JournalBackend) -> None:
    journal.ingest(rows(3), ids("a"))
    before = {k: found(journal, k).message_id for k in map(key, range(1, 4))}
    again = journal.ingest(rows(3), ids("b"))
    assert again.new == 0
    assert {k: found(journal, k).message_id for k in before} == before
    assert sorted(before.values()) == [f"<a.{i}@example.com>" for i in range(3)]
    assert journal.counts()[State.PENDING] == 3


def test_ingest_counts_and_lists_duplicate_and_invalid_rows(journal: JournalBackend) -> None:
    data: list[Row | RowError] = [*rows(3), Row(4, key(1), key(1), {"n": "dup"})]
    data.append(RowError("missing address (no value in 'email')", row=5, key="x"))
    stats = journal.ingest(data, ids("a"))
    assert (stats.new, stats.duplicates, stats.invalid) == (3, 1, 1)
    assert len(stats.problems) == 2
    skipped = [
        {"row": 4, "key": key(1), "reason": "duplicate key (first seen in row 1)"},
        {"row": 5, "key": "x", "reason": "missing address (no value in 'email')"},
    ]
    assert list(journal.skipped_rows()) == skipped
    assert journal.counts()[State.SKIPPED] == 2
    assert found(journal, key(1)).data == {"n": 1}  # the first row of a key wins
    again = journal.ingest(data, ids("b"))
    assert again.new == 0
    assert list(journal.skipped_rows()) == skipped
    assert journal.counts()[State.SKIPPED] == 2


# --- claim ---------------------------------------------------------------------------


def test_claim_takes_rows_in_data_order_once(journal: JournalBackend) -> None:
    data = [
        Row(i, f"{c}@example.com", f"{c}@example.com", {"n": i}) for i, c in enumerate("zyxw", 1)
    ]
    journal.ingest(data, ids("a"))
    first = journal.claim(2, include_unknown=True)
    assert keys(first) == ["z@example.com", "y@example.com"]
    assert [(c.row, c.state, c.attempts, c.data) for c in first] == [
        (1, State.PENDING, 0, {"n": 1}),
        (2, State.PENDING, 0, {"n": 2}),
    ]
    assert first[0].message_id == found(journal, "z@example.com").message_id
    assert keys(journal.claim(10, include_unknown=True)) == ["x@example.com", "w@example.com"]
    assert journal.claim(10, include_unknown=True) == []


def test_claim_skips_terminal_rows_and_unknown_unless_asked(journal: JournalBackend) -> None:
    journal.ingest(rows(7), ids("a"))
    assert keys(journal.claim(6, include_unknown=True)) == [key(i) for i in range(1, 7)]
    outcomes = [State.SENT, State.BOUNCED, State.FAILED, State.SKIPPED]
    records = [Record(key(i), s, 500, "done") for i, s in enumerate(outcomes, 1)]
    records.append(Record(key(5), State.DEFERRED, 451, "later", next_attempt_at=100.0))
    records.append(Record(key(6), State.UNKNOWN, None, "no reply"))
    assert journal.write([], records) == set()
    with closing(reopen(journal)) as run:
        assert keys(run.claim(10, include_unknown=False, now=500.0)) == [key(5), key(7)]
    with closing(reopen(journal)) as run:
        assert keys(run.claim(10, include_unknown=True, now=500.0)) == [key(5), key(6), key(7)]


def test_deferred_rows_are_claimed_only_when_due(journal: JournalBackend) -> None:
    journal.ingest(rows(3), ids("a"))
    journal.claim(3, include_unknown=False)
    due = {key(1): 100.0, key(2): 200.0, key(3): 10_000.0}
    journal.write(
        [], [Record(k, State.DEFERRED, 451, "later", next_attempt_at=t) for k, t in due.items()]
    )
    with closing(reopen(journal)) as run:
        assert run.claim(10, include_unknown=True, now=50.0) == []
        assert keys(run.claim(10, include_unknown=True, now=150.0)) == [key(1)]
        claimed = run.claim(10, include_unknown=True, now=250.0)
        assert keys(claimed) == [key(2)]
        assert claimed[0].state is State.DEFERRED


def test_claim_retries_returns_due_deferred_rows_except_busy(journal: JournalBackend) -> None:
    journal.ingest(rows(4), ids("a"))
    journal.claim(4, include_unknown=False)
    due = {key(1): 300.0, key(2): 100.0, key(3): 200.0, key(4): 10_000.0}
    journal.write(
        [], [Record(k, State.DEFERRED, 451, "later", next_attempt_at=t) for k, t in due.items()]
    )
    with closing(reopen(journal)) as run:
        retries = run.claim_retries(10, busy={key(3)}, now=500.0)
        assert sorted(keys(retries)) == [key(1), key(2)]
        assert {c.state for c in retries} == {State.DEFERRED}
        # a row left out while busy is only put off: it is due again once it is not busy
        assert key(3) in keys(run.claim_retries(10, busy=set(), now=500.0))


# --- record ------------------------------------------------------------------------


def test_sending_then_sent_is_recorded_with_one_attempt(journal: JournalBackend) -> None:
    journal.ingest(rows(2), ids("a"))
    run = journal.start_run("run")
    journal.claim(10, include_unknown=False)
    assert journal.write([(key(1), run)], []) == set()
    sending = found(journal, key(1))
    assert (sending.state, sending.attempts) == (State.SENDING, 1)
    assert sending.first_attempt_at is not None
    sent = Record(key(1), State.SENT, 250, "250 2.0.0 queued as 1", "relay:25")
    assert journal.write([], [sent]) == set()
    row = found(journal, key(1))
    assert (row.state, row.attempts) == (State.SENT, 1)
    assert journal.reply_codes() == [(250, "250 2.0.0 queued as 1", 1)]
    assert journal.relay_outcomes() == {"relay:25": {"sent": 1}}
    assert found(journal, key(2)).state is State.PENDING


def test_deferred_outcomes_set_the_next_attempt(journal: JournalBackend) -> None:
    journal.ingest(rows(3), ids("a"))
    run = journal.start_run("run")
    journal.claim(10, include_unknown=False)
    assert journal.next_attempt_at() is None
    assert journal.write([(key(1), run)], []) == set()
    later = [
        Record(key(1), State.DEFERRED, 451, "451 4.7.1 later", "r", next_attempt_at=300.0),
        Record(key(2), State.DEFERRED, 421, "421 busy", "r", next_attempt_at=200.0, attempt=True),
    ]
    assert journal.write([], later) == set()
    assert journal.next_attempt_at() == 200.0
    # past the retries a run leaves alone (rows held for their send window)
    assert journal.next_attempt_at(after=200.0) == 300.0
    assert journal.next_attempt_at(after=300.0) is None
    assert [(found(journal, k).state, found(journal, k).attempts) for k in (key(1), key(2))] == [
        (State.DEFERRED, 1),
        (State.DEFERRED, 1),
    ]
    assert found(journal, key(2)).first_attempt_at is not None
    assert journal.counts()[State.DEFERRED] == 2


def test_hard_bounce_suppresses_the_address(journal: JournalBackend) -> None:
    journal.ingest(rows(2), ids("a"))
    run = journal.start_run("run")
    journal.claim(10, include_unknown=False)
    assert list(journal.suppressed()) == []
    bounce = Record(
        key(1),
        State.BOUNCED,
        550,
        "550 5.1.1 no such user",
        "r",
        suppress="hard bounce in this job",
        address="K1@Example.COM",
    )
    assert journal.write([(key(1), run)], [bounce]) == set()
    assert list(journal.suppressed()) == [("k1@example.com", "hard bounce in this job")]
    assert found(journal, key(1)).state is State.BOUNCED


# --- the crash protocol -------------------------------------------------------------


def test_row_left_sending_by_a_dead_run_becomes_unknown(journal: JournalBackend) -> None:
    journal.ingest(rows(2), ids("a"))
    run = journal.start_run("run")
    assert keys(journal.claim(10, include_unknown=False)) == [key(1), key(2)]
    assert journal.write([(key(1), run)], []) == set()
    die(journal)
    with closing(reopen(journal)) as second:
        assert second.recover() == 1
        row = found(second, key(1))
        assert (row.state, row.attempts) == (State.UNKNOWN, 1)
        assert second.problems()[1][0]["reply"]  # says why it is unknown
        assert keys(second.claim(10, include_unknown=False)) == [key(2)]


# --- schedule.not_after ------------------------------------------------------------

EXPIRED = "not sent before schedule.not_after (2026-12-09 18:00 CET)"


def test_expire_turns_pending_and_deferred_rows_expired_and_leaves_the_others(
    journal: JournalBackend,
) -> None:
    journal.ingest(rows(6), ids("a"))
    run = journal.start_run("run")
    journal.claim(10, include_unknown=False)
    records = [
        Record(key(1), State.SENT, 250, "250 ok", "a"),
        Record(key(2), State.DEFERRED, 451, "451 later", "a", next_attempt_at=9e9),
        Record(key(3), State.BOUNCED, 550, "550 no", "a"),
    ]
    assert journal.write([(key(i), run) for i in (1, 2, 3, 4)], records) == set()
    journal.recover()  # key 4 was left in `sending`: unknown
    assert found(journal, key(4)).state is State.UNKNOWN
    assert journal.expire(EXPIRED) == 3  # deferred 2, pending 5 and 6
    assert [found(journal, key(i)).state for i in range(1, 7)] == [
        State.SENT,
        State.EXPIRED,
        State.BOUNCED,
        State.UNKNOWN,
        State.EXPIRED,
        State.EXPIRED,
    ]
    assert journal.next_attempt_at() is None  # the expired row waits for nothing
    assert journal.counts()[State.EXPIRED] == 3
    count, problems = journal.problems()
    expired = [p for p in problems if p["state"] == "expired"]
    assert [p["key"] for p in expired] == [key(2), key(5), key(6)]
    assert {p["reply"] for p in expired} == {EXPIRED}
    assert count == 5  # bounced, unknown and the three expired
    assert journal.expire(EXPIRED) == 0  # terminal: nothing left to expire
    with closing(reopen(journal)) as later:  # a later run claims none of them
        assert keys(later.claim(10, include_unknown=True)) == [key(4)]
        assert later.claim_retries(10, busy=(), now=1e10) == []


def test_due_values_count_a_column_among_due_rows_only(journal: JournalBackend) -> None:
    zones = ["Europe/Paris", " Europe/Paris ", "Asia/Tokyo", "", None, "Asia/Tokyo", "UTC"]
    data: list[dict[str, object]] = [{"TZ": z} for z in zones]
    data[4] = {"n": 5}  # no such member: the job's zone
    data.append({"tz": "America/New_York"})  # another case: found as the loader finds it
    journal.ingest([Row(i, key(i), key(i), d) for i, d in enumerate(data, 1)], ids("a"))
    run = journal.start_run("run")
    journal.claim(10, include_unknown=False)
    records = [
        Record(key(3), State.DEFERRED, 451, "451 later", "a", next_attempt_at=9e9),
        Record(key(6), State.SENT, 250, "250 ok", "a"),
        Record(key(7), State.BOUNCED, 550, "550 no", "a"),
    ]
    assert journal.write([(key(i), run) for i in (3, 6, 7)], records) == set()
    # rows 6 (sent) and 7 (bounced) are not due; deferred row 3 is; the rest are pending
    due = journal.due_values("TZ")
    assert due == [  # most rows first, then by value (None: missing or empty, first)
        (None, 2),
        ("Europe/Paris", 2),
        ("America/New_York", 1),
        ("Asia/Tokyo", 1),
    ], due
    assert journal.due_values("TZ", limit=2) == due[:2]
    assert journal.due_values("nothing") == [(None, 6)]


# --- summary -------------------------------------------------------------------------


def settle_five(journal: JournalBackend) -> int:
    """Five rows: two sent, two bounced with different enhanced codes, one deferred."""
    data = [Row(i, key(i), key(i), {"n": i, "name": "Zoë", "tags": ["a", i]}) for i in range(1, 6)]
    journal.ingest(data, ids("a"))
    run = journal.start_run("run")
    journal.claim(10, include_unknown=False)
    records = [
        Record(key(1), State.SENT, 250, "250 2.0.0 ok", "a"),
        Record(key(2), State.SENT, 250, "250 2.0.0 queued as 2", "b"),
        Record(key(3), State.BOUNCED, 550, "550 5.1.1 no such user", "a"),
        Record(key(4), State.FAILED, 550, "550 5.7.1 refused", "a"),
        Record(key(5), State.DEFERRED, 451, "451 4.7.1 later", "b", next_attempt_at=9e9),
    ]
    assert journal.write([(key(i), run) for i in range(1, 6)], records) == set()
    return run


def test_counts_and_problems(journal: JournalBackend) -> None:
    settle_five(journal)
    counts = journal.counts()
    assert {s: n for s, n in counts.items() if n} == {
        State.SENT: 2,
        State.BOUNCED: 1,
        State.FAILED: 1,
        State.DEFERRED: 1,
    }
    count, problems = journal.problems()
    assert count == 2
    assert problems == [
        {
            "key": key(3),
            "address": key(3),
            "state": "bounced",
            "code": 550,
            "reply": "550 5.1.1 no such user",
        },
        {
            "key": key(4),
            "address": key(4),
            "state": "failed",
            "code": 550,
            "reply": "550 5.7.1 refused",
        },
    ]
    assert journal.problems(limit=1) == (2, problems[:1])
    assert list(journal.iter_problems()) == [
        ({"n": 3, "name": "Zoë", "tags": ["a", 3]}, "bounced", 550, "550 5.1.1 no such user"),
        ({"n": 4, "name": "Zoë", "tags": ["a", 4]}, "failed", 550, "550 5.7.1 refused"),
    ]


def test_outcomes_list_every_row_as_it_stands(journal: JournalBackend) -> None:
    journal.ingest(rows(2), ids("a"))
    run = journal.start_run("run")
    journal.claim(1, include_unknown=False)
    sent = Record(key(1), State.SENT, 250, "250 2.0.0 queued as 1", "a")
    assert journal.write([(key(1), run)], [sent]) == set()
    outcomes = journal.outcomes()
    assert outcomes == [
        {
            "key": key(1),
            "address": key(1),
            "state": "sent",
            "code": 250,
            "reply": "250 2.0.0 queued as 1",
            "attempts": 1,
            "relay": "a",
        },
        {
            "key": key(2),
            "address": key(2),
            "state": "pending",
            "code": None,
            "reply": None,
            "attempts": 0,
            "relay": None,
        },
    ]
    assert journal.outcomes(limit=1) == outcomes[:1]


def test_relay_outcomes_and_reply_codes(journal: JournalBackend) -> None:
    settle_five(journal)
    assert journal.relay_outcomes() == {
        "a": {"sent": 1, "bounced": 1, "failed": 1},
        "b": {"sent": 1, "deferred": 1},
    }
    codes = journal.reply_codes()
    assert codes[0] == (250, "250 2.0.0 ok", 2)
    assert sorted(codes[1:]) == [
        (451, "451 4.7.1 later", 1),
        (550, "550 5.1.1 no such user", 1),
        (550, "550 5.7.1 refused", 1),
    ]


def test_runs_are_recorded_with_counts(journal: JournalBackend) -> None:
    assert journal.last_run() is None
    run = settle_five(journal)
    journal.finish_run(run, 1)
    later = journal.start_run("resume")
    runs = journal.runs()
    assert [(r.id, r.command, r.exit_code) for r in runs] == [
        (run, "run", 1),
        (later, "resume", None),
    ]
    assert runs[0].counts == {"sent": 2, "bounced": 1, "failed": 1, "deferred": 1}
    assert runs[0].ended_at is not None and runs[0].ended_at >= runs[0].started_at
    last = journal.last_run()
    assert last is not None
    assert (last.id, last.ended_at, last.counts) == (later, None, {})


def test_find_returns_a_row_as_it_is_now(journal: JournalBackend) -> None:
    settle_five(journal)
    row = found(journal, key(2))
    assert (row.key, row.row, row.address, row.state, row.attempts) == (
        key(2),
        2,
        key(2),
        State.SENT,
        1,
    )
    assert row.data == {"n": 2, "name": "Zoë", "tags": ["a", 2]}
    assert row.message_id == "<a.1@example.com>"


# --- refresh -------------------------------------------------------------------------


def test_refresh_takes_new_data_for_undelivered_rows_only(journal: JournalBackend) -> None:
    journal.ingest(rows(4), ids("a"))
    assert keys(journal.claim(2, include_unknown=False)) == [key(1), key(2)]
    records = [
        Record(key(1), State.SENT, 250, "ok"),
        Record(key(2), State.SKIPPED, None, "line break in Subject"),
    ]
    assert journal.write([], records) == set()
    message_id = found(journal, key(2)).message_id
    changed = [
        Row(1, key(1), key(1), {"n": "new"}),
        Row(2, key(2), key(2), {"n": "fixed"}),
        Row(3, key(5), key(5), {"n": 5}),  # a new key
        Row(4, key(3), key(3), {"n": "moved"}),  # k4 left the file
        Row(5, key(3), key(3), {"n": "dup"}),
    ]
    stats = journal.ingest(changed, ids("b"), refresh=True)
    assert (stats.new, stats.existing, stats.duplicates) == (1, 3, 1)

    def get(k: str) -> tuple[State, object, int]:
        row = found(journal, k)
        return row.state, row.data["n"], row.row

    assert get(key(1)) == (State.SENT, 1, 1)  # delivered: keeps what was sent
    assert get(key(2)) == (State.PENDING, "fixed", 2)  # refused before a relay: redone
    assert get(key(3)) == (State.PENDING, "moved", 4)
    assert get(key(4)) == (State.SKIPPED, 4, 4)  # gone from the data file
    assert get(key(5)) == (State.PENDING, 5, 3)
    assert found(journal, key(2)).message_id == message_id
    assert [r["reason"] for r in journal.skipped_rows()] == ["duplicate key (first seen in row 4)"]
    assert journal.ingest_complete()


# --- rate limits ---------------------------------------------------------------------


T0 = 1793664000.0  # 2026-11-03 00:00 UTC


def test_ledger_holds_exactly_its_limit(journal: JournalBackend) -> None:
    holds = [journal.ledger_hold("r", T0 - 3600, 3, T0, T0 + 600) for _ in range(4)]
    assert all(h is not None for h in holds[:3]) and holds[3] is None
    assert journal.ledger_hold("other", T0 - 3600, 3, T0, T0 + 600) is not None  # apart
    assert len(journal.ledger_usage("r", T0 - 3600, T0).holds) == 3
    # lapsed holds (a killed process) count no more
    assert journal.ledger_hold("r", T0 - 3600, 3, T0 + 600, T0 + 1200) is not None


def test_ledger_keep_give_back_count_and_prune(journal: JournalBackend) -> None:
    first = journal.ledger_hold("r", T0 - 3600, 2, T0, T0 + 600)
    second = journal.ledger_hold("r", T0 - 3600, 2, T0, T0 + 600)
    assert first is not None and second is not None
    journal.ledger_keep(first, "r", T0, 60.0, T0 + 60 + 3600)
    journal.ledger_keep(second, "r", T0, 60.0, T0 + 60 + 3600)
    usage = journal.ledger_usage("r", T0 - 3600, T0 + 1)
    assert (usage.buckets, usage.holds, usage.accepted) == ([(T0, 60.0, 2)], [], 2)
    assert journal.ledger_hold("r", T0 - 3600, 2, T0 + 1, T0 + 600) is None
    journal.ledger_give_back("r", T0, 60.0)
    third = journal.ledger_hold("r", T0 - 3600, 2, T0 + 1, T0 + 600)
    assert third is not None
    journal.ledger_release(third)
    assert journal.ledger_usage("r", T0 - 3600, T0 + 1).holds == []
    # a bucket counts while any part of it is in the window
    assert journal.ledger_usage("r", T0 + 59.9, T0 + 3600).accepted == 1
    assert journal.ledger_usage("r", T0 + 60, T0 + 3600).accepted == 0
    assert journal.ledger_first("r") == T0
    assert journal.ledger_first("nobody") is None
    journal.ledger_prune(T0 + 60 + 3600 - 1)
    assert journal.ledger_usage("r", 0.0, T0).accepted == 1
    journal.ledger_prune(T0 + 60 + 3600)
    assert journal.ledger_usage("r", 0.0, T0).accepted == 0


def test_ledger_keeps_history_without_keep_until(journal: JournalBackend) -> None:
    hold = journal.ledger_hold("warmup:acme.example", T0, 5, T0, T0 + 600)
    assert hold is not None
    journal.ledger_keep(hold, "warmup:acme.example", T0, 86400.0, None)
    journal.ledger_prune(T0 + 365 * 86400)
    assert journal.ledger_first("warmup:acme.example") == T0


def test_sent_days_count_the_journals_accepted_recipients_per_utc_day(
    journal: JournalBackend,
) -> None:
    journal.ingest(rows(4), ids("a"))
    assert journal.sent_days() == []
    run = journal.start_run("run")
    journal.claim(10, include_unknown=False)
    journal.write([(key(i), run) for i in (1, 2, 3)], [])
    journal.write(
        [],
        [
            Record(key(1), State.SENT, 250, "250 ok", "relay:25"),
            Record(key(2), State.SENT, 250, "250 ok", "relay:25"),
            Record(key(3), State.BOUNCED, 550, "550 no", "relay:25"),
        ],
    )
    assert journal.sent_days() == [(time.time() // 86400 * 86400, 2)]


def test_ledger_seed_writes_only_an_account_without_history(journal: JournalBackend) -> None:
    account = "warmup:acme.example"
    days = [(T0 - 86400, 86400.0, 3), (T0, 86400.0, 7)]
    assert journal.ledger_seed(account, days) is True
    assert journal.ledger_seed(account, days) is False  # idempotent
    assert journal.ledger_first(account) == T0 - 86400
    assert journal.ledger_usage(account, T0, T0 + 10).accepted == 7
    journal.ledger_prune(T0 + 365 * 86400)  # kept for good: the warm-up's history
    assert journal.ledger_usage(account, 0.0, T0 + 10).accepted == 10


def test_reserve_slots_spaces_reservations(journal: JournalBackend) -> None:
    first = journal.reserve_slots("r", 0.01, 10)
    second = journal.reserve_slots("r", 0.01, 10)
    assert abs(first) < 0.01
    assert 0.08 < second <= 0.1


# --- what came back after sending: late bounces, delays, complaints ---------------


def hex_id(i: int) -> str:
    return f"<{i:032x}@example.com>"


def hex_ids() -> Callable[[], str]:
    counter = itertools.count(1)
    return lambda: hex_id(next(counter))


# The rows of `settle_states`, by state: k1 sent, k2 unknown, k3 pending, ...
SETTLED = [
    State.SENT,
    State.UNKNOWN,
    State.PENDING,
    State.DEFERRED,
    State.SKIPPED,
    State.FAILED,
    State.BOUNCED,
]


def settle_states(journal: JournalBackend) -> None:
    """Seven rows, one in each state of `SETTLED` (message ids `hex_id(1)`...)."""
    journal.ingest(rows(len(SETTLED)), hex_ids())
    journal.claim(10, include_unknown=False)
    outcomes = {
        State.SENT: Record("", State.SENT, 250, "250 2.0.0 ok", "r"),
        State.UNKNOWN: Record("", State.UNKNOWN, None, "no reply", "r"),
        State.DEFERRED: Record("", State.DEFERRED, 451, "451 later", "r", next_attempt_at=9e9),
        State.SKIPPED: Record("", State.SKIPPED, None, "line break in Subject"),
        State.FAILED: Record("", State.FAILED, 554, "554 refused", "r"),
        State.BOUNCED: Record("", State.BOUNCED, 550, "550 5.1.1 no such user", "r"),
    }
    records = [
        dataclasses.replace(outcomes[state], key=key(i))
        for i, state in enumerate(SETTLED, 1)
        if state in outcomes
    ]
    assert journal.write([], records) == set()


def report(event: str, kind: str, k: str | None, **fields: object) -> FeedbackEntry:
    values: dict[str, Any] = {
        "matched_by": "verp" if k else None,
        "recipient": k,
        "source": f"maildir:new/{event}",
        "detector": "dsn",
    }
    if kind == "failed":
        values.update(status="5.1.1", code=550, diagnostic="smtp; 550 5.1.1 User unknown")
    values.update(fields)
    return FeedbackEntry(event, kind, k, **values)


def states(journal: JournalBackend) -> list[State]:
    return [found(journal, key(i)).state for i in range(1, len(SETTLED) + 1)]


def test_a_late_bounce_turns_a_sent_row_bounced_keeping_its_sent_at(
    journal: JournalBackend,
) -> None:
    settle_states(journal)
    sent_before = journal.feedback_rows(key=key(1))[0].sent_at
    assert sent_before is not None
    assert journal.record_feedback([report("e1", "failed", key(1))]) == ["applied"]
    row = journal.feedback_rows(key=key(1))[0]
    assert (row.state, row.sent_at) == (State.BOUNCED, sent_before)
    _, problems = journal.problems()
    assert {
        "key": key(1),
        "address": key(1),
        "state": "bounced",
        "code": 550,
        "reply": "accepted, then bounced: 5.1.1 smtp; 550 5.1.1 User unknown",
    } in problems
    counts = journal.counts()
    assert (counts[State.BOUNCED], counts[State.SENT]) == (2, 0)  # counted as bounced
    assert journal.feedback_counts() == {
        "late_bounced": 1,
        "delayed": 0,
        "complaints": 0,
        "unmatched": 0,
        "events": 1,
    }


def test_a_permanent_failure_changes_only_sent_and_unknown_rows(
    journal: JournalBackend,
) -> None:
    settle_states(journal)
    batch = [report(f"f{i}", "failed", key(i)) for i in range(1, len(SETTLED) + 1)]
    assert journal.record_feedback(batch) == ["applied", "applied"] + ["noted"] * 5
    assert states(journal) == [State.BOUNCED, State.BOUNCED, *SETTLED[2:]]
    unknown = found(journal, key(2))
    assert unknown.attempts == 0  # a report is no attempt
    assert journal.feedback_rows(key=key(2))[0].sent_at is None  # never known as sent
    assert journal.find(key(6)) is not None
    _, problems = journal.problems()
    replies = {p["key"]: (p["code"], p["reply"]) for p in problems}
    assert replies[key(6)] == (554, "554 refused")  # a failed row keeps its own reply
    assert replies[key(7)] == (550, "550 5.1.1 no such user")
    assert journal.feedback_counts()["late_bounced"] == 2


def test_a_delay_proves_an_unknown_row_sent_and_changes_nothing_else(
    journal: JournalBackend,
) -> None:
    settle_states(journal)
    batch = [
        report(f"d{i}", "delayed", key(i), status="4.4.7", diagnostic="smtp; 451 later")
        for i in range(1, len(SETTLED) + 1)
    ]
    assert journal.record_feedback(batch) == ["noted", "applied"] + ["noted"] * 5
    assert states(journal) == [State.SENT, State.SENT, *SETTLED[2:]]
    now_sent = journal.feedback_rows(key=key(2))[0]
    assert now_sent.sent_at is not None
    assert journal.feedback_counts() == {
        "late_bounced": 0,
        "delayed": 7,
        "complaints": 0,
        "unmatched": 0,
        "events": 7,
    }
    # the row, sent after all, may bounce later
    assert journal.record_feedback([report("late", "failed", key(2))]) == ["applied"]
    assert found(journal, key(2)).state is State.BOUNCED


def test_delivered_and_complaint_reports_change_no_state(journal: JournalBackend) -> None:
    settle_states(journal)
    batch = [report("ok", "delivered", key(2)), report("spam", "complaint", key(1))]
    assert journal.record_feedback(batch) == ["noted", "noted"]
    assert states(journal) == SETTLED


def test_a_complaint_suppresses_the_address_in_the_same_transaction(
    journal: JournalBackend,
) -> None:
    settle_states(journal)
    complaint = report("c1", "complaint", key(1), suppress="complaint: abuse")
    unmatched = report("c2", "complaint", None, recipient="Who@Example.ORG", suppress="abuse")
    assert journal.record_feedback([complaint, unmatched]) == ["noted", "noted"]
    assert sorted(journal.suppressed()) == [
        (key(1), "complaint: abuse"),
        ("who@example.org", "abuse"),
    ]
    assert journal.feedback_counts()["complaints"] == 2
    assert journal.record_feedback([complaint]) == ["duplicate"]
    assert len(list(journal.suppressed())) == 2


def test_the_same_events_again_are_duplicates_and_change_nothing(
    journal: JournalBackend,
) -> None:
    settle_states(journal)
    first = [report("a", "failed", key(1)), report("b", "delayed", key(2))]
    assert journal.record_feedback(first) == ["applied", "applied"]
    after_first = states(journal)
    # the process died after that batch: the next run reads the whole mailbox again
    with closing(reopen(journal)) as again:
        batch = [*first, report("c", "failed", key(2)), report("c", "failed", key(2))]
        assert again.record_feedback(batch) == ["duplicate", "duplicate", "applied", "duplicate"]
        assert again.record_feedback(batch) == ["duplicate"] * 4
        assert states(again)[2:] == after_first[2:]
        assert states(again)[:2] == [State.BOUNCED, State.BOUNCED]
        assert again.feedback_counts() == {
            "late_bounced": 2,
            "delayed": 1,
            "complaints": 0,
            "unmatched": 0,
            "events": 3,
        }


def test_two_reports_about_one_row_in_a_batch_apply_in_order(journal: JournalBackend) -> None:
    settle_states(journal)
    batch = [
        report("d", "delayed", key(2), status="4.4.1"),
        report("f", "failed", key(2), code=None, status="5.0.0", diagnostic=None),
    ]
    assert journal.record_feedback(batch) == ["applied", "applied"]
    row = journal.feedback_rows(key=key(2))[0]
    assert row.state is State.BOUNCED
    assert row.sent_at is not None  # the delay proved it accepted
    problem = next(p for p in journal.problems()[1] if p["key"] == key(2))
    assert (problem["code"], problem["reply"]) == (None, "accepted, then bounced: 5.0.0")


def test_an_unmatched_report_is_recorded_and_counted(journal: JournalBackend) -> None:
    settle_states(journal)
    lost = report("u1", "failed", None, recipient="gone@example.net", unmatched_reason="no token")
    wrong_key = report("u2", "failed", "nobody@example.com", matched_by="recipient")
    assert journal.record_feedback([lost, wrong_key]) == ["noted", "noted"]
    assert states(journal) == SETTLED
    counts = journal.feedback_counts()
    assert (counts["unmatched"], counts["events"], counts["late_bounced"]) == (2, 2, 0)
    newest, oldest = list(journal.feedback_events())
    assert (newest["event_id"], oldest["event_id"]) == ("u2", "u1")
    assert oldest["unmatched_reason"] == "no token"
    assert oldest["state_before"] is None and oldest["outcome"] == "noted"


def test_feedback_events_keep_what_the_report_said(journal: JournalBackend) -> None:
    settle_states(journal)
    entry = report("e1", "failed", key(1), reporting_mta="dns; mx.example", occurred_at=12.5)
    journal.record_feedback([entry, report("e2", "delayed", key(3))])
    events = list(journal.feedback_events())
    assert [e["event_id"] for e in events] == ["e2", "e1"]  # newest first
    recorded_at = events[1].pop("recorded_at")
    assert isinstance(recorded_at, float)
    assert events[1] == {
        "event_id": "e1",
        "kind": "failed",
        "key": key(1),
        "matched_by": "verp",
        "recipient": key(1),
        "status": "5.1.1",
        "code": 550,
        "diagnostic": "smtp; 550 5.1.1 User unknown",
        "reporting_mta": "dns; mx.example",
        "source": "maildir:new/e1",
        "detector": "dsn",
        "occurred_at": 12.5,
        "suppress": None,
        "unmatched_reason": None,
        "outcome": "applied",
        "state_before": "sent",
        "state_after": "bounced",
    }
    assert (events[0]["state_before"], events[0]["state_after"]) == ("pending", None)
    assert len(list(journal.feedback_events(limit=1))) == 1


def test_a_batch_that_fails_midway_records_nothing(journal: JournalBackend) -> None:
    import sqlite3

    errors: tuple[type[BaseException], ...] = (sqlite3.Error,)
    if journal.shared:
        import psycopg

        errors = (psycopg.Error,)
    settle_states(journal)
    good = [report("g1", "failed", key(1), suppress="hard bounce"), report("g2", "delayed", key(2))]
    unstorable = report("bad", "failed", key(2), reporting_mta=cast(str, object()))
    with pytest.raises(errors):
        journal.record_feedback([*good, unstorable])
    with pytest.raises(ValueError, match="unknown kind 'bogus'"):
        journal.record_feedback([*good, report("worse", "bogus", key(2))])
    with pytest.raises(ValueError, match="without an event id"):
        journal.record_feedback([*good, report("", "failed", key(2))])
    assert states(journal) == SETTLED
    assert list(journal.suppressed()) == []
    assert journal.feedback_counts()["events"] == 0
    assert journal.record_feedback(good) == ["applied", "applied"]  # none was recorded


def test_feedback_rows_find_a_row_by_key_message_id_or_address(journal: JournalBackend) -> None:
    data = [*rows(3), Row(4, "other", "K1@Example.com", {"n": 4})]
    journal.ingest(data, hex_ids())
    journal.prepare_feedback()
    journal.prepare_feedback()  # once made, nothing to do
    by_key = journal.feedback_rows(key=key(2))
    assert by_key == [FeedbackRow(key(2), key(2), hex_id(2), State.PENDING, None)]
    assert journal.feedback_rows(message_hex=f"{3:032x}") == journal.feedback_rows(key=key(3))
    assert journal.feedback_rows(message_hex=f"{3:032X}")[0].key == key(3)
    assert journal.feedback_rows(message_hex=f"{9:032x}") == []
    assert journal.feedback_rows(message_hex="3%") == []  # not a Message-ID's hex
    assert [r.key for r in journal.feedback_rows(address="k1@EXAMPLE.com")] == [key(1), "other"]
    assert [r.key for r in journal.feedback_rows(address="k1@example.com", limit=1)] == [key(1)]
    assert journal.feedback_rows(key="nobody") == []
    with pytest.raises(ValueError, match="exactly one"):
        journal.feedback_rows(key=key(1), address=key(1))
    with pytest.raises(ValueError, match="exactly one"):
        journal.feedback_rows()


def test_the_verp_secret_is_made_once_and_kept(journal: JournalBackend, tmp_path: Path) -> None:
    secret = journal.verp_secret()
    assert isinstance(secret, bytes) and len(secret) == 32
    assert journal.verp_secret() == secret
    with closing(reopen(journal)) as again:
        assert again.verp_secret() == secret
    if journal.shared:
        other = open_journal(JournalLocation.parse(journal.location), job_name="other")
    else:
        other = open_journal(JournalLocation.parse(tmp_path / "other.db"), job_name="other")
    with closing(other):
        other.bind_job("other", {"data file p.csv": "1"}, {"source": "p.csv"})
        assert other.verp_secret() not in (secret, b"")
    assert journal.verp_secret() == secret


# --- several workers on one PostgreSQL job ------------------------------------------


@pytest.fixture
def workers(pg_url: str) -> Iterator[Callable[..., PgJournal]]:
    """Opens PgJournal workers on one job; closes them after the test."""
    opened: list[PgJournal] = []

    def start(lease: float = LEASE) -> PgJournal:
        worker = cast(
            "PgJournal",
            bound(open_journal(JournalLocation.parse(pg_url), job_name=JOB, lease=lease)),
        )
        opened.append(worker)
        return worker

    yield start
    for worker in opened:
        worker.close()


def test_expire_leaves_rows_another_live_worker_holds_to_it(
    workers: Callable[..., PgJournal],
) -> None:
    a, b = workers(), workers()
    a.ingest(rows(4), ids("a"))
    assert keys(a.claim(2, include_unknown=False)) == [key(1), key(2)]
    assert b.expire(EXPIRED) == 2  # keys 3 and 4; a holds 1 and 2
    assert [found(b, key(i)).state for i in range(1, 5)] == [
        State.PENDING,
        State.PENDING,
        State.EXPIRED,
        State.EXPIRED,
    ]
    a.recover()  # a's run ends: its rows go back, and a expires them itself
    assert a.expire(EXPIRED) == 2
    assert b.counts()[State.EXPIRED] == 4


def test_rows_claimed_by_one_worker_are_fenced_from_another(
    workers: Callable[..., PgJournal],
) -> None:
    a, b = workers(), workers()
    a.ingest(rows(4), ids("a"))
    assert keys(a.claim(2, include_unknown=False)) == [key(1), key(2)]
    assert keys(b.claim(10, include_unknown=False)) == [key(3), key(4)]
    run = b.start_run("run")
    refused = b.write([(key(1), run)], [Record(key(2), State.SENT, 250, "250 ok", "r")])
    assert refused == {key(1), key(2)}
    assert [(found(a, k).state, found(a, k).attempts) for k in (key(1), key(2))] == [
        (State.PENDING, 0),
        (State.PENDING, 0),
    ]
    assert a.write([(key(1), run)], [Record(key(2), State.SENT, 250, "250 ok", "r")]) == set()


def test_expired_worker_is_reaped_and_its_late_writes_refused(
    workers: Callable[..., PgJournal],
) -> None:
    a, b = workers(), workers()
    a.ingest(rows(3), ids("a"))
    run = a.start_run("run")
    assert keys(a.claim(2, include_unknown=False)) == [key(1), key(2)]
    assert a.write([(key(1), run)], []) == set()
    assert a.may_start_data()
    die(a)
    assert not a.may_start_data()
    assert b.reap() == 1
    assert found(b, key(1)).state is State.UNKNOWN
    assert keys(b.claim(10, include_unknown=False)) == [key(2), key(3)]
    late = [Record(key(1), State.SENT, 250, "250 ok", "r")]
    assert a.write([(key(2), run)], late) == {key(1), key(2)}
    assert (found(b, key(1)).state, found(b, key(2)).state) == (State.UNKNOWN, State.PENDING)
    assert a.claim(10, include_unknown=True) == []


def test_abort_stops_every_worker_until_cleared(workers: Callable[..., PgJournal]) -> None:
    a, b = workers(), workers()
    a.ingest(rows(3), ids("a"))
    assert keys(b.claim(1, include_unknown=False)) == [key(1)]  # b has joined
    assert b.stop_requested() is None
    a.abort("error rate 60% over 100 messages")
    assert b.claim(10, include_unknown=False) == []
    assert wait_for(lambda: b.stop_requested() is not None)
    assert "error rate 60% over 100 messages" in (b.stop_requested() or "")
    a.clear_abort()
    assert wait_for(lambda: b.stop_requested() is None)
    assert keys(b.claim(10, include_unknown=False)) == [key(2), key(3)]


def test_shared_gcra_gives_workers_consecutive_slots(workers: Callable[..., PgJournal]) -> None:
    a, b = workers(), workers()
    emission, n = 0.01, 10  # 0.1 s of slots per reservation
    starts = []
    for worker in (a, b, a, b):
        asked = time.monotonic()
        starts.append(asked + worker.reserve_slots("relay:25", emission, n))
    assert starts[0] - time.monotonic() < 0.01  # the first slot is now
    gaps = [later - earlier for earlier, later in itertools.pairwise(starts)]
    assert all(abs(gap - emission * n) < 0.01 for gap in gaps), gaps


def test_concurrent_holds_never_exceed_the_limit(workers: Callable[..., PgJournal]) -> None:
    """Two workers (two connections) racing for the last slots of one account."""
    a, b = workers(), workers()
    limit, attempts = 25, 40
    taken: dict[str, int] = {"a": 0, "b": 0}
    barrier = threading.Barrier(2)
    now = time.time()

    def take(name: str, worker: PgJournal) -> None:
        barrier.wait()
        for _ in range(attempts):
            if worker.ledger_hold("smtp://u@r:587", now - 3600, limit, now, now + 600):
                taken[name] += 1

    threads = [threading.Thread(target=take, args=p) for p in (("a", a), ("b", b))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert taken["a"] + taken["b"] == limit, taken
    assert len(a.ledger_usage("smtp://u@r:587", now - 3600, now).holds) == limit


def test_jobs_sharing_a_database_share_a_quota(pg_url: str) -> None:
    """The ledger has no job column: another job's acceptances count against the account."""
    one = open_journal(JournalLocation.parse(pg_url), job_name="job-one", lease=LEASE)
    two = open_journal(JournalLocation.parse(pg_url), job_name="job-two", lease=LEASE)
    try:
        hold = one.ledger_hold("smtp://u@r:587", T0 - 3600, 1, T0, T0 + 600)
        assert hold is not None
        one.ledger_keep(hold, "smtp://u@r:587", T0, 2.5, T0 + 3600)
        assert two.ledger_hold("smtp://u@r:587", T0 - 3600, 1, T0 + 1, T0 + 600) is None
    finally:
        one.close()
        two.close()


def _holders(pg_url: str, account: str) -> list[int | None]:
    """The owners' lease epochs of an account's holds, in the order they were taken."""
    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as conn:
        found = conn.execute(
            "SELECT owner_epoch FROM txsend_rate_holds WHERE account = %s ORDER BY id",
            (account,),
        )
        return [epoch for (epoch,) in found.fetchall()]


def _kill(worker: PgJournal, pg_url: str) -> None:
    """A worker killed mid-run: its heartbeat stops and its lease row is expired (the
    server's clock is past it), nothing released."""
    import psycopg

    worker.lease._stop.set()
    if worker.lease._heartbeat is not None:
        worker.lease._heartbeat.join()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE txsend_workers SET expires_at = expires_at - 3600 WHERE epoch = %s",
            (worker.lease.epoch,),
        )


def test_a_dead_workers_holds_are_freed_when_the_window_is_full(
    workers: Callable[..., PgJournal], pg_url: str
) -> None:
    """A full window frees the slots a killed worker held instead of waiting for them to
    lapse; a live worker's are never freed."""
    account, now = "smtp://u@r:587", time.time()
    dead, live, other = workers(), workers(), workers()
    for worker in (dead, live, other):
        worker.start_run("run")  # each holds a lease
    assert dead.ledger_hold(account, now - 3600, 3, now, now + 600) is not None
    assert dead.ledger_hold(account, now - 3600, 3, now, now + 600) is not None
    assert live.ledger_hold(account, now - 3600, 3, now, now + 600) is not None
    assert _holders(pg_url, account) == [dead.lease.epoch] * 2 + [live.lease.epoch]
    assert other.ledger_hold(account, now - 3600, 3, now, now + 600) is None  # all live
    _kill(dead, pg_url)
    assert len(other.ledger_usage(account, now - 3600, now).holds) == 1  # the live one
    assert other.ledger_hold(account, now - 3600, 3, now, now + 600) is not None
    assert other.ledger_hold(account, now - 3600, 3, now, now + 600) is not None
    assert other.ledger_hold(account, now - 3600, 3, now, now + 600) is None  # live's kept
    assert _holders(pg_url, account) == [live.lease.epoch] + [other.lease.epoch] * 2


def test_a_run_start_frees_the_holds_of_workers_gone(
    workers: Callable[..., PgJournal], pg_url: str
) -> None:
    """Pruning (as a run starts) frees the holds of a killed worker and of one that
    stopped without giving them back; a live worker's and an ownerless hold stay."""
    account, now = "smtp://u@r:587", time.time()
    killed, stopped, live, unowned = workers(), workers(), workers(), workers()
    for worker in (killed, stopped, live):
        worker.start_run("run")
    for worker in (killed, stopped, live, unowned):
        assert worker.ledger_hold(account, now - 3600, 10, now, now + 600) is not None
    _kill(killed, pg_url)
    stopped.lease.end()  # its lease ends (state 'stopped'), the hold left behind
    live.ledger_prune(now)
    assert _holders(pg_url, account) == [live.lease.epoch, None]
    assert len(live.ledger_usage(account, now - 3600, now).holds) == 2


def test_concurrent_ingest_happens_once(workers: Callable[..., PgJournal]) -> None:
    a, b = workers(), workers()
    data = rows(3000)
    results: dict[str, IngestStats] = {}
    barrier = threading.Barrier(2)

    def ingest(name: str, worker: PgJournal) -> None:
        barrier.wait()
        results[name] = worker.ingest(data, ids(name))

    threads = [threading.Thread(target=ingest, args=p) for p in (("a", a), ("b", b))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    winner = next(name for name, stats in results.items() if stats.new)
    loser = "b" if winner == "a" else "a"
    assert (results[winner].new, results[winner].by_other) == (3000, False)
    assert (results[loser].new, results[loser].by_other) == (0, True)
    assert a.counts()[State.PENDING] == 3000
    message_ids = [c.message_id for c in a.claim(3000, include_unknown=False)]
    assert len(set(message_ids)) == 3000
    assert all(m.startswith(f"<{winner}.") for m in message_ids)


def test_first_ingest_tells_duplicates_from_keys_of_the_same_hash_bucket(
    workers: Callable[..., PgJournal], monkeypatch: pytest.MonkeyPatch
) -> None:
    from txsend.journal.postgres import ingest

    monkeypatch.setattr(ingest, "_SEEN_BITS", 8)  # 8 buckets: most keys share one
    a = workers()
    data: list[Row | RowError] = [*rows(40), Row(41, key(3), key(3), {"n": "dup"})]
    data += [Row(42, key(3), key(3), {"n": "again"}), Row(43, key(40), key(40), {"n": "dup"})]
    stats = a.ingest(data, ids("a"))
    assert (stats.new, stats.duplicates, stats.existing) == (40, 3, 0)
    assert [(r["row"], r["reason"]) for r in a.skipped_rows()] == [
        (41, "duplicate key (first seen in row 3)"),
        (42, "duplicate key (first seen in row 3)"),
        (43, "duplicate key (first seen in row 40)"),
    ]
    assert keys(a.claim(100, include_unknown=False)) == [key(i) for i in range(1, 41)]
    assert [found(a, key(i)).data for i in (3, 40)] == [{"n": 3}, {"n": 40}]


def test_group_commit_on_a_shared_journal_answers_refused_sending(
    workers: Callable[..., PgJournal],
) -> None:
    import asyncio

    from txsend.delivery.committer import GroupCommitter

    a, b = workers(), workers()
    a.ingest(rows(3), ids("a"))
    assert keys(a.claim(1, include_unknown=False)) == [key(1)]
    assert keys(b.claim(10, include_unknown=False)) == [key(2), key(3)]
    run = b.start_run("run")

    async def commit() -> list[bool]:
        committer = GroupCommitter(b, run)  # b is shared: it writes from a thread
        committer.start()
        answers = await asyncio.gather(*(committer.mark_sending(key(i)) for i in (1, 2, 3)))
        committer.record(Record(key(2), State.SENT, 250, "250 ok", "r"))
        await committer.close()
        return list(answers)

    # key 1 belongs to worker a: b's `sending` for it is refused, so no DATA may follow
    assert asyncio.run(commit()) == [False, True, True]
    assert [found(a, key(i)).state for i in (1, 2, 3)] == [
        State.PENDING,
        State.SENT,
        State.SENDING,
    ]


def test_others_busy_is_read_from_the_database_when_asked(
    workers: Callable[..., PgJournal], monkeypatch: pytest.MonkeyPatch
) -> None:
    from txsend.journal.postgres import leases

    # b's heartbeat never beats during the test: its answers come from the database,
    # read afresh each time it is asked
    monkeypatch.setattr(leases, "ABORT_POLL", 3600.0)
    monkeypatch.setattr(leases, "BUSY_CACHE", 0.0)
    a, b = workers(), workers(lease=3600.0)
    a.ingest(rows(4), ids("a"))
    assert keys(a.claim(4, include_unknown=False)) == [key(i) for i in range(1, 5)]
    assert b.claim(10, include_unknown=False) == []  # b joins and finds no free row
    assert b.others_busy()  # at once: a holds every row
    assert not a.others_busy()  # its own rows keep nobody waiting
    run = a.start_run("run")
    assert a.write([(key(i), run) for i in range(1, 5)], []) == set()  # all four in DATA
    sent = [Record(key(i), State.SENT, 250, "250 ok", "r") for i in range(1, 4)]
    assert a.write([], sent) == set()
    assert b.others_busy()  # key 4 is still in DATA at a
    assert a.write([], [Record(key(4), State.SENT, 250, "250 ok", "r")]) == set()
    assert not b.others_busy()  # a recorded them all
    assert b.counts()[State.SENT] == 4


def test_others_busy_ends_when_the_holders_lease_expires(
    workers: Callable[..., PgJournal],
) -> None:
    a, b = workers(), workers()
    a.ingest(rows(3), ids("a"))
    run = a.start_run("run")
    assert keys(a.claim(3, include_unknown=False)) == [key(1), key(2), key(3)]
    assert a.write([(key(1), run)], []) == set()
    assert b.claim(10, include_unknown=False) == []
    assert b.others_busy()
    a.lease._stop.set()  # a stops renewing, as a killed process would, releasing nothing
    assert a.lease._heartbeat is not None
    a.lease._heartbeat.join()
    # once a's lease runs out the answer turns False: its rows were reaped, not waited for
    assert wait_for(lambda: not b.others_busy(), timeout=LEASE + 30)
    assert found(b, key(1)).state is State.UNKNOWN  # it was in DATA
    assert keys(b.claim_retries(10, busy=())) == [key(2), key(3)]
    assert not b.others_busy()


def test_a_late_report_takes_a_row_from_the_worker_holding_it(
    workers: Callable[..., PgJournal],
) -> None:
    a, b = workers(), workers()
    settle_states(a)
    assert keys(b.claim(10, include_unknown=True)) == [key(2)]  # the unknown row
    assert b.record_feedback([report("late", "failed", key(2))]) == ["applied"]
    run = b.start_run("resume")
    # b had claimed key 2 to send it again: the report proved it bounced, and b may not
    assert b.write([(key(2), run)], []) == {key(2)}
    assert found(a, key(2)).state is State.BOUNCED
    assert a.write([(key(3), run)], []) == set()  # the rows a holds are still a's


def test_a_schema_1_database_gets_the_feedback_table_and_the_secret(pg_url: str) -> None:
    import psycopg

    first = open_journal(JournalLocation.parse(pg_url), job_name=JOB)
    bound(first).close()
    with psycopg.connect(pg_url, autocommit=True) as conn:  # as schema 1 made it
        conn.execute("DROP TABLE txsend_feedback")
        conn.execute("ALTER TABLE txsend_jobs DROP COLUMN verp_secret")
        conn.execute("UPDATE txsend_meta SET value = '1' WHERE name = 'schema'")
    with closing(open_journal(JournalLocation.parse(pg_url), job_name=JOB)) as journal:
        assert len(journal.verp_secret()) == 32
        assert journal.record_feedback([report("e", "failed", None)]) == ["noted"]
    with psycopg.connect(pg_url, autocommit=True) as conn:
        found_schema = conn.execute("SELECT value FROM txsend_meta WHERE name = 'schema'")
        assert found_schema.fetchone() == ("4",)


def test_a_schema_3_database_gets_the_ledger_with_its_windows(pg_url: str) -> None:
    import psycopg

    bound(open_journal(JournalLocation.parse(pg_url), job_name=JOB)).close()
    hour = time.time() // 3600 * 3600
    with psycopg.connect(pg_url, autocommit=True) as conn:  # as schema 3 made it
        conn.execute("DROP TABLE txsend_rate_buckets, txsend_rate_holds")
        conn.execute(
            "CREATE TABLE txsend_rate_windows (relay text NOT NULL, window_start float8 "
            "NOT NULL, count integer NOT NULL, PRIMARY KEY (relay, window_start))"
        )
        conn.execute(
            "INSERT INTO txsend_rate_windows VALUES ('smtp://u@r:587', %s, 4), "
            "('smtp://u@r:587', %s, 9)",
            (hour, hour - 30 * 86400),
        )
        conn.execute("UPDATE txsend_meta SET value = '3' WHERE name = 'schema'")
    with closing(open_journal(JournalLocation.parse(pg_url), job_name=JOB)) as journal:
        usage = journal.ledger_usage("smtp://u@r:587", 0.0, time.time())
        width = 86400.0 if hour % 86400 == 0 else 3600.0
        assert usage.buckets == [(hour, width, 4)]  # the old month is not carried over
    with psycopg.connect(pg_url, autocommit=True) as conn:
        assert conn.execute("SELECT to_regclass('txsend_rate_windows')").fetchone() == (None,)
        columns = conn.execute(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_name = 'txsend_rate_holds' ORDER BY ordinal_position"
        )
        assert [c for (c,) in columns.fetchall()] == [
            "id",
            "account",
            "expires_at",
            "owner",
            "owner_epoch",
        ]
        schema = conn.execute("SELECT value FROM txsend_meta WHERE name = 'schema'")
        assert schema.fetchone() == ("4",)
