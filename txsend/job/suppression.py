"""Suppression lists (the job's ``suppress:`` files): addresses never to send to.

A file is either

* a plain list: one address per line; blank lines and lines starting with ``#`` are
  ignored; ``Name <addr>`` is read as ``addr``; or
* a CSV with a header row naming an address column: ``email`` or ``address`` (also
  ``Email Address``, ``email_address``, ``e-mail``; case-insensitive). It is recognised
  by its first line: a header containing such a column, either alone on the line or
  beside others separated by ``,``, ``;``, tab or ``|``. Empty cells are ignored.

Addresses are compared whole and case-insensitively, surrounding spaces stripped, an
internationalised domain as its A-labels (so ``bücher.example`` is ``xn--bcher-kva.example``). Each
remembers why it is suppressed: "listed in FILE" for the files, or what ``add`` was told
(e.g. the engine's hard bounces), for the journal and the report.

Files are streamed line by line (suppression lists can be millions of lines), decoded
as UTF-8 with an optional BOM. Anything that would make the list silently suppress
nobody is an error naming the file and line (JobError, exit 65): undecodable bytes, a
line that is not an address (e.g. a domain, or a CSV without a recognised header).
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator
from pathlib import Path

from txsend.addresses import comparable_address
from txsend.errors import JobError, MissingInputError

__all__ = ["DEFAULT_REASON", "SuppressionList", "load_suppressions"]

_DELIMITERS = (",", ";", "\t", "|")
_ADDRESS_COLUMNS = frozenset({"email", "address", "emailaddress"})
DEFAULT_REASON = "suppressed"
_CSV_HINT = "a CSV suppression file needs a header row with an 'email' or 'address' column"


def _normalise(address: str) -> str:
    return comparable_address(address)


class SuppressionList:
    """Addresses, matched whole and case-insensitively, each with why it is suppressed."""

    def __init__(self, addresses: Iterable[str] = (), reason: str = DEFAULT_REASON) -> None:
        self._reasons: dict[str, str] = {}
        for address in addresses:
            self.add(address, reason)

    def __contains__(self, address: object) -> bool:
        return isinstance(address, str) and _normalise(address) in self._reasons

    def add(self, address: str, reason: str = DEFAULT_REASON) -> None:
        """Suppress an address; the first reason given for it is kept."""
        normalised = _normalise(address)
        if normalised:
            self._reasons.setdefault(normalised, reason)

    def reason(self, address: str) -> str | None:
        """Why the address is suppressed (e.g. "listed in suppressed.csv"), None if it is not."""
        if not self._reasons:  # asked for every message, several times: most lists are empty
            return None
        return self._reasons.get(_normalise(address))

    def __len__(self) -> int:
        return len(self._reasons)

    def addresses(self) -> Iterator[str]:
        """Every suppressed address, normalised (lowercase, A-labels), in the order added."""
        return iter(self._reasons)

    def __repr__(self) -> str:
        return f"SuppressionList({len(self)} addresses)"


def load_suppressions(paths: Iterable[Path]) -> SuppressionList:
    """Read every suppression file into one list."""
    suppressed = SuppressionList()
    for path in paths:
        _load_file(Path(path), suppressed)
    return suppressed


def _load_file(path: Path, into: SuppressionList) -> None:
    display = str(path)
    reason = f"listed in {path.name}"
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        raise MissingInputError(f"suppression file not found: {display}") from None
    except OSError as exc:
        raise MissingInputError(f"cannot read suppression file {display}: {exc.strerror}") from None
    with handle:
        lines = _Lines(handle, display)
        first = next(lines, None)
        if first is None:
            return
        header = _csv_header(first)
        if header is None:
            _read_plain(lines.chain_first(first), display, into, reason)
        else:
            _read_csv(header, lines, display, into, reason)


class _Lines(Iterator[str]):
    """Decoded lines of a binary file, with the current line's number (1-based)."""

    def __init__(self, handle: Iterable[bytes], display: str) -> None:
        self._raw = iter(handle)
        self._display = display
        self.number = 0

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        raw = next(self._raw)
        self.number += 1
        try:
            text = raw.decode("utf-8-sig" if self.number == 1 else "utf-8")
        except UnicodeDecodeError as exc:
            raise JobError(
                f"not valid UTF-8 (byte 0x{raw[exc.start]:02x})",
                file=self._display,
                line=self.number,
                hint="save the suppression file as UTF-8",
            ) from None
        return text

    def chain_first(self, first: str) -> Iterator[tuple[int, str]]:
        yield 1, first
        for text in self:
            yield self.number, text


def _csv_header(first: str) -> tuple[str, int] | None:
    """(delimiter, address column index) when the first line is a CSV header, else None."""
    line = first.strip()
    if _column_name(line) in _ADDRESS_COLUMNS:
        return ",", 0  # a one-column CSV: its header alone
    for delimiter in _DELIMITERS:
        if delimiter not in line:
            continue
        cells = next(csv.reader([line], delimiter=delimiter), [])
        for index, cell in enumerate(cells):
            if _column_name(cell) in _ADDRESS_COLUMNS:
                return delimiter, index
    return None


def _column_name(cell: str) -> str:
    return "".join(ch for ch in cell.strip().lower() if ch not in " _-")


def _read_plain(
    numbered: Iterator[tuple[int, str]], display: str, into: SuppressionList, reason: str
) -> None:
    for number, text in numbered:
        line = text.strip()
        if not line or line.startswith("#"):
            continue
        line = _angle_address(line)
        looks_csv = any(d in line for d in _DELIMITERS)
        if "@" not in line or looks_csv or " " in line:
            raise JobError(
                f"not an email address: {_shorten(line)}",
                file=display,
                line=number,
                hint=_CSV_HINT if looks_csv else "write one whole address per line",
            )
        into.add(line, reason)


def _read_csv(
    header: tuple[str, int], lines: _Lines, display: str, into: SuppressionList, reason: str
) -> None:
    delimiter, column = header
    reader = csv.reader(lines, delimiter=delimiter)
    try:
        for cells in reader:
            if column >= len(cells):
                continue  # a blank line, or a short row without the address cell
            address = cells[column].strip()
            if not address:
                continue
            address = _angle_address(address)
            if "@" not in address:
                raise JobError(
                    f"not an email address in column {column + 1}: {_shorten(address)}",
                    file=display,
                    line=lines.number,
                )
            into.add(address, reason)
    except csv.Error as exc:
        raise JobError(f"not valid CSV: {exc}", file=display, line=lines.number) from None


def _angle_address(text: str) -> str:
    """'Name <addr>' -> 'addr'; anything else unchanged."""
    if text.endswith(">") and "<" in text:
        return text[text.rindex("<") + 1 : -1].strip()
    return text


def _shorten(text: str) -> str:
    return repr(text if len(text) <= 60 else text[:57] + "...")
