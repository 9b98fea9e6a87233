"""Mailboxes that bounces arrive in: a Maildir (marked as handled) and an mbox (read only).

A message is marked handled only after the journal has committed what it said, so a
run killed in between reads it again next time, and the journal's event ids make that
count once. A Maildir message is then moved from new/ to cur/ with the Seen flag (the
Maildir spec's "info" suffix ``:2,S``, flags kept sorted), into a sub-maildir's cur/
when `move_to` names one, or unlinked only with `delete=True`; each is one rename(2) or
unlink(2), atomic on one file system. A message's source is its folder and file name,
so it stays the same across runs until it is moved.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from txsend.errors import JobError, MissingInputError, UsageError
from txsend.feedback.events import Item
from txsend.feedback.reports import MAX_MESSAGE_BYTES

__all__ = ["MaildirSource", "MboxSource"]

_INFO = ":2,"
_READ_LIMIT = MAX_MESSAGE_BYTES + 1  # a bigger message is read this far: "too large"


class MaildirSource:
    """The messages of a Maildir's new/ and cur/ (all of them: the journal skips repeats)."""

    def __init__(self, path: Path, *, delete: bool = False, move_to: str | None = None) -> None:
        if not path.exists():
            raise MissingInputError(f"{path}: no such maildir")
        if not all((path / sub).is_dir() for sub in ("cur", "new", "tmp")):
            raise JobError(
                "not a maildir",
                file=str(path),
                hint="a Maildir is a folder holding cur/, new/ and tmp/ (for an mbox: --mbox)",
            )
        if move_to is not None and (not move_to or "/" in move_to or move_to in {".", ".."}):
            raise UsageError(
                f"cannot move handled messages to {move_to!r}",
                hint="name a sub-maildir of this one, e.g. .Processed",
            )
        self.path = path
        self.delete = delete
        self.move_to = move_to

    def __iter__(self) -> Iterator[Item]:
        for sub in ("new", "cur"):
            try:
                names = sorted(os.listdir(self.path / sub))
            except FileNotFoundError:
                continue
            for name in names:
                if name.startswith("."):
                    continue
                source = f"maildir:{sub}/{name}"
                try:
                    raw = _read(self.path / sub / name)
                except OSError as exc:  # not ours to read (mode 0600, another user), a loop
                    why = exc.strerror or type(exc).__name__
                    yield Item(source, b"", unreadable=f"cannot read the file ({why})")
                    continue
                if raw is not None:
                    yield Item(source, raw)

    def handled(self, item: Item) -> None:
        """Mark one message seen (new/ → cur/ with S), move it, or delete it when asked."""
        sub, name = _locate(item.source)
        source = self.path / sub / name
        if self.delete:
            source.unlink(missing_ok=True)
            return
        base, _, flags = name.partition(_INFO)
        target_name = base + _INFO + "".join(sorted(set(flags) | {"S"}))
        folder = self.path
        if self.move_to is not None:
            folder = self.path / self.move_to
            for part in ("cur", "new", "tmp"):
                (folder / part).mkdir(mode=0o700, parents=True, exist_ok=True)
        target = folder / "cur" / target_name
        if target == source:
            return
        # moved already (by another run or a mail reader): nothing is lost
        with contextlib.suppress(FileNotFoundError):
            os.rename(source, target)

    def close(self) -> None:
        """Nothing is held open between messages."""


class MboxSource:
    """The messages of an mbox file, read only (handled() changes nothing)."""

    def __init__(self, path: Path) -> None:
        if not path.exists():
            raise MissingInputError(f"{path}: no such mbox file")
        if not (path.is_file() or path.is_fifo()):  # a pipe too: --mbox <(zcat old.mbox.gz)
            raise JobError("not an mbox file", file=str(path), hint="for a Maildir: --maildir")
        self.path = path
        if path.is_file():  # a pipe is checked as it is read
            try:
                with path.open("rb") as mbox:
                    _check_start(next((ln for ln in mbox if ln.strip()), b""), path)
            except OSError as exc:
                raise MissingInputError(f"{path}: cannot read it ({exc.strerror})") from None

    def __iter__(self) -> Iterator[Item]:
        index = 0
        with self.path.open("rb") as mbox:
            for raw in _split_mbox(mbox, self.path):
                index += 1
                yield Item(f"mbox:{self.path}#{index}", raw)

    def handled(self, item: Item) -> None:
        """An mbox is never rewritten: the journal's event ids make re-reads count once."""

    def close(self) -> None:
        """The file is closed after each full read."""


def _check_start(first: bytes, path: Path) -> None:
    """An mbox begins (after blank lines) with a "From " line; an empty one is an mbox too."""
    if first and not first.startswith(b"From "):
        raise JobError(
            "not an mbox file: it does not begin with a 'From ' line",
            file=str(path),
            hint="one message alone: put it in a Maildir's new/ and pass --maildir",
        )


def _split_mbox(lines: Iterable[bytes], path: Path) -> Iterator[bytes]:
    """Each message of an mbox: after a "From " line that starts a message, ">From " unquoted."""
    chunks: list[bytes] = []
    size = 0
    started = False
    previous_blank = True
    for line in lines:
        if line.startswith(b"From ") and previous_blank:
            if started:
                yield _strip_separator(b"".join(chunks))
            chunks, size, started = [], 0, True
            previous_blank = False
            continue
        previous_blank = line in (b"\n", b"\r\n")
        if not started:
            if line.strip():
                _check_start(line, path)
            continue
        if line.startswith(b">") and line.lstrip(b">").startswith(b"From "):
            line = line[1:]
        if size < _READ_LIMIT:
            chunks.append(line[: _READ_LIMIT - size])
            size += len(chunks[-1])
    if started:
        yield _strip_separator(b"".join(chunks))


def _strip_separator(raw: bytes) -> bytes:
    # the blank line before the next "From " belongs to the mbox, not the message
    if raw.endswith(b"\r\n\r\n"):
        return raw[:-2]
    if raw.endswith(b"\n\n"):
        return raw[:-1]
    return raw


def _read(path: Path) -> bytes | None:
    try:
        with path.open("rb") as message:
            return message.read(_READ_LIMIT)
    except (FileNotFoundError, IsADirectoryError):
        return None  # moved away while listed, or not a message


def _locate(source: str) -> tuple[str, str]:
    kind, _, rest = source.partition(":")
    sub, _, name = rest.partition("/")
    if kind != "maildir" or sub not in {"new", "cur"} or not name or "/" in name or name[0] == ".":
        raise ValueError(f"not a message of a maildir: {source!r}")
    return sub, name
