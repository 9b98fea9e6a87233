"""What a relay connection returns: a transaction's result, or RelayDown for the relay."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Phase(StrEnum):
    """Where in the SMTP dialogue a reply or failure happened."""

    CONNECT = "connect"
    MAIL = "mail"
    RCPT = "rcpt"
    DATA = "data"  # the DATA command, before the 354
    DATA_END = "data_end"  # after the message and final dot were sent
    DONE = "done"


@dataclass(frozen=True)
class SendResult:
    """The outcome of one transaction as the relay told it (or did not)."""

    phase: Phase
    code: int | None  # None: no reply (connection lost or timed out)
    text: str

    @property
    def accepted(self) -> bool:
        """The relay took responsibility for the message (2yz after the final dot)."""
        return self.phase is Phase.DONE

    @property
    def reply(self) -> str:
        """The reply as one line, for journals and reports."""
        return f"{self.code} {self.text}".strip() if self.code is not None else self.text


class RelayDown(Exception):
    """The relay cannot be used: connection refused or lost, TLS or AUTH failure."""

    def __init__(self, message: str, *, code: int | None = None, auth: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.auth = auth
