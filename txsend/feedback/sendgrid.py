"""SendGrid's event webhook: bounce, dropped, deferred, delivered and spamreport events.

A "bounce" event's `type` tells a permanent bounce ("bounce") from a temporary block
("blocked"); "dropped" means SendGrid never sent it (a suppressed or invalid address),
which for the row is a failure too. `smtp-id` is the message's Message-ID. Custom
arguments the sender attached arrive as extra top-level keys: they are searched for a token.
"""

from __future__ import annotations

from typing import Any

from txsend.feedback import fields
from txsend.feedback.events import Feedback, Kind
from txsend.feedback.vendor import NotUnderstood, leaves

_KNOWN = {
    "email", "timestamp", "smtp-id", "event", "category", "sg_event_id", "sg_message_id",
    "reason", "status", "type", "response", "attempt", "bounce_classification", "tls",
    "ip", "useragent", "url", "asm_group_id", "marketing_campaign_id", "marketing_campaign_name",
}  # fmt: skip
_KINDS = {
    "dropped": Kind.FAILED,
    "deferred": Kind.DELAYED,
    "delivered": Kind.DELIVERED,
    "spamreport": Kind.COMPLAINT,
}


def is_event(obj: dict[str, Any]) -> bool:
    """Whether an object looks like a SendGrid event."""
    return "sg_event_id" in obj or ("event" in obj and "email" in obj and "timestamp" in obj)


def feedback(obj: dict[str, Any], source: str) -> list[Feedback]:
    """The recipient one SendGrid event names."""
    event = obj.get("event")
    if event == "bounce":
        kind = Kind.DELAYED if obj.get("type") == "blocked" else Kind.FAILED
    elif event in _KINDS:
        kind = _KINDS[event]
    else:
        raise NotUnderstood(f"{fields.text(event)} events say nothing about delivery")
    diagnostic = fields.text(obj.get("reason")) or fields.text(obj.get("response"))
    event_id = fields.text(obj.get("sg_event_id"))
    custom = {k: v for k, v in obj.items() if k not in _KNOWN}
    return [
        Feedback(
            event_id=f"sendgrid:{event_id or fields.json_digest(obj)}",
            kind=kind,
            source=source,
            detector="sendgrid",
            recipient=fields.bare_address(obj.get("email")),
            status=fields.status(obj.get("status")) or fields.status(diagnostic),
            diagnostic=diagnostic,
            code=fields.smtp_code(diagnostic),
            tokens=fields.tokens(leaves(custom)),
            message_id=fields.message_id(obj.get("smtp-id")),
            complaint_type="abuse" if kind is Kind.COMPLAINT else None,
            occurred_at=fields.iso_date(obj.get("timestamp")),
        )
    ]
