"""`txsend sink`: the capture server's SMTP side and its loop (aiosmtpd).

It accepts every message (up to 50 MB) and hands it to `txsend.sink.capture`, which
counts it and optionally writes it to a Maildir. With `Faults` (`txsend.sink.faults`)
the sessions and the handler answer as the chaos model decides: 4xx/5xx replies at a
chosen command, a dropped connection after the final dot, slow replies and
greylisting. Without `Faults` none of that code runs.

`serve` binds, announces the port, runs until SIGINT/SIGTERM (or a stop event) and
returns the stats.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, AnyStr

import aiosmtpd
from aiosmtpd.smtp import SMTP, Envelope, Session, syntax

from txsend.errors import ConfigError
from txsend.sink.capture import MaildirWriter, SinkStats
from txsend.sink.faults import Chaos, FaultRule, Faults

__all__ = ["MAX_MESSAGE_SIZE", "serve"]

MAX_MESSAGE_SIZE = 50 * 1024 * 1024
"""Largest message the sink accepts (announced with the SIZE extension)."""

_SERVER_NAME = "txsend-sink"
_STOP_POLL_SECONDS = 0.05
_RFC_LINE_LIMIT = 1001  # octets per DATA line, with CRLF and a stuffing dot (RFC 5321 4.5.3.1.6)
_TERMINATOR = b"\r\n.\r\n"
# The bulk DATA reader below relies on aiosmtpd 1.4's internals; other versions fall
# back to aiosmtpd's own line-by-line reader.
_FAST_DATA = aiosmtpd.__version__.startswith("1.4.")
_DROPPED = "421 4.4.2 connection dropped (txsend sink fault)"  # never sent


# --------------------------------------------------------------------------- DATA


async def _read_data_section(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, limit: int | None
) -> bytearray | None:
    """The data section up to and with its terminating ".\\r\\n"; None if over `limit`.

    A message over the limit is still read up to its dot (so the session stays in
    step with the client) but not kept.
    """
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
            writer.close()
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
    return None if too_much else data


def _line_too_long(data: bytearray) -> bool:
    """True if a line of the data section (CRLF not counted) is over the RFC limit."""
    # The length check first: most messages are shorter than one line may be.
    return len(data) > _RFC_LINE_LIMIT - 2 and max(map(len, data.split(b"\r\n"))) > (
        _RFC_LINE_LIMIT - 2
    )


def _unstuff(data: bytearray) -> bytes:
    """Dot-unstuffing (RFC 5321 4.5.2): drop the first "." of every line."""
    if data.startswith(b"."):
        del data[0]
    return bytes(data.replace(b"\r\n.", b"\r\n"))


# --------------------------------------------------------------------------- sessions


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

    async def _data_fault(self) -> bool:
        """True if a fault answered DATA (fault injection overrides this)."""
        return False

    @syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:
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
        if await self._data_fault():
            return
        if not _FAST_DATA:
            await super().smtp_DATA(arg)
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        data = await _read_data_section(self._reader, self._writer, self.data_size_limit)
        if data is None:
            await self.push("552 Error: Too much mail data")
            self.envelope = self._create_envelope()
            return
        del data[-3:]  # the terminating ".\r\n"
        if _line_too_long(data):
            await self.push("500 Line too long (see RFC5321 4.5.3.1.6)")
            self.envelope = self._create_envelope()
            return
        content = _unstuff(data)
        del data  # a message may be 50 MB: hold one copy, not two
        self.envelope.content = content
        self.envelope.original_content = content
        status = await self._call_handler_hook("DATA")
        self.envelope = self._create_envelope()
        await self.push(status if isinstance(status, str) else "250 OK")


class _SinkHandler:
    """aiosmtpd handler: accepts everything, counts it, optionally stores it."""

    def __init__(self, stats: SinkStats, writer: MaildirWriter | None) -> None:
        self.stats = stats
        self.writer = writer

    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        """Offer PIPELINING (RFC 2920): aiosmtpd reads pipelined commands in order."""
        session.host_name = hostname
        responses.insert(-1, "250-PIPELINING")
        return responses

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        data: bytes = envelope.original_content or b""
        rcpts: list[str] = envelope.rcpt_tos
        stats = self.stats
        stats.messages += 1
        stats.recipients += len(rcpts)
        stats.bytes += len(data)
        if self.writer is not None:
            try:
                self.writer.store(envelope.mail_from or "", rcpts, data)
            except OSError:
                stats.messages -= 1
                stats.recipients -= len(rcpts)
                stats.bytes -= len(data)
                return "451 4.3.0 sink: cannot write to the Maildir"
        return "250 2.0.0 OK: queued"


class _ChaosSMTP(_SinkSMTP):
    """The sink's SMTP with fault injection at the greeting, EHLO/HELO and DATA, the
    command delay, and hanging up (after a 421, or without a reply)."""

    def __init__(
        self, handler: _ChaosHandler, *, sessions: set[SMTP], chaos: Chaos, **kwargs: Any
    ) -> None:
        super().__init__(handler, sessions=sessions, **kwargs)
        self._chaos = chaos
        self._hung_up = False  # nothing more is read or sent
        self._close_after_reply = False  # set for a 421: hang up once it is sent
        self._dot_reply = False  # the next reply answers a final dot (own delay)

    def hang_up(self) -> None:
        """Close the connection now; the session's task ends at its next await."""
        self._hung_up = True
        if self._handler_coroutine is not None:
            self._handler_coroutine.cancel()
        if self.transport is not None:
            self.transport.close()

    def arm(self, rule: FaultRule) -> str:
        """The reply for a fault that fired; a 421 also closes the connection after it."""
        if rule.code == 421:
            self._close_after_reply = True
        return rule.reply

    def mark_dot_reply(self) -> None:
        self._dot_reply = True

    async def push(self, status: AnyStr) -> None:
        if self._hung_up:
            # The connection is gone: stop this session instead of answering.
            raise asyncio.CancelledError
        if self._dot_reply:
            self._dot_reply = False  # delayed by the handler already
        elif self._chaos.faults.delay_command:
            text = status if isinstance(status, str) else status.decode("latin-1")
            if text[3:4] != "-":  # once per reply, not per line of a multi-line one
                await asyncio.sleep(self._chaos.faults.delay_command)
        await super().push(status)
        if self._close_after_reply:
            self.hang_up()

    async def _handle_client(self) -> None:
        rule = self._chaos.fault("connect")
        if rule is None:
            await super()._handle_client()
            return
        await self.push(self.arm(rule))
        # Not 421: as RFC 5321 3.1 has it, keep the connection open until QUIT and
        # refuse every other command with 503.
        with contextlib.suppress(
            asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError
        ):
            while True:
                line = await self._reader.readuntil()
                if line.strip().upper() == b"QUIT":
                    await self.push("221 2.0.0 Bye")
                    break
                await self.push("503 5.5.1 Error: no SMTP service here, only QUIT")
        self.hang_up()

    async def _inject(self, command: str) -> bool:
        rule = self._chaos.fault(command)
        if rule is None:
            return False
        await self.push(self.arm(rule))
        return True

    @syntax("EHLO hostname")
    async def smtp_EHLO(self, hostname: str) -> None:
        if hostname and await self._inject("ehlo"):
            return
        await super().smtp_EHLO(hostname)

    @syntax("HELO hostname")
    async def smtp_HELO(self, hostname: str) -> None:
        if hostname and await self._inject("ehlo"):
            return
        await super().smtp_HELO(hostname)

    async def _data_fault(self) -> bool:
        # The transaction is kept: the client may RSET, or try DATA again.
        return await self._inject("data")


def _chaos_smtp(server: SMTP) -> _ChaosSMTP:
    assert isinstance(server, _ChaosSMTP)
    return server


class _ChaosHandler(_SinkHandler):
    """The handler with fault injection at MAIL, RCPT (and greylisting) and the final dot."""

    def __init__(self, stats: SinkStats, writer: MaildirWriter | None, chaos: Chaos) -> None:
        super().__init__(stats, writer)
        self.chaos = chaos

    async def handle_MAIL(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        rule = self.chaos.fault("mail", address)
        if rule is not None:
            return _chaos_smtp(server).arm(rule)
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        rule = self.chaos.fault("rcpt", address)
        if rule is not None:
            return _chaos_smtp(server).arm(rule)
        held = self.chaos.greylist(envelope.mail_from or "", address)
        if held is not None:
            return held
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        smtp = _chaos_smtp(server)
        if self.chaos.drop():
            smtp.hang_up()
            return _DROPPED  # push() refuses to send it: the client gets no reply
        if self.chaos.faults.delay:
            await asyncio.sleep(self.chaos.faults.delay)
        smtp.mark_dot_reply()
        rule = self.chaos.fault("dot")
        if rule is not None:
            return smtp.arm(rule)
        return await super().handle_DATA(server, session, envelope)


# --------------------------------------------------------------------------- the loop


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


def _smtp_options(loop: asyncio.AbstractEventLoop) -> dict[str, Any]:
    """The keyword arguments every session gets from aiosmtpd."""
    return {
        "data_size_limit": MAX_MESSAGE_SIZE,
        "decode_data": False,
        "enable_SMTPUTF8": True,
        "hostname": _SERVER_NAME,  # the default calls socket.getfqdn() per connection
        "ident": "txsend sink",
        "loop": loop,
    }


def _session_factory(
    stats: SinkStats,
    writer: MaildirWriter | None,
    faults: Faults | None,
    sessions: set[SMTP],
    options: dict[str, Any],
) -> Callable[[], SMTP]:
    """What makes one session per connection: the chaos one only if `faults` asks for it."""
    if faults is not None and faults.active:
        chaos = Chaos(faults, stats)
        chaos_handler = _ChaosHandler(stats, writer, chaos)

        def chaos_factory() -> SMTP:
            stats.connections += 1
            return _ChaosSMTP(chaos_handler, sessions=sessions, chaos=chaos, **options)

        return chaos_factory
    handler = _SinkHandler(stats, writer)

    def sink_factory() -> SMTP:
        stats.connections += 1
        return _SinkSMTP(handler, sessions=sessions, **options)

    return sink_factory


async def _listen(
    loop: asyncio.AbstractEventLoop, factory: Callable[[], SMTP], host: str, port: int
) -> asyncio.Server:
    """Bind host:port (0: a free port, the same one on every address of `host`)."""
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
    return server


class _Stopper:
    """What ends a run: SIGINT or SIGTERM (in the main thread only), or `stop_event`."""

    def __init__(self, loop: asyncio.AbstractEventLoop, stop_event: threading.Event | None) -> None:
        self._loop = loop
        self._stopped: asyncio.Future[str] = loop.create_future()
        self._signals: list[signal.Signals] = []
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                    loop.add_signal_handler(sig, self.stop, sig.name)
                    self._signals.append(sig)
        self._watcher = (
            asyncio.create_task(self._watch(stop_event)) if stop_event is not None else None
        )

    def stop(self, reason: str) -> None:
        """End the run; the first reason wins."""
        if not self._stopped.done():
            self._stopped.set_result(reason)

    async def _watch(self, event: threading.Event) -> None:
        # A threading.Event cannot wake the loop, so it is polled.
        while not event.is_set():
            await asyncio.sleep(_STOP_POLL_SECONDS)
        self.stop("stop_event")

    async def wait(self) -> str:
        """Wait for the run to end; the reason: "SIGINT", "SIGTERM" or "stop_event"."""
        return await self._stopped

    def close(self) -> None:
        """Give the signals back and stop watching the event."""
        for sig in self._signals:
            self._loop.remove_signal_handler(sig)
        if self._watcher is not None:
            self._watcher.cancel()


def _announce(
    host: str, port: int, port_file: Path | None, on_ready: Callable[[str, int], None] | None
) -> None:
    """Tell the caller the sink is listening: the port file first, then `on_ready`."""
    if port_file is not None:
        try:
            _write_port_file(port_file, port)
        except OSError as exc:
            raise ConfigError(
                f"cannot write the port file {port_file}: {exc.strerror or exc}"
            ) from exc
    if on_ready is not None:
        on_ready(host, port)


async def _close(server: asyncio.Server, sessions: set[SMTP]) -> None:
    """Stop listening and close every open connection."""
    server.close()
    for smtp in list(sessions):
        if smtp.transport is not None:
            smtp.transport.close()
    await server.wait_closed()
    # Let the sessions see their connections closed before the loop goes away.
    await asyncio.sleep(0)


async def _serve(
    host: str,
    port: int,
    *,
    writer: MaildirWriter | None,
    port_file: Path | None,
    on_ready: Callable[[str, int], None] | None,
    stop_event: threading.Event | None,
    faults: Faults | None,
) -> SinkStats:
    """The body of `serve`, on the loop that asyncio.run() made for it."""
    loop = asyncio.get_running_loop()
    stats = SinkStats(host=host)
    sessions: set[SMTP] = set()
    factory = _session_factory(stats, writer, faults, sessions, _smtp_options(loop))
    server = await _listen(loop, factory, host, port)
    stats.port = server.sockets[0].getsockname()[1]
    stopper = _Stopper(loop, stop_event)
    started = time.monotonic()
    try:
        _announce(host, stats.port, port_file, on_ready)
        stats.stopped_by = await stopper.wait()
    finally:
        stats.seconds = time.monotonic() - started
        stopper.close()
        await _close(server, sessions)
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
    faults: Faults | None = None,
) -> SinkStats:
    """Run the capture server until SIGINT/SIGTERM (or stop_event) and return its stats.

    `faults` turns on fault injection (see `Faults`; build it with
    `Faults.from_options`, which checks everything before anything is bound).
    """
    if faults is not None and not isinstance(faults, Faults):
        raise TypeError(f"faults must be a Faults, not {type(faults).__name__}")
    if maildir is not None and discard:
        raise ConfigError("--maildir and --discard exclude each other")
    if not 0 <= port <= 65535:
        raise ConfigError(f"port {port} is out of range (0-65535; 0 picks a free port)")
    writer = MaildirWriter(Path(maildir)) if maildir is not None and not discard else None
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
        faults=faults,
    )
    return asyncio.run(coro)
