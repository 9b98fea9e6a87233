"""Small, total functions that turn a report's field values into Feedback's fields.

Each takes whatever a header or a JSON value holds (a str, an `email.header.Header` for a
value with 8-bit bytes, None, a number) and returns a clean value or None; none raises.
Every string kept is one line and at most `MAX_FIELD` characters, so that a hostile
report cannot put megabytes into the journal or a terminal.
"""

from __future__ import annotations

import datetime
import email.utils
import hashlib
import json
import re
from collections.abc import Iterable
from typing import Any

from txsend.verp import find_token

MAX_FIELD = 1000  # characters kept of any one value
_SPACE = re.compile(r"\s+")
_STATUS = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
_SMTP_LEADING = re.compile(r"^\s*smtp\s*;\s*([245]\d\d)\b", re.IGNORECASE)
_SMTP_INSIDE = re.compile(r"(?<!\d)([245]\d\d)[ -]+[245]\.\d{1,3}\.\d{1,3}\b")
_CODE_ALONE = re.compile(r"^\s*([245]\d\d)\b")
_ANGLE_ID = re.compile(r"<[^<>\s]{1,500}>")
_XTEXT = re.compile(r"\+([0-9A-Fa-f]{2})")


def text(value: object) -> str | None:
    """A field's value as one clipped line of text, or None when empty or absent."""
    if value is None:
        return None
    try:
        raw = value if isinstance(value, str) else str(value)
    except Exception:
        return None
    raw = raw[: MAX_FIELD * 4]
    # 8-bit bytes a compat32 parse kept as surrogates: shown as U+FFFD, never re-encoded
    raw = raw.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    line = _SPACE.sub(" ", raw).strip()[:MAX_FIELD]
    return line or None


def bare_address(value: object) -> str | None:
    """The address of a DSN field ("rfc822; <user@example.com>") or a header ("A <a@b>")."""
    line = text(value)
    if line is None:
        return None
    kind, sep, rest = line.partition(";")
    if sep and "@" not in kind:
        line = rest.strip()
    if "<" in line or '"' in line or "," in line:
        try:
            pairs = email.utils.getaddresses([line])
        except Exception:
            pairs = []
        found = next((addr for _, addr in pairs if "@" in addr), None)
        if found is not None:
            line = found
    line = line.strip().strip("<>").strip()
    if not line or " " in line:
        return None
    return line


def status(value: object) -> str | None:
    """The enhanced status code (RFC 3463) in a value: "5.1.1"."""
    line = text(value)
    found = _STATUS.search(line) if line else None
    return ".".join(found.groups()) if found else None


def smtp_code(diagnostic: object) -> int | None:
    """The SMTP reply code of a diagnostic: "smtp; 550 5.1.1 ..." or "... said: 550 5.1.1"."""
    line = text(diagnostic)
    if line is None:
        return None
    found = _SMTP_LEADING.search(line) or _SMTP_INSIDE.search(line) or _CODE_ALONE.search(line)
    return int(found.group(1)) if found else None


def message_id(value: object) -> str | None:
    """A Message-ID as "<...>", from a header or a provider's field (with or without <>)."""
    line = text(value)
    if line is None:
        return None
    found = _ANGLE_ID.search(line)
    if found:
        return found.group(0)
    if " " not in line and "@" in line and len(line) <= 500:
        return f"<{line}>"
    return None


def xtext(value: object) -> str | None:
    """An ENVID, its xtext (RFC 3461 section 4) decoded."""
    line = text(value)
    if line is None:
        return None
    return _XTEXT.sub(lambda m: chr(int(m.group(1), 16)), line)


def rfc5322_date(value: object) -> float | None:
    """Epoch seconds of an RFC 5322 date (Arrival-Date, Last-Attempt-Date); naive = UTC."""
    line = text(value)
    if line is None:
        return None
    try:
        when = email.utils.parsedate_to_datetime(line)
    except Exception:
        return None
    return _epoch(when)


def iso_date(value: object) -> float | None:
    """Epoch seconds of an ISO 8601 time ("2026-01-27T14:59:38.237Z") or of a number."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value) if 0 <= value < 1e11 else None
    line = text(value)
    if line is None:
        return None
    line = re.sub(r"(\.\d{6})\d+", r"\1", line)  # .NET's 7 fractional digits
    try:
        when = datetime.datetime.fromisoformat(line.replace("Z", "+00:00"))
    except ValueError:
        return rfc5322_date(line)
    return _epoch(when)


def _epoch(when: datetime.datetime) -> float | None:
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    try:
        return when.timestamp()
    except (OverflowError, OSError, ValueError):
        return None


def tokens(values: Iterable[object]) -> tuple[str, ...]:
    """The distinct VERP tokens found in `values`, in the order found."""
    found: list[str] = []
    for value in values:
        line = text(value)
        token = find_token(line) if line else None
        if token is not None and token not in found:
            found.append(token)
    return tuple(found)


def digest(raw: bytes) -> str:
    """SHA-256 hex of raw bytes: the stable part of a mail report's event ids."""
    return hashlib.sha256(raw).hexdigest()


def json_digest(value: Any) -> str:
    """SHA-256 hex of a JSON value in canonical form (sorted keys, no spaces)."""
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()
