"""The suppression store: every test runs on the SQLite file and on PostgreSQL.

The tests at the end are for the SQLite file only: where it lives, its permissions, and
what a file that is not a store gives (a ConfigError naming it, never a traceback).
"""

from __future__ import annotations

import itertools
import os
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from txsend.errors import ConfigError
from txsend.journal.store import (
    KINDS,
    SqliteStore,
    StoreEntry,
    SuppressionStore,
    default_store_path,
    open_store,
)


class Clock:
    """Seconds that advance by one at each reading."""

    def __init__(self) -> None:
        self._ticks = itertools.count(1000)

    def __call__(self) -> float:
        return float(next(self._ticks))


@pytest.fixture(params=["sqlite", "postgresql"])
def location(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "state" / "txsend" / "suppressions.db")
    url: str = request.getfixturevalue("pg_url")
    return url


@pytest.fixture
def store(location: str) -> Iterator[SuppressionStore]:
    opened: SuppressionStore
    if location.startswith("postgresql:"):
        from txsend.journal.postgres.store import PgStore

        opened = PgStore.open(location, clock=Clock())
    else:
        opened = SqliteStore.open(Path(location), clock=Clock())
    yield opened
    opened.close()


def entry(address: str, kind: str = "bounce", reason: str = "550 5.1.1 unknown") -> StoreEntry:
    return StoreEntry(address, kind, reason, source="maildir:new/1")


def addresses(store: SuppressionStore, kind: str | None = None) -> list[str]:
    return [e.address for e in store.entries(kind)]


def test_add_counts_new_addresses_and_updates_known_ones(store: SuppressionStore) -> None:
    first = [entry("b@example.com"), entry("A@Example.COM", "complaint", "abuse")]
    assert store.add(first) == 2
    (before,) = [e for e in store.entries() if e.address == "a@example.com"]
    assert (before.kind, before.reason, before.source) == ("complaint", "abuse", "maildir:new/1")
    assert before.created_at == before.updated_at
    again = [StoreEntry("a@example.com", "manual", "asked to stop"), entry("c@example.com")]
    assert store.add(again) == 1
    (after,) = [e for e in store.entries() if e.address == "a@example.com"]
    assert (after.kind, after.reason, after.source) == ("manual", "asked to stop", None)
    assert after.created_at == before.created_at  # kept
    assert after.updated_at > before.updated_at
    assert addresses(store) == ["a@example.com", "b@example.com", "c@example.com"]
    assert store.count() == {"bounce": 2, "complaint": 0, "manual": 1, "import": 0}
    assert set(store.count()) == set(KINDS)


def test_addresses_are_compared_in_any_case(store: SuppressionStore) -> None:
    store.add([entry("Mixed.Case@Example.com", reason="hard bounce")])
    assert "mixed.case@example.com" in store
    assert "MIXED.CASE@EXAMPLE.COM" in store
    assert "other@example.com" not in store
    assert 42 not in store
    assert store.reason(" Mixed.CASE@example.COM ") == "hard bounce"
    assert store.reason("other@example.com") is None
    assert store.remove(["MIXED.case@example.com", "other@example.com"]) == 1
    assert store.remove(["mixed.case@example.com"]) == 0
    assert "mixed.case@example.com" not in store
    assert store.count()["bounce"] == 0


def test_one_add_with_an_address_twice_keeps_the_last(store: SuppressionStore) -> None:
    batch = [entry("x@example.com", "import", "list 1"), entry("X@example.com", "bounce", "dsn")]
    assert store.add(batch) == 1
    (only,) = store.entries()
    assert (only.kind, only.reason) == ("bounce", "dsn")


def test_entries_are_sorted_by_address_and_filtered_by_kind(store: SuppressionStore) -> None:
    kinds = itertools.cycle(KINDS)
    many = [entry(f"u{i:05d}@example.com", next(kinds)) for i in reversed(range(2500))]
    assert store.add(many) == 2500
    listed = addresses(store)
    assert listed == sorted(listed) and len(listed) == 2500  # over several pages
    complaints = addresses(store, "complaint")
    assert complaints == sorted(e.address for e in many if e.kind == "complaint")
    assert len(complaints) == 625
    assert {e.kind for e in store.entries("import")} == {"import"}
    assert store.count() == dict.fromkeys(KINDS, 625)


def test_bad_entries_are_refused_and_add_nothing_of_their_chunk(store: SuppressionStore) -> None:
    with pytest.raises(ValueError, match="unknown kind 'soft'"):
        store.add([entry("a@example.com"), entry("b@example.com", "soft")])
    with pytest.raises(ValueError, match="without an address"):
        store.add([entry("a@example.com"), entry("  ")])
    assert addresses(store) == []


def test_a_bulk_add_of_100_000_addresses(store: SuppressionStore) -> None:
    bulk = (entry(f"bulk{i}@example.com", "import", "provider list") for i in range(100_000))
    assert store.add(bulk) == 100_000
    assert store.count()["import"] == 100_000
    assert "bulk99999@example.com" in store
    assert store.add([entry("bulk5@example.com"), entry("new@example.com")]) == 1


ADDER = """
import sys
from txsend.journal.store import StoreEntry, open_store

location, name, total = sys.argv[1], sys.argv[2], int(sys.argv[3])
store = open_store(location)
sys.stdin.readline()  # both processes start adding when told
new = 0
for start in range(0, total, 500):
    new += store.add(
        StoreEntry(f"shared{i}@example.com" if i < 1000 else f"{name}{i}@example.com",
                   "bounce", name)
        for i in range(start, min(start + 500, total))
    )
store.close()
print(new)
"""


def test_two_processes_add_at_once(store: SuppressionStore, location: str) -> None:
    total = 6000  # each: 1000 addresses both add, 5000 of its own; 12 transactions
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    adders = [
        subprocess.Popen(
            [sys.executable, "-c", ADDER, location, name, str(total)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for name in ("one", "two")
    ]
    for adder in adders:
        assert adder.stdin is not None
        adder.stdin.write("go\n")
        adder.stdin.flush()
    outputs = [adder.communicate(timeout=60) for adder in adders]
    assert [adder.returncode for adder in adders] == [0, 0], outputs
    expected = 1000 + 2 * (total - 1000)
    assert sum(int(out) for out, _ in outputs) == expected  # each new address counted once
    assert store.count()["bounce"] == expected
    assert "one5999@example.com" in store and "two1000@example.com" in store
    assert store.reason("shared999@example.com") in ("one", "two")


def test_open_store_picks_the_backend_from_the_location(location: str) -> None:
    with closing(open_store(location)) as first:
        first.add([entry("a@example.com")])
        if location.startswith("postgresql:"):
            assert first.location.startswith("postgresql://")
        else:
            assert first.location == location
    with closing(open_store(location)) as second:  # another process, another job
        assert "a@example.com" in second


def test_the_postgresql_store_lives_beside_a_journal(pg_url: str) -> None:
    from txsend.job.location import JournalLocation
    from txsend.journal.opening import open_journal

    with closing(open_journal(JournalLocation.parse(pg_url), job_name="a")) as journal:
        journal.bind_job("a", {}, {})
        with closing(open_store(pg_url)) as store:
            assert store.add([entry("a@example.com")]) == 1
        assert journal.counts() is not None
    with closing(open_store(pg_url)) as store:
        assert addresses(store) == ["a@example.com"]


# --- the SQLite file ---------------------------------------------------------------


def test_the_default_store_is_under_the_state_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = tmp_path / "xdg"
    assert default_store_path({"XDG_STATE_HOME": str(state), "HOME": "/h"}) == (
        state / "txsend" / "suppressions.db"
    )
    assert default_store_path({"HOME": "/h"}) == Path("/h/.local/state/txsend/suppressions.db")
    relative = {"XDG_STATE_HOME": "rel", "HOME": "/h"}  # ignored, as the XDG spec says
    assert default_store_path(relative) == Path("/h/.local/state/txsend/suppressions.db")
    monkeypatch.setenv("XDG_STATE_HOME", str(state))
    with closing(open_store(None)) as store:
        assert store.location == str(state / "txsend" / "suppressions.db")
    assert (state / "txsend" / "suppressions.db").exists()


def test_a_new_store_is_private_to_its_owner(tmp_path: Path) -> None:
    path = tmp_path / "new" / "folder" / "suppressions.db"
    with closing(SqliteStore.open(path)) as store:
        store.add([entry("a@example.com")])
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)


@pytest.mark.parametrize(
    "content",
    [b"address,reason\na@example.com,bounce\n", b"SQLite format 3\x00" + b"\xff" * 4000],
    ids=["text", "damaged"],
)
def test_a_file_that_is_no_database_is_a_config_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "suppressions.db"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=r"suppressions\.db") as raised:
        open_store(path)
    assert raised.value.hint and "another file" in raised.value.hint
    assert path.read_bytes() == content  # left as it was


def test_another_sqlite_database_is_not_taken_for_a_store(tmp_path: Path) -> None:
    from txsend.job.location import JournalLocation
    from txsend.journal.opening import open_journal

    journal_path = tmp_path / "job.journal.db"
    open_journal(JournalLocation.parse(journal_path)).close()
    with pytest.raises(ConfigError, match="not a suppression store"):
        open_store(journal_path)


def test_an_unreadable_place_is_a_config_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("", encoding="utf-8")
    with pytest.raises(ConfigError, match="cannot open the suppression store"):
        open_store(blocker / "sub" / "suppressions.db")
