"""Relay connections: the only place that speaks SMTP (aiosmtplib)."""

from txsend.delivery.smtp.connection import SmtpConnection
from txsend.delivery.smtp.results import Phase, RelayDown, SendResult

__all__ = ["Phase", "RelayDown", "SendResult", "SmtpConnection"]
