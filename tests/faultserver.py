"""A raw asyncio SMTP server that misbehaves on cue, for faults aiosmtpd and smtp-sink
cannot produce: accept TCP but never greet, greet with 421 or 554, drip a reply one byte
a second, close or reset the connection right after a command or in the message body.

The server runs its own event loop in a background thread, bound to 127.0.0.1 on a free
port; ``start()`` returns once the listener is bound (so a client may connect at once)
and ``stop()`` closes every connection. A script maps a command verb (``EHLO``, ``MAIL``,
``RCPT``, ``DATA``, ``.`` for the final dot, ...) to a ``Step``; ``CONNECT`` is the
greeting, ``BODY`` what happens at the first line of a message body, ``*`` any command
the script does not name. Unscripted commands get an ordinary, accepting reply.

``make_misnamed_tls_files`` writes a CA and a certificate it signed for another host name
(not 127.0.0.1), for a client that checks the name.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import socket
import struct
import subprocess
import threading
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Literal

from tests.smtpd import TlsFiles

__all__ = [
    "CLOSE",
    "HANG",
    "RESET",
    "FaultServer",
    "Step",
    "Transaction",
    "drip",
    "make_misnamed_tls_files",
    "reply",
]

_HOST = "127.0.0.1"
Then = Literal["go", "hang", "close", "reset"]


@dataclass(frozen=True)
class Step:
    """What the server does when a command (or the connection, or a body) arrives.

    ``reply``: the reply lines, joined by newlines (CRLF is added); empty: no reply.
    ``then``: ``go`` reads the next command, ``hang`` never answers again (reading and
    discarding until the client goes), ``close`` closes the connection, ``reset`` aborts
    it with a TCP RST. ``drip`` > 0 writes the reply one byte every ``drip`` seconds;
    with ``forever`` the reply is repeated without end (an endless multiline reply).
    ``after_input``: first wait for the client to send something, and read it (e.g. the
    TLS ClientHello of a client that speaks first), so that a close is a clean FIN.
    """

    reply: str = ""
    then: Then = "go"
    drip: float = 0.0
    forever: bool = False
    after_input: bool = False

    def wire(self) -> bytes:
        if not self.reply:
            return b""
        return b"".join(line.encode() + b"\r\n" for line in self.reply.split("\n"))


def reply(text: str, then: Then = "go") -> Step:
    return Step(text, then)


def drip(text: str, *, every: float, forever: bool = False) -> Step:
    return Step(text, "go", every, forever)


HANG = Step(then="hang")
CLOSE = Step(then="close")
RESET = Step(then="reset")

DEFAULTS: dict[str, Step] = {
    "CONNECT": reply("220 faultserver ESMTP ready"),
    "EHLO": reply("250-faultserver\n250-8BITMIME\n250 ENHANCEDSTATUSCODES"),
    "HELO": reply("250 faultserver"),
    "MAIL": reply("250 2.1.0 OK"),
    "RCPT": reply("250 2.1.5 OK"),
    "DATA": reply("354 End data with <CR><LF>.<CR><LF>"),
    "BODY": Step(),
    ".": reply("250 2.0.0 queued"),
    "RSET": reply("250 2.0.0 OK"),
    "NOOP": reply("250 2.0.0 OK"),
    "QUIT": reply("221 2.0.0 bye", "close"),
    "*": reply("502 5.5.2 command not recognized"),
}


@dataclass
class Transaction:
    """One MAIL transaction the server saw (envelope recipients it accepted)."""

    rcpts: list[str] = field(default_factory=list)
    complete: bool = False  # the final dot arrived
    verdict: str | None = None  # the reply to the final dot, None if none was sent

    @property
    def kept(self) -> bool:
        """The whole message arrived and was accepted, or got no verdict (it may be kept)."""
        return self.complete and (self.verdict is None or self.verdict.startswith("2"))


class _Stop(Exception):
    """The session is over (closed, reset, or the client went away)."""


class FaultServer:
    """A scripted, misbehaving SMTP server on 127.0.0.1 (see the module docstring)."""

    def __init__(self, script: Mapping[str, Step] | None = None) -> None:
        self.script: dict[str, Step] = {k.upper(): v for k, v in (script or {}).items()}
        self.host = _HOST
        self.port = 0
        self.connections = 0
        self.commands: list[str] = []  # verbs in arrival order, over all connections
        self.unanswered: list[bytes] = []  # what arrived after a `hang` step, unread
        self.transactions: list[Transaction] = []
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._sessions: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    # -- what the tests read ----------------------------------------------------------

    @property
    def url(self) -> str:
        return f"smtp://{self.host}:{self.port}?tls=none"

    def arrivals(self) -> Counter[str]:
        """Recipients of the messages this server may have kept, with multiplicity."""
        with self._lock:
            return Counter(r for t in self.transactions if t.kept for r in t.rcpts)

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("server already started")
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=loop.run_forever, name="faultserver", daemon=True)
        self._thread.start()
        try:
            future = asyncio.run_coroutine_threadsafe(self._listen(), loop)
            self.port = future.result(timeout=10)
        except BaseException:
            self._end_loop()
            raise

    def stop(self) -> None:
        if self._loop is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(timeout=10)
        finally:
            self._end_loop()

    def __enter__(self) -> FaultServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- internals ----------------------------------------------------------------------

    async def _listen(self) -> int:
        self._server = await asyncio.start_server(self._session, self.host, 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for writer in list(self._writers):
            writer.transport.abort()
        for task in list(self._sessions):
            task.cancel()
        await asyncio.gather(*self._sessions, return_exceptions=True)

    def _end_loop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        if thread is not None:
            thread.join(timeout=10)
        loop.close()
        self._loop = self._thread = None

    def _step(self, verb: str) -> Step:
        return self.script.get(verb) or self.script.get("*") or DEFAULTS.get(verb) or DEFAULTS["*"]

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._sessions.add(task)
        self._writers.add(writer)
        with self._lock:
            self.connections += 1
        try:
            await self._converse(reader, writer)
        except (_Stop, OSError, ValueError, asyncio.IncompleteReadError):
            pass  # the session is over; ValueError: a "line" longer than the reader's limit
        except asyncio.CancelledError:
            pass  # stop(): end quietly (3.11's start_server callback chokes on a cancelled task)
        finally:
            self._sessions.discard(task)
            self._writers.discard(writer)
            if not writer.is_closing():
                writer.transport.abort()

    async def _converse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self._do(self._step("CONNECT"), reader, writer)
        transaction: Transaction | None = None
        while True:
            line = await reader.readline()
            if not line.endswith(b"\n"):
                raise _Stop  # the client closed (perhaps mid-line)
            text = line.decode("ascii", "replace").strip()
            verb = text.split(" ", 1)[0].upper()
            with self._lock:
                self.commands.append(verb)
            step = self._step(verb)
            if verb == "MAIL" and step.reply.startswith("2"):
                transaction = Transaction()
                with self._lock:
                    self.transactions.append(transaction)
            elif verb == "RCPT" and transaction is not None and step.reply.startswith("2"):
                address = text.partition("<")[2].partition(">")[0]
                with self._lock:
                    transaction.rcpts.append(address)
            await self._do(step, reader, writer)
            if verb == "DATA" and step.reply.startswith("354"):
                await self._body(reader, writer, transaction)
                transaction = None
            elif verb == "RSET":
                transaction = None

    async def _body(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        transaction: Transaction | None,
    ) -> None:
        first = True
        while True:
            line = await reader.readline()
            if not line.endswith(b"\n"):
                raise _Stop
            if line in (b".\r\n", b".\n"):
                break
            if first:
                first = False
                await self._do(self._step("BODY"), reader, writer)
        step = self._step(".")
        if transaction is not None:
            with self._lock:
                transaction.complete = True
                transaction.verdict = step.reply or None
        await self._do(step, reader, writer)

    async def _do(
        self, step: Step, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        if step.after_input and not await reader.read(65536):
            raise _Stop
        data = step.wire()
        if step.drip > 0 and data:
            chunks = itertools.cycle(data) if step.forever else iter(data)
            for byte in chunks:
                if reader.at_eof() or writer.is_closing():
                    raise _Stop
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(step.drip)
        elif data:
            writer.write(data)
            await writer.drain()
        if step.then == "hang":
            while chunk := await reader.read(65536):
                with self._lock:  # never answer; wait for the client to go
                    self.unanswered.append(chunk)
            raise _Stop
        if step.then == "close":
            writer.close()
            raise _Stop
        if step.then == "reset":
            sock = writer.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
            raise _Stop


# --------------------------------------------------------------------------- certificates


def make_misnamed_tls_files(folder: Path, name: str = "wrong-name.example") -> TlsFiles:
    """A new CA and a server certificate it signed for `name` only (no IP address)."""
    folder.mkdir(parents=True, exist_ok=True)
    files = TlsFiles(folder / "ca.pem", folder / "server.pem", folder / "server.key")
    ca_key, csr, ext = folder / "ca.key", folder / "server.csr", folder / "server.ext"
    ext.write_text(
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
        f"extendedKeyUsage=serverAuth\nsubjectAltName=DNS:{name}\n",
        encoding="ascii",
    )
    new_key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    ca = ["req", "-x509", *new_key, "-keyout", str(ca_key), "-out", str(files.ca_file)]
    ca += ["-days", "2", "-subj", "/CN=txsend misnamed test CA"]
    ca += ["-addext", "basicConstraints=critical,CA:TRUE"]
    ca += ["-addext", "keyUsage=critical,keyCertSign,cRLSign"]
    request = ["req", "-new", *new_key, "-keyout", str(files.key_file), "-out", str(csr)]
    request += ["-subj", f"/CN={name}"]
    sign = ["x509", "-req", "-in", str(csr), "-CA", str(files.ca_file), "-CAkey", str(ca_key)]
    sign += ["-set_serial", f"0x{os.urandom(8).hex()}", "-days", "2"]
    sign += ["-extfile", str(ext), "-out", str(files.cert_file)]
    commands = [ca, request, sign]
    for command in commands:
        subprocess.run(
            ["openssl", *command],
            check=True,
            capture_output=True,
            stdin=subprocess.DEVNULL,
            timeout=60,
        )
    return files
