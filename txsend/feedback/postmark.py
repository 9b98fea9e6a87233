"""Postmark's bounce, spam complaint and delivery webhooks.

A bounce's `Type` says what happened: HardBounce and BadEmailAddress are failures; the
temporary kinds (SoftBounce, Transient, DnsError, Blocked, DMARCPolicy) are delays, noted
only; the rest (auto-replies, subscription changes, Postmark's own deactivations, ...)
say nothing about this message's delivery. `MessageID` is Postmark's id, not the
message's Message-ID; `Metadata` holds what the sender attached, searched for a token.
"""

from __future__ import annotations

from typing import Any

from txsend.feedback import fields
from txsend.feedback.events import Feedback, Kind
from txsend.feedback.vendor import NotUnderstood, leaves

_BOUNCE_KINDS = {
    "HardBounce": Kind.FAILED,
    "BadEmailAddress": Kind.FAILED,
    "SoftBounce": Kind.DELAYED,
    "Transient": Kind.DELAYED,
    "DnsError": Kind.DELAYED,
    "Blocked": Kind.DELAYED,
    "DMARCPolicy": Kind.DELAYED,
    "SpamComplaint": Kind.COMPLAINT,
}


def is_event(obj: dict[str, Any]) -> bool:
    """Whether an object looks like a Postmark webhook."""
    return "RecordType" in obj


def feedback(obj: dict[str, Any], source: str) -> list[Feedback]:
    """The recipient one Postmark webhook names."""
    record = obj.get("RecordType")
    if record == "Delivery":
        kind, address, when = Kind.DELIVERED, obj.get("Recipient"), obj.get("DeliveredAt")
    elif record in {"Bounce", "SpamComplaint"}:
        bounce_type = obj.get("Type")
        if record == "SpamComplaint":
            bounce_type = "SpamComplaint"
        if bounce_type not in _BOUNCE_KINDS:
            raise NotUnderstood(f"{fields.text(bounce_type)} bounces are not delivery failures")
        kind, address, when = _BOUNCE_KINDS[bounce_type], obj.get("Email"), obj.get("BouncedAt")
    else:
        raise NotUnderstood(f"{fields.text(record)} records say nothing about delivery")
    details = fields.text(obj.get("Details"))
    event = fields.text(obj.get("ID"))
    base = event if event else fields.json_digest(obj)
    return [
        Feedback(
            event_id=f"postmark:{base}",
            kind=kind,
            source=source,
            detector="postmark",
            recipient=fields.bare_address(address),
            status=fields.status(details),
            diagnostic=details or fields.text(obj.get("Description")),
            code=fields.smtp_code(details),
            tokens=fields.tokens(leaves(obj.get("Metadata"))),
            complaint_type="abuse" if kind is Kind.COMPLAINT else None,
            occurred_at=fields.iso_date(when),
        )
    ]
