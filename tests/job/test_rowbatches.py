"""Tests for txsend.job.rowbatches: CSV rows in batches, the same rows as iter_rows."""

from __future__ import annotations

from pathlib import Path

import pytest

from txsend.errors import JobError, RowError
from txsend.job.loading import load_job
from txsend.job.recipients import iter_rows
from txsend.job.rowbatches import RecipientRows
from txsend.job.spec import Job
from txsend.models import Row


def csv_job(folder: Path, content: str | bytes, *, name: str = "list.csv", **spec: str) -> Job:
    data = content.encode("utf-8") if isinstance(content, str) else content
    (folder / name).write_bytes(data)
    extra = "".join(f"  {key}: {value}\n" for key, value in spec.items())
    (folder / "job.yaml").write_text(
        "from: noreply@acme.example\nsubject: Hi\ntext_inline: x\n"
        f"recipients:\n  file: {name}\n{extra}"
    )
    return load_job(folder / "job.yaml")


def as_rows(job: Job, size: int) -> list[Row | str]:
    """The batches as iter_rows would give them (a RowError as its message)."""
    found = RecipientRows(job).csv_batches(size)
    assert found is not None
    header, batches = found
    out: list[Row | str] = []
    for batch in batches:
        for item in batch:
            if isinstance(item, RowError):
                out.append(str(item))
            else:
                number, key, address, values = item
                data = {n: v for n, v in zip(header, values, strict=True) if n}
                out.append(Row(number, key, address, data))
    return out


def expected(job: Job) -> list[Row | str]:
    return [str(r) if isinstance(r, RowError) else r for r in iter_rows(job)]


TRICKY = (
    "email,name,,id\n"
    "a@example.com,A,x,1\n"
    "\n"
    " b@example.com ,B,,2\n"
    ",,,\n"
    "not-an-address,C,,3\n"
    "d@example.com,D\n"
    "e f@example.com,E,,5\n"
    "@example.com,F,,6\n"
    "g@,G,,7\n"
    "h@x@example.com,H,,8\n"
    "<i@example.com>,I,,9\n"
    'j@example.com,"line\nbreak",,10\n'
    '"k@example.com\nl@example.com",K,,11\n'
    "m@example.com,M,,\n"
    "jürgen@bücher.example,Jürgen,,13\n"
    "n@example.com;o@example.com,N,,14\n"
    "p@example.com\u00a0,P,,15\n"
    "q@exa\u2003mple.com,Q,,16\n"
    "r@example.com,R,,17\n"
)


@pytest.mark.parametrize("size", [1, 2, 3, 5000])
def test_batches_are_the_rows_of_iter_rows(tmp_path: Path, size: int) -> None:
    job = csv_job(tmp_path, TRICKY)
    assert as_rows(job, size) == expected(job)


@pytest.mark.parametrize("size", [1, 4, 5000])
def test_batches_with_a_key_column(tmp_path: Path, size: int) -> None:
    job = csv_job(tmp_path, TRICKY, key="id")
    rows = expected(job)
    assert "row 14: missing key (no value in 'id')" in rows
    assert as_rows(job, size) == rows


def test_a_batch_of_common_rows_is_read_as_one(tmp_path: Path) -> None:
    body = "".join(f"u{i}@example.com,{i}\n" for i in range(10))
    job = csv_job(tmp_path, "email,n\n" + body + "\n", key="n")
    assert as_rows(job, 4) == expected(job)
    assert len(as_rows(job, 4)) == 10  # the blank last line is no row


def test_a_file_it_cannot_read_raises_the_error_of_iter_rows(tmp_path: Path) -> None:
    job = csv_job(tmp_path, b"email,name\na@example.com,A\nb@example.com,\xff\n")
    with pytest.raises(JobError) as direct:
        list(iter_rows(job))
    with pytest.raises(JobError) as batched:
        as_rows(job, 5000)
    assert str(batched.value) == str(direct.value)
    assert "row 2: not valid UTF-8" in str(batched.value)


def test_a_broken_quote_raises_the_error_of_iter_rows(tmp_path: Path) -> None:
    job = csv_job(tmp_path, 'email,name\na@example.com,A\nb@example.com,"B"x\n')
    with pytest.raises(JobError) as direct:
        list(iter_rows(job))
    with pytest.raises(JobError) as batched:
        as_rows(job, 1)
    assert str(batched.value) == str(direct.value)


def test_jsonl_has_no_csv_batches(tmp_path: Path) -> None:
    job = csv_job(tmp_path, '{"email": "a@example.com"}\n', name="list.jsonl")
    rows = RecipientRows(job)
    assert rows.csv_batches(10) is None
    assert [r.address for r in rows if isinstance(r, Row)] == ["a@example.com"]
