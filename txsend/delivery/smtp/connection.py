"""One reusable SMTP connection to a relay (aiosmtplib), with its errors mapped once."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import re
import socket
import ssl
from collections.abc import Awaitable, Callable
from functools import cache
from typing import cast

import aiosmtplib

from txsend.delivery.smtp.auth import authenticate
from txsend.delivery.smtp.replies import ReplyReader
from txsend.delivery.smtp.results import (
    ConnectFault,
    Phase,
    RelayDown,
    SendResult,
    no_reply_within,
)
from txsend.job.credentials import FixedSecret, RelaySecret, SecretUnavailable
from txsend.models import RelayConfig, RenderedMessage, Timeouts, TlsMode

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
    """A connection that carries many transactions until closed or lost.

    aiosmtplib opens it (greeting, EHLO, STARTTLS, AUTH); then a ReplyReader takes the
    transport over for the transactions, which are pipelined (RFC 2920) when the relay
    offers PIPELINING: MAIL, RCPT and DATA in one write, then the message. A message's
    content may also carry the next transaction's MAIL, RCPT and DATA in the same write
    (RFC 2920 section 3.1 lets message content start a group): one write per message.
    """

    def __init__(
        self,
        relay: RelayConfig,
        secret: RelaySecret | str | None,
        timeouts: Timeouts,
        *,
        pipelining: bool = True,
    ) -> None:
        self.relay = relay
        # asked once per open(): an OAuth relay's token is fetched for each connection
        self._secret = FixedSecret(secret) if secret is None or isinstance(secret, str) else secret
        self._timeouts = timeouts
        self._allow_pipelining = pipelining
        self._reader: ReplyReader | None = None
        self._extensions: frozenset[str] = frozenset()
        # the message whose MAIL, RCPT and DATA went out behind the previous message's
        # content: its three replies are read by its own send()
        self._announced: RenderedMessage | None = None
        self.transactions = 0  # transactions on the current connection

    @property
    def is_open(self) -> bool:
        """True while the connection is usable."""
        return self._reader is not None and self._reader.usable

    @property
    def pipelining(self) -> bool:
        """Whether transactions on this connection are pipelined."""
        return self._allow_pipelining and "pipelining" in self._extensions

    @property
    def offers_smtputf8(self) -> bool:
        """Whether the relay advertised SMTPUTF8 (RFC 6531) in its EHLO reply."""
        return "smtputf8" in self._extensions

    async def open(self) -> None:
        """Connect, EHLO, STARTTLS and AUTH as the relay wants; RelayDown on any failure.

        The secret is asked for first (an OAuth token command is bounded by
        `timeouts.connect`); then the whole opening is bounded by `timeouts.connect +
        timeouts.command`, however the relay paces its replies (a server that drips one
        byte a second is cut off)."""
        relay = self.relay
        tls_context = tls_context_for(relay)
        timeouts = self._timeouts
        secret = await self._fetch_secret()
        smtp = aiosmtplib.SMTP(
            hostname=relay.host,
            port=relay.port,
            local_hostname=local_hostname(),
            timeout=timeouts.connect,
            use_tls=relay.tls is TlsMode.IMPLICIT,
            start_tls=relay.tls is TlsMode.STARTTLS,
            tls_context=tls_context,
        )
        stage = "connect"
        try:
            async with asyncio.timeout(timeouts.connect + timeouts.command):
                await smtp.connect()
                stage = "ehlo"
                if smtp.last_ehlo_response is None:  # connect() greets only for STARTTLS
                    await smtp.ehlo()
                # AUTH here rather than in connect(): on a refusal the connection is still
                # ours to close properly
                if secret is not None:
                    stage = "auth"
                    await authenticate(smtp, relay, secret)
        except (aiosmtplib.SMTPException, OSError, ssl.SSLError, TimeoutError) as exc:
            await _shut(smtp)
            fault, code, reason = connect_fault(exc, stage, tls=relay.tls is TlsMode.IMPLICIT)
            raise RelayDown(relay.url, reason, fault=fault, code=code) from None
        except BaseException:
            # cancelled (the run stops): aiosmtplib's own close would wait for a TLS peer,
            # and the socket would outlive the run's loop (uvloop: EBUSY on closing it)
            await _shut(smtp)
            raise
        # uvloop's transports are not asyncio.WriteTransport subclasses: no isinstance
        transport = cast(asyncio.WriteTransport | None, smtp.transport)
        if transport is None or transport.is_closing():
            await _shut(smtp)
            raise RelayDown(relay.url, "connection lost after EHLO", fault=ConnectFault.RESET)
        self._extensions = frozenset(k.lower() for k in smtp.esmtp_extensions)
        reader = ReplyReader(transport)
        transport.set_protocol(reader)  # aiosmtplib is done with this connection
        self._reader = reader
        self.transactions = 0

    async def _fetch_secret(self) -> str | None:
        """The secret for this connection (None: no AUTH); RelayDown when a token command
        fails or hangs: a failed connection, which the relay's circuit counts."""
        if self.relay.username is None:
            return None
        try:
            return await self._secret.secret()
        except SecretUnavailable as exc:
            # transient: the command may work again (its token endpoint was down); the
            # circuit counts it and give_up_unreachable bounds the wait
            reason = f"fetching the access token: {exc.reason}"
            raise RelayDown(self.relay.url, reason, fault=ConnectFault.OTHER) from None

    def holds(self, message: RenderedMessage) -> bool:
        """Whether `message`'s transaction is open on this connection (announced by the
        previous send's `following`): its send() only reads the replies."""
        return self._announced is message and self.is_open

    def withdraw(self, message: RenderedMessage) -> None:
        """`message` will not be sent on this connection after all: if its commands went
        out already (`send`'s `following`), drop the connection, whose relay waits for
        that message's content; a transaction that never ends with the final dot is not
        delivered (RFC 5321 section 4.1.1.4)."""
        if self._announced is message:
            self._abandon()

    async def send(
        self,
        message: RenderedMessage,
        before_data: Callable[[], Awaitable[bool]],
        following: Callable[[], RenderedMessage | None] | None = None,
    ) -> SendResult:
        """One transaction (see `_transact`). Cancelled mid-command (the grace after a
        signal is over), the connection is dropped: the reply still due would answer a
        QUIT, and close() would wait for one a silent relay never sends."""
        try:
            return await self._transact(message, before_data, following)
        except asyncio.CancelledError:
            self._abandon()
            raise

    async def _transact(
        self,
        message: RenderedMessage,
        before_data: Callable[[], Awaitable[bool]],
        following: Callable[[], RenderedMessage | None] | None,
    ) -> SendResult:
        """One transaction: MAIL, RCPT, DATA; then `before_data()` (the journal records
        `sending`), the message, and the relay's final reply.

        When `before_data()` answers False (the journal refused: this worker lost its
        lease) the connection is dropped before the message: a transaction whose data
        never ends with the final dot is not delivered (RFC 5321 section 4.1.1.4).

        With PIPELINING, `following()` is asked, just before this message's content goes
        out, for the message to announce: its MAIL, RCPT and DATA then go out in the same
        write, and the caller sends that message next on this connection, or withdraws it.
        Its replies are read by its own send(), and its content still waits for its own
        `before_data()`."""
        reader = self._reader
        announced, self._announced = self._announced, None
        if reader is None or not reader.usable:
            return SendResult(Phase.CONNECT, None, "not connected")
        if announced is not None and announced is not message:
            # another message's commands are on the wire: this one cannot follow them
            self._abandon()
            return SendResult(Phase.CONNECT, None, "not connected")
        self.transactions += 1
        phase = Phase.MAIL
        wait = self._timeouts.command
        replies: list[tuple[int, str]] = []  # a pipelined group's, as they come
        try:
            if self.pipelining:
                if announced is None:
                    reader.write(self._commands(message))
                # each reply gets its own `timeouts.command` (RFC 5321 4.5.3.2), however
                # many commands went out together
                for awaited in _PIPELINED:
                    phase = awaited  # the reply a timeout or lost session is reported at
                    replies += await reader.read(1, wait)
                (mail_code, mail_text), (rcpt_code, rcpt_text), (data_code, data_text) = replies
                if mail_code not in _ACCEPTED[Phase.MAIL]:
                    return await self._refused_pipelined(
                        Phase.MAIL, mail_code, mail_text, data_code
                    )
                if rcpt_code not in _ACCEPTED[Phase.RCPT]:
                    return await self._refused_pipelined(
                        Phase.RCPT, rcpt_code, rcpt_text, data_code
                    )
                phase = Phase.DATA
            else:
                mail, rcpt = self._envelope(message)
                for phase, command in ((Phase.MAIL, mail), (Phase.RCPT, rcpt)):
                    reader.write(command + b"\r\n")
                    ((code, text),) = await reader.read(1, wait)
                    if code not in _ACCEPTED[phase]:
                        return await self._refused(phase, code, text)
                phase = Phase.DATA
                reader.write(b"DATA\r\n")
                ((data_code, data_text),) = await reader.read(1, wait)
            if data_code != _START_MAIL_INPUT:
                return await self._refused(Phase.DATA, data_code, data_text)
        except (OSError, TimeoutError) as exc:
            # A relay that refuses and hangs up at once (421) leaves its reply behind.
            if self.pipelining:
                came = replies + reader.take_available()
                for (code, text), at in zip(came, _PIPELINED, strict=False):
                    if code not in _ACCEPTED.get(at, (_START_MAIL_INPUT,)):
                        self._abandon()
                        return SendResult(at, code, text)
            else:
                for code, text in reader.take_available()[:1]:
                    if code not in _ACCEPTED.get(phase, (_START_MAIL_INPUT,)):
                        self._abandon()
                        return SendResult(phase, code, text)
            if isinstance(exc, TimeoutError):
                return self._timed_out(phase, wait, "timeouts.command")
            return self._lost(phase, exc)

        if not await before_data():
            self._abandon()
            return SendResult(Phase.DATA, None, NOT_STARTED)
        try:
            # The renderer's output is CRLF throughout, so dot-stuffing is all that is left
            # (RFC 5321 4.5.2); the final reply gets its own, long timeout (4.5.3.2).
            content = dot_stuff(message.data)
            announce = following() if following is not None and self.pipelining else None
            if announce is not None:
                content += self._commands(announce)
                self._announced = announce
            reader.write(content)
            ((code, text),) = await reader.read(1, self._timeouts.data_end)
        except TimeoutError:
            # The message may have reached the relay: RFC 1047's window.
            return self._timed_out(Phase.DATA_END, self._timeouts.data_end, "timeouts.data_end")
        except OSError as exc:
            # The message may have reached the relay: RFC 1047's window.
            return self._lost(Phase.DATA_END, exc)
        if code != _COMPLETED:
            if self._announced is not None:
                # no RSET behind the next transaction's DATA: a new connection serves it
                self._abandon()
                return SendResult(Phase.DATA_END, code, text)
            return await self._refused(Phase.DATA_END, code, text)
        return SendResult(Phase.DONE, code, text)

    def _envelope(self, message: RenderedMessage) -> tuple[bytes, bytes]:
        """MAIL and RCPT for `message`, with the parameters this relay takes."""
        # Addresses were validated by the renderer, so the commands are built directly.
        mail = b"MAIL FROM:<" + message.mail_from.encode() + b">"
        if message.smtputf8:  # the caller checked that the relay offers it
            mail += b" SMTPUTF8"
        if (message.smtputf8 or message.eight_bit) and "8bitmime" in self._extensions:
            mail += b" BODY=8BITMIME"
        rcpt = b"RCPT TO:<" + message.rcpt_to.encode() + b">"
        if "dsn" in self._extensions:
            mail, rcpt = dsn_parameters(mail, rcpt, message)
        return mail, rcpt

    def _commands(self, message: RenderedMessage) -> bytes:
        """MAIL, RCPT and DATA for `message`, pipelined (RFC 2920)."""
        mail, rcpt = self._envelope(message)
        return mail + b"\r\n" + rcpt + b"\r\nDATA\r\n"

    async def _refused_pipelined(
        self, phase: Phase, code: int, text: str, data_code: int
    ) -> SendResult:
        """MAIL or RCPT was refused, but DATA was already on its way (RFC 2920 3.1)."""
        if data_code == _START_MAIL_INPUT and self._reader is not None:
            # A relay that said 354 anyway gets an empty message, which it must refuse
            # for want of recipients; its reply is read and dropped.
            try:
                self._reader.write(b".\r\n")
                await self._reader.read(1, self._timeouts.command)
            except (OSError, TimeoutError):
                self._abandon()
                return SendResult(phase, code, text)
        return await self._refused(phase, code, text)

    async def _refused(self, phase: Phase, code: int, text: str) -> SendResult:
        reader = self._reader
        if code == _SESSION_CLOSING:
            await self.close()
        elif reader is not None and reader.usable:
            try:
                reader.write(b"RSET\r\n")
                ((rset_code, _),) = await reader.read(1, self._timeouts.command)
                if rset_code != _COMPLETED:
                    self._abandon()
            except (OSError, TimeoutError):
                self._abandon()
        return SendResult(phase, code, text)

    def _timed_out(self, phase: Phase, seconds: float, limit: str) -> SendResult:
        """No reply to `phase` within `seconds` (the job's `limit`): the session is over."""
        self._abandon()
        return SendResult(phase, None, no_reply_within(phase, seconds, limit))

    def _lost(self, phase: Phase, exc: BaseException) -> SendResult:
        self._abandon()
        return SendResult(phase, None, _describe(exc))

    def _abandon(self) -> None:
        self._announced = None
        if self._reader is not None:
            self._reader.abort()
        self._reader = None

    async def close(self) -> None:
        """QUIT politely if possible; never raises."""
        announced, self._announced = self._announced, None
        reader, self._reader = self._reader, None
        if reader is None:
            return
        try:
            # a QUIT behind an announced DATA would be read as message content
            if reader.usable and announced is None:
                reader.write(b"QUIT\r\n")
                await reader.read(1, 5)
        except (OSError, TimeoutError):
            pass
        finally:
            # abort, not close: a TLS close would wait for the peer; and wait for the
            # socket to be gone, so that no socket outlives the run
            reader.transport.abort()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    await reader.closed


def dsn_parameters(mail: bytes, rcpt: bytes, message: RenderedMessage) -> tuple[bytes, bytes]:
    """MAIL and RCPT with the DSN parameters of RFC 3461, for a relay that offers DSN.

    Headers only in a bounce (RET=HDRS: the report names the message, without carrying
    it back), the row's token as ENVID, reports of failures and delays (not successes),
    and the recipient as written (ORCPT), which reports quote back."""
    mail += b" RET=HDRS"
    if message.envid:
        mail += b" ENVID=" + xtext(message.envid)
    rcpt += b" NOTIFY=FAILURE,DELAY"
    if message.rcpt_to.isascii():  # a UTF-8 ORCPT needs RFC 6533's utf-8-addr form
        rcpt += b" ORCPT=rfc822;" + xtext(message.rcpt_to)
    return mail, rcpt


# printable ASCII but "+" and "=": what xtext leaves as it is (one regex: this runs twice
# a message, and a byte-by-byte check in Python cost 1.8 µs each time)
_XCHARS = re.compile(rb"[!-*,-<>-~]*")


def xtext(value: str) -> bytes:
    """RFC 3461 section 4: "+", "=" and what is not printable ASCII as "+XX"."""
    raw = value.encode("utf-8")
    if _XCHARS.fullmatch(raw):
        return raw
    return b"".join(
        bytes((b,)) if 33 <= b <= 126 and b not in (43, 61) else b"+%02X" % b for b in raw
    )


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
    protocol = smtp.protocol
    # abort before close(), which would close TLS politely; uvloop's transports are not
    # asyncio.WriteTransport subclasses: no isinstance
    abort = getattr(transport, "abort", None)
    if abort is not None:
        abort()
    smtp.close()
    if abort is None or protocol is None:
        return
    # connection_lost comes a turn or two later: no socket outlives the run
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(_SHUT_WAIT):
            while protocol.transport is not None:
                await asyncio.sleep(0)


NOT_STARTED = "message not sent: the journal refused to record it as sending"
_SHUT_WAIT = 1.0  # seconds for an aborted connection's connection_lost
UNREADABLE = "the relay's reply could not be read"
_PIPELINED = (Phase.MAIL, Phase.RCPT, Phase.DATA)  # the replies a pipelined group awaits


def _describe(exc: BaseException) -> str:
    """A one-line reason for a failure without a reply."""
    if isinstance(exc, aiosmtplib.SMTPTimeoutError | TimeoutError):
        return f"timed out ({exc})" if str(exc) else "timed out"
    causes = [exc, exc.__cause__, exc.__context__]
    if any(isinstance(c, ConnectionRefusedError) for c in causes):
        return "connection refused"
    if isinstance(exc, ssl.SSLError):
        return f"TLS failed: {getattr(exc, 'reason', None) or exc}"
    return str(exc) or type(exc).__name__


def exception_chain(exc: BaseException) -> list[BaseException]:
    """The exception and its causes, outermost first."""
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def connect_fault(
    exc: BaseException, stage: str, *, tls: bool = False
) -> tuple[ConnectFault, int | None, str]:
    """What kind of fault an exception from opening a session is, its reply code, and
    a one-line reason (`stage`: connect, ehlo or auth: where the opening was; `tls`: the
    connection starts with TLS, smtps)."""
    chain = exception_chain(exc)
    for cause in chain:
        if isinstance(cause, ssl.SSLCertVerificationError):
            why = cause.verify_message or cause.reason or str(cause)
            return ConnectFault.TLS_CERTIFICATE, None, f"TLS certificate not verified: {why}"
    if isinstance(exc, aiosmtplib.SMTPResponseException) and exc.code < 0:
        # aiosmtplib's verdict on a reply it could not read (too long, malformed)
        where = "EHLO: " if stage == "ehlo" else ""
        return ConnectFault.OTHER, None, f"{where}{UNREADABLE}: {exc.message}"
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        code, text = exc.code, f"{exc.code} {exc.message}".strip()
        permanent = code >= 500
        if isinstance(exc, aiosmtplib.SMTPAuthenticationError) or stage == "auth":
            if permanent:
                return ConnectFault.AUTH_REFUSED, code, f"authentication refused: {text}"
            return ConnectFault.OTHER, code, f"authentication failed for now: {text}"
        if isinstance(exc, aiosmtplib.SMTPConnectResponseError):
            fault = ConnectFault.GREETING_5XX if permanent else ConnectFault.GREETING_4XX
            return fault, code, f"greeting refused: {text}"
        if isinstance(exc, aiosmtplib.SMTPHeloError):
            fault = ConnectFault.EHLO_5XX if permanent else ConnectFault.EHLO_4XX
            return fault, code, f"EHLO refused: {text}"
        # the only other command connect() sends is STARTTLS
        fault = ConnectFault.STARTTLS_5XX if permanent else ConnectFault.STARTTLS_4XX
        return fault, code, f"STARTTLS refused: {text}"
    message = str(exc)
    if "STARTTLS extension not supported" in message:
        return ConnectFault.STARTTLS_MISSING, None, "the relay does not offer STARTTLS"
    if "authentication method" in message or "AUTH extension not supported" in message:
        return ConnectFault.AUTH_UNAVAILABLE, None, f"no usable AUTH mechanism: {message}"
    for cause in chain:
        if isinstance(cause, socket.gaierror):
            if cause.errno in (socket.EAI_AGAIN,):
                return ConnectFault.OTHER, None, f"name lookup failed for now: {cause}"
            return ConnectFault.DNS, None, f"host name does not resolve: {cause.strerror}"
        if isinstance(cause, ConnectionRefusedError):
            return ConnectFault.REFUSED, None, "connection refused"
        if isinstance(cause, ssl.SSLError):
            return (
                ConnectFault.TLS_HANDSHAKE,
                None,
                f"TLS handshake failed: {getattr(cause, 'reason', None) or cause}",
            )
        if isinstance(cause, OSError) and cause.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
            return ConnectFault.UNROUTABLE, None, cause.strerror or str(cause)
    if (
        tls
        and stage == "connect"
        and isinstance(exc, aiosmtplib.SMTPConnectError)
        and isinstance(exc.__cause__, ConnectionError)
        and not isinstance(exc.__cause__, aiosmtplib.SMTPServerDisconnected)
    ):
        # closed while connecting with TLS, before any greeting could be read: the peer
        # hung up on the TLS handshake (not an smtps port, or it refuses our TLS)
        return (
            ConnectFault.TLS_HANDSHAKE,
            None,
            "TLS handshake failed: the relay closed the connection during the handshake",
        )
    for cause in chain:
        if isinstance(cause, TimeoutError):
            return ConnectFault.TIMEOUT, None, _describe(exc)
    for cause in chain:
        if isinstance(cause, ConnectionError | aiosmtplib.SMTPServerDisconnected):
            where = "before the greeting" if stage == "connect" else f"during {stage.upper()}"
            return ConnectFault.RESET, None, f"connection closed {where}: {cause}"
    return ConnectFault.OTHER, None, _describe(exc)
