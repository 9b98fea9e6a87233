"""`read_events`: a file of provider events (SES/SNS, Postmark, SendGrid, Mailgun) as Feedback.

The file holds one JSON object, an array of them (SendGrid posts arrays), or one per line
(webhook bodies appended to a log), arrays on a line included. The file is read and
split before anything is returned, so that a file that is not JSON fails at once as a
JobError naming its line; after that each object is judged alone: one that no reader
understands is an `Unparsed` naming its line, never an exception. The provider is told
from each object's shape unless named.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from txsend.errors import JobError, MissingInputError, UsageError
from txsend.feedback import mailgun, postmark, sendgrid, ses
from txsend.feedback.events import Feedback, Unparsed
from txsend.feedback.vendor import NotUnderstood

__all__ = ["PROVIDERS", "read_events"]

Reader = Callable[[dict[str, Any], str], list[Feedback]]
Detector = Callable[[dict[str, Any]], bool]
# in the order they are tried: the shapes overlap least this way
PROVIDERS: dict[str, tuple[Detector, Reader]] = {
    "ses": (ses.is_event, ses.feedback),
    "postmark": (postmark.is_event, postmark.feedback),
    "mailgun": (mailgun.is_event, mailgun.feedback),
    "sendgrid": (sendgrid.is_event, sendgrid.feedback),
}
_WHITESPACE = " \t\r\n"


def read_events(path: Path, provider: str | None = None) -> Iterator[Feedback | Unparsed]:
    """Each event of the file, in order (one Feedback per recipient it names)."""
    if provider is not None and provider not in PROVIDERS:
        known = ", ".join(PROVIDERS)
        raise UsageError(f"unknown event provider {provider!r}", hint=f"one of: {known}")
    values = list(_values(path))
    return _events(values, provider)


def _events(
    values: list[tuple[str, Any | JobError]], provider: str | None
) -> Iterator[Feedback | Unparsed]:
    for source, value in values:
        if isinstance(value, JobError):
            yield Unparsed(source, value.message)
            continue
        yield from _one(value, source, provider)


def _one(value: Any, source: str, provider: str | None) -> list[Feedback] | list[Unparsed]:
    if not isinstance(value, dict):
        return [Unparsed(source, f"not a JSON object but {type(value).__name__}")]
    name = provider or next((n for n, (is_event, _) in PROVIDERS.items() if is_event(value)), None)
    if name is None:
        return [Unparsed(source, "not an event of SES, Postmark, SendGrid or Mailgun")]
    try:
        found = PROVIDERS[name][1](value, source)
    except NotUnderstood as exc:
        return [Unparsed(source, f"{name}: {exc}")]
    except Exception as exc:  # a reader's bug must not stop a run over thousands of events
        return [Unparsed(source, f"{name}: unreadable event ({type(exc).__name__})")]
    return found or [Unparsed(source, f"{name}: the event names no recipient")]


def _values(path: Path) -> Iterator[tuple[str, Any | JobError]]:
    """(source, value) for each top-level value and each element of a top-level array."""
    text = _read(path)
    decoder = json.JSONDecoder()
    name = str(path)
    pos, line, first = 0, 1, True
    while True:
        start = _skip(text, pos)
        line += text.count("\n", pos, start)
        pos = start
        if pos >= len(text):
            break
        if text[pos] == "[":
            end = _array(text, pos, line, name, decoder)
            for element_line, value in end[1]:
                yield f"events:{name}:{element_line}", value
            line += text.count("\n", pos, end[0])
            pos, first = end[0], False
            continue
        try:
            value, end_pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            if first:
                raise JobError(f"not JSON: {exc.msg}", file=name, line=exc.lineno) from None
            # a broken line among JSON lines: that line is unparsed, the next one is read
            nl = text.find("\n", pos)
            end_pos = len(text) if nl < 0 else nl
            value = JobError(f"not JSON: {exc.msg}")
        yield f"events:{name}:{line}", value
        line += text.count("\n", pos, end_pos)
        pos, first = end_pos, False


def _array(
    text: str, pos: int, line: int, name: str, decoder: json.JSONDecoder
) -> tuple[int, list[tuple[int, Any]]]:
    """The elements of the array at `pos` with their lines, and the position after it."""
    found: list[tuple[int, Any]] = []
    start = pos
    pos += 1
    try:
        while True:
            nxt = _skip(text, pos)
            if nxt < len(text) and text[nxt] == "]" and not found:
                return nxt + 1, found
            value, end = decoder.raw_decode(text, nxt)
            found.append((line + text.count("\n", start, nxt), value))
            pos = _skip(text, end)
            if pos < len(text) and text[pos] == "]":
                return pos + 1, found
            if pos >= len(text) or text[pos] != ",":
                raise json.JSONDecodeError("expected ',' or ']'", text, pos)
            pos += 1
    except json.JSONDecodeError as exc:
        raise JobError(f"not JSON: {exc.msg}", file=name, line=exc.lineno) from None


def _skip(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in _WHITESPACE:
        pos += 1
    return pos


def _read(path: Path) -> str:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise MissingInputError(f"{path}: no such events file") from None
    except IsADirectoryError:
        raise JobError("a directory, not an events file", file=str(path)) from None
    except OSError as exc:
        raise MissingInputError(f"{path}: cannot read it ({exc.strerror})") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise JobError("not UTF-8 text", file=str(path), line=line) from None
