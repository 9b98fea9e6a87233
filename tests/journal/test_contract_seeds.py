"""The journal contract for seed copies (`seeds:` in a job): both backends.

A seed copy is ingested as a row of its own right after the row it copies, marked with
`seed_of`, counted apart by `seed_counts`, sent exactly once like any row, and left out
of the failed-rows export. Older journals gain the column when opened.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from tests.journal.test_contract import (  # the contract's fixtures and helpers
    JOB,
    LEASE,
    bound,
    die,
    found,
    ids,
    key,
    keys,
    reopen,
    rows,
)
from txsend.errors import RowError
from txsend.job.location import JournalLocation
from txsend.job.seeds import SeededRows, seed_key
from txsend.journal.api import JournalBackend
from txsend.journal.opening import open_journal
from txsend.journal.records import Record
from txsend.models import Row, State

SEEDS = ("seed-a@monitor.example", "seed-b@monitor.example")


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[JournalBackend]:
    """A bound journal of each backend, as the contract's `journal` fixture makes it."""
    if request.param == "sqlite":
        j = open_journal(JournalLocation.parse(tmp_path / "j.db"), job_name=JOB)
    else:
        url = request.getfixturevalue("pg_url")
        j = open_journal(JournalLocation.parse(url), job_name=JOB, lease=LEASE)
    bound(j)
    yield j
    j.close()


def seeded(n: int, every: int | None = None) -> SeededRows:
    return SeededRows(rows(n), SEEDS, every)


def test_seed_copies_are_rows_of_their_own_marked_and_counted_apart(
    backend: JournalBackend,
) -> None:
    stats = backend.ingest(seeded(10, every=4), ids("a"))
    # copies of the 1st, 5th and 9th message, to each seed
    assert (stats.new, stats.seeds) == (16, 6)
    copy = found(backend, seed_key(SEEDS[0], key(5)))
    assert (copy.seed_of, copy.row, copy.address, copy.data) == (key(5), 5, SEEDS[0], {"n": 5})
    assert found(backend, key(5)).seed_of is None
    ids_ = {found(backend, k).message_id for k in (key(5), copy.key)}
    assert len(ids_) == 2  # each copy has its own Message-ID, fixed at ingest
    assert backend.counts()[State.PENDING] == 16
    seeds = backend.seed_counts()
    assert seeds[State.PENDING] == 6 and sum(seeds.values()) == 6


def test_a_copy_is_claimed_right_after_the_row_it_copies(backend: JournalBackend) -> None:
    backend.ingest(seeded(3), ids("a"))
    claimed = backend.claim(10, include_unknown=False)
    assert keys(claimed)[0] == key(1)  # the copied row first, then its copies
    assert sorted(keys(claimed)[1:3]) == sorted(seed_key(s, key(1)) for s in SEEDS)
    assert keys(claimed)[3:] == [key(2), key(3)]
    assert [c.seed_of for c in claimed] == [None, key(1), key(1), None, None]


def test_a_data_key_that_looks_like_a_seed_is_not_one(backend: JournalBackend) -> None:
    lookalike = f"seed:{SEEDS[0]}:{key(1)}"
    data = [*rows(2), Row(3, lookalike, SEEDS[0], {"n": 3})]
    backend.ingest(SeededRows(data, (), None), ids("a"))  # no seeds: nothing marked
    backend.ingest(SeededRows(data, ("other@monitor.example",), None), ids("b"), refresh=True)
    assert found(backend, lookalike).seed_of is None  # row 3, not row 1's copy
    assert found(backend, seed_key("other@monitor.example", key(1))).seed_of == key(1)
    assert backend.seed_counts()[State.PENDING] == 1


def test_invalid_rows_do_not_count_as_messages(backend: JournalBackend) -> None:
    data: list[Row | RowError] = [RowError("missing address", row=1, key="x"), *rows(4, 2)]
    stats = backend.ingest(SeededRows(data, SEEDS[:1], 2), ids("a"))
    assert stats.seeds == 2  # copies of the 1st and 3rd message: rows 2 and 4
    assert {c.seed_of for c in backend.claim(20, include_unknown=False)} == {
        None,
        key(2),
        key(4),
    }


def test_a_second_ingest_keeps_the_copies_and_their_message_ids(
    backend: JournalBackend,
) -> None:
    backend.ingest(seeded(4, every=2), ids("a"))
    before = found(backend, seed_key(SEEDS[1], key(3))).message_id
    again = backend.ingest(seeded(4, every=2), ids("b"))
    assert again.new == 0
    assert found(backend, seed_key(SEEDS[1], key(3))).message_id == before
    assert backend.seed_counts()[State.PENDING] == 4


def test_a_seed_sent_is_never_claimed_again_after_a_crash(backend: JournalBackend) -> None:
    backend.ingest(seeded(2), ids("a"))
    run = backend.start_run("run")
    first = backend.claim(3, include_unknown=True)
    assert [c.seed_of for c in first] == [None, key(1), key(1)]
    sent, in_data = first[1].key, first[2].key
    assert backend.write([(first[0].key, run), (sent, run), (in_data, run)], []) == set()
    assert backend.write([], [Record(sent, State.SENT, 250, "250 ok")]) == set()
    die(backend)  # killed with one copy sent and one in DATA
    later = reopen(backend)
    try:
        later.recover()
        assert found(later, sent).state is State.SENT
        assert found(later, in_data).state is State.UNKNOWN
        again = keys(later.claim(10, include_unknown=True))
        assert sent not in again
        assert in_data in again  # resume: on_unknown resend, as for any row
        assert later.seed_counts()[State.SENT] == 1
    finally:
        later.close()


def test_failed_seed_copies_are_problems_but_not_exported(backend: JournalBackend) -> None:
    backend.ingest(seeded(1), ids("a"))
    run = backend.start_run("run")
    copy = seed_key(SEEDS[0], key(1))
    claimed = keys(backend.claim(3, include_unknown=False))
    assert backend.write([(k, run) for k in claimed], []) == set()
    backend.write([], [Record(copy, State.BOUNCED, 550, "550 no such user")])
    count, listed = backend.problems()
    assert count == 1 and listed[0]["key"] == copy and listed[0]["address"] == SEEDS[0]
    # the export lists data rows, for a new job: a copy's data is the real recipient's
    assert list(backend.iter_problems()) == []


def test_a_refresh_skips_copies_of_seeds_no_longer_listed(backend: JournalBackend) -> None:
    backend.ingest(seeded(2), ids("a"))
    backend.ingest(SeededRows(rows(2), SEEDS[:1], None), ids("b"), refresh=True)
    gone = found(backend, seed_key(SEEDS[1], key(1)))
    assert (gone.state, gone.seed_of) == (State.SKIPPED, key(1))
    assert found(backend, seed_key(SEEDS[0], key(1))).state is State.PENDING


# --- the migration of journals made before seeds ------------------------------------


def test_a_schema_3_sqlite_journal_gains_the_seed_column(tmp_path: Path) -> None:
    path = tmp_path / "three.db"
    with closing(open_journal(JournalLocation.parse(path), job_name=JOB)) as old:
        bound(old).ingest(rows(2), ids("a"))
    with closing(sqlite3.connect(path)) as conn, conn:  # as schema 3 left it
        conn.execute("DROP INDEX idx_messages_seeds")
        conn.execute('ALTER TABLE messages DROP COLUMN "seed_of"')
        conn.execute("UPDATE meta SET value = '3' WHERE name = 'schema'")
    with closing(open_journal(JournalLocation.parse(path), job_name=JOB)) as journal:
        assert found(journal, key(1)).seed_of is None
        stats = bound(journal).ingest(seeded(2), ids("b"), refresh=True)
        assert stats.seeds == 2
        assert journal.seed_counts()[State.PENDING] == 2
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("SELECT value FROM meta WHERE name = 'schema'").fetchone() == ("5",)


def test_a_schema_2_postgresql_database_gains_the_seed_column(pg_url: str) -> None:
    import psycopg

    with closing(open_journal(JournalLocation.parse(pg_url), job_name=JOB)) as old:
        bound(old).ingest(rows(2), ids("a"))
    with psycopg.connect(pg_url, autocommit=True) as conn:  # as schema 2 made it
        conn.execute("DROP INDEX txsend_messages_seeds")
        conn.execute("ALTER TABLE txsend_messages DROP COLUMN seed_of")
        conn.execute("UPDATE txsend_meta SET value = '2' WHERE name = 'schema'")
    with closing(open_journal(JournalLocation.parse(pg_url), job_name=JOB)) as journal:
        assert found(journal, key(1)).seed_of is None
        stats = bound(journal).ingest(seeded(2), ids("b"), refresh=True)
        assert stats.seeds == 2
        assert journal.seed_counts()[State.PENDING] == 2
    with psycopg.connect(pg_url, autocommit=True) as conn:
        schema = conn.execute("SELECT value FROM txsend_meta WHERE name = 'schema'").fetchone()
        assert schema == ("4",)


@pytest.mark.parametrize("every", [None, 1, 3, 7])
def test_csv_batches_and_rows_give_the_same_copies(tmp_path: Path, every: int | None) -> None:
    """The two ways a SQLite ingest reads a CSV put the copies at the same places."""
    from txsend.job.rowbatches import RecipientRows
    from txsend.models import RecipientsSpec

    data = tmp_path / "r.csv"
    lines = ["email,n"] + [f"r{i}@example.com,{i}" for i in range(1, 21)]
    lines[5] = "not-an-address,5"  # an invalid row is no message
    data.write_text("\n".join(lines) + "\n")

    class Job:  # what RecipientRows reads of a job
        recipients = RecipientsSpec(file=data)

    plain = SeededRows(RecipientRows(Job()), SEEDS, every)  # type: ignore[arg-type]
    from_rows = [
        (item.number, item.key, item.address) for item in plain if not isinstance(item, RowError)
    ]
    found_batches = plain.csv_batches(4)
    assert found_batches is not None
    from_batches = [
        item[:3] for batch in found_batches[1] for item in batch if not isinstance(item, RowError)
    ]
    assert from_rows == from_batches
    copies = [k for _, k, _ in from_rows if k.startswith("seed:")]
    messages = [k for _, k, _ in from_rows if not k.startswith("seed:")]
    step = every or len(messages)
    assert len(copies) == len(SEEDS) * len(messages[::step])
