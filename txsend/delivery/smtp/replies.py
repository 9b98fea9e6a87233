"""The reading side of an SMTP session once aiosmtplib has set it up (greeting, EHLO,
STARTTLS, AUTH): a protocol that splits the byte stream into replies and hands out as
many as a caller waits for.

aiosmtplib reads exactly one reply per command it wrote and drops anything else that
arrives, so it cannot pipeline (RFC 2920). This protocol keeps every reply in order,
which lets a transaction write MAIL, RCPT and DATA at once and then read three replies,
and costs one future per read instead of one per command.
"""

from __future__ import annotations

import asyncio
from collections import deque

MAX_REPLY_LINE = 4096  # RFC 5321 4.5.3.1.5 says 512; be lenient, but bounded
MAX_BUFFER = 1 << 20


class ConnectionLost(ConnectionError):
    """The relay closed the connection, or it broke, before the replies came."""


class BadReply(ConnectionError):
    """The relay sent something that is not an SMTP reply."""


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError("no reply in time"))
        waiter.exception()


class ReplyReader(asyncio.Protocol):
    """Collects complete replies as (code, text); `read(n)` waits for the next n."""

    def __init__(self, transport: asyncio.WriteTransport) -> None:
        self.transport = transport
        self._buffer = bytearray()
        self._lines: list[bytes] = []  # lines of a multi-line reply seen so far
        self._replies: deque[tuple[int, str]] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._want = 0
        self._error: Exception | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    # --- asyncio.Protocol --------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        start = 0
        while True:
            end = buffer.find(b"\n", start)
            if end < 0:
                break
            line = bytes(buffer[start:end]).rstrip(b"\r")
            start = end + 1
            if len(line) < 3 or not line[:3].isdigit() or line[3:4] not in (b"", b" ", b"-"):
                self._fail(BadReply(f"not an SMTP reply: {line[:80]!r}"))
                return
            self._lines.append(line)
            if line[3:4] != b"-":
                lines, self._lines = self._lines, []
                text = "\n".join(x[4:].decode("utf-8", "replace").strip() for x in lines)
                self._replies.append((int(line[:3]), text))
        if start:
            del buffer[:start]
        if len(buffer) > MAX_REPLY_LINE or len(self._lines) > MAX_BUFFER // MAX_REPLY_LINE:
            self._fail(BadReply("reply line too long"))
            return
        waiter = self._waiter
        if waiter is not None and len(self._replies) >= self._want and not waiter.done():
            waiter.set_result(None)

    def eof_received(self) -> bool:
        self._fail(ConnectionLost("the relay closed the connection"))
        return False  # let the transport close

    def connection_lost(self, exc: Exception | None) -> None:
        lost = ConnectionLost(f"connection lost: {exc}" if exc else "connection lost")
        self._fail(lost)
        if not self.closed.done():
            self.closed.set_result(None)

    # --- use -----------------------------------------------------------------------

    @property
    def usable(self) -> bool:
        """Whether commands can still be written and answered."""
        return self._error is None and not self.transport.is_closing()

    def write(self, data: bytes) -> None:
        """Send bytes (commands or a message); ConnectionLost if the connection is gone."""
        if self._error is not None:
            raise self._error
        if self.transport.is_closing():
            raise ConnectionLost("connection closed")
        self.transport.write(data)

    async def read(self, n: int, timeout: float) -> list[tuple[int, str]]:
        """The next n replies, in order, within `timeout` seconds; raises TimeoutError,
        ConnectionLost or BadReply.

        One timer per wait, and none when the replies are already here: cheaper than an
        asyncio.timeout() block around every phase of every transaction.
        """
        if len(self._replies) < n:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            while len(self._replies) < n:
                if self._error is not None:
                    raise self._error
                self._want = n
                waiter = self._waiter = loop.create_future()
                timer = loop.call_at(deadline, _expire, waiter)
                try:
                    await waiter
                finally:
                    timer.cancel()
                    self._waiter = None
        replies = self._replies
        return [replies.popleft() for _ in range(n)]

    def take_available(self) -> list[tuple[int, str]]:
        """The replies that came before the connection failed (e.g. a 421 and a close)."""
        replies = list(self._replies)
        self._replies.clear()
        return replies

    def abort(self) -> None:
        """Drop the connection at once."""
        self._fail(ConnectionLost("connection abandoned"))
        self.transport.abort()

    def _fail(self, exc: Exception) -> None:
        if self._error is None:
            self._error = exc
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
            waiter.exception()  # retrieved: nobody may be left to await it
        if not isinstance(exc, ConnectionLost):
            self.transport.abort()
