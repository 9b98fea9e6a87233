"""A scriptable in-process SMTP server (aiosmtpd) for the test suite.

The server runs on its own event loop in a background thread, bound to 127.0.0.1 on a
free port. Every script attribute (``rcpt_replies``, ``mail_reply``, ``data_reply``,
``data_delay``, ``disconnect_after``, ``credentials``) is read when the command arrives,
so a test can change the script between sends.
"""

from __future__ import annotations

import asyncio
import email.policy
import threading
from collections.abc import Coroutine
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.parser import BytesParser
from types import TracebackType
from typing import Any, TypeVar

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

__all__ = ["Received", "ScriptedServer"]

_T = TypeVar("_T")
_HOST = "127.0.0.1"
_SERVER_NAME = "test-smtpd"
_DATA_SIZE_LIMIT = 50 * 1024 * 1024


@dataclass
class Received:
    """One message the server accepted (or, in ``dropped``, received and then dropped)."""

    mail_from: str
    rcpt_tos: list[str]
    data: bytes  # as received, after dot-unstuffing by aiosmtpd
    mail_options: list[str] = field(default_factory=list)
    login: str | None = None  # the AUTH user of the session, if any

    @property
    def message(self) -> EmailMessage:
        """The data parsed with the modern email policy."""
        return BytesParser(policy=email.policy.default).parsebytes(self.data)


class _Handler:
    """aiosmtpd hooks that read the owning server's script at call time."""

    def __init__(self, owner: ScriptedServer) -> None:
        self.owner = owner

    async def handle_MAIL(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        owner = self.owner
        if owner.credentials and not session.authenticated:
            return "530 5.7.0 Authentication required"
        reply = owner.mail_reply or "250 OK"
        if reply.startswith("2"):
            envelope.mail_from = address
            envelope.mail_options.extend(mail_options)
        return reply

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        reply = self.owner.rcpt_replies.get(address.lower()) or "250 OK"
        if reply.startswith("2"):
            envelope.rcpt_tos.append(address)
            envelope.rcpt_options.extend(rcpt_options)
        return reply

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        owner = self.owner
        if owner.data_delay > 0:
            await asyncio.sleep(owner.data_delay)
        login = session.auth_data if isinstance(session.auth_data, str) else None
        received = Received(
            mail_from=envelope.mail_from or "",
            rcpt_tos=list(envelope.rcpt_tos),
            data=bytes(envelope.original_content or b""),
            mail_options=list(envelope.mail_options),
            login=login,
        )
        if owner._take_disconnect():
            owner._record(received, dropped=True)
            assert server.transport is not None
            server.transport.close()
            # connection_lost() cancels this session's task, so no reply is ever sent.
            await asyncio.sleep(3600)
        reply = owner.data_reply or "250 OK"
        if reply.startswith("2"):
            owner._record(received)
        return reply

    async def handle_exception(self, error: Exception) -> str:
        self.owner.errors.append(error)
        return f"500 test-smtpd: {type(error).__name__}: {error}"


class _TrackedSMTP(SMTP):
    """aiosmtpd's SMTP that keeps itself in a set while its connection is open."""

    def __init__(self, handler: _Handler, *, sessions: set[SMTP], **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._sessions = sessions
        sessions.add(self)

    def connection_lost(self, error: Exception | None) -> None:
        self._sessions.discard(self)
        super().connection_lost(error)


class ScriptedServer:
    """A test SMTP server on 127.0.0.1 whose replies are scripted by attributes."""

    def __init__(self) -> None:
        self.host: str = _HOST
        self.port: int = 0
        self.received: list[Received] = []
        self.dropped: list[Received] = []  # messages whose final dot got no reply
        self.rcpt_replies: dict[str, str] = {}
        self.mail_reply: str | None = None
        self.data_reply: str | None = None
        self.data_delay: float = 0.0
        self.credentials: dict[str, str] = {}  # user -> password; non-empty: AUTH required
        self.connections: int = 0
        self.errors: list[Exception] = []  # exceptions raised inside the handler
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

    # -- lifecycle ------------------------------------------------------------

    @property
    def url(self) -> str:
        """The relay URL txsend understands for this server."""
        return f"smtp://{self.host}:{self.port}?tls=none"

    def start(self) -> None:
        """Bind 127.0.0.1 on a free port and serve from a background thread."""
        if self._thread is not None:
            raise RuntimeError("server already started")
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
                loop.create_server(self._factory, host=self.host, port=0, reuse_address=True)
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
        auth = bool(self.credentials)
        return _TrackedSMTP(
            _Handler(self),
            sessions=self._sessions,
            data_size_limit=_DATA_SIZE_LIMIT,
            decode_data=False,
            enable_SMTPUTF8=True,
            hostname=_SERVER_NAME,
            ident="test-smtpd",
            auth_require_tls=not auth,  # offer AUTH without TLS only when scripted
            authenticator=self._authenticate if auth else None,
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

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
        for smtp in list(self._sessions):
            if smtp.transport is not None:
                smtp.transport.close()
        if self._server is not None:
            await self._server.wait_closed()
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
