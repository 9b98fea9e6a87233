"""A scriptable in-process SMTP server (aiosmtpd) for the test suite.

The server runs on its own event loop in a background thread, bound to 127.0.0.1 on a
free port. Every script attribute (``rcpt_replies``, ``mail_reply``, ``data_reply``,
``data_replies``, ``data_delay``, ``command_delay``, ``disconnect_after``, ``credentials``,
``oauth_tokens``...) is read when the command arrives, so a test can change the script
between sends.

OAuth 2.0: with ``oauth_tokens`` scripted the server offers XOAUTH2 and OAUTHBEARER
(``oauth_mechanisms``), checks the exact SASL bytes against each user's token, and refuses
a wrong token as Google does: a ``334`` with the base64 JSON ``oauth_error``, then, after
the client's expected answer (XOAUTH2 an empty line, OAUTHBEARER ^A), ``oauth_refusal``.
``oauth_refusals`` scripts the final replies of the next AUTHs whatever the token (454...).
Every exchange is kept in ``oauth_exchanges``.

TLS is optional: ``ScriptedServer(tls_context=...)`` offers STARTTLS (and, with
``require_starttls=True``, refuses mail before it), ``implicit_tls=True`` as well makes the
listener speak TLS from the first byte (smtps). ``make_tls_files`` writes a throwaway CA and
a server certificate for 127.0.0.1 and localhost with the ``openssl`` command line.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import email.policy
import json
import os
import ssl
import subprocess
import threading
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from aiosmtpd.smtp import (
    MISSING,
    SMTP,
    AuthResult,
    Envelope,
    LoginPassword,
    Session,
    TLSSetupException,
)

__all__ = ["OAuthExchange", "Received", "ScriptedServer", "TlsFiles", "make_tls_files"]

_T = TypeVar("_T")
_HOST = "127.0.0.1"
_SERVER_NAME = "test-smtpd"
_DATA_SIZE_LIMIT = 50 * 1024 * 1024
_AUTH_LINE_LIMIT = 12288  # RFC 4954 section 4: an AUTH line with a long token
_OAUTH_MECHANISMS = ("XOAUTH2", "OAUTHBEARER")
# the client's answer to the error challenge (RFC 7628 section 3.2.3 for OAUTHBEARER)
_OAUTH_ABORT = {"XOAUTH2": b"", "OAUTHBEARER": b"\x01"}


@dataclass
class Received:
    """One message the server accepted (or, in ``dropped``, received and then dropped)."""

    mail_from: str
    rcpt_tos: list[str]
    data: bytes  # as received, after dot-unstuffing by aiosmtpd
    mail_options: list[str] = field(default_factory=list)
    login: str | None = None  # the AUTH user of the session, if any
    tls: bool = False  # the transaction ran over TLS (after STARTTLS, or implicit TLS)
    at: float = field(default_factory=time.monotonic)  # when the final dot was answered
    mail_at: float | None = None  # when its MAIL command was accepted (the transaction began)
    mail_wall: float | None = None  # the same moment on the wall clock (time.time())

    @property
    def message(self) -> EmailMessage:
        """The data parsed with the modern email policy."""
        return BytesParser(policy=email.policy.default).parsebytes(self.data)


@dataclass(frozen=True)
class OAuthExchange:
    """One OAuth AUTH the server saw: the decoded initial client response, the client's
    answer to the error challenge (None when there was none), and the final reply."""

    mechanism: str
    initial: bytes
    answer: bytes | None
    reply: str


class _Handler:
    """aiosmtpd hooks that read the owning server's script at call time."""

    def __init__(self, owner: ScriptedServer) -> None:
        self.owner = owner

    async def auth_XOAUTH2(self, server: SMTP, args: list[str]) -> AuthResult:
        return await self.owner._oauth(server, "XOAUTH2", args)

    async def auth_OAUTHBEARER(self, server: SMTP, args: list[str]) -> AuthResult:
        return await self.owner._oauth(server, "OAUTHBEARER", args)

    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname
        if self.owner.pipelining:  # aiosmtpd reads pipelined commands one after another
            responses.insert(-1, "250-PIPELINING")
        return responses

    async def handle_MAIL(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        owner = self.owner
        if owner.command_delay > 0:
            await asyncio.sleep(owner.command_delay)
        # RCPT already read with MAIL: the client pipelined (RFC 2920)
        reader = getattr(server, "_reader", None)
        if reader is not None and b"RCPT" in bytes(getattr(reader, "_buffer", b"")):
            owner.pipelined += 1
        if (owner.credentials or owner.oauth_tokens) and not session.authenticated:
            return "530 5.7.0 Authentication required"
        reply = owner.mail_reply or "250 OK"
        if reply.startswith("2"):
            envelope.mail_from = address
            envelope.mail_options.extend(mail_options)
            owner._mail_started[id(envelope)] = (time.monotonic(), time.time())
        return reply

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if self.owner.command_delay > 0:
            await asyncio.sleep(self.owner.command_delay)
        reply = self.owner.rcpt_replies.get(address.lower()) or "250 OK"
        if reply.startswith("2"):
            envelope.rcpt_tos.append(address)
            envelope.rcpt_options.extend(rcpt_options)
        return reply

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        owner = self.owner
        # the next MAIL already read with this message's content: the client announced its
        # next transaction behind the final dot (RFC 2920 section 3.1)
        reader = getattr(server, "_reader", None)
        if reader is not None and bytes(getattr(reader, "_buffer", b"")).startswith(b"MAIL"):
            owner.announced += 1
        if owner.data_delay > 0:
            await asyncio.sleep(owner.data_delay)
        login = session.auth_data if isinstance(session.auth_data, str) else None
        started = owner._mail_started.pop(id(envelope), None)
        received = Received(
            mail_from=envelope.mail_from or "",
            rcpt_tos=list(envelope.rcpt_tos),
            data=bytes(envelope.original_content or b""),
            mail_options=list(envelope.mail_options),
            login=login,
            tls=_is_tls(server.transport),
            mail_at=started[0] if started else None,
            mail_wall=started[1] if started else None,
        )
        if owner._take_disconnect():
            owner._record(received, dropped=True)
            assert server.transport is not None
            server.transport.close()
            # connection_lost() cancels this session's task, so no reply is ever sent.
            await asyncio.sleep(3600)
        reply = owner.data_reply or "250 OK"
        for rcpt in envelope.rcpt_tos:
            reply = owner.data_replies.get(rcpt.lower(), reply)
        if reply.startswith("2"):
            owner._record(received)
        return reply

    async def handle_exception(self, error: Exception) -> str:
        if isinstance(error, TLSSetupException):
            # The client gave up the STARTTLS handshake (e.g. it does not trust the
            # certificate): a refusal by the peer, not a failure of the handler.
            self.owner._count_tls(failed=True)
            return "454 4.7.0 TLS handshake failed"  # never sent: aiosmtpd closes
        self.owner.errors.append(error)
        return f"500 test-smtpd: {type(error).__name__}: {error}"


def _is_tls(transport: asyncio.BaseTransport | None) -> bool:
    """True for an open transport that speaks TLS."""
    if transport is None or transport.is_closing():
        return False  # a closed TLS transport may no longer answer get_extra_info()
    return transport.get_extra_info("ssl_object") is not None


class _TrackedSMTP(SMTP):
    """aiosmtpd's SMTP that keeps itself in a set while its connection is open."""

    def __init__(
        self, handler: _Handler, *, sessions: set[SMTP], long_lines: bool = False, **kwargs: Any
    ) -> None:
        # aiosmtpd reads every line with one limit; an AUTH line may have 12288 octets (RFC
        # 4954 section 4: an access token is 1-2 KB), so an OAuth server lets data lines
        # that long pass too. Any other keeps aiosmtpd's 1001 (RFC 5321 4.5.3.1.6), which
        # the sink's own line limit is tested against.
        if long_lines:
            self.line_length_limit = _AUTH_LINE_LIMIT + 2
        # aiosmtpd's limits are a class attribute: this session gets its own
        self.command_size_limits = collections.defaultdict(lambda: SMTP.command_size_limit)
        super().__init__(handler, **kwargs)
        self.command_size_limits["AUTH"] = _AUTH_LINE_LIMIT
        self._owner = handler.owner
        self._sessions = sessions
        sessions.add(self)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Called once with the TCP (or, for implicit TLS, the TLS) transport, and again
        # with the TLS transport once a STARTTLS handshake completed.
        super().connection_made(transport)
        if _is_tls(transport):
            self._owner._count_tls()

    def connection_lost(self, error: Exception | None) -> None:
        self._sessions.discard(self)
        super().connection_lost(error)


class ScriptedServer:
    """A test SMTP server on 127.0.0.1 whose replies are scripted by attributes.

    TLS (all off by default): ``tls_context`` (a server-side SSLContext, read per
    connection) offers STARTTLS; ``require_starttls`` then answers 530 to mail commands
    before it; ``implicit_tls`` (read by ``start()``) wraps the listener itself in
    ``tls_context``, as an smtps relay does. AUTH, when ``credentials`` are scripted, is
    offered without TLS on a plain server, only after STARTTLS on a STARTTLS server, and
    from the start with implicit TLS. ``tls_sessions`` counts completed handshakes,
    ``tls_failures`` STARTTLS handshakes the client abandoned.
    """

    def __init__(
        self,
        *,
        tls_context: ssl.SSLContext | None = None,
        implicit_tls: bool = False,
        require_starttls: bool = False,
    ) -> None:
        self.host: str = _HOST
        self.port: int = 0
        self.received: list[Received] = []
        self.dropped: list[Received] = []  # messages whose final dot got no reply
        self.rcpt_replies: dict[str, str] = {}
        self.mail_reply: str | None = None
        self.data_reply: str | None = None
        self.data_replies: dict[str, str] = {}  # recipient -> reply to the final dot
        self.data_delay: float = 0.0
        self.command_delay: float = 0.0  # seconds before each reply to MAIL and RCPT
        self.credentials: dict[str, str] = {}  # user -> password; non-empty: AUTH required
        self.oauth_tokens: dict[str, str] = {}  # user -> access token; non-empty: AUTH required
        self.oauth_mechanisms: tuple[str, ...] = _OAUTH_MECHANISMS  # offered with oauth_tokens
        self.oauth_error: dict[str, str] = {
            "status": "400",
            "schemes": "Bearer",
            "scope": "https://mail.google.com/",
        }
        self.oauth_refusal: str = "535 5.7.8 Username and Password not accepted"
        self.oauth_refusals: list[str] = []  # final replies for the next AUTHs, any token
        self.oauth_exchanges: list[OAuthExchange] = []
        self.connections: int = 0
        self.errors: list[Exception] = []  # exceptions raised inside the handler
        self.tls_context: ssl.SSLContext | None = tls_context
        self.implicit_tls: bool = implicit_tls
        self.require_starttls: bool = require_starttls
        self.tls_sessions: int = 0  # TLS handshakes completed (STARTTLS or implicit)
        self.tls_failures: int = 0  # STARTTLS handshakes that failed
        self.smtputf8: bool = True  # offer SMTPUTF8 (RFC 6531) in the EHLO reply
        self.pipelining: bool = True  # offer PIPELINING (RFC 2920) in the EHLO reply
        self.pipelined: int = 0  # MAIL commands that arrived together with their RCPT
        self.announced: int = 0  # final dots that arrived with the next MAIL behind them
        self._mail_started: dict[
            int, tuple[float, float]
        ] = {}  # envelope id -> MAIL accepted (monotonic, wall)
        self._disconnect_after: int | None = None
        self._disconnect_base = 0
        self._cond = threading.Condition()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._sessions: set[SMTP] = set()

    # -- script ---------------------------------------------------------------

    @property
    def disconnect_after(self) -> int | None:
        """Drop the connection without a reply after N more accepted messages, once."""
        return self._disconnect_after

    @disconnect_after.setter
    def disconnect_after(self, value: int | None) -> None:
        with self._cond:
            self._disconnect_after = value
            self._disconnect_base = len(self.received)

    def _take_disconnect(self) -> bool:
        with self._cond:
            after = self._disconnect_after
            if after is None or len(self.received) - self._disconnect_base < after:
                return False
            self._disconnect_after = None
            return True

    def _record(self, received: Received, *, dropped: bool = False) -> None:
        with self._cond:
            (self.dropped if dropped else self.received).append(received)
            self._cond.notify_all()

    def _count_tls(self, *, failed: bool = False) -> None:
        with self._cond:
            if failed:
                self.tls_failures += 1
            else:
                self.tls_sessions += 1

    # -- lifecycle ------------------------------------------------------------

    @property
    def url(self) -> str:
        """The relay URL txsend understands for this server (no user, no CA file)."""
        if self.implicit_tls:
            return f"smtps://{self.host}:{self.port}"
        if self.tls_context is not None:
            return f"smtp://{self.host}:{self.port}?tls=starttls"
        return f"smtp://{self.host}:{self.port}?tls=none"

    def start(self) -> None:
        """Bind 127.0.0.1 on a free port and serve from a background thread."""
        if self._thread is not None:
            raise RuntimeError("server already started")
        if self.implicit_tls and self.tls_context is None:
            raise ValueError("implicit_tls needs a tls_context")
        listener_tls = self.tls_context if self.implicit_tls else None
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            loop.run_forever()

        self._loop = loop
        self._thread = threading.Thread(target=run, name="test-smtpd", daemon=True)
        self._thread.start()
        ready.wait()
        try:
            self._server = self._call(
                loop.create_server(
                    self._factory,
                    host=self.host,
                    port=0,
                    reuse_address=True,
                    ssl=listener_tls,
                )
            )
        except BaseException:
            self._shutdown_loop()
            raise
        self.port = self._server.sockets[0].getsockname()[1]

    def stop(self) -> None:
        """Close the listener and every open connection, then end the loop thread."""
        if self._loop is None:
            return
        try:
            self._call(self._close())
        finally:
            self._shutdown_loop()

    def wait_for(self, count: int, timeout: float = 10) -> None:
        """Block until at least `count` messages were accepted; AssertionError on timeout."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.received) >= count, timeout):
                raise AssertionError(
                    f"expected {count} messages within {timeout} s, got {len(self.received)}"
                )

    def __enter__(self) -> ScriptedServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- internals ------------------------------------------------------------

    def _factory(self) -> SMTP:
        self.connections += 1
        auth = bool(self.credentials or self.oauth_tokens)
        starttls = None if self.implicit_tls else self.tls_context
        oauth = self.oauth_mechanisms if self.oauth_tokens else ()
        excluded = [m for m in _OAUTH_MECHANISMS if m not in oauth]
        if oauth and not self.credentials:
            excluded += ["PLAIN", "LOGIN"]  # an OAuth-only server
        return _TrackedSMTP(
            _Handler(self),
            sessions=self._sessions,
            long_lines=bool(oauth),
            data_size_limit=_DATA_SIZE_LIMIT,
            decode_data=False,
            enable_SMTPUTF8=self.smtputf8,
            hostname=_SERVER_NAME,
            ident="test-smtpd",
            # A plain or implicit-TLS server offers AUTH only when scripted (aiosmtpd does
            # not see implicit TLS); a STARTTLS server only after STARTTLS.
            auth_require_tls=starttls is not None or not auth,
            authenticator=self._authenticate if auth else None,
            auth_exclude_mechanism=excluded,
            tls_context=starttls,
            require_starttls=starttls is not None and self.require_starttls,
            loop=self._loop,
        )

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        if isinstance(data, LoginPassword):
            user = data.login.decode("utf-8", "replace")
            password = data.password.decode("utf-8", "replace")
            if self.credentials.get(user) == password:
                return AuthResult(success=True, auth_data=user)
        return AuthResult(success=False, handled=False)

    async def _oauth(self, server: SMTP, mechanism: str, args: list[str]) -> AuthResult:
        """XOAUTH2 or OAUTHBEARER as Google's servers speak them (see the module docstring)."""
        if len(args) > 1:
            try:
                initial = base64.b64decode(args[1], validate=True)
            except binascii.Error:
                await server.push("501 5.5.2 Can't decode base64")
                return AuthResult(success=False, handled=True)
        else:
            got = await server.challenge_auth("")
            if got is MISSING:
                return AuthResult(success=False, handled=True)
            assert isinstance(got, bytes)
            initial = got
        with self._cond:
            scripted = self.oauth_refusals.pop(0) if self.oauth_refusals else None
        user = next(
            (u for u, t in self.oauth_tokens.items() if initial == self._sasl(mechanism, u, t)),
            None,
        )
        if user is not None and scripted is None:
            self._exchange(OAuthExchange(mechanism, initial, None, "235"))
            return AuthResult(success=True, auth_data=user)
        answer = await server.challenge_auth(json.dumps(self.oauth_error))
        if answer is MISSING:
            self._exchange(OAuthExchange(mechanism, initial, None, "501"))
            return AuthResult(success=False, handled=True)
        assert isinstance(answer, bytes)
        reply = scripted or self.oauth_refusal
        if answer != _OAUTH_ABORT[mechanism]:
            reply = "501 5.5.2 unexpected answer to the error challenge"
        self._exchange(OAuthExchange(mechanism, initial, answer, reply))
        return AuthResult(success=False, handled=False, message=reply)

    def _sasl(self, mechanism: str, user: str, token: str) -> bytes:
        """The initial client response expected from `user` with `token`."""
        if mechanism == "XOAUTH2":
            return f"user={user}\x01auth=Bearer {token}\x01\x01".encode()
        return (
            f"n,a={user},\x01host={self.host}\x01port={self.port}\x01auth=Bearer {token}\x01\x01"
        ).encode()

    def _exchange(self, exchange: OAuthExchange) -> None:
        with self._cond:
            self.oauth_exchanges.append(exchange)

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
        for smtp in list(self._sessions):
            transport = smtp.transport
            if transport is None or transport.is_closing():
                continue  # already on its way out (closing a TLS transport twice breaks it)
            if isinstance(transport, asyncio.Transport) and _is_tls(transport):
                transport.abort()  # close() would wait for the client's TLS close_notify
            else:
                transport.close()
        if self._server is not None:
            await self._server.wait_closed()
        # Let closing connections (a TLS close takes a round trip) reach connection_lost().
        deadline = asyncio.get_running_loop().time() + 2
        while any(smtp.transport is not None for smtp in self._sessions):
            if asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.01)
        # Two turns: connection_lost() runs, then the cancelled session tasks finish.
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        current = asyncio.current_task()
        tasks = [t for t in asyncio.all_tasks() if t is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._server = None
        self._sessions.clear()

    def _call(self, coro: Coroutine[Any, Any, _T]) -> _T:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=10)

    def _shutdown_loop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        if thread is not None:
            thread.join(timeout=10)
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
        self._loop = None
        self._thread = None


# --------------------------------------------------------------------------- certificates


@dataclass(frozen=True)
class TlsFiles:
    """PEM files of a throwaway CA and a server certificate it signed."""

    ca_file: Path  # the CA certificate: what a client trusts (a job's ca_file:)
    cert_file: Path  # the server certificate, for 127.0.0.1 and localhost
    key_file: Path  # the server's private key

    def server_context(self) -> ssl.SSLContext:
        """A server-side SSLContext presenting the certificate (no client certificates)."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert_file, self.key_file)
        return context


_CA_EXTENSIONS = (
    "basicConstraints=critical,CA:TRUE",
    "keyUsage=critical,keyCertSign,cRLSign",
    "subjectKeyIdentifier=hash",
)
_SERVER_EXTENSIONS = (
    "basicConstraints=critical,CA:FALSE\n"
    "keyUsage=critical,digitalSignature\n"
    "extendedKeyUsage=serverAuth\n"
    f"subjectAltName=IP:{_HOST},DNS:localhost\n"
    "subjectKeyIdentifier=hash\n"
    "authorityKeyIdentifier=keyid,issuer\n"
)


def make_tls_files(folder: Path, *, openssl: str = "openssl", days: int = 2) -> TlsFiles:
    """Write a new CA and a server certificate for 127.0.0.1/localhost into `folder`.

    Uses the openssl command line (EC P-256 keys); CalledProcessError says what failed.
    """
    folder.mkdir(parents=True, exist_ok=True)
    files = TlsFiles(folder / "ca.pem", folder / "server.pem", folder / "server.key")
    ca_key, csr, extensions = folder / "ca.key", folder / "server.csr", folder / "server.ext"
    extensions.write_text(_SERVER_EXTENSIONS, encoding="ascii")
    new_key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    ca_req = ["req", "-x509", *new_key, "-keyout", str(ca_key), "-out", str(files.ca_file)]
    ca_req += ["-days", str(days), "-subj", "/CN=txsend test CA"]
    for extension in _CA_EXTENSIONS:
        ca_req += ["-addext", extension]
    server_req = ["req", "-new", *new_key, "-keyout", str(files.key_file), "-out", str(csr)]
    server_req += ["-subj", "/CN=localhost"]
    sign = ["x509", "-req", "-in", str(csr), "-CA", str(files.ca_file), "-CAkey", str(ca_key)]
    sign += ["-set_serial", f"0x{os.urandom(8).hex()}", "-days", str(days)]
    sign += ["-extfile", str(extensions), "-out", str(files.cert_file)]
    for command in (ca_req, server_req, sign):
        subprocess.run(
            [openssl, *command],
            check=True,
            capture_output=True,
            stdin=subprocess.DEVNULL,
            timeout=60,
        )
    return files
