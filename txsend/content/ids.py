"""Message-IDs: the domain they end in, and fresh random ones.

The journal gives each row its Message-ID when it first records the row, so a retried
or resumed send keeps the id it was first given; previews draw a fresh one.
"""

from __future__ import annotations

import os

from txsend.addresses import envelope_address, split_mailbox
from txsend.errors import JobError

__all__ = ["MessageIds", "message_id_domain", "new_message_id"]

_RANDOM = bytearray()  # os.urandom bytes drawn 4 KB at a time, 16 per Message-ID


def message_id_domain(from_addr: str) -> str:
    """Return the (A-label) domain of a From address, for Message-IDs."""
    _name, addr = split_mailbox(from_addr)
    try:
        checked = envelope_address(addr)
    except ValueError as exc:
        raise JobError(f"invalid From address {from_addr!r}: {exc}") from None
    return checked.rpartition("@")[2].lower()


def new_message_id(domain: str) -> str:
    """Return a new random Message-ID (128 random bits), angle brackets included."""
    global _RANDOM
    if len(_RANDOM) < 16:
        _RANDOM = bytearray(os.urandom(4096))
    part = _RANDOM[-16:]
    del _RANDOM[-16:]
    return f"<{part.hex()}@{domain}>"


class MessageIds:
    """New Message-IDs in one domain: one per call, or `many(n)` at once (an ingest's batch).

    The same ids as `new_message_id`: 128 random bits, angle brackets included.
    """

    def __init__(self, domain: str) -> None:
        self.domain = domain

    def __call__(self) -> str:
        return new_message_id(self.domain)

    def many(self, n: int) -> list[str]:
        """n new Message-IDs."""
        digits = os.urandom(16 * n).hex()
        head, tail = "<", f"@{self.domain}>"
        return [head + digits[i : i + 32] + tail for i in range(0, 32 * n, 32)]
