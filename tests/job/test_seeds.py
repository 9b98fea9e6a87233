"""Which messages the seeds get copies of, in both forms of a job's rows."""

from __future__ import annotations

import pytest

from txsend.delivery.engine import within_limit
from txsend.errors import RowError
from txsend.job.seeds import SeededRows, is_seeded, seed_key
from txsend.journal.records import Claimed
from txsend.models import Row, State


def test_positions() -> None:
    assert [p for p in range(1, 12) if is_seeded(p, None)] == [1]
    assert [p for p in range(1, 12) if is_seeded(p, 1)] == list(range(1, 12))
    assert [p for p in range(1, 12) if is_seeded(p, 5)] == [1, 6, 11]


@pytest.mark.parametrize("every", [None, 1, 2, 3, 4, 5, 9, 100])
@pytest.mark.parametrize("size", [1, 2, 3, 7])
def test_batches_put_copies_where_rows_do(every: int | None, size: int) -> None:
    """Batches with and without invalid rows, cut at every size: the copies of the same
    messages, right after each."""
    items: list[tuple[int, str, str, list[str]] | RowError] = []
    for n in range(1, 21):
        if n % 6 == 0:
            items.append(RowError("bad", row=n, key=f"k{n}"))
        else:
            items.append((n, f"k{n}", f"a{n}@example.com", [str(n)]))
    rows = [
        item if isinstance(item, RowError) else Row(item[0], item[1], item[2], {"n": item[0]})
        for item in items
    ]

    class Source:
        def __iter__(self):  # type: ignore[no-untyped-def]
            return iter(rows)

        def csv_batches(self, n: int):  # type: ignore[no-untyped-def]
            return ["n"], iter([items[i : i + size] for i in range(0, len(items), size)])

    seeded = SeededRows(Source(), ("s@m.example",), every)
    by_rows = [(r.number, r.key) for r in seeded if not isinstance(r, RowError)]
    found = seeded.csv_batches(size)
    assert found is not None
    by_batches = [(i[0], i[1]) for b in found[1] for i in b if not isinstance(i, RowError)]
    assert by_rows == by_batches
    messages = [k for _, k in by_rows if not k.startswith("seed:")]
    copied = [k for k in messages if seed_key("s@m.example", k) in dict(map(reversed, by_rows))]
    assert copied == messages[:: every or len(messages)]
    for i, (_, key) in enumerate(by_rows):  # each copy right after the row it copies
        if key.startswith("seed:"):
            assert key == seed_key("s@m.example", by_rows[i - 1][1])


def claimed(key: str, seed_of: str | None = None) -> Claimed:
    return Claimed(key, 1, "a@example.com", {}, "<m@x>", 0, State.PENDING, None, seed_of)


def test_limit_counts_rows_and_takes_the_copies_that_follow() -> None:
    batch = [claimed("a"), claimed("s1", "a"), claimed("b"), claimed("c"), claimed("s2", "c")]
    taken, left, cut = within_limit(batch, 2)
    assert ([c.key for c in taken], left, cut) == (["a", "s1", "b"], 0, True)
    taken, left, cut = within_limit(batch, 3)
    assert ([c.key for c in taken], left, cut) == (["a", "s1", "b", "c", "s2"], 0, False)
    taken, left, cut = within_limit([claimed("s3", "z"), claimed("d")], 0)
    assert ([c.key for c in taken], left, cut) == (["s3"], 0, True)
