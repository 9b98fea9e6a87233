"""AUTH on an open aiosmtplib session, as the relay is configured: one place for the
connection that sends and for the probe that checks a relay."""

from __future__ import annotations

import aiosmtplib

from txsend.models import RelayConfig

__all__ = ["authenticate"]


async def authenticate(smtp: aiosmtplib.SMTP, relay: RelayConfig, secret: str) -> None:
    """Log in as the relay's user with `secret` (a password: aiosmtplib picks the best of
    CRAM-MD5, PLAIN and LOGIN that the relay offers). aiosmtplib's exceptions pass through:
    SMTPAuthenticationError for a refusal, SMTPException when no mechanism fits."""
    if relay.username is None:
        raise ValueError(f"relay {relay.url} has no user name to authenticate as")
    await smtp.login(relay.username, secret)
