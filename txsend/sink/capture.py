"""What `txsend sink` keeps of what it received: the counts and the Maildir.

`SinkStats` counts messages, recipients, bytes and connections (and, with fault
injection, the faults sent); `format_stats` is its one line for stdout. `MaildirWriter`
stores each message with ``Return-Path`` and ``Delivered-To`` lines prepended and the
bytes exactly as received (CRLF line endings, after dot-unstuffing), so signatures
and byte counts can be checked against what the client sent.
"""

from __future__ import annotations

import mailbox
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from txsend.errors import ConfigError

__all__ = ["MaildirWriter", "SinkStats", "format_stats"]


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
    # Fault injection (None when not configured). `faults` counts the faults injected
    # per rule label ("rcpt 451", in rule order; "disconnect" for --disconnect-after);
    # messages answered with a fault are not counted as messages above.
    faults: dict[str, int] | None = None
    greylisted: int | None = None  # 450 replies sent by greylisting


def format_stats(stats: SinkStats) -> str:
    """One line for stdout: "sink: 42 messages, 42 recipients, 123456 bytes, ..."."""
    line = (
        f"sink: {stats.messages} messages, {stats.recipients} recipients, "
        f"{stats.bytes} bytes, {stats.connections} connections in {stats.seconds:.1f} s"
    )
    if stats.faults is not None:
        detail = ", ".join(f"{label}: {n}" for label, n in stats.faults.items())
        line += f", {sum(stats.faults.values())} faults injected"
        if detail:
            line += f" ({detail})"
    if stats.greylisted is not None:
        line += f", {stats.greylisted} greylisted"
    return line


class MaildirWriter:
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

    def store(self, mail_from: str, rcpts: list[str], data: bytes) -> None:
        """Store one message as delivered: its envelope as header lines, then `data`."""
        lines = [f"Return-Path: <{mail_from}>\r\n"]
        lines.extend(f"Delivered-To: {rcpt}\r\n" for rcpt in rcpts)
        self.write("".join(lines).encode("utf-8", "surrogateescape"), data)
