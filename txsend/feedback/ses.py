"""Amazon SES bounce, complaint, delivery and delay events, direct or inside an SNS notification.

SES sends the same event two ways: as a notification ("notificationType") through an SNS
topic, where the event is the JSON string in the envelope's "Message", and by event
publishing ("eventType"). `bounce.feedbackId` (`complaint.feedbackId`) is the same in
both, so an event read from each counts once. A Permanent bounce is a failure and a
Transient one a delay; an Undetermined one is a failure only when its recipient's status
is 5.x.x. `mail.messageId` is SES's own id; the original Message-ID is in the headers.
"""

from __future__ import annotations

import json
from typing import Any

from txsend.feedback import fields
from txsend.feedback.events import Feedback, Kind
from txsend.feedback.vendor import NotUnderstood, dig, objects

_SILENT = {"Send", "Open", "Click", "Reject", "RenderingFailure", "Subscription"}


def is_event(obj: dict[str, Any]) -> bool:
    """Whether an object looks like an SES event or an SNS envelope."""
    if obj.get("Type") in {"Notification", "SubscriptionConfirmation", "UnsubscribeConfirmation"}:
        return "TopicArn" in obj or "Message" in obj
    return ("notificationType" in obj or "eventType" in obj) and isinstance(obj.get("mail"), dict)


def feedback(obj: dict[str, Any], source: str) -> list[Feedback]:
    """The recipients one SES event names."""
    event = _unwrap(obj)
    kind_name = event.get("notificationType") or event.get("eventType")
    mail = event.get("mail")
    if not isinstance(mail, dict):
        raise NotUnderstood("no 'mail' object")
    common = {
        "source": source,
        "tokens": fields.tokens([mail.get("source"), *_headers(mail, "return-path")]),
        "message_id": _message_id(mail),
    }
    if kind_name == "Bounce":
        return _bounce(event, common)
    if kind_name == "Complaint":
        return _complaint(event, common)
    if kind_name == "Delivery":
        return _delivery(event, common)
    if kind_name == "DeliveryDelay":
        return _delay(event, common)
    if kind_name in _SILENT:
        raise NotUnderstood(f"{kind_name} events say nothing about delivery")
    raise NotUnderstood(f"unknown event type {fields.text(kind_name)!r}")


def _unwrap(obj: dict[str, Any]) -> dict[str, Any]:
    if "Type" not in obj or "Message" not in obj:
        return obj
    if obj.get("Type") != "Notification":
        raise NotUnderstood(f"an SNS {fields.text(obj.get('Type'))}, not an event")
    message = obj.get("Message")
    if isinstance(message, dict):
        return message
    try:
        inner = json.loads(message) if isinstance(message, str) else None
    except ValueError:
        inner = None
    if not isinstance(inner, dict):
        raise NotUnderstood("the SNS Message is not a JSON object")
    return inner


def _headers(mail: dict[str, Any], name: str) -> list[object]:
    return [
        h.get("value") for h in objects(mail.get("headers")) if str(h.get("name")).lower() == name
    ]


def _message_id(mail: dict[str, Any]) -> str | None:
    found = fields.message_id(dig(mail, "commonHeaders", "messageId"))
    if found is None:
        found = next(filter(None, map(fields.message_id, _headers(mail, "message-id"))), None)
    return found


def _base(part: dict[str, Any], event: dict[str, Any]) -> str:
    feedback_id = fields.text(part.get("feedbackId"))
    return feedback_id if feedback_id else fields.json_digest(event)


def _bounce(event: dict[str, Any], common: dict[str, Any]) -> list[Feedback]:
    bounce = event.get("bounce")
    if not isinstance(bounce, dict):
        raise NotUnderstood("a Bounce without a 'bounce' object")
    bounce_type = bounce.get("bounceType")
    base = _base(bounce, event)
    found = []
    for index, rcpt in enumerate(objects(bounce.get("bouncedRecipients"))):
        diagnostic = fields.text(rcpt.get("diagnosticCode"))
        status = fields.status(rcpt.get("status")) or fields.status(diagnostic)
        if bounce_type == "Permanent":
            kind = Kind.FAILED
        elif bounce_type == "Transient":
            kind = Kind.DELAYED
        elif bounce_type == "Undetermined":
            kind = Kind.FAILED if status and status.startswith("5.") else Kind.DELAYED
        else:
            raise NotUnderstood(f"unknown bounceType {fields.text(bounce_type)!r}")
        found.append(
            Feedback(
                event_id=f"ses:{base}:{index}",
                kind=kind,
                detector="ses",
                recipient=fields.bare_address(rcpt.get("emailAddress")),
                status=status,
                diagnostic=diagnostic,
                code=fields.smtp_code(diagnostic),
                reporting_mta=fields.text(bounce.get("reportingMTA")),
                remote_mta=fields.text(bounce.get("remoteMtaIp")),
                occurred_at=fields.iso_date(bounce.get("timestamp")),
                **common,
            )
        )
    return found


def _complaint(event: dict[str, Any], common: dict[str, Any]) -> list[Feedback]:
    complaint = event.get("complaint")
    if not isinstance(complaint, dict):
        raise NotUnderstood("a Complaint without a 'complaint' object")
    base = _base(complaint, event)
    complaint_type = fields.text(complaint.get("complaintFeedbackType"))
    return [
        Feedback(
            event_id=f"ses:{base}:{index}",
            kind=Kind.COMPLAINT,
            detector="ses",
            recipient=fields.bare_address(rcpt.get("emailAddress")),
            complaint_type=complaint_type.lower() if complaint_type else None,
            occurred_at=fields.iso_date(complaint.get("timestamp")),
            **common,
        )
        for index, rcpt in enumerate(objects(complaint.get("complainedRecipients")))
    ]


def _delivery(event: dict[str, Any], common: dict[str, Any]) -> list[Feedback]:
    delivery = event.get("delivery")
    if not isinstance(delivery, dict):
        raise NotUnderstood("a Delivery without a 'delivery' object")
    base = fields.json_digest(event)
    diagnostic = fields.text(delivery.get("smtpResponse"))
    recipients = delivery.get("recipients")
    return [
        Feedback(
            event_id=f"ses:{base}:{index}",
            kind=Kind.DELIVERED,
            detector="ses",
            recipient=fields.bare_address(address),
            status=fields.status(diagnostic),
            diagnostic=diagnostic,
            code=fields.smtp_code(diagnostic),
            reporting_mta=fields.text(delivery.get("reportingMTA")),
            remote_mta=fields.text(delivery.get("remoteMtaIp")),
            occurred_at=fields.iso_date(delivery.get("timestamp")),
            **common,
        )
        for index, address in enumerate(recipients[:1000] if isinstance(recipients, list) else [])
    ]


def _delay(event: dict[str, Any], common: dict[str, Any]) -> list[Feedback]:
    delay = event.get("deliveryDelay")
    if not isinstance(delay, dict):
        raise NotUnderstood("a DeliveryDelay without a 'deliveryDelay' object")
    base = fields.json_digest(event)
    found = []
    for index, rcpt in enumerate(objects(delay.get("delayedRecipients"))):
        diagnostic = fields.text(rcpt.get("diagnosticCode"))
        found.append(
            Feedback(
                event_id=f"ses:{base}:{index}",
                kind=Kind.DELAYED,
                detector="ses",
                recipient=fields.bare_address(rcpt.get("emailAddress")),
                status=fields.status(rcpt.get("status")) or fields.status(diagnostic),
                diagnostic=diagnostic,
                code=fields.smtp_code(diagnostic),
                reporting_mta=fields.text(delay.get("reportingMTA")),
                remote_mta=fields.text(delay.get("remoteMta")),
                occurred_at=fields.iso_date(delay.get("timestamp")),
                **common,
            )
        )
    return found
