"""Complaint reports in the Abuse Reporting Format (RFC 5965): one Feedback per recipient.

The recipient is the report's Original-Rcpt-To (the envelope recipient, repeatable), else
the To of the returned message (which receivers often redact). The report's
Original-Mail-From, and the returned message's Return-Path, are the envelope sender the
message went out with: with VERP they carry the token, so they are searched too.
"""

from __future__ import annotations

import email.utils

from txsend.feedback import fields
from txsend.feedback.dsn import MAX_RECIPIENTS
from txsend.feedback.events import Feedback, Kind
from txsend.feedback.mime import Report, every, first


def feedback(
    report: Report, *, digest: str, source: str, tokens: tuple[str, ...]
) -> list[Feedback]:
    """The complaint a feedback-report names, once per recipient it gives."""
    if not report.blocks:
        return []
    block = report.blocks[0]
    returned = report.returned
    rcpt_to = [fields.bare_address(v) for v in every(block, "original-rcpt-to")]
    recipients: list[str] = [r for r in rcpt_to if r][:MAX_RECIPIENTS]
    if not recipients and returned is not None:
        recipients = _addresses(list(returned.get_all("to") or []))[:MAX_RECIPIENTS]
    senders = [first(block, "original-mail-from")]
    if returned is not None:
        senders.append(returned.get("return-path"))
    all_tokens = tokens + tuple(t for t in fields.tokens(senders) if t not in tokens)
    complaint_type = (fields.text(first(block, "feedback-type")) or "").lower() or None
    message_id = fields.message_id(returned.get("message-id")) if returned else None
    return [
        Feedback(
            event_id=f"mail:{digest}:{index}",
            kind=Kind.COMPLAINT,
            source=source,
            detector="arf",
            recipient=recipient,
            original_recipient=recipient if any(rcpt_to) else None,
            reporting_mta=fields.text(first(block, "reporting-mta")),
            tokens=all_tokens,
            message_id=message_id,
            complaint_type=complaint_type,
            occurred_at=fields.rfc5322_date(first(block, "arrival-date")),
        )
        for index, recipient in enumerate(recipients or [None])
    ]


def _addresses(values: list[object]) -> list[str]:
    lines = [line for line in (fields.text(v) for v in values) if line]
    try:
        pairs = email.utils.getaddresses(lines)
    except Exception:
        return []
    return [address for _, address in pairs if "@" in address]
