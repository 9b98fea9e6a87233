"""MIME bodies as bytes: text parts encoded, multiparts framed as RFC 2046 wants.

The structure is only as deep as the message needs::

    multipart/mixed                      (only with attachments)
      multipart/alternative              (only with both a text and an html part)
        text/plain
        multipart/related                (only with cid: images)
          text/html
          image/png ...
      application/pdf ...

Every piece is bytes with CRLF line ends, so the renderer joins them without copying
through `email.message`. Boundaries are random per job, differ in their third
character (none is a prefix of another), and are replaced for one message in the rare
case a 7bit text part happens to contain them; base64 and quoted-printable bodies
cannot ("=_" is not in their alphabet).
"""

from __future__ import annotations

import binascii
import secrets
from collections.abc import Sequence
from typing import NamedTuple

from txsend.content.attachments import Part

MAX_LINE = 998  # RFC 5322 section 2.1.1: MUST


class Leaf(NamedTuple):
    """A text part: its header block (ending in the blank line) and encoded body."""

    headers: bytes
    body: bytes
    cte: str  # "7bit" or "quoted-printable"
    long_lines: bool  # quoted-printable because a line was over 998 octets


_PART_HEADERS = {
    (subtype, cte): (
        f'Content-Type: text/{subtype}; charset="utf-8"\r\nContent-Transfer-Encoding: {cte}\r\n\r\n'
    ).encode("ascii")
    for subtype in ("plain", "html")
    for cte in ("7bit", "quoted-printable")
}


def text_leaf(body: str, subtype: str) -> Leaf:
    """A text/plain or text/html part for a rendered body."""
    encoded, cte = encode_body(body)
    long_lines = cte != "7bit" and body.isascii() and "\x00" not in body
    return Leaf(_PART_HEADERS[subtype, cte], encoded, cte, long_lines)


def normalise_body(body: str) -> tuple[str, str]:
    """LF line endings, a final newline, and the transfer encoding the body needs."""
    if "\r" in body:
        body = body.replace("\r\n", "\n").replace("\r", "\n")
    if not body.endswith("\n"):
        body += "\n"
    if (
        body.isascii()
        and "\x00" not in body
        # body ends with "\n", so a body of <= 999 chars has no line over 998.
        and (len(body) <= MAX_LINE + 1 or max(map(len, body.split("\n"))) <= MAX_LINE)
    ):
        return body, "7bit"
    return body, "quoted-printable"


def encode_body(body: str) -> tuple[bytes, str]:
    """The encoded part body with CRLF line endings, and its Content-Transfer-Encoding."""
    body, cte = normalise_body(body)
    crlf = body.replace("\n", "\r\n")
    if cte == "7bit":
        return crlf.encode("ascii"), cte
    # b2a_qp keeps CRLF line ends when the data uses them, and soft-breaks at 76.
    return binascii.b2a_qp(crlf.encode("utf-8"), istext=True), cte


def new_token() -> str:
    """The random part of a job's boundaries."""
    # 64 random bits keep "Content-Type: multipart/alternative; boundary=..." within 78.
    return "_txsend_" + secrets.token_hex(8)


class Framer:
    """Builds the MIME body (Content-Type header block onwards) of each message of a job."""

    def __init__(self, token: str | None = None) -> None:
        self.token = token or new_token()

    def body(
        self,
        text: Leaf | None,
        html: Leaf | None,
        images: Sequence[Part] = (),
        files: Sequence[Part] = (),
    ) -> bytes:
        """The top-level Content-Type block and body for these parts."""
        token = self.token
        raw = token.encode("ascii")
        if (text is not None and text.cte == "7bit" and raw in text.body) or (
            html is not None and html.cte == "7bit" and raw in html.body
        ):
            while True:
                token = new_token()
                raw = token.encode("ascii")
                if not any(leaf is not None and raw in leaf.body for leaf in (text, html)):
                    break
        pieces: list[bytes] = []
        self._mixed(pieces, token, text, html, images, files)
        return b"".join(pieces)

    def _mixed(
        self,
        out: list[bytes],
        token: str,
        text: Leaf | None,
        html: Leaf | None,
        images: Sequence[Part],
        files: Sequence[Part],
    ) -> None:
        if not files:
            self._alternative(out, token, text, html, images)
            return
        boundary = "=_m" + token
        out.append(_multipart_start("mixed", boundary))
        self._alternative(out, token, text, html, images)
        for part in files:
            out.append(_delimiter(boundary))
            out.append(part.headers)
            out.append(part.body)
        out.append(_close(boundary))

    def _alternative(
        self,
        out: list[bytes],
        token: str,
        text: Leaf | None,
        html: Leaf | None,
        images: Sequence[Part],
    ) -> None:
        if text is None or html is None:
            if text is not None:
                out.append(text.headers)
                out.append(text.body)
            else:
                assert html is not None
                self._related(out, token, html, images)
            return
        boundary = "=_a" + token
        out.append(_multipart_start("alternative", boundary))
        out.append(text.headers)
        out.append(text.body)
        out.append(_delimiter(boundary))
        self._related(out, token, html, images)
        out.append(_close(boundary))

    def _related(self, out: list[bytes], token: str, html: Leaf, images: Sequence[Part]) -> None:
        if not images:
            out.append(html.headers)
            out.append(html.body)
            return
        boundary = "=_r" + token
        out.append(_multipart_start("related", boundary, ';\r\n type="text/html"'))
        out.append(html.headers)
        out.append(html.body)
        for part in images:
            out.append(_delimiter(boundary))
            out.append(part.headers)
            out.append(part.body)
        out.append(_close(boundary))


def _multipart_start(subtype: str, boundary: str, params: str = "") -> bytes:
    return (
        f'Content-Type: multipart/{subtype}; boundary="{boundary}"{params}\r\n\r\n--{boundary}\r\n'
    ).encode("ascii")


def _delimiter(boundary: str) -> bytes:
    # The CRLF before "--boundary" belongs to the delimiter (RFC 2046 section 5.1.1), so a
    # part body "x\r\n" is followed by "\r\n--boundary", as email.generator does.
    return f"\r\n--{boundary}\r\n".encode("ascii")


def _close(boundary: str) -> bytes:
    return f"\r\n--{boundary}--\r\n".encode("ascii")
