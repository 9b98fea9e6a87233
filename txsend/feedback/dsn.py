"""Delivery status notifications (RFC 3464): one Feedback per recipient block.

The per-message block gives Reporting-MTA, Original-Envelope-Id and Arrival-Date; each
recipient block gives Final-Recipient, Original-Recipient, Action, Status,
Diagnostic-Code, Remote-MTA and Last-Attempt-Date. The Action decides the kind; a block
without one is judged by the class of its Status (RFC 3463: 5 permanent, 4 transient,
2 success), and a block with neither says nothing and is left out.
"""

from __future__ import annotations

from email.message import Message

from txsend.feedback import fields
from txsend.feedback.events import Feedback, Kind
from txsend.feedback.mime import Block, Report, first

MAX_RECIPIENTS = 1000  # recipient blocks read from one report; the rest are ignored
_ACTIONS = {
    "failed": Kind.FAILED,
    "delayed": Kind.DELAYED,
    "delivered": Kind.DELIVERED,
    "relayed": Kind.DELIVERED,
    "expanded": Kind.DELIVERED,
}
_CLASSES = {"5": Kind.FAILED, "4": Kind.DELAYED, "2": Kind.DELIVERED}


def feedback(
    report: Report, *, digest: str, source: str, tokens: tuple[str, ...]
) -> list[Feedback]:
    """The recipients a delivery-status report names (at most MAX_RECIPIENTS)."""
    if not report.blocks:
        return []
    per_message = report.blocks[0]
    recipients = report.blocks[1 : MAX_RECIPIENTS + 1]
    if first(per_message, "final-recipient") is not None:
        # no per-message block (seen from some gateways): every block is a recipient
        per_message, recipients = [], report.blocks[:MAX_RECIPIENTS]
    envid = fields.xtext(first(per_message, "original-envelope-id"))
    all_tokens = tokens  # the ENVID's token is read from `envid`, by whoever matches
    arrival = fields.rfc5322_date(first(per_message, "arrival-date"))
    original_id = _message_id(report.returned)
    found: list[Feedback] = []
    for index, block in enumerate(recipients):
        kind = _kind(block)
        if kind is None:
            continue
        diagnostic = fields.text(first(block, "diagnostic-code"))
        recipient = fields.bare_address(first(block, "final-recipient"))
        original = fields.bare_address(first(block, "original-recipient"))
        found.append(
            Feedback(
                event_id=f"mail:{digest}:{index}",
                kind=kind,
                source=source,
                detector="dsn",
                recipient=recipient or original,
                original_recipient=original,
                status=fields.status(first(block, "status")),
                diagnostic=diagnostic,
                code=fields.smtp_code(diagnostic),
                reporting_mta=fields.text(first(per_message, "reporting-mta")),
                remote_mta=fields.text(first(block, "remote-mta")),
                envid=envid,
                tokens=all_tokens,
                message_id=original_id,
                occurred_at=fields.rfc5322_date(first(block, "last-attempt-date")) or arrival,
            )
        )
    return found


def _kind(block: Block) -> Kind | None:
    action = (fields.text(first(block, "action")) or "").lower().split(" ")[0]
    if action in _ACTIONS:
        return _ACTIONS[action]
    status = fields.status(first(block, "status"))
    return _CLASSES.get(status[0]) if status else None


def _message_id(returned: Message | None) -> str | None:
    return fields.message_id(returned.get("message-id")) if returned is not None else None
