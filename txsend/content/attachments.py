"""Attachment and inline-image files, encoded as MIME parts.

A file name from a job or a data row becomes a path only through
`txsend.job.paths.confine`, which refuses absolute paths and anything that resolves
(through `..` or a symlink) outside the job's folder, before a byte is read.
`file_part` reads a file once and returns the complete MIME part (headers and base64
body, CRLF throughout), ready to be joined into a message; the renderer caches the parts
of files that every message shares.
"""

from __future__ import annotations

import base64
import io
import mimetypes
import zipfile
from dataclasses import dataclass
from email.utils import encode_rfc2231
from pathlib import Path

from txsend.models import AttachmentSpec

_OCTET_STREAM = "application/octet-stream"
# Characters that force a quoted filename parameter (RFC 2045 tspecials and space).
_TSPECIALS = frozenset('()<>@,;:\\"/[]?= \t')
_ZIP_DATE = (2000, 1, 1, 0, 0, 0)  # fixed: the same file gives the same archive every run


@dataclass(frozen=True, slots=True)
class Part:
    """One leaf MIME part: its header block (ending in the blank line) and its body."""

    headers: bytes
    body: bytes  # base64 in lines of 76, CRLF line ends, ending in CRLF
    filename: str
    content_type: str
    size: int  # bytes of the file as sent (after compression), before base64
    cid: str | None = None  # Content-ID (without <>) of an inline image


def guess_type(name: str) -> str:
    """The MIME type for a file name; application/octet-stream when unknown."""
    content_type, encoding = mimetypes.guess_type(name, strict=False)
    if encoding is not None:  # "x.tar.gz": the bytes are gzip, whatever is inside
        return _ENCODINGS.get(encoding, _OCTET_STREAM)
    return content_type or _OCTET_STREAM


_ENCODINGS = {
    "gzip": "application/gzip",
    "bzip2": "application/x-bzip2",
    "xz": "application/x-xz",
    "br": "application/x-brotli",
}


def attachment_part(spec: AttachmentSpec, path: Path, filename: str | None = None) -> Part:
    """Read an attachment file and return its MIME part (Content-Disposition: attachment).

    `filename` is the name the reader sees (the spec's, rendered); default the file's own.
    """
    data = path.read_bytes()
    filename = filename or path.name
    content_type = spec.content_type or guess_type(filename)
    if spec.compress == "zip" and len(data) > spec.compress_over:
        data = zip_one(filename, data)
        filename += ".zip"
        content_type = "application/zip"
    return make_part(data, content_type, filename, disposition="attachment")


def inline_part(cid: str, path: Path) -> Part:
    """Read an image for `cid:` references; Content-ID <cid>, Content-Disposition: inline."""
    data = path.read_bytes()
    return make_part(data, guess_type(path.name), path.name, disposition="inline", cid=cid)


def make_part(
    data: bytes, content_type: str, filename: str, *, disposition: str, cid: str | None = None
) -> Part:
    """Encode data as a base64 MIME part with the given headers."""
    lines = [f"Content-Type: {content_type}\r\n", "Content-Transfer-Encoding: base64\r\n"]
    if cid is not None:
        lines.append(f"Content-ID: <{cid}>\r\n")
    param = filename_param(filename)
    # "Content-Disposition: attachment; " is 33 columns; a long parameter starts a new line.
    sep = "; " if len(param) <= 78 - 33 and "\n" not in param else ";\r\n "
    lines.append(f"Content-Disposition: {disposition}{sep}{param}\r\n\r\n")
    return Part(
        headers="".join(lines).encode("ascii"),
        body=encode_base64(data),
        filename=filename,
        content_type=content_type,
        size=len(data),
        cid=cid,
    )


def encode_base64(data: bytes) -> bytes:
    """Base64 in lines of 76 characters with CRLF line ends (RFC 2045 section 6.8)."""
    if not data:
        return b""
    return base64.encodebytes(data).replace(b"\n", b"\r\n")


def filename_param(filename: str) -> str:
    """`filename="..."`, or RFC 2231 `filename*=utf-8''...` for a non-ASCII or long name."""
    if filename.isascii() and len(filename) <= 60 and filename.isprintable():
        if any(ch in _TSPECIALS for ch in filename):
            escaped = filename.replace("\\", "\\\\").replace('"', '\\"')
            return f'filename="{escaped}"'
        return f"filename={filename}"
    encoded = encode_rfc2231(filename, "utf-8")
    if len(encoded) <= 60:
        return f"filename*={encoded}"
    # RFC 2231 section 3 continuations keep every header line short; a cut never
    # falls inside a %XX escape.
    chunks = []
    while encoded:
        cut = min(60, len(encoded))
        while cut < len(encoded) and "%" in encoded[cut - 2 : cut]:
            cut -= 1
        chunks.append(encoded[:cut])
        encoded = encoded[cut:]
    return ";\r\n ".join(f"filename*{i}*={chunk}" for i, chunk in enumerate(chunks))


def zip_one(name: str, data: bytes) -> bytes:
    """A zip archive holding one file, the same bytes for the same input."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
        info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
        info.compress_type = zipfile.ZIP_DEFLATED
        info.external_attr = 0o644 << 16
        zf.writestr(info, data)
    return buffer.getvalue()
