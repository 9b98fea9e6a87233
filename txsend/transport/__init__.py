"""Relay connections: the only place that speaks SMTP (aiosmtplib)."""

from txsend.transport.base import Phase, RelayDown, SendResult
from txsend.transport.smtp import SmtpConnection

__all__ = ["Phase", "RelayDown", "SendResult", "SmtpConnection"]
