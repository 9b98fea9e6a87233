"""`txsend sink`: a capture SMTP server for demos, tests and CI (aiosmtpd).

It accepts every message (up to 50 MB), counts it, and optionally writes it to a
Maildir with ``Return-Path`` and ``Delivered-To`` lines prepended. The bytes are
stored exactly as received (CRLF line endings, after dot-unstuffing), so signatures
and byte counts can be checked against what the client sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import mailbox
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosmtpd
from aiosmtpd.smtp import SMTP, Envelope, Session, syntax

from txsend.errors import ConfigError

__all__ = ["MAX_MESSAGE_SIZE", "SinkStats", "format_stats", "serve"]

MAX_MESSAGE_SIZE = 50 * 1024 * 1024
"""Largest message the sink accepts (announced with the SIZE extension)."""

_SERVER_NAME = "txsend-sink"
_STOP_POLL_SECONDS = 0.05
_RFC_LINE_LIMIT = 1001  # octets per DATA line, with CRLF and a stuffing dot (RFC 5321 4.5.3.1.6)
_TERMINATOR = b"\r\n.\r\n"
# The bulk DATA reader below relies on aiosmtpd 1.4's internals; other versions fall
# back to aiosmtpd's own line-by-line reader.
_FAST_DATA = aiosmtpd.__version__.startswith("1.4.")


@dataclass
class SinkStats:
    """What one run of the sink accepted."""

    messages: int = 0
    recipients: int = 0
    bytes: int = 0  # message bytes as received, without the prepended header lines
    connections: int = 0
    seconds: float = 0.0  # from ready to stop
    host: str = ""
    port: int = 0
    stopped_by: str = ""  # "SIGINT", "SIGTERM" or "stop_event"


def format_stats(stats: SinkStats) -> str:
    """One line for stdout: "sink: 42 messages, 42 recipients, 123456 bytes, ..."."""
    return (
        f"sink: {stats.messages} messages, {stats.recipients} recipients, "
        f"{stats.bytes} bytes, {stats.connections} connections in {stats.seconds:.1f} s"
    )


class _MaildirWriter:
    """Writes messages into a Maildir: tmp/ first, then an atomic rename into new/."""

    def __init__(self, path: Path) -> None:
        try:
            mailbox.Maildir(path, create=True)
        except OSError as exc:
            raise ConfigError(f"cannot create Maildir {path}: {exc.strerror or exc}") from exc
        self._tmp = str(path / "tmp")
        self._new = str(path / "new")
        self._pid = os.getpid()
        self._host = socket.gethostname().replace("/", r"\057").replace(":", r"\072")
        self._seq = 0

    def write(self, prefix: bytes, data: bytes) -> None:
        """Store one message; the name follows the Maildir convention (time.MusecPpidQn.host)."""
        self._seq += 1
        now = time.time()
        name = f"{int(now)}.M{int(now % 1 * 1e6)}P{self._pid}Q{self._seq}.{self._host}"
        tmp = f"{self._tmp}/{name}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        try:
            view = memoryview(prefix + data)
            while view:
                view = view[os.write(fd, view) :]
        except BaseException:
            os.close(fd)
            os.unlink(tmp)
            raise
        os.close(fd)
        os.rename(tmp, f"{self._new}/{name}")


class _SinkSMTP(SMTP):
    """aiosmtpd's SMTP with a bulk DATA reader.

    aiosmtpd reads DATA one line at a time through Python code, which costs more than
    everything else the sink does. This reader asks the stream for whole runs of lines
    (up to the next line that ends with a dot) and does the dot-unstuffing and the
    line-length check with bytes methods. Replies and limits are aiosmtpd's.
    """

    # The stream limit bounds how much readuntil() buffers before giving up; lines
    # are still held to the RFC limit by smtp_DATA, and commands to their own limits.
    line_length_limit = 2**16 if _FAST_DATA else SMTP.line_length_limit

    def __init__(self, handler: _SinkHandler, *, sessions: set[SMTP], **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._sessions = sessions
        sessions.add(self)

    def connection_lost(self, error: Exception | None) -> None:
        self._sessions.discard(self)
        super().connection_lost(error)

    @syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:
        if not _FAST_DATA:
            await super().smtp_DATA(arg)
            return
        if await self.check_helo_needed():
            return
        if await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")

        reader = self._reader
        limit = self.data_size_limit
        data = bytearray()
        size = 0  # octets received, terminator included
        tail = b"\r\n"  # the data section starts at the beginning of a line
        too_much = False
        while True:
            try:
                chunk = await reader.readuntil(b".\r\n")
            except asyncio.LimitOverrunError as exc:
                # No line ending in "." within the stream limit: take what is safe
                # to take (it cannot contain the terminator) and keep reading.
                chunk = await reader.readexactly(exc.consumed)
            except asyncio.CancelledError:
                self._writer.close()
                raise
            size += len(chunk)
            if not too_much:
                if limit and size - 3 > limit:
                    too_much = True
                    data = bytearray()  # drop it now; keep draining up to the dot
                else:
                    data += chunk
            tail = (tail + chunk[-5:])[-5:]
            if tail == _TERMINATOR:
                break

        if too_much:
            await self.push("552 Error: Too much mail data")
            self.envelope = self._create_envelope()
            return
        del data[-3:]  # the terminating ".\r\n"
        if len(data) > _RFC_LINE_LIMIT - 2 and max(map(len, data.split(b"\r\n"))) > (
            _RFC_LINE_LIMIT - 2
        ):
            await self.push("500 Line too long (see RFC5321 4.5.3.1.6)")
            self.envelope = self._create_envelope()
            return
        # Dot-unstuffing (RFC 5321 4.5.2): drop the first "." of every line.
        if data.startswith(b"."):
            del data[0]
        content = bytes(data.replace(b"\r\n.", b"\r\n"))
        del data
        self.envelope.content = content
        self.envelope.original_content = content
        status = await self._call_handler_hook("DATA")
        self.envelope = self._create_envelope()
        await self.push(status if isinstance(status, str) else "250 OK")


class _SinkHandler:
    """aiosmtpd handler: accepts everything, counts it, optionally stores it."""

    def __init__(self, stats: SinkStats, writer: _MaildirWriter | None) -> None:
        self.stats = stats
        self.writer = writer

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        data: bytes = envelope.original_content or b""
        rcpts: list[str] = envelope.rcpt_tos
        stats = self.stats
        stats.messages += 1
        stats.recipients += len(rcpts)
        stats.bytes += len(data)
        if self.writer is not None:
            lines = [f"Return-Path: <{envelope.mail_from or ''}>\r\n"]
            lines.extend(f"Delivered-To: {rcpt}\r\n" for rcpt in rcpts)
            prefix = "".join(lines).encode("utf-8", "surrogateescape")
            try:
                self.writer.write(prefix, data)
            except OSError:
                stats.messages -= 1
                stats.recipients -= len(rcpts)
                stats.bytes -= len(data)
                return "451 4.3.0 sink: cannot write to the Maildir"
        return "250 2.0.0 OK: queued"


def _bind_error(host: str, port: int, exc: OSError) -> ConfigError:
    """A user-facing error for a failed bind."""
    where = f"{host}:{port}"
    if exc.errno == errno.EADDRINUSE:
        return ConfigError(
            f"cannot listen on {where}: the port is already in use",
            hint="choose another --port, or --port 0 for a free one",
        )
    if exc.errno == errno.EACCES:
        return ConfigError(
            f"cannot listen on {where}: permission denied",
            hint="ports below 1024 need privileges; use a higher --port",
        )
    if exc.errno == errno.EADDRNOTAVAIL:
        return ConfigError(f"cannot listen on {where}: no such local address")
    if isinstance(exc, socket.gaierror):
        return ConfigError(f"cannot listen on {where}: unknown host ({exc.strerror})")
    return ConfigError(f"cannot listen on {where}: {exc.strerror or exc}")


def _write_port_file(path: Path, port: int) -> None:
    """Write the port atomically: a temporary file in the same folder, then a rename."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(f"{port}\n", encoding="ascii")
    os.replace(tmp, path)


async def _serve(
    host: str,
    port: int,
    *,
    writer: _MaildirWriter | None,
    port_file: Path | None,
    on_ready: Callable[[str, int], None] | None,
    stop_event: threading.Event | None,
) -> SinkStats:
    loop = asyncio.get_running_loop()
    stats = SinkStats(host=host)
    handler = _SinkHandler(stats, writer)
    sessions: set[SMTP] = set()

    def factory() -> SMTP:
        stats.connections += 1
        return _SinkSMTP(
            handler,
            sessions=sessions,
            data_size_limit=MAX_MESSAGE_SIZE,
            decode_data=False,
            enable_SMTPUTF8=True,
            hostname=_SERVER_NAME,  # the default calls socket.getfqdn() per connection
            ident="txsend sink",
            loop=loop,
        )

    try:
        server = await loop.create_server(factory, host=host, port=port, reuse_address=True)
        ports = {sock.getsockname()[1] for sock in server.sockets}
        if port == 0 and len(ports) > 1:
            # A name with several addresses (localhost: ::1 and 127.0.0.1) got one
            # random port per address; listen on the first one everywhere instead.
            port = server.sockets[0].getsockname()[1]
            server.close()
            await server.wait_closed()
            server = await loop.create_server(factory, host=host, port=port, reuse_address=True)
    except OSError as exc:
        raise _bind_error(host, port, exc) from exc

    stats.port = server.sockets[0].getsockname()[1]
    stopped = loop.create_future()

    def stop(reason: str) -> None:
        if not stopped.done():
            stopped.set_result(reason)

    installed: list[signal.Signals] = []
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, stop, sig.name)
                installed.append(sig)

    async def watch_event(event: threading.Event) -> None:
        while not event.is_set():
            await asyncio.sleep(_STOP_POLL_SECONDS)
        stop("stop_event")

    watcher = asyncio.create_task(watch_event(stop_event)) if stop_event is not None else None
    started = time.monotonic()
    try:
        if port_file is not None:
            try:
                _write_port_file(port_file, stats.port)
            except OSError as exc:
                raise ConfigError(
                    f"cannot write the port file {port_file}: {exc.strerror or exc}"
                ) from exc
        if on_ready is not None:
            on_ready(host, stats.port)
        stats.stopped_by = await stopped
    finally:
        stats.seconds = time.monotonic() - started
        for sig in installed:
            loop.remove_signal_handler(sig)
        if watcher is not None:
            watcher.cancel()
        server.close()
        for smtp in list(sessions):
            if smtp.transport is not None:
                smtp.transport.close()
        await server.wait_closed()
        # Let the sessions see their connections closed before the loop goes away.
        await asyncio.sleep(0)
        if port_file is not None:
            with contextlib.suppress(OSError):
                port_file.unlink()
    return stats


def serve(
    host: str = "127.0.0.1",
    port: int = 2525,
    *,
    maildir: Path | None = None,
    discard: bool = False,
    port_file: Path | None = None,
    on_ready: Callable[[str, int], None] | None = None,
    stop_event: threading.Event | None = None,
) -> SinkStats:
    """Run the capture server until SIGINT/SIGTERM (or stop_event) and return its stats."""
    if maildir is not None and discard:
        raise ConfigError("--maildir and --discard exclude each other")
    if not 0 <= port <= 65535:
        raise ConfigError(f"port {port} is out of range (0-65535; 0 picks a free port)")
    writer = _MaildirWriter(Path(maildir)) if maildir is not None and not discard else None
    smtp_log = logging.getLogger("mail.log")  # aiosmtpd logs every command at INFO
    if smtp_log.level == logging.NOTSET:
        smtp_log.setLevel(logging.WARNING)
    coro = _serve(
        host,
        port,
        writer=writer,
        port_file=Path(port_file) if port_file is not None else None,
        on_ready=on_ready,
        stop_event=stop_event,
    )
    return asyncio.run(coro)
