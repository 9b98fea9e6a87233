"""One reusable SMTP connection to a relay (aiosmtplib), with its errors mapped once."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Awaitable, Callable
from functools import cache

import aiosmtplib

from txsend.models import RelayConfig, RenderedMessage, Timeouts, TlsMode
from txsend.transport.base import Phase, RelayDown, SendResult

# Replies that make no sense for one message but say the session is over (RFC 5321 3.8).
_SESSION_CLOSING = 421
_ACCEPTED = {Phase.MAIL: (250,), Phase.RCPT: (250, 251)}
_START_MAIL_INPUT = 354
_COMPLETED = 250


@cache
def local_hostname() -> str:
    """Our name in EHLO; resolved once (socket.getfqdn can take seconds without DNS)."""
    name = socket.gethostname()
    return name if "." in name else "localhost"


class SmtpConnection:
    """A connection that carries many transactions until closed or lost."""

    def __init__(self, relay: RelayConfig, password: str | None, timeouts: Timeouts) -> None:
        self.relay = relay
        self._password = password
        self._timeouts = timeouts
        self._smtp: aiosmtplib.SMTP | None = None
        self.transactions = 0  # transactions on the current connection

    @property
    def is_open(self) -> bool:
        """True while the connection is usable."""
        return self._smtp is not None and self._smtp.is_connected

    async def open(self) -> None:
        """Connect, EHLO, STARTTLS and AUTH as the relay wants; RelayDown on any failure."""
        relay = self.relay
        tls_context = tls_context_for(relay)
        smtp = aiosmtplib.SMTP(
            hostname=relay.host,
            port=relay.port,
            local_hostname=local_hostname(),
            timeout=self._timeouts.connect,
            use_tls=relay.tls is TlsMode.IMPLICIT,
            start_tls=relay.tls is TlsMode.STARTTLS,
            tls_context=tls_context,
        )
        try:
            await smtp.connect()
            if smtp.last_ehlo_response is None:  # connect() greets only for STARTTLS
                await smtp.ehlo()
            # AUTH here rather than in connect(): on a refusal the connection is still ours
            # to close properly
            if self._password is not None and relay.username is not None:
                await smtp.login(relay.username, self._password)
        except aiosmtplib.SMTPAuthenticationError as exc:
            await _shut(smtp)
            raise RelayDown(
                f"{relay.url}: authentication refused: {exc.code} {exc.message}",
                code=exc.code,
                auth=True,
            ) from None
        except aiosmtplib.SMTPResponseException as exc:
            await _shut(smtp)
            raise RelayDown(f"{relay.url}: {exc.code} {exc.message}", code=exc.code) from None
        except (aiosmtplib.SMTPException, OSError, ssl.SSLError) as exc:
            await _shut(smtp)
            raise RelayDown(f"{relay.url}: {_describe(exc)}") from None
        self._smtp = smtp
        self.transactions = 0

    @property
    def offers_smtputf8(self) -> bool:
        """Whether the relay advertised SMTPUTF8 (RFC 6531) in its EHLO reply."""
        return self._smtp is not None and self._smtp.supports_extension("smtputf8")

    async def send(
        self, message: RenderedMessage, before_data: Callable[[], Awaitable[None]]
    ) -> SendResult:
        """One transaction: MAIL, RCPT, then `before_data()` (journal commit), then DATA."""
        smtp = self._smtp
        if smtp is None:
            return SendResult(Phase.CONNECT, None, "not connected")
        self.transactions += 1
        # Addresses were validated by the renderer, so the commands are built directly
        # rather than through aiosmtplib's per-call address parsing.
        mail = b"FROM:<" + message.mail_from.encode() + b">"
        if message.smtputf8:  # the caller checked that the relay offers it
            mail += b" SMTPUTF8"
            if smtp.supports_extension("8bitmime"):
                mail += b" BODY=8BITMIME"
        for phase, verb, argument in (
            (Phase.MAIL, b"MAIL", mail),
            (Phase.RCPT, b"RCPT", b"TO:<" + message.rcpt_to.encode() + b">"),
        ):
            try:
                # one timer per command (asyncio.timeout) instead of aiosmtplib's wait_for
                async with asyncio.timeout(self._timeouts.command):
                    reply = await smtp.execute_command(verb, argument, timeout=None)
            except (aiosmtplib.SMTPException, OSError) as exc:
                return self._lost(phase, exc)
            if reply.code not in _ACCEPTED[phase]:
                return await self._refused(phase, reply.code, reply.message)

        await before_data()
        try:
            async with asyncio.timeout(self._timeouts.command):
                reply = await smtp.execute_command(b"DATA", timeout=None)
        except (aiosmtplib.SMTPException, OSError) as exc:
            return self._lost(Phase.DATA, exc)
        if reply.code != _START_MAIL_INPUT:
            return await self._refused(Phase.DATA, reply.code, reply.message)
        protocol = smtp.protocol
        if protocol is None:
            return self._lost(Phase.DATA, aiosmtplib.SMTPServerDisconnected("connection lost"))
        try:
            # The renderer's output is CRLF throughout, so dot-stuffing is all that is left
            # (RFC 5321 4.5.2); the final reply gets its own, long timeout (4.5.3.2).
            protocol.write(dot_stuff(message.data))
            async with asyncio.timeout(self._timeouts.data_end):
                reply = await protocol.read_response(timeout=None)
        except (aiosmtplib.SMTPException, OSError) as exc:
            # The message may have reached the relay: RFC 1047's window.
            return self._lost(Phase.DATA_END, exc)
        if reply.code != _COMPLETED:
            return await self._refused(Phase.DATA_END, reply.code, reply.message)
        return SendResult(Phase.DONE, reply.code, reply.message)

    async def _refused(self, phase: Phase, code: int, text: str) -> SendResult:
        if code == _SESSION_CLOSING:
            await self.close()
        elif self._smtp is not None and self._smtp.is_connected:
            try:
                await self._smtp.rset(timeout=self._timeouts.command)
            except (aiosmtplib.SMTPException, OSError):
                self._abandon()
        return SendResult(phase, code, text)

    def _lost(self, phase: Phase, exc: BaseException) -> SendResult:
        self._abandon()
        return SendResult(phase, None, _describe(exc))

    def _abandon(self) -> None:
        if self._smtp is not None:
            self._smtp.close()
        self._smtp = None

    async def close(self) -> None:
        """QUIT politely if possible; never raises."""
        smtp, self._smtp = self._smtp, None
        if smtp is None:
            return
        transport = smtp.transport  # quit() forgets it; we still have to see it closed
        try:
            if smtp.is_connected:
                await smtp.quit(timeout=5)
        except (aiosmtplib.SMTPException, OSError):
            pass
        finally:
            await _shut(smtp, transport)


def dot_stuff(data: bytes) -> bytes:
    """The DATA payload of a CRLF message: leading dots doubled, then the final dot."""
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    stuffed = data.replace(b"\r\n.", b"\r\n..")
    if stuffed.startswith(b"."):
        stuffed = b"." + stuffed
    return stuffed + b".\r\n"


@cache
def _tls_context(ca_file: str | None) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=ca_file)


def tls_context_for(relay: RelayConfig) -> ssl.SSLContext | None:
    """The relay's verifying TLS context, built once per CA file; OSError/SSLError if bad."""
    if relay.tls is TlsMode.NONE:
        return None
    return _tls_context(str(relay.ca_file) if relay.ca_file else None)


async def _shut(smtp: aiosmtplib.SMTP, transport: asyncio.BaseTransport | None = None) -> None:
    """Drop a connection and let its socket close before returning (a TLS close would
    otherwise wait for the peer, and a run could end with the socket still open)."""
    transport = transport or smtp.transport
    smtp.close()
    if isinstance(transport, asyncio.WriteTransport):
        transport.abort()
        await asyncio.sleep(0)  # let connection_lost run: no socket outlives the run


def _describe(exc: BaseException) -> str:
    """A one-line reason for a failure without a reply."""
    if isinstance(exc, aiosmtplib.SMTPTimeoutError | TimeoutError):
        return f"timed out ({exc})" if str(exc) else "timed out"
    causes = [exc, exc.__cause__, exc.__context__]
    if any(isinstance(c, ConnectionRefusedError) for c in causes):
        return "connection refused"
    if isinstance(exc, ssl.SSLError):
        return f"TLS failed: {exc.reason or exc}"
    return str(exc) or type(exc).__name__
