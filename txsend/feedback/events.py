"""A raw message read from a mailbox, and the protocol of the sources that yield them.

A source yields ``Item``s; the caller records each one in the journal and only then calls
``handled(item)``, so that a run that dies in between reads the message again next time
(the journal counts it once).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Item:
    """One raw message and where it came from ("imap:INBOX;UIDVALIDITY=..;UID=..")."""

    source: str
    raw: bytes


class MailSource(Protocol):
    """Raw messages, each marked handled once the journal has committed it."""

    def __iter__(self) -> Iterator[Item]: ...

    def handled(self, item: Item) -> None: ...

    def close(self) -> None: ...
