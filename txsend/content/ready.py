"""A ready RFC 5322 message, as `txsend send --stdin` takes one (`sendmail -t` style), and
the address lists of header fields and of `--to`/`--cc`/`--bcc`.

`parse_ready` reads the header section: the recipients (To, Cc and Bcc; the Resent-
fields instead when the message has any, RFC 5322 section 3.6.6), the From address, and
whether Message-ID and Date are there. It refuses (JobError, 65, naming the header or the
line) what could smuggle a header or break the message: a line in the header section
that is neither a field nor a continuation, a bare CR or a NUL there, a line over 998
characters, bytes that are not UTF-8, an address that is not one.

What is sent (`ReadyMessage.data`) is the message as it came, byte for byte, except:
line ends become CRLF (SMTP knows no other), the Bcc and Resent-Bcc fields are removed
(no copy shows them), and a Date and a Message-ID are added at the end of the header
section when the message has none.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.errors import InvalidHeaderDefect
from email.headerregistry import HeaderRegistry

from txsend.addresses import BAD_HEADER_CHAR, envelope_address
from txsend.errors import JobError

__all__ = ["RECIPIENT_FIELDS", "ReadyMessage", "address_list", "parse_ready"]

RECIPIENT_FIELDS = ("to", "cc", "bcc")
_RESENT_FIELDS = ("resent-to", "resent-cc", "resent-bcc")
_HIDDEN = frozenset({"bcc", "resent-bcc"})  # removed before sending
_FIELD = re.compile(rb"([\x21-\x39\x3b-\x7e]+)[ \t]*:")
_LINE_END = re.compile(rb"\r\n|\n|\r")
_MAX_LINE = 998  # RFC 5322 section 2.1.1, without the CRLF
_REGISTRY = HeaderRegistry()


@dataclass(frozen=True)
class ReadyMessage:
    """A message read from stdin, checked, its Bcc fields taken out."""

    head: bytes  # the header fields kept, CRLF after each, without the blank line
    body: bytes  # the blank line and the body (CRLF line ends), or b"" without a body
    sender: str | None  # the address of the first From mailbox (envelope form)
    recipients: tuple[tuple[str, str], ...]  # (address, field), header order, each once
    message_id: str | None  # as the message gives it, or None
    has_date: bool

    def data(self, message_id: str, date: str) -> bytes:
        """The bytes to send: a Date and the Message-ID added if the message has none."""
        extra = ""
        if not self.has_date:
            extra += f"Date: {date}\r\n"
        if self.message_id is None:
            extra += f"Message-ID: {message_id}\r\n"
        return self.head + extra.encode("ascii") + self.body


def address_list(value: str, what: str) -> list[tuple[str, str]]:
    """The (display name, address) pairs of an address list (a header field's value, or a
    flag's); JobError naming `what` for anything that is not a list of addresses.

    Groups are allowed (`undisclosed-recipients:;` has no address)."""
    if BAD_HEADER_CHAR.search(value):
        raise JobError(f"{what}: line break or control character in {value!r}")
    try:
        parsed = _REGISTRY("To", value)
        defects = [d for d in parsed.defects if isinstance(d, InvalidHeaderDefect)]
        boxes = [(a.display_name, a.addr_spec) for a in parsed.addresses]  # type: ignore[attr-defined]
    except Exception:  # the stdlib parser raises more than HeaderParseError on garbage
        defects, boxes = [InvalidHeaderDefect("unreadable")], []
    if defects:
        raise JobError(
            f"{what}: not a list of addresses: {value!r}",
            hint="separate addresses by commas: 'Ann <ann@example.com>, bob@example.com'",
        )
    out = []
    for name, addr in boxes:
        try:
            out.append((name, envelope_address(addr)))
        except ValueError as exc:
            raise JobError(f"{what}: invalid address {addr!r}: {exc}") from None
    return out


def parse_ready(data: bytes) -> ReadyMessage:
    """Read and check a ready message (see the module docstring)."""
    if not data.strip():
        raise JobError("stdin: no message (the input is empty)")
    fields, body = _header_section(data)
    if not fields:
        raise JobError("stdin: the message has no header fields")
    names = [name for name, _ in fields]
    resent = any(name in _RESENT_FIELDS for name in names)
    sources = _RESENT_FIELDS if resent else RECIPIENT_FIELDS
    recipients: dict[str, tuple[str, str]] = {}
    sender = None
    message_id = None
    for name, lines in fields:
        original = _name(lines[0])
        value = _value(lines)
        if name in sources:
            field = RECIPIENT_FIELDS[sources.index(name)]
            for _, addr in address_list(value, f"header {original}"):
                recipients.setdefault(addr.lower(), (addr, field))
        elif name == "from" and sender is None:
            boxes = address_list(value, f"header {original}")
            if not boxes:
                raise JobError(f"header {original}: no address")
            sender = boxes[0][1]
        elif name == "message-id" and message_id is None:
            message_id = value.strip() or None
    head = b"".join(
        line + b"\r\n" for name, lines in fields if name not in _HIDDEN for line in lines
    )
    return ReadyMessage(
        head=head,
        body=body,
        sender=sender,
        recipients=tuple(recipients.values()),
        message_id=message_id,
        has_date="date" in names,
    )


def _header_section(data: bytes) -> tuple[list[tuple[str, list[bytes]]], bytes]:
    """The header fields (lower-case name, raw lines) and the rest (from the blank line,
    line ends made CRLF)."""
    fields: list[tuple[str, list[bytes]]] = []
    pos = 0
    number = 0
    while pos < len(data):
        number += 1
        end = data.find(b"\n", pos)
        line = data[pos:] if end < 0 else data[pos:end]
        pos = len(data) if end < 0 else end + 1
        if line.endswith(b"\r"):
            line = line[:-1]
        if not line:  # the blank line: the body follows
            return fields, b"\r\n" + _LINE_END.sub(b"\r\n", data[pos:])
        if line[:1] in (b" ", b"\t"):
            if not fields:
                raise JobError(f"stdin: line {number} continues a header field that is not there")
            _check_line(line, f"header {_name(fields[-1][1][0])} (line {number})")
            fields[-1][1].append(line)
            continue
        match = _FIELD.match(line)
        if match is None:
            shown = line[:60].decode("utf-8", "replace")
            raise JobError(
                f"stdin: line {number} is not a header field: {shown!r}",
                hint="the message starts with its header fields (To:, Subject: ...), then a "
                "blank line, then the body; to send a text as the body, use --text -",
            )
        _check_line(line, f"header {_name(line)} (line {number})")
        fields.append((match[1].decode("ascii").lower(), [line]))
    return fields, b""


def _check_line(line: bytes, where: str) -> None:
    """Refuse a header line that could hide another header or a command."""
    if len(line) > _MAX_LINE:
        raise JobError(f"stdin: {where} is longer than {_MAX_LINE} characters")
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        raise JobError(
            f"stdin: {where} is not UTF-8",
            hint="encode non-ASCII header text as RFC 2047 encoded-words, or in UTF-8",
        ) from None
    bad = BAD_HEADER_CHAR.search(text)
    if bad is not None:
        what = "a bare CR" if bad.group() == "\r" else f"control character {bad.group()!r}"
        raise JobError(f"stdin: {where}: {what} in a header line (refused: header injection)")


def _value(lines: list[bytes]) -> str:
    """A field's value, unfolded (RFC 5322 section 2.2.3)."""
    text = b"".join(lines).decode("utf-8")
    return text.split(":", 1)[1].strip()


def _name(line: bytes) -> str:
    """A field's name as the message writes it (for messages)."""
    return line.split(b":", 1)[0].strip().decode("ascii", "replace")
