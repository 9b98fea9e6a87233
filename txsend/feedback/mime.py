"""Reading a report's MIME structure with bounds: which part holds the fields, which the original.

The stdlib parser runs with the compat32 policy: header values stay strings (or a `Header`
for 8-bit bytes) and are never decoded, so an encoded-word bomb or a malformed address costs
nothing until a field is asked for, and the parts are what RFC 3464 and RFC 5965 describe.
Walking the tree is iterative and bounded (depth, part count), and a ``message/rfc822`` part
is never entered: the original a DSN returns may itself look like a report.
"""

from __future__ import annotations

import email.errors
import email.policy
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import Message
from email.parser import BytesParser

from txsend.feedback import fields

MAX_DEPTH = 20  # MIME nesting followed when looking for a report's parts
MAX_PARTS = 500  # parts looked at in one message
MAX_BLOCKS = 1001  # field blocks read from a status part (the per-message one + recipients)
MAX_BLOCK_TEXT = 1024 * 1024  # bytes of a status or headers part read
_STATUS_TYPES = {
    "message/delivery-status": "delivery-status",
    "message/global-delivery-status": "delivery-status",  # RFC 6533
    "message/feedback-report": "feedback-report",
}
_RETURNED_TYPES = {
    "message/rfc822",
    "message/global",
    "text/rfc822-headers",
    "message/rfc822-headers",
    "message/global-headers",
}
_TRUNCATED = (
    email.errors.CloseBoundaryNotFoundDefect,
    email.errors.StartBoundaryNotFoundDefect,
    email.errors.MultipartInvariantViolationDefect,
)

Block = list[tuple[str, object]]  # (lowercased field name, value) in order


def parse(raw: bytes) -> Message:
    """The message tree (compat32: nothing decoded until asked)."""
    return BytesParser(policy=email.policy.compat32).parsebytes(raw)


def walk(message: Message) -> Iterator[Message]:
    """Parts in document order, not entering message/* parts, bounded in depth and count."""
    stack: list[tuple[Message, int]] = [(message, 0)]
    seen = 0
    while stack and seen < MAX_PARTS:
        part, depth = stack.pop()
        seen += 1
        yield part
        payload = part.get_payload()
        multipart = part.get_content_maintype() == "multipart" and isinstance(payload, list)
        if multipart and depth < MAX_DEPTH:
            children = [p for p in payload if isinstance(p, Message)]
            stack.extend((child, depth + 1) for child in reversed(children))


def truncated(message: Message) -> bool:
    """Whether the parser found a multipart boundary missing (a cut-off message)."""
    return any(isinstance(d, _TRUNCATED) for part in walk(message) for d in part.defects)


@dataclass(frozen=True, slots=True)
class Report:
    """The parts of a multipart/report: what kind, its fields, the returned original."""

    kind: str  # "delivery-status" | "feedback-report"
    blocks: list[Block]  # the status part's field blocks
    returned: Message | None  # the original's headers (message/rfc822 or text/rfc822-headers)


def find_report(message: Message) -> Report | None:
    """The first delivery-status or feedback-report part, and the original after it."""
    kind: str | None = None
    status_part: Message | None = None
    returned: Message | None = None
    for part in walk(message):
        content_type = part.get_content_type()
        if status_part is None and content_type in _STATUS_TYPES:
            kind, status_part = _STATUS_TYPES[content_type], part
        elif status_part is not None and content_type in _RETURNED_TYPES:
            returned = returned_headers(part)
            break
    if kind is None or status_part is None:
        return None
    return Report(kind, blocks(status_part), returned)


def blocks(part: Message) -> list[Block]:
    """The field blocks of a status part (RFC 3464 section 2.1: separated by blank lines)."""
    payload = part.get_payload()
    found: list[Block] = []
    if isinstance(payload, list):
        # the parser splits message/delivery-status into one Message per block, and reads
        # the other message/* types as one message whose headers are the first block
        for sub in payload[:MAX_BLOCKS]:
            if not isinstance(sub, Message):
                continue
            found.append([(name.lower(), value) for name, value in sub.items()])
            rest = sub.get_payload()
            if isinstance(rest, str) and rest.strip():
                found.extend(text_blocks(rest[:MAX_BLOCK_TEXT]))
    else:
        found = text_blocks(_decoded(part))
    return [block for block in found if block][:MAX_BLOCKS]


def text_blocks(body: str) -> list[Block]:
    """Field blocks from text: "Name: value" lines, folded lines joined, blank lines between."""
    found: list[Block] = []
    names: list[str] = []
    values: list[list[str]] = []

    def close() -> None:
        if names:
            found.append([(n, " ".join(v)) for n, v in zip(names, values, strict=True)])
            names.clear()
            values.clear()

    for line in body.splitlines():
        if len(found) >= MAX_BLOCKS:
            break
        if not line.strip():
            close()
        elif line[0] in " \t":
            if values and sum(map(len, values[-1])) < fields.MAX_FIELD * 4:
                values[-1].append(line.strip())
        else:
            name, sep, value = line.partition(":")
            name = name.strip()
            if sep and name and " " not in name:
                names.append(name.lower())
                values.append([value.strip()])
    close()
    return found


def returned_headers(part: Message) -> Message | None:
    """The headers of the original a report returns (whole message or headers only)."""
    payload = part.get_payload()
    if isinstance(payload, list):
        inner = payload[0] if payload else None
        return inner if isinstance(inner, Message) else None
    data = part.get_payload(decode=True)
    if not isinstance(data, bytes) or not data.strip():
        return None
    parser = BytesParser(policy=email.policy.compat32)
    return parser.parsebytes(data[:MAX_BLOCK_TEXT].lstrip(), headersonly=True)


def _decoded(part: Message) -> str:
    data = part.get_payload(decode=True)
    if not isinstance(data, bytes):
        return ""
    return data[:MAX_BLOCK_TEXT].decode("utf-8", "replace")


def first(block: Block, name: str) -> object:
    """The first value of a field in a block, or None."""
    return next((value for key, value in block if key == name), None)


def every(block: Block, name: str) -> list[object]:
    """Every value of a (repeatable) field in a block."""
    return [value for key, value in block if key == name]


def header_values(message: Message, names: tuple[str, ...]) -> list[object]:
    """Every value of the named headers, in the order of `names`."""
    found: list[object] = []
    for name in names:
        found.extend(message.get_all(name, []) or [])
    return found
