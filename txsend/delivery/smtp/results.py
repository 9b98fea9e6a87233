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


NO_REPLY = "no reply to"  # how the account of a reply that did not come in time begins


def no_reply_within(phase: Phase, seconds: float, limit: str) -> str:
    """The account of a reply that did not come in time, e.g. "no reply to RCPT within
    5 s (timeouts.command)"."""
    what = "the final dot" if phase is Phase.DATA_END else phase.value.upper()
    return f"{NO_REPLY} {what} within {seconds:g} s ({limit})"


@dataclass(frozen=True, slots=True)
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
    def timed_out(self) -> bool:
        """No reply came within the job's timeout (the session was dropped)."""
        return self.code is None and self.text.startswith(NO_REPLY)

    @property
    def reply(self) -> str:
        """The reply as one line, for journals and reports."""
        return f"{self.code} {self.text}".strip() if self.code is not None else self.text


class ConnectFault(StrEnum):
    """What went wrong while opening a session; `txsend.delivery.classify.CONNECT_RULES` says
    which of these waiting can fix (transient) and which it cannot (permanent)."""

    REFUSED = "refused"  # nothing listens on the port
    RESET = "reset"  # the peer closed or reset the connection before the session was up
    TIMEOUT = "timeout"  # no answer in timeouts.connect / timeouts.command
    DNS = "dns"  # the host name does not resolve
    UNROUTABLE = "unroutable"  # no route to the host, network unreachable
    GREETING_4XX = "greeting_4xx"  # 421 (or another 4yz) instead of the 220 greeting
    GREETING_5XX = "greeting_5xx"  # 554: the relay will not talk to us
    EHLO_4XX = "ehlo_4xx"
    EHLO_5XX = "ehlo_5xx"  # EHLO and HELO refused
    STARTTLS_MISSING = "starttls_missing"  # tls=starttls but the relay does not offer it
    STARTTLS_4XX = "starttls_4xx"
    STARTTLS_5XX = "starttls_5xx"
    TLS_CERTIFICATE = "tls_certificate"  # verification failed: unknown CA, name, expired
    TLS_HANDSHAKE = "tls_handshake"  # protocol mismatch, no shared cipher, not TLS at all
    AUTH_REFUSED = "auth_refused"  # 535 and friends: wrong user or password
    AUTH_UNAVAILABLE = "auth_unavailable"  # credentials given, no usable AUTH mechanism
    OTHER = "other"


class RelayDown(Exception):
    """The relay cannot be used: connection refused or lost, TLS or AUTH failure.

    `str()` names the relay's URL; `reason` is the same without it."""

    def __init__(
        self,
        url: str,
        reason: str,
        *,
        fault: ConnectFault = ConnectFault.OTHER,
        code: int | None = None,
    ) -> None:
        super().__init__(f"{url}: {reason}")
        self.reason = reason
        self.fault = fault
        self.code = code
