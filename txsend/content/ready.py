"""A ready RFC 5322 message, as `txsend send --stdin` takes one (`sendmail -t` style), and
the address lists of header fields and of `--to`/`--cc`/`--bcc`.

`parse_ready` reads the header section: the recipients (To, Cc and Bcc; the Resent-To,
-Cc and -Bcc of the newest block of Resent- fields instead when it has any, RFC 5322
section 3.6.6), the sender (that block's Resent-From, else the From address), and
whether Message-ID and Date are there. It refuses (JobError, 65, naming the header or the
line) what could smuggle a header or break the message: a line in the header section
that is neither a field nor a continuation, a bare CR or a NUL there, a line over 998
characters, bytes that are not UTF-8, an address that is not one, a field RFC 5322 allows
once (From, To, Subject, Date, Message-ID...) given twice.

What is sent (`ReadyMessage.data`) is the message as it came, byte for byte, except:
line ends become CRLF (SMTP knows no other), the Bcc and Resent-Bcc fields are removed
(no copy shows them), and a Date and a Message-ID are added at the end of the header
section when the message has none.
"""

from __future__ import annotations

import hashlib
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
# the fields RFC 5322 3.6 allows at most once, as a message would name them
_ONCE = {
    name.lower(): name
    for name in (
        "Date",
        "From",
        "Sender",
        "Reply-To",
        "To",
        "Cc",
        "Bcc",
        "Message-ID",
        "In-Reply-To",
        "References",
        "Subject",
    )
}
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
    # what an idempotency key is bound to: the fields and body as sent, line ends made
    # CRLF, without Date and Message-ID (a generator stamps those anew on every call)
    digest: str = ""

    @property
    def utf8_header(self) -> bool:
        """UTF-8 in a header field (RFC 6532): sent only with SMTPUTF8 (RFC 6531)."""
        return not self.head.isascii()

    @property
    def eight_bit(self) -> bool:
        """Bytes over 127 anywhere: sent with BODY=8BITMIME (RFC 6152)."""
        return self.utf8_header or not self.body.isascii()

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
    _check_once(fields)
    block = _resent_block(fields)
    resent = any(name in _RESENT_FIELDS for name, _ in block)
    if resent:  # the newest resending names the recipients and who sends it (3.6.6)
        sources, source_fields, sender_field = _RESENT_FIELDS, block, "resent-from"
    else:
        sources, source_fields, sender_field = RECIPIENT_FIELDS, fields, "from"
    recipients: dict[str, tuple[str, str]] = {}
    for name, lines in source_fields:
        if name in sources:
            field = RECIPIENT_FIELDS[sources.index(name)]
            for _, addr in address_list(_value(lines), f"header {_name(lines[0])}"):
                recipients.setdefault(addr.lower(), (addr, field))
    sender = None
    message_id = None
    for name, lines in fields:
        original = _name(lines[0])
        value = _value(lines)
        if name == "from":
            boxes = address_list(value, f"header {original}")
            if not boxes:
                raise JobError(f"header {original}: no address")
            sender = sender or boxes[0][1]
        elif name == "message-id":
            message_id = value.strip() or None
    for name, lines in source_fields:
        if name == sender_field and name != "from":
            boxes = address_list(_value(lines), f"header {_name(lines[0])}")
            sender = boxes[0][1] if boxes else sender
    head = b"".join(
        line + b"\r\n" for name, lines in fields if name not in _HIDDEN for line in lines
    )
    return ReadyMessage(
        head=head,
        body=body,
        sender=sender,
        recipients=tuple(recipients.values()),
        message_id=message_id,
        has_date=any(name == "date" for name, _ in fields),
        digest=_digest(fields, body),
    )


def _digest(fields: list[tuple[str, list[bytes]]], body: bytes) -> str:
    stamped = _HIDDEN | {"date", "message-id"}
    content = hashlib.sha256()
    for name, lines in fields:
        if name not in stamped:
            content.update(b"".join(line + b"\r\n" for line in lines))
    content.update(body)
    return content.hexdigest()[:32]


def _check_once(fields: list[tuple[str, list[bytes]]]) -> None:
    """Refuse a second From, To, Subject, Date, Message-ID...: RFC 5322 3.6 allows each
    once, and a message with two cannot say which is meant (providers refuse it)."""
    lines_of: dict[str, list[int]] = {}
    number = 1
    for name, lines in fields:
        if name in _ONCE:
            lines_of.setdefault(name, []).append(number)
        number += len(lines)
    for name, numbers in lines_of.items():
        if len(numbers) > 1:
            shown = ", ".join(map(str, numbers))
            raise JobError(
                f"stdin: the {_ONCE[name]} field may appear at most once, and the message "
                f"has {len(numbers)} (lines {shown})",
                hint="RFC 5322 3.6 allows one; mail providers refuse such a message",
            )


def _resent_block(fields: list[tuple[str, list[bytes]]]) -> list[tuple[str, list[bytes]]]:
    """The newest block of Resent-* fields: the first run of them in the header (each
    resending prepends its block, RFC 5322 3.6.6), ended by another field or by a
    Resent-* field the block has already."""
    block: list[tuple[str, list[bytes]]] = []
    for name, lines in fields:
        if name.startswith("resent-") and all(name != seen for seen, _ in block):
            block.append((name, lines))
        elif block:
            break
    return block


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
