"""Probing a relay for `txsend check`: the SMTP conversation, phase by phase, and what each
phase found. Nothing is ever sent: the probe stops before DATA.

The phases, in order: connect (TCP, to each address of the host in turn), greeting, EHLO,
TLS (STARTTLS, or implicit TLS before the greeting on smtps), EHLO again after STARTTLS,
AUTH when the relay has a user, MAIL FROM and RCPT TO when a recipient is given, then RSET
and QUIT. TLS is verified as the sender verifies it (`tls_context_for`). When the
certificate does not verify, a second connection without verification may fetch it, only
to show it; nothing but greeting, EHLO and STARTTLS is said on that connection, and no
phase goes on after a TLS failure, so AUTH, MAIL and RCPT never cross an unverified or
plaintext connection where TLS was asked for.

Every phase is bounded by its limit (`ProbeLimits`), and the whole probe by the sum of
the limits of the phases it may go through, however the relay paces its replies. What a
probe reports (phases, limits, what EHLO offers) is `txsend.delivery.smtp.probereport`.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import aiosmtplib

from txsend.delivery.smtp.auth import authenticate, scrub
from txsend.delivery.smtp.certificates import (
    describe_all,
    peer_certificates,
    verify_problem,
)
from txsend.delivery.smtp.connection import (
    UNREADABLE,
    exception_chain,
    local_hostname,
    tls_context_for,
)
from txsend.delivery.smtp.probereport import (
    PhaseReport,
    ProbeEnvelope,
    ProbeLimits,
    ProbePhase,
    RelayProbe,
    ehlo_offers,
    insecure_auth_problem,
)
from txsend.models import RelayConfig, TlsMode

__all__ = [
    "PhaseReport",
    "ProbeEnvelope",
    "ProbeLimits",
    "ProbePhase",
    "RelayProbe",
    "ehlo_offers",
    "insecure_auth_problem",
    "probe",
]

CHAIN_NOTE = (
    "this Python (before 3.13) gives only the relay's own certificate, not the "
    "intermediates it sent"
)
SHOWN_UNVERIFIED = "a second connection without verification, only to show the certificate"


async def probe(
    relay: RelayConfig,
    secret: str | None,
    limits: ProbeLimits,
    envelope: ProbeEnvelope | None = None,
    *,
    clock: Callable[[], float] = time.monotonic,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> RelayProbe:
    """Probe one relay; `secret` is its password when it has a user. Never raises for
    anything the relay does: each failure is a phase that did not pass."""
    session = _Probe(relay, secret, limits, envelope, clock, now)
    whole = limits.whole(relay, mail=envelope is not None)
    try:
        async with asyncio.timeout(whole):
            await session.run()
            await session.quit()
    except TimeoutError:
        session.out_of_time(whole)
    finally:
        await session.close()
    return RelayProbe(relay, session.phases)


class _Probe:
    """One relay's conversation; each phase appends its PhaseReport."""

    def __init__(
        self,
        relay: RelayConfig,
        secret: str | None,
        limits: ProbeLimits,
        envelope: ProbeEnvelope | None,
        clock: Callable[[], float],
        now: Callable[[], datetime],
    ) -> None:
        self.relay = relay
        self.secret = secret
        self.limits = limits
        self.envelope = envelope
        self.clock = clock
        self.now = now
        self.phases: list[PhaseReport] = []
        self.smtp: aiosmtplib.SMTP | None = None
        self.sock: socket.socket | None = None
        self.address: tuple[int, Any] | None = None  # family and sockaddr connected to
        self.usable = False  # the session takes commands still (QUIT at the end)
        self.mail_sent = False  # MAIL went out: RSET before QUIT
        self.current: tuple[ProbePhase, float] | None = None

    # -- bookkeeping --------------------------------------------------------------------

    def start(self, name: ProbePhase) -> float:
        started = self.clock()
        self.current = (name, started)
        return started

    def record(
        self,
        name: ProbePhase,
        ok: bool,
        started: float,
        text: str,
        *,
        code: int | None = None,
        details: dict[str, Any] | None = None,
        seconds: float | None = None,
    ) -> bool:
        self.current = None
        elapsed = self.clock() - started if seconds is None else seconds
        shown = self.hide_all(details or {})
        self.phases.append(PhaseReport(name, ok, max(elapsed, 0.0), code, self.hide(text), shown))
        return ok

    def refused(self, name: ProbePhase, started: float, exc: BaseException, limit: float) -> bool:
        """A phase that failed with `exc`: the relay's reply when it gave one."""
        if isinstance(exc, aiosmtplib.SMTPResponseException) and exc.code < 0:
            # aiosmtplib's verdict on a reply it could not read: no code of the relay's
            self.usable = False
            return self.record(name, False, started, f"{UNREADABLE}: {exc.message}")
        if isinstance(exc, aiosmtplib.SMTPResponseException):
            self.usable = self.smtp is not None and self.smtp.is_connected
            return self.record(name, False, started, exc.message, code=exc.code)
        self.usable = False
        return self.record(name, False, started, _no_reply(exc, limit))

    def out_of_time(self, whole: float) -> None:
        """The whole probe's limit ran out in the middle of a phase."""
        self.usable = False
        if self.current is not None:
            name, started = self.current
            self.record(
                name, False, started, f"no reply: the whole probe's limit of {whole:g} s ran out"
            )

    def hide(self, text: str) -> str:
        """`text` without the password in any form a relay could echo it in."""
        return scrub(text, self.relay, self.secret)

    def hide_all(self, value: Any) -> Any:
        """`hide` for every string inside a phase's details."""
        if isinstance(value, str):
            return self.hide(value)
        if isinstance(value, dict):
            return {key: self.hide_all(item) for key, item in value.items()}
        if isinstance(value, list):
            return [self.hide_all(item) for item in value]
        return value

    # -- the conversation ---------------------------------------------------------------

    async def run(self) -> None:
        relay = self.relay
        if not await self.connect():
            return
        opened = await (self.open_tls() if relay.tls is TlsMode.IMPLICIT else self.greeting())
        if not opened or not await self.ehlo(ProbePhase.EHLO):
            return
        if relay.tls is TlsMode.STARTTLS and not (
            await self.starttls() and await self.ehlo(ProbePhase.EHLO_AFTER_TLS)
        ):
            return
        if relay.username is not None and not await self.auth():
            return
        if self.envelope is not None:
            await self.mail_rcpt(self.envelope)

    async def connect(self) -> bool:
        name, limit = ProbePhase.CONNECT, self.limits.connect
        started = self.start(name)
        tried: list[str] = []
        try:
            async with asyncio.timeout(limit):
                self.sock, self.address = await _dial(self.relay.host, self.relay.port, tried)
        except socket.gaierror as exc:
            return self.record(
                name,
                False,
                started,
                f"host name {self.relay.host} does not resolve: {exc.strerror}",
            )
        except TimeoutError:
            where = f" (tried {', '.join(tried)})" if tried else ""
            return self.record(name, False, started, f"no connection within {limit:g} s{where}")
        except OSError as exc:
            return self.record(name, False, started, _os_reason(exc), details={"tried": tried})
        host, port = _host_port(self.address[1])
        return self.record(
            name,
            True,
            started,
            f"connected to {host} port {port}",
            details={"address": host, "port": port, "tried": tried},
        )

    def session(self, context: ssl.SSLContext | None, sock: socket.socket) -> aiosmtplib.SMTP:
        relay = self.relay
        return aiosmtplib.SMTP(
            hostname=relay.host,
            sock=sock,
            local_hostname=local_hostname(),
            timeout=None,  # every wait is bounded here, by the phase's limit
            use_tls=relay.tls is TlsMode.IMPLICIT,
            start_tls=False,  # STARTTLS is a phase of its own
            tls_context=context,
        )

    async def greeting(self) -> bool:
        name, limit = ProbePhase.GREETING, self.limits.connect
        assert self.sock is not None
        self.smtp = self.session(None, self.sock)
        started = self.start(name)
        try:
            async with asyncio.timeout(limit):
                response = await self.smtp.connect()
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            return self.refused(name, started, _greeting_cause(exc), limit)
        self.usable = True
        return self.record(name, True, started, response.message, code=response.code)

    async def open_tls(self) -> bool:
        """smtps: the TLS handshake, then the greeting over TLS (aiosmtplib does both in one
        call, so the greeting's time is counted in the TLS phase's)."""
        limit = self.limits.connect
        assert self.sock is not None
        context = tls_context_for(self.relay)
        self.smtp = self.session(context, self.sock)
        started = self.start(ProbePhase.TLS)
        try:
            # aiosmtplib's own timeouts tell the handshake from the greeting
            async with asyncio.timeout(2 * limit + 1):
                response = await self.smtp.connect(timeout=limit)
        except ssl.SSLCertVerificationError as exc:
            return await self.tls_unverified(started, exc)
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            verification = _cert_error(exc)
            if verification is not None:
                return await self.tls_unverified(started, verification)
            if _in_greeting(exc):
                self.record(ProbePhase.TLS, True, started, "handshake completed")
                return self.refused(
                    ProbePhase.GREETING,
                    self.start(ProbePhase.GREETING),
                    _greeting_cause(exc),
                    limit,
                )
            return self.record(ProbePhase.TLS, False, started, _tls_reason(exc, limit))
        text, details = self.tls_found(context)
        self.record(ProbePhase.TLS, True, started, text, details=details)
        self.usable = True
        return self.record(
            ProbePhase.GREETING,
            True,
            self.start(ProbePhase.GREETING),
            response.message,
            code=response.code,
            details={"timed_with": "tls"},
            seconds=0.0,
        )

    async def ehlo(self, name: ProbePhase) -> bool:
        limit = self.limits.command
        assert self.smtp is not None
        started = self.start(name)
        try:
            async with asyncio.timeout(limit):
                response = await self.smtp.ehlo()
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            return self.refused(name, started, exc, limit)
        offers = ehlo_offers(response.message)
        if self.relay.tls is TlsMode.NONE and offers["offers"]["STARTTLS"]:
            offers["note"] = "STARTTLS offered but not used: the relay URL says tls=none"
        return self.record(
            name, True, started, offers["server"], code=response.code, details=offers
        )

    async def starttls(self) -> bool:
        name, limit = ProbePhase.TLS, self.limits.command
        smtp = self.smtp
        assert smtp is not None
        started = self.start(name)
        if not smtp.supports_extension("starttls"):
            return self.record(
                name,
                False,
                started,
                "the relay does not offer STARTTLS, and the relay URL asks for it "
                "(tls=starttls): nothing more is said in clear",
                details=self.tls_basics(verified=False),
            )
        context = tls_context_for(self.relay)
        assert context is not None
        try:
            async with asyncio.timeout(limit):
                response = await smtp.starttls(tls_context=context, server_hostname=self.relay.host)
        except ssl.SSLCertVerificationError as exc:
            self.usable = False
            return await self.tls_unverified(started, exc)
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            verification = _cert_error(exc)
            if verification is not None:
                self.usable = False
                return await self.tls_unverified(started, verification)
            if isinstance(exc, aiosmtplib.SMTPResponseException):
                return self.refused(name, started, exc, limit)
            self.usable = False
            return self.record(name, False, started, _tls_reason(exc, limit))
        text, details = self.tls_found(context)
        return self.record(
            name, True, started, f"{response.message}; {text}", code=response.code, details=details
        )

    def tls_found(self, context: ssl.SSLContext | None) -> tuple[str, dict[str, Any]]:
        """The verified session's protocol, cipher and certificates."""
        assert self.smtp is not None
        ssl_object = self.smtp.get_transport_info("ssl_object")
        details = self.tls_basics(verified=True)
        if isinstance(ssl_object, ssl.SSLObject):
            details.update(_session(ssl_object, self.now()))
        return (
            f"{details.get('version', 'TLS')} {details.get('cipher', '')}".strip()
            + ", certificate verified",
            details,
        )

    def tls_basics(self, *, verified: bool) -> dict[str, Any]:
        relay = self.relay
        return {
            "mode": str(relay.tls),
            "server_name": relay.host,
            "verified": verified,
            "trust": f"ca_file {relay.ca_file}" if relay.ca_file else "the system's CA store",
        }

    async def tls_unverified(self, started: float, exc: ssl.SSLCertVerificationError) -> bool:
        """The certificate did not verify: say why, and show it from a second connection."""
        self.usable = False
        elapsed = self.clock() - started
        kind, message = verify_problem(exc)
        details = self.tls_basics(verified=False)
        details["verify_error"] = {"kind": kind, "message": message}
        details.update(await self.fetch_unverified())
        return self.record(
            ProbePhase.TLS,
            False,
            started,
            f"certificate not verified: {message}",
            details=details,
            seconds=elapsed,
        )

    async def fetch_unverified(self) -> dict[str, Any]:
        """The relay's certificate from a connection that does not verify it (greeting,
        EHLO, STARTTLS and nothing else), bounded like the phases before TLS."""
        assert self.address is not None
        relay = self.relay
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        limit = 2 * self.limits.connect + (
            2 * self.limits.command if relay.tls is TlsMode.STARTTLS else self.limits.connect
        )
        sock: socket.socket | None = None
        smtp: aiosmtplib.SMTP | None = None
        try:
            async with asyncio.timeout(limit):
                family, address = self.address
                sock = await _dial_one(family, address)
                smtp = self.session(context, sock)
                await smtp.connect()
                if relay.tls is TlsMode.STARTTLS:
                    await smtp.ehlo()
                    await smtp.starttls(tls_context=context, server_hostname=relay.host)
                ssl_object = smtp.get_transport_info("ssl_object")
                if not isinstance(ssl_object, ssl.SSLObject):
                    return {"certificates_error": "no TLS session to read a certificate from"}
                found = _session(ssl_object, self.now())
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            why = _no_reply(exc, limit)
            return {"certificates_error": f"the certificate could not be fetched: {why}"}
        finally:
            await _drop(smtp, sock)
        found["certificates_from"] = SHOWN_UNVERIFIED
        return found

    async def auth(self) -> bool:
        name, limit = ProbePhase.AUTH, self.limits.command
        smtp = self.smtp
        assert smtp is not None and self.relay.username is not None
        started = self.start(name)
        peer = _host_port(self.address[1])[0] if self.address else None
        problem = insecure_auth_problem(self.relay, peer)
        if problem is not None:
            return self.record(name, False, started, problem)
        offered = (
            ehlo_offers(smtp.last_ehlo_response.message)["auth"] if smtp.last_ehlo_response else []
        )
        details = {"user": self.relay.username, "offered": offered}
        if not offered:
            after = " (not even after STARTTLS)" if self.relay.tls is TlsMode.STARTTLS else ""
            return self.record(
                name,
                False,
                started,
                f"the relay offers no AUTH{after}: no usable mechanism",
                details=details,
            )
        if self.secret is None:  # relay_password answers for a relay with a user
            return self.record(name, False, started, "no password to try", details=details)
        try:
            async with asyncio.timeout(limit):
                await authenticate(smtp, self.relay, self.secret)
        except aiosmtplib.SMTPResponseException as exc:
            self.usable = smtp.is_connected
            return self.record(name, False, started, exc.message, code=exc.code, details=details)
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            if isinstance(exc, aiosmtplib.SMTPException) and not isinstance(
                exc, aiosmtplib.SMTPServerDisconnected | aiosmtplib.SMTPTimeoutError
            ):
                # aiosmtplib found no mechanism it can use among those offered
                self.usable = smtp.is_connected
                return self.record(
                    name, False, started, f"no usable AUTH mechanism: {exc}", details=details
                )
            return self.refused(name, started, exc, limit)
        return self.record(
            name, True, started, f"authenticated as {self.relay.username}", details=details
        )

    async def mail_rcpt(self, envelope: ProbeEnvelope) -> bool:
        smtp = self.smtp
        limit = self.limits.command
        assert smtp is not None
        started = self.start(ProbePhase.MAIL)
        shown = f"<{envelope.mail_from}>"
        options: list[str] = []
        encoding = "ascii"
        if not (envelope.mail_from.isascii() and envelope.rcpt.isascii()):
            if not smtp.supports_extension("smtputf8"):
                return self.record(
                    ProbePhase.MAIL,
                    False,
                    started,
                    "not sent: the addresses are not ASCII and the relay does not offer SMTPUTF8",
                    details={"from": shown},
                )
            options, encoding = ["SMTPUTF8"], "utf-8"
        try:
            async with asyncio.timeout(limit):
                self.mail_sent = True
                response = await smtp.mail(envelope.mail_from, options=options, encoding=encoding)
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            return self.refused(ProbePhase.MAIL, started, exc, limit)
        self.record(
            ProbePhase.MAIL,
            True,
            started,
            response.message,
            code=response.code,
            details={"from": shown},
        )
        started = self.start(ProbePhase.RCPT)
        details = {"to": f"<{envelope.rcpt}>"}
        try:
            async with asyncio.timeout(limit):
                response = await smtp.rcpt(envelope.rcpt, encoding=encoding)
        except aiosmtplib.SMTPResponseException as exc:
            self.usable = smtp.is_connected
            return self.record(
                ProbePhase.RCPT, False, started, exc.message, code=exc.code, details=details
            )
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            return self.refused(ProbePhase.RCPT, started, exc, limit)
        return self.record(
            ProbePhase.RCPT, True, started, response.message, code=response.code, details=details
        )

    async def quit(self) -> None:
        """RSET after MAIL (no transaction is left open), then QUIT, on a session that
        still takes commands."""
        smtp = self.smtp
        if smtp is None or not self.usable or not smtp.is_connected:
            return
        limit = self.limits.command
        started = self.start(ProbePhase.QUIT)
        details: dict[str, Any] = {}
        try:
            async with asyncio.timeout(limit):
                if self.mail_sent:
                    try:
                        rset = await smtp.rset()
                        details["rset"] = f"{rset.code} {rset.message}"
                    except aiosmtplib.SMTPResponseException as exc:
                        details["rset"] = f"{exc.code} {exc.message}"
                transport = smtp.transport
                try:
                    response = await smtp.quit()
                finally:
                    # QUIT closes the transport: a TLS close would wait for the peer
                    await _drop(None, None, transport)
        except aiosmtplib.SMTPResponseException as exc:
            self.record(
                ProbePhase.QUIT, False, started, exc.message, code=exc.code, details=details
            )
            return
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            self.record(ProbePhase.QUIT, False, started, _no_reply(exc, limit), details=details)
            return
        self.record(
            ProbePhase.QUIT, True, started, response.message, code=response.code, details=details
        )

    async def close(self) -> None:
        smtp, self.smtp = self.smtp, None
        sock, self.sock = self.sock, None
        await _drop(smtp, sock)


# --------------------------------------------------------------------------- helpers


async def _dial(host: str, port: int, tried: list[str]) -> tuple[socket.socket, tuple[int, Any]]:
    """A TCP connection to the first of the host's addresses that answers; `tried` gets
    each address tried, with why it failed."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    error: OSError | None = None
    for family, _type, _proto, _name, address in infos:
        shown = "{} port {}".format(*_host_port(address))
        try:
            sock = await _dial_one(family, address)
        except OSError as exc:
            tried.append(f"{shown}: {_os_reason(exc)}")
            error = exc
            continue
        tried.append(shown)
        return sock, (family, address)
    raise error if error is not None else OSError(f"no address for {host}")


async def _dial_one(family: int, address: Any) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, address)
    except BaseException:
        sock.close()
        raise
    return sock


async def _drop(
    smtp: aiosmtplib.SMTP | None,
    sock: socket.socket | None,
    transport: asyncio.BaseTransport | None = None,
) -> None:
    """Close a session (or a transport) and its socket at once, without waiting for the
    peer (a TLS close would wait for its close_notify)."""
    if smtp is not None:
        transport = transport or smtp.transport
        smtp.close()
    if isinstance(transport, asyncio.Transport) or hasattr(transport, "abort"):
        transport.abort()  # type: ignore[union-attr]
        await asyncio.sleep(0)  # let connection_lost run: no socket outlives the probe
    if sock is not None:
        sock.close()


def _host_port(address: Any) -> tuple[str, int]:
    return str(address[0]), int(address[1])


def _os_reason(exc: OSError) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    return exc.strerror or str(exc) or type(exc).__name__


def _cert_error(exc: BaseException) -> ssl.SSLCertVerificationError | None:
    for cause in exception_chain(exc):
        if isinstance(cause, ssl.SSLCertVerificationError):
            return cause
    return None


def _greeting_cause(exc: BaseException) -> BaseException:
    """aiosmtplib wraps a greeting's disconnect and timeout in SMTPConnectError; the
    cause says which it was."""
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return exc
    cause = exc.__cause__
    if isinstance(exc, aiosmtplib.SMTPConnectError) and cause is not None:
        return cause
    return exc


def _in_greeting(exc: BaseException) -> bool:
    """smtps: whether aiosmtplib's connect failed after the handshake, at the greeting."""
    if isinstance(exc, aiosmtplib.SMTPConnectResponseError):
        return True
    cause = exc.__cause__
    return isinstance(exc, aiosmtplib.SMTPConnectError) and isinstance(
        cause, aiosmtplib.SMTPReadTimeoutError | aiosmtplib.SMTPServerDisconnected
    )


def _tls_reason(exc: BaseException, limit: float) -> str:
    for cause in exception_chain(exc):
        if isinstance(cause, ssl.SSLError):
            return f"TLS handshake failed: {cause.reason or cause}"
    if isinstance(exc, TimeoutError) or any(
        isinstance(c, TimeoutError) for c in exception_chain(exc)
    ):
        return f"TLS handshake not done within {limit:g} s"
    for cause in exception_chain(exc):
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
    return "TLS handshake failed: the relay closed the connection during the handshake"


def _no_reply(exc: BaseException, limit: float) -> str:
    """Why a phase got no reply."""
    if isinstance(exc, TimeoutError):
        return f"no reply within {limit:g} s"
    if isinstance(exc, aiosmtplib.SMTPServerDisconnected | ConnectionError | EOFError):
        return "the relay closed the connection"
    if isinstance(exc, OSError):
        return _os_reason(exc)
    return str(exc) or type(exc).__name__


def _session(ssl_object: ssl.SSLObject, now: datetime) -> dict[str, Any]:
    """A TLS session's protocol, cipher and the certificates the relay presented."""
    found: dict[str, Any] = {"version": ssl_object.version()}
    cipher = ssl_object.cipher()
    if cipher is not None:
        found["cipher"], found["cipher_bits"] = cipher[0], cipher[2]
    ders, whole = peer_certificates(ssl_object)
    found["certificates"] = describe_all(ders, now)
    found["whole_chain"] = whole
    if not whole:
        found["chain_note"] = CHAIN_NOTE
    return found
