"""The SQLite journal: ingest, claim, the crash protocol, runs."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from txsend.delivery.committer import GroupCommitter
from txsend.errors import JobError, RowError
from txsend.journal.records import Record
from txsend.journal.sqlite import Journal
from txsend.models import Row, State


def rows(n: int, start: int = 1) -> list[Row]:
    return [
        Row(i, f"k{i}@example.com", f"k{i}@example.com", {"n": i}) for i in range(start, start + n)
    ]


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Journal]:
    j = Journal.open(tmp_path / "j.db")
    yield j
    j.close()


def new_id_factory() -> Callable[[], str]:
    counter = itertools.count()
    return lambda: f"<{next(counter)}@example.com>"


def test_ingest_is_idempotent_and_skips_duplicates(journal: Journal) -> None:
    data: list[Row | RowError] = [*rows(3), Row(4, "k1@example.com", "k1@example.com", {})]
    data.append(RowError("no address", row=5))
    first = journal.ingest(data, new_id_factory())
    assert (first.new, first.duplicates, first.invalid) == (3, 1, 1)
    again = journal.ingest(data, new_id_factory())
    assert (again.new, again.existing) == (0, 3)
    counts = journal.counts()
    assert counts[State.PENDING] == 3
    assert counts[State.SKIPPED] == 2
    assert journal.ingest_complete()


def test_message_id_is_fixed_at_ingest(journal: Journal) -> None:
    journal.ingest(rows(2), new_id_factory())
    before = journal.find("k1@example.com")
    journal.ingest(rows(2), new_id_factory())
    after = journal.find("k1@example.com")
    assert before is not None and after is not None
    assert before.message_id == after.message_id
    assert before.data == {"n": 1}


def test_claim_walks_once_per_run_and_skips_terminal(journal: Journal) -> None:
    journal.ingest(rows(5), new_id_factory())
    journal.write([], [Record("k2@example.com", State.SENT, 250, "ok")])
    first = journal.claim(2, include_unknown=True)
    second = journal.claim(10, include_unknown=True)
    assert [c.key for c in first] == ["k1@example.com", "k3@example.com"]
    assert [c.key for c in second] == ["k4@example.com", "k5@example.com"]
    assert journal.claim(10, include_unknown=True) == []


def test_deferred_rows_are_claimed_only_when_due(journal: Journal) -> None:
    journal.ingest(rows(2), new_id_factory())
    journal.write(
        [],
        [
            Record("k1@example.com", State.DEFERRED, 451, "later", next_attempt_at=100.0),
            Record("k2@example.com", State.DEFERRED, 451, "later", next_attempt_at=10_000.0),
        ],
    )
    claimed = journal.claim(10, include_unknown=True, now=500.0)
    assert [c.key for c in claimed] == ["k1@example.com"]
    assert journal.next_attempt_at() == 100.0


def test_recover_turns_sending_into_unknown(journal: Journal) -> None:
    journal.ingest(rows(3), new_id_factory())
    run = journal.start_run("run")
    journal.write([("k1@example.com", run), ("k2@example.com", run)], [])
    journal.write([], [Record("k2@example.com", State.SENT, 250, "ok")])
    assert journal.recover() == 1
    found = journal.find("k1@example.com")
    assert found is not None and found.state is State.UNKNOWN and found.attempts == 1
    assert [c.key for c in journal.claim(10, include_unknown=False)] == ["k3@example.com"]


def test_runs_are_recorded(journal: Journal) -> None:
    journal.ingest(rows(1), new_id_factory())
    run = journal.start_run("run")
    journal.finish_run(run, 0)
    last = journal.last_run()
    assert last is not None
    assert (last.id, last.command, last.exit_code) == (run, "run", 0)
    assert last.counts == {"pending": 1}


def test_journal_of_another_job_is_refused(journal: Journal) -> None:
    journal.bind_job("a", {"x": "1"}, {})
    with pytest.raises(JobError, match="belongs to job 'a'"):
        journal.bind_job("b", {"x": "1"}, {})


def test_changes_are_described(journal: Journal) -> None:
    journal.bind_job("a", {"subject": "1", "data file p.csv": "2"}, {})
    assert journal.changes_since({"subject": "1", "data file p.csv": "2"}) == []
    assert journal.changes_since({"subject": "9", "html template t.html": "3"}) == [
        "data file p.csv is no longer used",
        "html template t.html was added",
        "subject changed",
    ]


def test_group_commit_shares_transactions(journal: Journal) -> None:
    journal.ingest(rows(50), new_id_factory())

    async def main() -> int:
        committer = GroupCommitter(journal, run_id=1)
        committer.start()

        async def one(i: int) -> None:
            await committer.mark_sending(f"k{i}@example.com")
            committer.record(Record(f"k{i}@example.com", State.SENT, 250, "ok"))

        await asyncio.gather(*(one(i) for i in range(1, 51)))
        await committer.close()
        return committer.commits

    commits = asyncio.run(main())
    assert journal.counts()[State.SENT] == 50
    assert commits < 10  # 50 concurrent marks ride a handful of commits


def test_mark_sending_is_durable_before_it_returns(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    journal = Journal.open(path)
    journal.ingest(rows(1), new_id_factory())

    async def main() -> str:
        committer = GroupCommitter(journal, run_id=1)
        committer.start()
        await committer.mark_sending("k1@example.com")
        other = Journal.open(path)  # a second connection sees the commit at once
        try:
            found = other.find("k1@example.com")
        finally:
            other.close()
        await committer.close()
        assert found is not None
        return found.state.value

    assert asyncio.run(main()) == "sending"
    journal.close()


def test_refresh_takes_new_data_for_undelivered_rows_only(journal: Journal) -> None:
    journal.ingest(rows(4), new_id_factory())
    journal.write(
        [],
        [
            Record("k1@example.com", State.SENT, 250, "ok"),
            Record("k2@example.com", State.SKIPPED, None, "line break in Subject"),
        ],
    )
    changed = [
        Row(1, "k1@example.com", "k1@example.com", {"n": "new"}),
        Row(2, "k2@example.com", "k2@example.com", {"n": "fixed"}),
        Row(3, "k5@example.com", "k5@example.com", {"n": 5}),  # new key
        Row(4, "k3@example.com", "k3@example.com", {"n": "moved"}),  # k4 left the file
        Row(5, "k3@example.com", "k3@example.com", {"n": "dup"}),
    ]
    stats = journal.ingest(changed, new_id_factory(), refresh=True)
    assert (stats.new, stats.existing, stats.duplicates) == (1, 3, 1)

    def get(key: str) -> tuple[State, object, int]:
        found = journal.find(key)
        assert found is not None
        return found.state, found.data["n"], found.row

    assert get("k1@example.com") == (State.SENT, 1, 1)  # delivered: keeps what was sent
    assert get("k2@example.com") == (State.PENDING, "fixed", 2)  # render failure: redone
    assert get("k3@example.com") == (State.PENDING, "moved", 4)
    assert get("k4@example.com") == (State.SKIPPED, 4, 4)  # gone from the data file
    assert get("k5@example.com") == (State.PENDING, 5, 3)
    assert [r["reason"] for r in journal.skipped_rows()] == ["duplicate key (first seen in row 4)"]
