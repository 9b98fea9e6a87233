"""Tests for txsend.job.recipients: streaming CSV (any dialect) and JSONL rows."""

from __future__ import annotations

import inspect
import itertools
import time
from pathlib import Path

import pytest

from txsend.errors import JobError, MissingInputError, RowError
from txsend.job.loading import load_job
from txsend.job.recipients import iter_rows
from txsend.job.spec import Job
from txsend.models import Row


def rows_of(job: Job) -> list[Row | RowError]:
    return list(iter_rows(job))


def csv_job(folder: Path, content: str | bytes, *, name: str = "list.csv", **spec: str) -> Job:
    """A minimal YAML job over a recipients file with the given raw content."""
    data = content.encode("utf-8") if isinstance(content, str) else content
    (folder / name).write_bytes(data)
    extra = "".join(f"  {key}: {value}\n" for key, value in spec.items())
    job = folder / "job.yaml"
    job.write_text(
        "from: noreply@acme.example\nsubject: Hi\ntext_inline: x\n"
        f"recipients:\n  file: {name}\n{extra}"
    )
    return load_job(job)


# --------------------------------------------------------------------------- CSV rows


def addresses(job: Job) -> list[str]:
    return [row.address for row in iter_rows(job) if isinstance(row, Row)]


def test_csv_with_bom(tmp_path: Path) -> None:
    job = csv_job(tmp_path, b"\xef\xbb\xbfemail,name\r\na@example.com,A\r\nb@example.com,B\r\n")
    rows = rows_of(job)
    assert [r.address for r in rows if isinstance(r, Row)] == ["a@example.com", "b@example.com"]
    assert isinstance(rows[0], Row) and list(rows[0].data) == ["email", "name"]


def test_csv_semicolon_dialect(tmp_path: Path) -> None:
    job = csv_job(tmp_path, "email;name;city\na@example.com;Müller, Jürgen;Köln\n")
    [row] = rows_of(job)
    assert isinstance(row, Row)
    assert row.data == {"email": "a@example.com", "name": "Müller, Jürgen", "city": "Köln"}


def test_csv_tab_dialect(tmp_path: Path) -> None:
    job = csv_job(tmp_path, "email\tname\na@example.com\tA, B\nb@example.com\tC\n")
    rows = rows_of(job)
    assert [r.data["name"] for r in rows if isinstance(r, Row)] == ["A, B", "C"]


def test_csv_pipe_dialect(tmp_path: Path) -> None:
    job = csv_job(tmp_path, "email|name\na@example.com|A\n")
    assert addresses(job) == ["a@example.com"]


def test_csv_quoted_commas_and_newlines_keep_row_numbers(tmp_path: Path) -> None:
    content = (
        "email,name,note\n"
        'a@example.com,"Smith, Jr.","line one\nline two"\n'
        'b@example.com,"He said ""hi""",x\n'
        ",missing,y\n"
    )
    rows = rows_of(csv_job(tmp_path, content))
    first, second, third = rows
    assert isinstance(first, Row) and first.number == 1
    assert first.data["name"] == "Smith, Jr." and first.data["note"] == "line one\nline two"
    assert isinstance(second, Row) and second.number == 2
    assert second.data["name"] == 'He said "hi"'
    assert isinstance(third, RowError) and third.row == 3


def test_csv_doubled_quotes_after_the_sniff_sample(tmp_path: Path) -> None:
    # The sniffer guesses doublequote=False when its sample has no "" pair.
    lines = ["email,name"] + [f'u{i}@example.com,"Name {i}"' for i in range(3000)]
    lines.append('late@example.com,"The ""Boss"""')
    rows = rows_of(csv_job(tmp_path, "\n".join(lines) + "\n"))
    last = rows[-1]
    assert isinstance(last, Row) and last.data["name"] == 'The "Boss"'


def test_csv_spaces_after_delimiters(tmp_path: Path) -> None:
    content = 'email, name\r\na@example.com, "Bob, Jr."\r\nb@example.com, "two\r\nlines"\r\n'
    rows = rows_of(csv_job(tmp_path, content))
    assert [r.data["name"] for r in rows if isinstance(r, Row)] == ["Bob, Jr.", "two\r\nlines"]


def test_csv_single_column_falls_back_to_excel(tmp_path: Path) -> None:
    assert addresses(csv_job(tmp_path, "email\na@example.com\nb@example.com\n")) == [
        "a@example.com",
        "b@example.com",
    ]


def test_csv_row_missing_address(tmp_path: Path) -> None:
    content = "email,name\na@example.com,A\n  ,B\nc@example.com,C\n"
    rows = rows_of(csv_job(tmp_path, content))
    assert [type(r) for r in rows] == [Row, RowError, Row]
    error = rows[1]
    assert isinstance(error, RowError)
    assert error.row == 2 and error.key is None
    assert "missing address" in error.reason
    assert str(error).startswith("row 2: ")


def test_csv_row_with_wrong_field_count(tmp_path: Path) -> None:
    content = "email,name\na@example.com,A,extra\nb@example.com\nc@example.com,C\n"
    rows = rows_of(csv_job(tmp_path, content))
    assert [
        (type(r).__name__, getattr(r, "row", None) or getattr(r, "number", None)) for r in rows
    ] == [
        ("RowError", 1),
        ("RowError", 2),
        ("Row", 3),
    ]
    assert isinstance(rows[0], RowError) and "3 fields" in rows[0].reason


def test_csv_key_column(tmp_path: Path) -> None:
    content = "id,email\n7,a@example.com\n,b@example.com\n"
    rows = rows_of(csv_job(tmp_path, content, key="id"))
    first, second = rows
    assert isinstance(first, Row) and first.key == "7"
    assert isinstance(second, RowError) and second.row == 2 and "missing key" in second.reason


def test_csv_key_defaults_to_address_as_written(tmp_path: Path) -> None:
    [row] = rows_of(csv_job(tmp_path, "email\n  Ada@Example.COM \n"))
    assert isinstance(row, Row) and row.key == row.address == "Ada@Example.COM"


def test_csv_invalid_address_is_a_row_error(tmp_path: Path) -> None:
    rows = rows_of(csv_job(tmp_path, 'email\nnot-an-address\n"a@example.com, b@example.com"\n'))
    assert [isinstance(r, RowError) for r in rows] == [True, True]


def test_csv_blank_lines_are_skipped(tmp_path: Path) -> None:
    rows = rows_of(csv_job(tmp_path, "email,n\na@example.com,1\n\n,\nb@example.com,2\n"))
    assert [(r.number, r.address) for r in rows if isinstance(r, Row)] == [
        (1, "a@example.com"),
        (4, "b@example.com"),
    ]


def test_csv_to_column_absent_from_header(tmp_path: Path) -> None:
    job = csv_job(tmp_path, "email,name\na@example.com,A\n")
    (tmp_path / "list.csv").write_text("mail,name\na@example.com,A\n")
    with pytest.raises(JobError, match=r"list\.csv:1: no column 'email'.*columns: mail, name"):
        rows_of(job)


def test_csv_to_column_with_other_case(tmp_path: Path) -> None:
    assert addresses(csv_job(tmp_path, "Email,Name\na@example.com,A\n")) == ["a@example.com"]


def test_csv_to_column_suggestion(tmp_path: Path) -> None:
    with pytest.raises(JobError, match="did you mean 'e-mail'"):
        csv_job(tmp_path, "e-mail,name\na@example.com,A\n", to="e_mail")


def test_csv_empty_file(tmp_path: Path) -> None:
    with pytest.raises(JobError, match="header row"):
        csv_job(tmp_path, "")


def test_csv_decode_error_names_row(tmp_path: Path) -> None:
    job = csv_job(tmp_path, "email,name\na@example.com,A\n")
    (tmp_path / "list.csv").write_bytes(
        b"email,name\na@example.com,A\nb@example.com,M\xfcller\nc@example.com,C\n"
    )
    # the file is decoded a block at a time: the error may come before earlier rows
    with pytest.raises(JobError, match=r"list\.csv:3: row 2: not valid UTF-8") as caught:
        list(iter_rows(job))
    assert caught.value.hint is not None and "UTF-8" in caught.value.hint


def test_csv_unterminated_quote_is_a_job_error(tmp_path: Path) -> None:
    job = csv_job(tmp_path, 'email,name\na@example.com,A\nb@example.com,"B\nc@example.com,C\n')
    with pytest.raises(JobError, match="row 2"):
        rows_of(job)


def test_iter_rows_streams(tmp_path: Path) -> None:
    body = "".join(f"user{i}@example.com,User {i}\n" for i in range(100_000))
    # Undecodable bytes near the end: reading the whole file up front would fail.
    content = ("email,name\n" + body).encode() + b"bad@example.com,\xff\n"
    job = csv_job(tmp_path, content)
    rows = iter_rows(job)
    assert inspect.isgenerator(rows)
    started = time.perf_counter()
    first_two = list(itertools.islice(rows, 2))
    assert time.perf_counter() - started < 0.5
    assert [r.address for r in first_two if isinstance(r, Row)] == [
        "user0@example.com",
        "user1@example.com",
    ]
    rows.close()


def test_iter_rows_is_lazy(tmp_path: Path) -> None:
    job = csv_job(tmp_path, "email\na@example.com\n")
    (tmp_path / "list.csv").unlink()
    rows = iter_rows(job)  # nothing is opened until the first row is asked for
    with pytest.raises(MissingInputError):
        next(rows)


# --------------------------------------------------------------------------- JSONL rows


def test_jsonl_rows_and_bad_lines(tmp_path: Path) -> None:
    content = (
        '{"email": "a@example.com", "n": 1}\n'
        "\n"
        "not json\n"
        "[1, 2]\n"
        '{"name": "no address"}\n'
        '{"email": "b@example.com", "tags": ["x"]}\n'
    )
    rows = rows_of(csv_job(tmp_path, content, name="list.jsonl"))
    kinds = [(type(r).__name__, r.number if isinstance(r, Row) else r.row) for r in rows]
    assert kinds == [("Row", 1), ("RowError", 3), ("RowError", 4), ("RowError", 5), ("Row", 6)]
    last = rows[-1]
    assert isinstance(last, Row) and last.data == {"email": "b@example.com", "tags": ["x"]}


def test_jsonl_numeric_key(tmp_path: Path) -> None:
    rows = rows_of(
        csv_job(tmp_path, '{"id": 42, "email": "a@example.com"}\n', name="l.jsonl", key="id")
    )
    [row] = rows
    assert isinstance(row, Row) and row.key == "42"


def test_jsonl_decode_error(tmp_path: Path) -> None:
    job = csv_job(tmp_path, b'{"email": "a@example.com"}\n{"email": "\xff"}\n', name="l.jsonl")
    with pytest.raises(JobError, match=r"l\.jsonl:2: row 2: not valid UTF-8"):
        rows_of(job)
