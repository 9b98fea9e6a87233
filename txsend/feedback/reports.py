"""`parse_message`: a raw message that came back, as Feedback per recipient, or why not.

A DSN (multipart/report; report-type=delivery-status) and an ARF report (report-type=
feedback-report) are read by their RFCs; anything else is given to flufl.bounce for the
text bounces of older MTAs. Hostile input is bounded before any work (size), while
parsing (MIME depth and part count, field sizes, recipient count) and caught after: every
failure is an `Unparsed` with a one-line reason, so one message never stops a run.
"""

from __future__ import annotations

from email.message import Message

from txsend.feedback import arf, dsn, fields, legacy, mime
from txsend.feedback.events import Feedback, Kind, Unparsed

__all__ = ["MAX_MESSAGE_BYTES", "parse_message"]

MAX_MESSAGE_BYTES = 10 * 1024 * 1024
# the report's own envelope recipient headers: where a VERP address arrives
ENVELOPE_HEADERS = ("delivered-to", "x-original-to", "envelope-to", "x-envelope-to", "to")


def parse_message(raw: bytes, source: str) -> list[Feedback] | Unparsed:
    """What one raw message reports; never raises on any input."""
    try:
        return _parse(bytes(raw), source)
    except RecursionError:
        return Unparsed(source, "MIME nested too deep")
    except Exception as exc:
        return Unparsed(source, f"unreadable message ({type(exc).__name__})")


def _parse(raw: bytes, source: str) -> list[Feedback] | Unparsed:
    if not raw.strip():
        return Unparsed(source, "empty message")
    if len(raw) > MAX_MESSAGE_BYTES:
        return Unparsed(source, f"too large ({len(raw)} bytes; the limit is {MAX_MESSAGE_BYTES})")
    message = mime.parse(raw)
    digest = fields.digest(raw)
    tokens = fields.tokens(mime.header_values(message, ENVELOPE_HEADERS))
    report = mime.find_report(message)
    if report is not None:
        reader = dsn.feedback if report.kind == "delivery-status" else arf.feedback
        found = reader(report, digest=digest, source=source, tokens=tokens)
        if found:
            return found
        if mime.truncated(message):
            return Unparsed(source, f"truncated MIME ({report.kind} report with no recipient)")
        return Unparsed(source, f"{report.kind} report names no recipient")
    legacy_found = _legacy(message, digest=digest, source=source, tokens=tokens)
    if not isinstance(legacy_found, str):
        return legacy_found
    if mime.truncated(message):
        return Unparsed(source, "truncated MIME (not a delivery report)")
    return Unparsed(source, legacy_found)


def _legacy(
    message: Message, *, digest: str, source: str, tokens: tuple[str, ...]
) -> list[Feedback] | str:
    result = legacy.failures(message)
    if isinstance(result, str):
        return result
    permanent, temporary = result
    if not permanent and not temporary:
        return "not a delivery report"
    message_id = legacy.original_message_id(message)
    kinds = [(a, Kind.FAILED) for a in permanent] + [(a, Kind.DELAYED) for a in temporary]
    return [
        Feedback(
            event_id=f"mail:{digest}:{index}",
            kind=kind,
            source=source,
            detector="flufl.bounce",
            recipient=address,
            tokens=tokens,
            message_id=message_id,
        )
        for index, (address, kind) in enumerate(kinds[: dsn.MAX_RECIPIENTS])
    ]
