"""Stream recipient rows from a CSV (any dialect the sniffer accepts) or a JSONL file.

Rows are read one at a time, never the whole file. A bad row is yielded as a RowError
with its row number (and key when known); a bad file raises JobError.
"""

from __future__ import annotations

import csv
import difflib
import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from txsend.errors import JobError, MissingInputError, RowError
from txsend.job.spec import Job
from txsend.models import RecipientsSpec, Row

JSONL_SUFFIXES = frozenset({".jsonl", ".ndjson"})
NOT_IN_ADDRESS = re.compile(r"[\s<>,;]")
_SNIFF_BYTES = 64 * 1024
_DELIMITERS = ",;\t|"
UTF8_HINT = "save the file as UTF-8 (in Excel: Save As > CSV UTF-8)"


def is_jsonl(path: Path) -> bool:
    """True for a JSON Lines recipients file."""
    return path.suffix.lower() in JSONL_SUFFIXES


def show_path(path: Path) -> str:
    """A data file's name for messages: relative to the current folder when inside it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def check_header(path: Path, spec: RecipientsSpec) -> None:
    """Raise MissingColumn now if the CSV lacks the address (or key) column."""
    csv_layout(path, spec)


def _json_kind(value: object) -> str:
    """How a JSON value reads to a user, for "expected X, got Y"."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int | float):
        return f"the number {value}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return f"the string {value!r}" if len(str(value)) <= 40 else "a string"


def iter_rows(job: Job) -> Iterator[Row | RowError]:
    """Stream the recipient rows; a bad row is yielded as a RowError, a bad file raises."""
    if is_jsonl(job.recipients.file):
        yield from _iter_jsonl(job.recipients)
    else:
        yield from _iter_csv(job.recipients)


@dataclass(frozen=True)
class CsvLayout:
    delimiter: str
    skipinitialspace: bool
    header: list[str]
    to_column: int
    key_column: int | None


class MissingColumn(JobError):
    """The address or key column is not in the header; role is "to" or "key"."""

    def __init__(self, message: str, *, file: str, role: str) -> None:
        super().__init__(message, file=file, line=1)
        self.role = role


class _Undecodable(Exception):
    def __init__(self, line: int, error: UnicodeDecodeError) -> None:
        super().__init__(line)
        self.line = line
        self.error = error


def _decoded_lines(handle: BinaryIO) -> Iterator[str]:
    """Lines decoded one at a time, so a bad byte is pinned to its line."""
    for number, raw in enumerate(handle, start=1):
        try:
            yield raw.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError as exc:
            raise _Undecodable(number, exc) from None


def _first_bad_byte(path: Path, delimiter: str, skipinitialspace: bool) -> tuple[str, int, int]:
    """Where the first byte that is not UTF-8 is: ("row N" or "the header", line, byte).

    Reads the file again line by line through the same CSV reader, so a row that spans
    lines (a quoted line break) is counted as one row.
    """
    with path.open("rb") as handle:
        reader = csv_reader(_decoded_lines(handle), delimiter, skipinitialspace)
        number = -1
        try:
            for _fields in reader:
                number += 1
        except _Undecodable as exc:
            where = "the header" if number < 0 else f"row {number + 1}"
            return where, exc.line, exc.error.object[exc.error.start]
        except csv.Error:
            pass
    return "the file", 0, 0


def open_data(path: Path) -> BinaryIO:
    try:
        return path.open("rb")
    except FileNotFoundError:
        raise MissingInputError(f"recipients file not found: {show_path(path)}") from None
    except OSError as exc:
        raise MissingInputError(f"cannot read {show_path(path)}: {exc.strerror}") from None


def csv_reader(lines: Iterator[str], delimiter: str, skipinitialspace: bool) -> Any:
    # Only the delimiter (and skipinitialspace) come from the sniffer: it guesses
    # doublequote=False when the sample has no "" and may pick ' as the quote, both of
    # which would misread later rows. strict makes a broken quote an error, not a
    # silently merged row.
    return csv.reader(
        lines,
        delimiter=delimiter,
        quotechar='"',
        doublequote=True,
        skipinitialspace=skipinitialspace,
        strict=True,
    )


def csv_layout(path: Path, spec: RecipientsSpec) -> CsvLayout:
    """Sniff the delimiter and read the header; JobError if the address column is missing."""
    display = show_path(path)
    with open_data(path) as handle:
        sample_bytes = handle.read(_SNIFF_BYTES)
    if len(sample_bytes) == _SNIFF_BYTES and b"\n" in sample_bytes:
        sample_bytes = sample_bytes[: sample_bytes.rindex(b"\n") + 1]  # whole lines only
    sample = sample_bytes.decode("utf-8-sig", errors="replace")
    if not sample.strip():
        raise JobError(
            "the file is empty; a header row naming the columns is required",
            file=display,
            hint=f"the first line should be e.g.: {spec.to},first_name",
        )
    try:
        sniffed = csv.Sniffer().sniff(sample, delimiters=_DELIMITERS)
        first = (sniffed.delimiter, bool(sniffed.skipinitialspace))
    except csv.Error:
        first = _guess_from_header(sample.partition("\n")[0])
    # If the sniffed delimiter does not yield the address column, try the others in turn.
    candidates = [first] + [(d, False) for d in _DELIMITERS if d != first[0]]
    headers = []
    for delimiter, skip in candidates:
        try:
            header = [
                name.strip()
                for name in next(csv_reader(io.StringIO(sample, newline=""), delimiter, skip))
            ]
        except (csv.Error, StopIteration):
            continue
        headers.append(header)
        to_column = _column(header, spec.to)
        if to_column is not None:
            break
    else:
        shown = headers[0] if headers else []
        raise MissingColumn(
            f"no column {spec.to!r} in the header (columns: {', '.join(shown) or 'none'})"
            + _suggest(spec.to, shown),
            file=display,
            role="to",
        )
    seen: set[str] = set()
    for name in header:
        if name and name in seen:
            raise JobError(f"column {name!r} appears twice in the header", file=display, line=1)
        seen.add(name)
    key_column = None
    if spec.key is not None:
        key_column = _column(header, spec.key)
        if key_column is None:
            raise MissingColumn(
                f"no key column {spec.key!r} in the header (columns: {', '.join(header)})"
                + _suggest(spec.key, header),
                file=display,
                role="key",
            )
    if spec.timezone is not None and _column(header, spec.timezone) is None:
        raise MissingColumn(
            f"no time zone column {spec.timezone!r} in the header (columns: {', '.join(header)})"
            + _suggest(spec.timezone, header),
            file=display,
            role="timezone",
        )
    return CsvLayout(delimiter, skip, header, to_column, key_column)


def _guess_from_header(line: str) -> tuple[str, bool]:
    """Delimiter and skipinitialspace from the header line, when the sniffer gives up."""
    delimiter = max(_DELIMITERS, key=line.count)
    if not line.count(delimiter):
        return ",", False  # a single column: the excel dialect
    return delimiter, line.count(delimiter) == line.count(delimiter + " ")


def _column(header: list[str], name: str) -> int | None:
    """Index of a column; an exact match wins, else a unique case-insensitive one."""
    if name in header:
        return header.index(name)
    folded = [i for i, column in enumerate(header) if column.casefold() == name.casefold()]
    return folded[0] if len(folded) == 1 else None


def _suggest(name: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(name, [c for c in choices if c], n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _iter_csv(spec: RecipientsSpec) -> Iterator[Row | RowError]:
    layout = csv_layout(spec.file, spec)
    display = show_path(spec.file)
    with open_data(spec.file) as handle:
        # Decoded by a TextIOWrapper (C speed); a bad byte is then pinned to its line by
        # reading the file again in binary, which only an error pays for.
        text = io.TextIOWrapper(handle, encoding="utf-8-sig", newline="")
        reader = csv_reader(text, layout.delimiter, layout.skipinitialspace)
        number = -1  # the header is row 0
        while True:
            start_line = reader.line_num + 1
            try:
                fields: list[str] = next(reader)
            except StopIteration:
                return
            except UnicodeDecodeError:
                where, line, bad = _first_bad_byte(
                    spec.file, layout.delimiter, layout.skipinitialspace
                )
                raise JobError(
                    f"{where}: not valid UTF-8 (byte 0x{bad:02x})",
                    file=display,
                    line=line,
                    hint=UTF8_HINT,
                ) from None
            except csv.Error as exc:
                raise JobError(
                    f"row {number + 1}: cannot read CSV: {exc}",
                    file=display,
                    line=start_line,
                    hint="check the quoting: a field with a quote inside must be "
                    'written "like ""this"""',
                ) from None
            number += 1
            if number == 0:
                continue  # the header, already read by csv_layout
            row = csv_row(number, fields, layout, spec)
            if row is not None:
                yield row


def csv_row(
    number: int, fields: list[str], layout: CsvLayout, spec: RecipientsSpec, *, data: bool = True
) -> Row | RowError | None:
    """One data row of a CSV file by the rules of a recipients file: None for a blank
    line. With data=False the Row carries no data dict (the caller keeps the fields)."""
    if not "".join(fields).strip():
        return None  # blank line or an all-empty spreadsheet row
    width = len(layout.header)
    if len(fields) != width:
        return RowError(f"has {len(fields)} fields but the header has {width} columns", row=number)
    values = (
        {name: value for name, value in zip(layout.header, fields, strict=True) if name}
        if data
        else {}
    )
    key = fields[layout.key_column].strip() if layout.key_column is not None else None
    return make_row(number, fields[layout.to_column], key, spec, values)


def _iter_jsonl(spec: RecipientsSpec) -> Iterator[Row | RowError]:
    display = show_path(spec.file)
    with open_data(spec.file) as handle:
        lines = _decoded_lines(handle)
        number = 0
        while True:
            try:
                text = next(lines)
            except StopIteration:
                return
            except _Undecodable as exc:
                bad = exc.error.object[exc.error.start]
                raise JobError(
                    f"row {exc.line}: not valid UTF-8 (byte 0x{bad:02x})",
                    file=display,
                    line=exc.line,
                    hint="save the file as UTF-8",
                ) from None
            number += 1
            if not text.strip():
                continue
            try:
                data = json.loads(text)
            except json.JSONDecodeError as exc:
                yield RowError(f"not valid JSON: {exc.msg} (column {exc.colno})", row=number)
                continue
            if not isinstance(data, dict):
                yield RowError(f"expected a JSON object, got {_json_kind(data)}", row=number)
                continue
            address = data.get(spec.to)
            key = data.get(spec.key) if spec.key is not None else None
            if isinstance(key, (int, float)) and not isinstance(key, bool):
                key = str(key)
            if key is not None and not isinstance(key, str):
                yield RowError(
                    f"key {spec.key!r} must be a string, got {_json_kind(key)}", row=number
                )
                continue
            if address is not None and not isinstance(address, str):
                yield RowError(
                    f"address {spec.to!r} must be a string, got {_json_kind(address)}",
                    row=number,
                    key=key.strip() if key else None,
                )
                continue
            yield make_row(number, address or "", key.strip() if key else None, spec, data)


def make_row(
    number: int, raw_address: str, key: str | None, spec: RecipientsSpec, data: dict[str, Any]
) -> Row | RowError:
    address = raw_address.strip()
    if spec.key is not None and not key:
        return RowError(f"missing key (no value in {spec.key!r})", row=number, key=None)
    if not address:
        return RowError(f"missing address (no value in {spec.to!r})", row=number, key=key)
    local, at, domain = address.rpartition("@")
    if not (local and at and domain) or NOT_IN_ADDRESS.search(address):
        return RowError(
            f"not an email address: {address!r}", row=number, key=key if key else address
        )
    return Row(number=number, key=key if key else address, address=address, data=data)
