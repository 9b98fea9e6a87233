"""Header lines as written on the wire: RFC 5322 folding, RFC 2047 encoding, and checks.

The renderer builds every header line from these: `unstructured` for Subject and the
job's own headers, `mailbox` for From, Reply-To and To, `header_value` for any header
by name. Values are folded at whitespace to 78 columns where the text allows, and
B-encoded as utf-8 encoded-words where it does not (non-ASCII, a line over 998, or text
a reader would decode as an encoded-word). The checks refuse values that would break
out of their header line (`check_header`) and List-Unsubscribe values a mail client
could not use (`unsubscribe_problem`).
"""

from __future__ import annotations

import binascii
import re
from email.utils import formataddr

from txsend.addresses import BAD_HEADER_CHAR, LINE_BREAK
from txsend.content.mime import MAX_LINE
from txsend.errors import RowError
from txsend.models import Row

__all__ = [
    "CRLF",
    "FOLD_AT",
    "check_header",
    "encoded_words",
    "fold",
    "header_value",
    "mailbox",
    "unstructured",
    "unsubscribe_problem",
]

CRLF = "\r\n"
FOLD_AT = 78  # RFC 5322 section 2.1.1: SHOULD
# Text that a reader would decode as an RFC 2047 encoded-word must itself be encoded.
_ENCODED_WORD = re.compile(r"=\?[^?\s]*\?[bBqQ]\?")
# A fold point: whitespace after a non-blank, with something non-blank still to come,
# so that no folded line is blank.
_FOLD_POINT = re.compile(r"(?<=\S)[ \t](?=[ \t]*\S)")


def check_header(value: str, what: str, row: Row) -> None:
    """Refuse a rendered header value that would break out of its header line."""
    bad = BAD_HEADER_CHAR.search(value)
    if bad is not None:
        kind = "line break" if LINE_BREAK.match(bad.group()) else "control character"
        raise RowError(f"{kind} in {what} from data; row skipped", row=row.number, key=row.key)


def unsubscribe_problem(value: str, *, one_click: bool) -> str | None:
    """Why a rendered List-Unsubscribe value is unusable, or None."""
    for target in value.split(", "):
        if not (target.startswith("<") and target.endswith(">")):
            return f"{target!r} is not one <address>"
        inner = target[1:-1]
        if not inner or any(ch.isspace() or ch in '<>"' for ch in inner):
            return f"{inner!r} has a space, a quote or an angle bracket; use |urlencode"
        if len(inner) > 900:
            return "an address longer than 900 characters"
        if not inner.isascii():  # RFC 2369: the header holds URLs, which are ASCII
            return f"{inner!r} is not ASCII; use |urlencode"
        scheme = inner.split(":", 1)[0].lower()
        if scheme == "mailto":
            if "@" not in inner:
                return f"{inner!r} is not an email address"
        elif scheme == "https" or (scheme == "http" and not one_click):
            if "://" not in inner or not inner.isascii():
                return f"{inner!r} is not an ASCII https:// URL"
        else:
            return f"{inner!r} is not an https:// or mailto: address"
    return None


def header_value(name: str, value: str) -> str:
    """A header value as written: List-Unsubscribe folds only between its <...> entries."""
    if name == "List-Unsubscribe":
        # Never folded inside a URL; relaxed DKIM canonicalisation ignores the folds.
        return ",\r\n ".join(value.split(", ")) if len(value) + 18 > FOLD_AT else value
    return unstructured(name, value)


def unstructured(name: str, value: str) -> str:
    """The body of an unstructured header line: as is, folded, or RFC 2047-encoded."""
    if value.isascii() and ("=?" not in value or _ENCODED_WORD.search(value) is None):
        if len(name) + 2 + len(value) <= FOLD_AT:
            return value
        folded = fold(len(name) + 2, value)
        if folded is not None:
            return folded
    return encoded_words(len(name) + 2, value)


def encoded_words(prefix: int, value: str) -> str:
    """RFC 2047 B-encode value as utf-8 encoded-words, one per line, lines <= 78 columns."""
    data = value.encode("utf-8")
    # An encoded-word is at most 75 chars: 12 for "=?utf-8?b??=", so 60 base64 chars
    # (45 octets). The first one also shares its line with "Name: ".
    size = max(4, (FOLD_AT - prefix - 12) // 4 * 3)
    words = []
    pos = 0
    end = len(data)
    while pos < end:
        stop = pos + size
        if stop < end:
            # Prefer to end a word just after a space: RFC 2047 readers drop the folding
            # whitespace between words, but some (Python's address parser) keep it, and a
            # stray space is better there between words than inside one.
            space = data.rfind(b" ", pos + size // 3, stop)
            if space >= 0:
                stop = space + 1
            else:
                # Never split a UTF-8 sequence: back off over continuation octets.
                while stop > pos + 1 and data[stop] & 0xC0 == 0x80:
                    stop -= 1
        words.append(binascii.b2a_base64(data[pos:stop], newline=False).decode("ascii"))
        pos = stop
        size = 45
    return "\r\n ".join([f"=?utf-8?b?{word}?=" for word in words])


def fold(prefix: int, value: str) -> str | None:
    """Fold ASCII text at whitespace to <= 78 columns where possible; None if a line > 998."""
    lines = []
    start = 0
    last = -1  # the last fold point seen on the current line
    width = FOLD_AT - prefix
    for match in _FOLD_POINT.finditer(value):
        pos = match.start()
        if pos - start > width and last > start:
            lines.append(value[start:last])
            start = last
            width = FOLD_AT
        last = pos
    if len(value) - start > width and last > start:
        lines.append(value[start:last])
        start = last
    lines.append(value[start:])
    if len(lines[0]) + prefix > MAX_LINE or any(len(line) > MAX_LINE for line in lines[1:]):
        return None
    return CRLF.join(lines)


def mailbox(field: str, name: str, addr: str) -> str:
    """A header value for one mailbox: `addr`, `Name <addr>`, or an encoded name."""
    if not name:
        return addr
    if not addr.isascii():  # SMTPUTF8: the address goes in the header as UTF-8 (RFC 6532)
        return mailbox(field, name, "x@x").replace("<x@x>", f"<{addr}>")
    if name.isascii() and ("=?" not in name or _ENCODED_WORD.search(name) is None):
        value = formataddr((name, addr))
        if len(field) + 2 + len(value) <= FOLD_AT:
            return value
        # Folding inside the quoted display name is fine: FWS is allowed there and
        # unfolding gives the same text back.
        folded = fold(len(field) + 2, value)
        if folded is not None:
            return folded
    encoded = encoded_words(len(field) + 2, name)
    last_line = encoded.rpartition("\n")[2]
    used = len(last_line) + (0 if "\n" in encoded else len(field) + 2)
    sep = " " if used + len(addr) + 3 <= FOLD_AT else "\r\n "
    return f"{encoded}{sep}<{addr}>"
