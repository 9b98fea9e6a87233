"""Tests for txsend.job.suppression: plain and CSV suppression lists."""

from __future__ import annotations

from pathlib import Path

import pytest

from txsend.errors import JobError, MissingInputError
from txsend.job.suppression import SuppressionList, load_suppressions


def write(folder: Path, name: str, content: str | bytes) -> Path:
    path = folder / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def test_suppression_list_matches_whole_address_case_insensitively() -> None:
    suppressed = SuppressionList()
    suppressed.add("  Ada@Example.COM ")
    suppressed.add("")  # ignored
    assert "ada@example.com" in suppressed
    assert "ADA@EXAMPLE.COM" in suppressed
    assert " ada@example.com\t" in suppressed
    assert "da@example.com" not in suppressed
    assert "ada@example.co" not in suppressed
    assert "ada@example.com.evil" not in suppressed
    assert 42 not in suppressed
    assert len(suppressed) == 1
    suppressed.add("ada@example.com")
    assert len(suppressed) == 1
    assert len(SuppressionList(["a@x.example", "A@X.example", "b@x.example"])) == 2


def test_reasons() -> None:
    suppressed = SuppressionList(["a@x.example"])
    assert suppressed.reason("A@X.example") == "suppressed"
    suppressed.add("B@x.example", "hard bounce in this job")
    suppressed.add("b@x.example", "later reason")  # the first reason is kept
    assert suppressed.reason(" b@x.example ") == "hard bounce in this job"
    assert suppressed.reason("c@x.example") is None


def test_file_reason_names_the_file(tmp_path: Path) -> None:
    suppressed = load_suppressions(
        [write(tmp_path, "unsub.txt", "a@example.com\n"), write(tmp_path, "s.csv", "email\nb@x\n")]
    )
    assert suppressed.reason("a@example.com") == "listed in unsub.txt"
    assert suppressed.reason("B@X") == "listed in s.csv"


def test_plain_list(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "plain.txt",
        "# unsubscribed, from the old system\n"
        "ada@example.com\n"
        "\n"
        "   Bob@Example.org   \n"
        "  # an indented comment\n"
        "Carol Smith <carol@example.net>\r\n"
        "dave@example.com",  # no final newline
    )
    suppressed = load_suppressions([path])
    assert len(suppressed) == 4
    for address in ("ada@example.com", "bob@example.org", "CAROL@example.net", "dave@example.com"):
        assert address in suppressed
    assert "# unsubscribed, from the old system" not in suppressed


def test_csv_with_email_column(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "s.csv",
        "reason,Email,date\n"
        "complaint,ada@example.com,2026-01-01\n"
        '"bounce, hard",BOB@example.org,2026-01-02\n'
        "\n"
        "manual,,2026-01-03\n"
        "short\n",
    )
    suppressed = load_suppressions([path])
    assert len(suppressed) == 2
    assert "ada@example.com" in suppressed and "bob@example.org" in suppressed
    assert "reason" not in suppressed


@pytest.mark.parametrize(
    ("header", "delimiter"),
    [
        ("ADDRESS", ";"),
        ("Email Address", ","),
        ("email_address", "\t"),
        ("E-Mail", "|"),
    ],
)
def test_csv_header_names_and_delimiters(tmp_path: Path, header: str, delimiter: str) -> None:
    content = f"name{delimiter}{header}\nAda{delimiter}ada@example.com\n"
    suppressed = load_suppressions([write(tmp_path, "s.csv", content)])
    assert "ada@example.com" in suppressed
    assert len(suppressed) == 1


def test_one_column_csv(tmp_path: Path) -> None:
    suppressed = load_suppressions([write(tmp_path, "s.csv", "Email\na@example.com\n")])
    assert "a@example.com" in suppressed
    assert len(suppressed) == 1


def test_bom_is_ignored(tmp_path: Path) -> None:
    plain = write(tmp_path, "plain.txt", b"\xef\xbb\xbfada@example.com\r\nbob@example.com\r\n")
    csv_file = write(tmp_path, "s.csv", b"\xef\xbb\xbfemail,name\r\ncarol@example.com,Carol\r\n")
    suppressed = load_suppressions([plain, csv_file])
    assert len(suppressed) == 3
    assert "ada@example.com" in suppressed
    assert "carol@example.com" in suppressed


def test_several_files_are_merged(tmp_path: Path) -> None:
    a = write(tmp_path, "a.txt", "a@example.com\nshared@example.com\n")
    b = write(tmp_path, "b.csv", "email\nSHARED@example.com\nb@example.com\n")
    suppressed = load_suppressions(iter([a, b]))
    assert len(suppressed) == 3


def test_empty_files(tmp_path: Path) -> None:
    empty = write(tmp_path, "empty.txt", "")
    comments = write(tmp_path, "comments.txt", "# nothing yet\n\n")
    header = write(tmp_path, "header.csv", "email,reason\n")
    assert len(load_suppressions([empty, comments, header])) == 0
    assert len(load_suppressions([])) == 0


def test_undecodable_names_file_and_line(tmp_path: Path) -> None:
    path = write(
        tmp_path, "latin1.txt", "ada@example.com\nj\u00fcrgen@example.de\n".encode("latin-1")
    )
    with pytest.raises(JobError) as caught:
        load_suppressions([path])
    assert str(caught.value).startswith(f"{path}:2: not valid UTF-8")
    assert (caught.value.file, caught.value.line) == (str(path), 2)
    assert caught.value.exit_code == 65


def test_undecodable_csv_row_names_line(tmp_path: Path) -> None:
    path = write(tmp_path, "s.csv", b"email,name\na@example.com,A\nb@example.com,\xff\n")
    with pytest.raises(JobError, match=r"s\.csv:3: not valid UTF-8 \(byte 0xff\)"):
        load_suppressions([path])


def test_utf8_addresses(tmp_path: Path) -> None:
    path = write(tmp_path, "s.txt", "J\u00dcRGEN@example.de\n")
    assert "j\u00fcrgen@example.de" in load_suppressions([path])


@pytest.mark.parametrize(
    ("content", "line", "message"),
    [
        ("ada@example.com\nexample.org\n", 2, "not an email address: 'example.org'"),
        ("ada@example.com,Ada\n", 1, "not an email address"),  # a CSV without a header
        ("name,mail\nAda,ada@example.com\n", 1, "not an email address"),  # no known column
        ("a@example.com b@example.com\n", 1, "not an email address"),
    ],
)
def test_lines_that_are_not_addresses(
    tmp_path: Path, content: str, line: int, message: str
) -> None:
    path = write(tmp_path, "bad.txt", content)
    with pytest.raises(JobError, match=message) as caught:
        load_suppressions([path])
    assert caught.value.line == line


def test_csv_row_without_an_address(tmp_path: Path) -> None:
    path = write(tmp_path, "s.csv", "email,name\na@example.com,A\nunknown,B\n")
    with pytest.raises(JobError, match=r"s\.csv:3: not an email address in column 1"):
        load_suppressions([path])


def test_csv_hint_for_headerless_csv(tmp_path: Path) -> None:
    path = write(tmp_path, "s.csv", "ada@example.com,Ada\n")
    with pytest.raises(JobError) as caught:
        load_suppressions([path])
    assert caught.value.hint is not None and "header" in caught.value.hint


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(MissingInputError, match="suppression file not found"):
        load_suppressions([tmp_path / "nope.txt"])


def test_large_file_is_streamed(tmp_path: Path) -> None:
    path = tmp_path / "big.txt"
    with path.open("w", encoding="utf-8") as out:
        for i in range(50_000):
            out.write(f"user{i}@example.com\n")
    suppressed = load_suppressions([path])
    assert len(suppressed) == 50_000
    assert "USER49999@example.com" in suppressed
