"""What came back about sent mail, parsed: one `Feedback` per recipient a report names.

A report is a DSN (RFC 3464), an ARF complaint (RFC 5965), an older MTA's own bounce
text, or a provider's event (SES, Postmark, SendGrid, Mailgun). Whatever could not be
understood is an `Unparsed` with a one-line reason, never an exception: one bad message
must not stop a run over a mailbox. `Item` and `MailSource` are the raw messages a
mailbox gives, with the way to mark one handled once the journal has committed it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

__all__ = ["Feedback", "Item", "Kind", "MailSource", "Unparsed"]


class Kind(StrEnum):
    """What a report says happened to one recipient."""

    FAILED = "failed"  # permanent failure (DSN Action: failed, 5.x.x; provider hard bounce)
    DELAYED = "delayed"  # Action: delayed (4.x.x): a note, not a state
    COMPLAINT = "complaint"  # ARF (RFC 5965) or a provider's complaint
    DELIVERED = "delivered"  # Action: delivered/relayed/expanded (kept, changes nothing)


@dataclass(frozen=True, slots=True)
class Feedback:
    """One recipient's outcome from one report."""

    event_id: str  # stable across re-reads: "mail:<sha256>:<n>" or "<provider>:<id>"
    kind: Kind
    source: str  # "maildir:new/1234.x", "mbox:file#12", "imap:...", "events:file:line"
    detector: str  # "dsn" | "arf" | "flufl.bounce" | "ses" | "postmark" | "sendgrid" | "mailgun"
    recipient: str | None = None  # Final-Recipient (else Original-Recipient), bare address
    original_recipient: str | None = None
    status: str | None = None  # "5.1.1"
    diagnostic: str | None = None  # "smtp; 550 5.1.1 <x>: User unknown"
    code: int | None = None  # SMTP reply code found in the diagnostic (550)
    reporting_mta: str | None = None  # "dns; mx.example"
    remote_mta: str | None = None
    envid: str | None = None  # Original-Envelope-Id
    tokens: tuple[str, ...] = ()  # VERP tokens in the addresses the report came back to
    message_id: str | None = None  # the original message's Message-ID, "<...>"
    complaint_type: str | None = None  # ARF Feedback-Type (abuse, fraud, ...)
    occurred_at: float | None = None  # epoch seconds


@dataclass(frozen=True, slots=True)
class Unparsed:
    """A message or event that could not be understood, and why (one line)."""

    source: str
    reason: str


@dataclass(frozen=True, slots=True)
class Item:
    """One raw message from a mailbox."""

    source: str  # as Feedback.source
    raw: bytes
    unreadable: str | None = None  # why the mailbox could not give its bytes (raw is b"")


class MailSource(Protocol):
    """Raw messages, each marked handled only after the journal committed what it said."""

    def __iter__(self) -> Iterator[Item]: ...

    def handled(self, item: Item) -> None: ...

    def close(self) -> None: ...
