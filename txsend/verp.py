"""VERP tokens: the per-message part of an envelope sender, naming a job and a row.

A late bounce or a DSN comes back to the envelope sender (MAIL FROM), not to the From
address. With `verp:` each message goes out from its own address, e.g.
``bounces+tx1…@acme.example``, and the same token is the DSN's ENVID (RFC 3461), so that
what comes back names the row it is about.

A token is ``tx1`` followed by 41 characters of lowercase base32 (``a-z``, ``2-7``):

* 6: the job's tag (base32 of SHA-256 of the job name), so that a report for another job
  is told apart from a forged one;
* 26: the 16 random bytes of the row's Message-ID (``<32 hex digits@domain>``, fixed
  when the row is first journalled), which is how the journal finds the row;
* 9: the first 45 bits of HMAC-SHA256 over the rest, keyed with a secret kept in the
  job's journal, so that nobody without the journal can make a token that marks a row.

The token fits in a local part (RFC 5321 allows 64 octets; ``bounces+`` and a token are 53)
and survives mail systems that change the case of local parts ("1" is not a base32 digit,
so the prefix cannot occur inside one).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import re
from dataclasses import dataclass
from enum import StrEnum

__all__ = [
    "PLACEHOLDER",
    "Token",
    "TokenCheck",
    "base32",
    "find_token",
    "job_tag",
    "make_token",
    "parse_token",
    "token_message_hex",
    "verify_token",
    "verp_address",
]

PREFIX = "tx1"
PLACEHOLDER = "{token}"
_TAG, _IDENT, _MAC = 6, 26, 9
_TOKEN = re.compile(rf"{PREFIX}([a-z2-7]{{{_TAG}}})([a-z2-7]{{{_IDENT}}})([a-z2-7]{{{_MAC}}})")
_MESSAGE_ID = re.compile(r"<([0-9a-f]{32})@[^<>@\s]+>")


class TokenCheck(StrEnum):
    """What `verify_token` found."""

    OK = "ok"
    OTHER_JOB = "other job"  # well formed, but for another job's name
    FORGED = "forged"  # this job's tag, but the MAC does not match the journal's secret
    MALFORMED = "malformed"


@dataclass(frozen=True, slots=True)
class Token:
    tag: str
    ident: str
    mac: str


_ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"  # RFC 4648 base32, lowercase
_PAIRS = [_ALPHABET[i >> 5] + _ALPHABET[i & 31] for i in range(1024)]  # 10 bits at a time


def base32(data: bytes) -> str:
    """RFC 4648 base32 of `data`, lowercase, unpadded (as base64.b32encode, 4x faster)."""
    bits = len(data) * 8
    chars = -(-bits // 5)
    even = chars + chars % 2
    n = int.from_bytes(data, "big") << (even * 5 - bits)
    return "".join([_PAIRS[(n >> shift) & 0x3FF] for shift in range((even - 2) * 5, -1, -10)])[
        :chars
    ]


@functools.lru_cache(maxsize=64)
def job_tag(job: str) -> str:
    """The job's tag in its tokens: 6 base32 characters of SHA-256 of its name."""
    return base32(hashlib.sha256(job.encode("utf-8")).digest())[:_TAG]


def _mac(secret: bytes, tag: str, ident: str) -> str:
    digest = hmac.digest(secret, f"{PREFIX}{tag}{ident}".encode("ascii"), "sha256")
    return base32(digest[:6])[:_MAC]


def make_token(secret: bytes, job: str, message_id: str) -> str:
    """The token for the row whose Message-ID is `message_id` (txsend's own form).

    ValueError when the Message-ID is not ``<32 hex digits@domain>``. About 3 µs: it is
    made for every message sent.
    """
    try:  # the Message-IDs txsend makes: "<" 32 lowercase hex digits "@"
        if message_id[0] != "<" or message_id[33] != "@" or message_id[-1] != ">":
            raise ValueError
        raw = bytes.fromhex(message_id[1:33])
    except (ValueError, IndexError):
        found = _MESSAGE_ID.fullmatch(message_id.strip())
        if found is None:
            raise ValueError(f"not a txsend Message-ID: {message_id!r}") from None
        raw = bytes.fromhex(found.group(1))
    tag = job_tag(job)
    ident = base32(raw)
    return f"{PREFIX}{tag}{ident}{_mac(secret, tag, ident)}"


def find_token(text: str) -> str | None:
    """The first token inside `text` (an address, an ENVID, a header), lowercased; or None."""
    found = _TOKEN.search(text.lower())
    return found.group(0) if found else None


def parse_token(token: str) -> Token | None:
    """The parts of a token, or None when it is not one (format only; see `verify_token`)."""
    found = _TOKEN.fullmatch(token.lower())
    return Token(*found.groups()) if found else None


def verify_token(token: str, secret: bytes, job: str) -> TokenCheck:
    """Whether `token` was made for `job` with `secret`."""
    parts = parse_token(token)
    if parts is None:
        return TokenCheck.MALFORMED
    if parts.tag != job_tag(job):
        return TokenCheck.OTHER_JOB
    if not hmac.compare_digest(parts.mac, _mac(secret, parts.tag, parts.ident)):
        return TokenCheck.FORGED
    return TokenCheck.OK


def token_message_hex(token: str) -> str:
    """The 32 hex digits of the Message-ID a (well-formed) token names."""
    parts = parse_token(token)
    if parts is None:
        raise ValueError(f"not a VERP token: {token!r}")
    return base64.b32decode(parts.ident.upper() + "======").hex()


def verp_address(pattern: str, token: str) -> str:
    """The envelope sender for one message: `pattern` with ``{token}`` replaced."""
    return pattern.replace(PLACEHOLDER, token)
