"""A job's recipient rows, one at a time or, from a CSV file, in batches of plain tuples.

`RecipientRows(job)` iterates as `iter_rows(job)` does (Row or RowError). For a CSV file
it also offers `csv_batches()`: the header, and lists of `CsvRow` tuples (number, key,
address, the row's values in header order) and RowErrors, made without a Row or a dict
per row; the SQLite journal stores such rows compactly. Both give the same rows, keys,
addresses and errors: a row the quick checks below do not pass goes through the rules of
`iter_rows` (`make_row`), and a file the CSV reader fails on is read again by
`iter_rows`, which raises the JobError it would have raised.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice

from txsend.errors import RowError
from txsend.job.recipients import (
    NOT_IN_ADDRESS,
    CsvLayout,
    csv_layout,
    csv_reader,
    csv_row,
    is_jsonl,
    iter_rows,
    open_data,
)
from txsend.job.spec import Job
from txsend.models import RecipientsSpec, Row

__all__ = ["CsvRow", "RecipientRows"]

CsvRow = tuple[int, str, str, list[str]]  # row number, key, address, values
Batch = list[CsvRow | RowError]


@dataclass(frozen=True)
class RecipientRows:
    """The recipient rows of a job (see the module docstring)."""

    job: Job

    def __iter__(self) -> Iterator[Row | RowError]:
        return iter_rows(self.job)

    def csv_batches(self, size: int) -> tuple[list[str], Iterator[Batch]] | None:
        """The CSV header and the rows in batches of up to `size` rows; None for JSONL."""
        spec = self.job.recipients
        if is_jsonl(spec.file):
            return None
        layout = csv_layout(spec.file, spec)
        return layout.header, self._batches(spec, layout, size)

    def _batches(self, spec: RecipientsSpec, layout: CsvLayout, size: int) -> Iterator[Batch]:
        try:
            yield from _read_batches(spec, layout, size)
        except (csv.Error, UnicodeDecodeError):
            for _ in iter_rows(self.job):  # raises the JobError that says where and why
                pass
            raise


def _read_batches(spec: RecipientsSpec, layout: CsvLayout, size: int) -> Iterator[Batch]:
    with open_data(spec.file) as handle:
        text = io.TextIOWrapper(handle, encoding="utf-8-sig", newline="")
        reader = csv_reader(text, layout.delimiter, layout.skipinitialspace)
        if next(reader, None) is None:  # the header, already read by csv_layout
            return
        number = 0
        while rows := list(islice(reader, size)):
            yield _whole_batch(number, rows, layout) or _row_by_row(number, rows, layout, spec)
            number += len(rows)


# A batch of addresses, one per line, every one of them usable: text on both sides of
# its last @, and none of NOT_IN_ADDRESS (which holds the line break: no address can
# hold the separator, and one that did would fail the count of lines).
_NOT_USABLE = NOT_IN_ADDRESS.pattern.removeprefix("[").removesuffix("]")
_USABLE_LINES = re.compile(f"(?:[^{_NOT_USABLE}]+@[^{_NOT_USABLE}@]+\n)*")


def _whole_batch(number: int, rows: list[list[str]], layout: CsvLayout) -> Batch | None:
    """The batch, if every row is a common one (else None): checked a batch at a time.

    Common: as many fields as columns, a key, and an address that passes the checks
    of `make_row`; the row by row checks would find nothing else in such a batch.
    """
    width = len(layout.header)
    if not all(map(width.__eq__, map(len, rows))):
        return None
    to, key_column = layout.to_column, layout.key_column
    addresses = [fields[to].strip() for fields in rows]
    keys = addresses
    if key_column is not None and key_column != to:
        keys = [fields[key_column].strip() for fields in rows]
        if not all(keys):
            return None
    lines = "\n".join(addresses) + "\n"
    if lines.count("\n") != len(rows) or _USABLE_LINES.fullmatch(lines) is None:
        return None
    numbers = range(number + 1, number + 1 + len(rows))
    return list(zip(numbers, keys, addresses, rows, strict=True))


def _row_by_row(
    number: int, rows: list[list[str]], layout: CsvLayout, spec: RecipientsSpec
) -> Batch:
    batch: Batch = []
    for fields in rows:
        number += 1
        item = _checked(number, fields, layout, spec)
        if item is not None:
            batch.append(item)
    return batch


def _checked(
    number: int, fields: list[str], layout: CsvLayout, spec: RecipientsSpec
) -> CsvRow | RowError | None:
    """Any other row, by the rules of iter_rows: None for a blank line."""
    row = csv_row(number, fields, layout, spec, data=False)
    if row is None or isinstance(row, RowError):
        return row
    return (row.number, row.key, row.address, fields)
