"""Mailgun's webhooks ({"signature": ..., "event-data": {...}}): failed, complained, delivered.

A "failed" event's `severity` tells a permanent failure from a temporary one. The
`delivery-status` code is the SMTP reply when it is one (Mailgun uses 6xx codes of its
own for addresses it did not try). `envelope.sender` is the MAIL FROM it used and
`user-variables` what the sender attached: both are searched for a token. The signature
is not checked here: the file was received by whoever verified it.
"""

from __future__ import annotations

from typing import Any

from txsend.feedback import fields
from txsend.feedback.events import Feedback, Kind
from txsend.feedback.vendor import NotUnderstood, dig, leaves


def is_event(obj: dict[str, Any]) -> bool:
    """Whether an object looks like a Mailgun webhook (or its bare event-data)."""
    return isinstance(obj.get("event-data"), dict) or (
        "event" in obj and "recipient" in obj and ("log-level" in obj or "delivery-status" in obj)
    )


def feedback(obj: dict[str, Any], source: str) -> list[Feedback]:
    """The recipient one Mailgun event names."""
    data = obj.get("event-data", obj)
    if not isinstance(data, dict):
        raise NotUnderstood("'event-data' is not an object")
    event, severity = data.get("event"), data.get("severity")
    if event == "failed" and severity in {"permanent", "temporary"}:
        kind = Kind.FAILED if severity == "permanent" else Kind.DELAYED
    elif event == "complained":
        kind = Kind.COMPLAINT
    elif event == "delivered":
        kind = Kind.DELIVERED
    elif event == "failed":
        raise NotUnderstood(f"a failed event of unknown severity {fields.text(severity)!r}")
    else:
        raise NotUnderstood(f"{fields.text(event)} events say nothing about delivery")
    found_status = data.get("delivery-status")
    status: dict[str, Any] = found_status if isinstance(found_status, dict) else {}
    diagnostic = fields.text(status.get("message")) or fields.text(status.get("description"))
    code = status.get("code")
    smtp = code if isinstance(code, int) and 200 <= code < 600 else fields.smtp_code(diagnostic)
    event_id = fields.text(data.get("id"))
    sender = dig(data, "envelope", "sender")
    return [
        Feedback(
            event_id=f"mailgun:{event_id or fields.json_digest(obj)}",
            kind=kind,
            source=source,
            detector="mailgun",
            recipient=fields.bare_address(data.get("recipient")),
            status=fields.status(status.get("enhanced-code")) or fields.status(diagnostic),
            diagnostic=diagnostic,
            code=smtp,
            remote_mta=fields.text(status.get("mx-host")),
            tokens=fields.tokens([sender, *leaves(data.get("user-variables"))]),
            message_id=fields.message_id(dig(data, "message", "headers", "message-id")),
            complaint_type="abuse" if kind is Kind.COMPLAINT else None,
            occurred_at=fields.iso_date(data.get("timestamp")),
        )
    ]
