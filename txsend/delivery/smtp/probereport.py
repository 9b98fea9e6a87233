"""What a probe of a relay reports (`txsend check`): its phases, their limits, and what an
EHLO reply offers. The conversation that fills them in is `txsend.delivery.smtp.probe`.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from txsend.models import RelayConfig, TlsMode

__all__ = [
    "KNOWN_EXTENSIONS",
    "PhaseReport",
    "ProbeEnvelope",
    "ProbeLimits",
    "ProbePhase",
    "RelayProbe",
    "ehlo_offers",
    "insecure_auth_problem",
]

# The keywords `txsend check` names one by one; any other is listed as it came.
KNOWN_EXTENSIONS = (
    "SIZE",
    "PIPELINING",
    "STARTTLS",
    "AUTH",
    "SMTPUTF8",
    "DSN",
    "8BITMIME",
    "CHUNKING",
    "ENHANCEDSTATUSCODES",
)


class ProbePhase(StrEnum):
    """A step of the probe, as reports name it."""

    CONNECT = "connect"
    GREETING = "greeting"
    EHLO = "ehlo"
    TLS = "tls"
    EHLO_AFTER_TLS = "ehlo_after_tls"
    AUTH = "auth"
    MAIL = "mail"
    RCPT = "rcpt"
    QUIT = "quit"  # RSET (after MAIL) and QUIT: shown, never a failure of the relay


@dataclass(frozen=True)
class ProbeLimits:
    """Seconds each phase may take: `connect` for the TCP connection, the greeting and an
    implicit TLS handshake, `command` for every other phase; `total` bounds the whole
    probe (None: the sum of the limits of the phases it may go through)."""

    connect: float
    command: float
    total: float | None = None

    def whole(self, relay: RelayConfig, *, mail: bool) -> float:
        """The whole probe's limit for `relay`."""
        if self.total is not None:
            return self.total
        # connect + greeting (+ the TLS handshake of smtps), EHLO, STARTTLS + EHLO,
        # AUTH, MAIL + RCPT + RSET, QUIT; a certificate that does not verify costs a
        # second connection up to the TLS phase
        opening = 3 * self.connect if relay.tls is TlsMode.IMPLICIT else 2 * self.connect
        commands = 1 + (2 if relay.tls is TlsMode.STARTTLS else 0)
        commands += (1 if relay.username else 0) + (3 if mail else 0) + 1
        unverified = 0.0
        if relay.tls is not TlsMode.NONE:
            unverified = opening + (2 * self.command if relay.tls is TlsMode.STARTTLS else 0)
        return opening + commands * self.command + unverified


@dataclass(frozen=True)
class ProbeEnvelope:
    """MAIL FROM and RCPT TO to try (bare addresses; an empty sender is the null sender)."""

    mail_from: str
    rcpt: str


@dataclass
class PhaseReport:
    """What one phase did: whether it passed, how long it took, the relay's reply (code
    and text; the text says what happened when there was no reply) and what it found."""

    name: ProbePhase
    ok: bool
    seconds: float
    code: int | None = None
    text: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The phase as JSON values."""
        return {
            "name": str(self.name),
            "ok": self.ok,
            "seconds": round(self.seconds, 6),
            "code": self.code,
            "text": self.text,
            "details": self.details,
        }


@dataclass
class RelayProbe:
    """The phases one relay went through, in order (the failing one last before QUIT)."""

    relay: RelayConfig
    phases: list[PhaseReport]

    @property
    def failed(self) -> PhaseReport | None:
        """The phase that failed, or None when every phase passed (QUIT does not count)."""
        return next((p for p in self.phases if not p.ok and p.name is not ProbePhase.QUIT), None)


def ehlo_offers(message: str) -> dict[str, Any]:
    """What an EHLO reply's text (its lines, code removed) offers: the server's name,
    every keyword with its parameters in order, SIZE as a number, the AUTH mechanisms,
    which of the usual extensions are there, and the other keywords."""
    lines = [line.strip() for line in message.splitlines()]
    extensions: dict[str, str] = {}
    for line in lines[1:]:
        keyword, _, params = line.partition(" ")
        if keyword:
            extensions.setdefault(keyword.upper(), params.strip())
    size = extensions.get("SIZE", "")
    mechanisms = extensions.get("AUTH", "").upper().split()
    for keyword, params in extensions.items():  # the old AUTH=PLAIN LOGIN form
        if keyword.startswith("AUTH="):
            mechanisms += [m for m in (keyword[5:] + " " + params).upper().split() if m]
    return {
        "server": lines[0] if lines else "",
        "extensions": extensions,
        "size": int(size) if size.isdigit() else None,
        "auth": list(dict.fromkeys(mechanisms)),
        "offers": {keyword: keyword in extensions for keyword in KNOWN_EXTENSIONS},
        "other": [k for k in extensions if k not in KNOWN_EXTENSIONS],
    }


def insecure_auth_problem(relay: RelayConfig, peer: str | None) -> str | None:
    """Why the password may not be sent on this connection, or None: without TLS it is
    sent only to a relay that allows it (allow_insecure_auth) or to this host itself."""
    if relay.tls is not TlsMode.NONE or relay.allow_insecure_auth:
        return None
    try:
        if peer is not None and ipaddress.ip_address(peer.split("%", 1)[0]).is_loopback:
            return None
    except ValueError:
        pass
    return (
        "not tried: the connection is not encrypted (tls=none), so the password would "
        "cross the network in clear; use tls=starttls or smtps://, or set "
        "allow_insecure_auth: true (test relays only)"
    )
