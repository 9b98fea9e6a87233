"""`txsend sink`: a capture SMTP server for demos, tests and CI (aiosmtpd).

It accepts every message (up to 50 MB), counts it, and optionally writes it to a
Maildir with ``Return-Path`` and ``Delivered-To`` lines prepended. The bytes are
stored exactly as received (CRLF line endings, after dot-unstuffing), so signatures
and byte counts can be checked against what the client sent.

Fault injection ("chaos", see `Faults`) scripts what a real relay does to a client:
4xx/5xx replies at a chosen command (always, with a probability, every Nth time, or
for matching addresses), a dropped connection after the final dot, slow replies and
greylisting. Without `Faults` none of this code runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import mailbox
import math
import os
import random
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AnyStr

import aiosmtpd
from aiosmtpd.smtp import SMTP, Envelope, Session, syntax

from txsend.errors import ConfigError
from txsend.units import parse_duration

__all__ = [
    "FAULT_COMMANDS",
    "MAX_MESSAGE_SIZE",
    "FaultRule",
    "Faults",
    "SinkStats",
    "format_stats",
    "serve",
]

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


# --------------------------------------------------------------------------- faults

FAULT_COMMANDS = ("connect", "ehlo", "mail", "rcpt", "data", "dot")
"""Where a --fail rule answers: the greeting, EHLO/HELO, MAIL, RCPT, DATA (instead of
354) or the final dot (instead of the 250 that accepts the message)."""

RULE_SYNTAX = (
    "COMMAND:CODE[:PROBABILITY | :every=N][:match=TEXT][:REPLY TEXT], where COMMAND is "
    "one of connect, ehlo, mail, rcpt, data, dot and CODE a 4xx or 5xx reply code; "
    "e.g. rcpt:451:0.3, dot:554:every=10, mail:421, rcpt:550:match=@bounce."
)

_FAULT_MARK = " (txsend sink fault)"
_DEFAULT_TEXTS = {
    421: "4.3.2 service not available, closing connection",
    450: "4.2.0 mailbox busy, try again later",
    451: "4.3.0 try again later",
    452: "4.3.1 insufficient system storage",
    454: "4.7.0 temporary authentication failure",
    550: "5.1.1 no such user",
    551: "5.1.6 user not local",
    552: "5.3.4 message too big",
    553: "5.1.3 mailbox name not allowed",
    554: "5.7.1 transaction failed",
}
_DEFAULT_TEXTS_BY_COMMAND = {
    ("connect", 554): "5.7.1 no SMTP service here",
    ("mail", 550): "5.7.1 sender rejected",
    ("mail", 553): "5.1.7 bad sender address syntax",
}
_DROPPED = "421 4.4.2 connection dropped (txsend sink fault)"  # never sent


def _default_text(command: str, code: int) -> str:
    text = _DEFAULT_TEXTS_BY_COMMAND.get((command, code)) or _DEFAULT_TEXTS.get(code)
    if text is None:
        text = f"{code // 100}.0.0 {'temporary' if code < 500 else 'permanent'} failure"
    return text + _FAULT_MARK


def _bad_rule(spec: str, reason: str) -> ConfigError:
    return ConfigError(
        f"bad --fail rule {spec!r}: {reason}",
        hint=f"expected {RULE_SYNTAX}",
    )


@dataclass(frozen=True)
class FaultRule:
    """One --fail rule: answer `command` with `code` when the rule fires.

    It fires every `every`th time it is checked when `every` is set, else with
    `probability`. `match` (MAIL and RCPT only) restricts it to envelope addresses
    containing that text (case-insensitive); other addresses neither fire it nor count
    toward `every`. `text` follows the code in the reply; empty: a default with an
    enhanced status code, e.g. "451 4.3.0 try again later (txsend sink fault)".
    """

    command: str
    code: int
    probability: float = 1.0
    every: int = 0
    match: str = ""
    text: str = ""

    def __post_init__(self) -> None:
        spec = self.spec
        if self.command not in FAULT_COMMANDS:
            raise _bad_rule(spec, f"unknown command {self.command!r}")
        if isinstance(self.code, bool) or not 400 <= self.code <= 599:
            raise _bad_rule(spec, f"the code must be a 4xx or 5xx reply code, got {self.code}")
        if not (0 < self.probability <= 1):
            raise _bad_rule(spec, f"the probability must be in (0, 1], got {self.probability}")
        if self.every < 0 or (self.every and self.probability != 1):
            raise _bad_rule(spec, "give either a probability or every=N (N >= 1), not both")
        if self.match and self.command not in ("mail", "rcpt"):
            raise _bad_rule(spec, "match= applies to mail and rcpt rules only")
        if any(c in self.text for c in "\r\n\0"):
            raise _bad_rule(spec, "the reply text must be one line")

    @property
    def spec(self) -> str:
        """The rule in --fail syntax."""
        parts = [self.command, str(self.code)]
        if self.every:
            parts.append(f"every={self.every}")
        elif self.probability != 1:
            parts.append(f"{self.probability:g}")
        if self.match:
            parts.append(f"match={self.match}")
        if self.text:
            parts.append(self.text)
        return ":".join(parts)

    @property
    def label(self) -> str:
        """How the stats name it: "rcpt 451"."""
        return f"{self.command} {self.code}"

    @property
    def reply(self) -> str:
        return f"{self.code} {self.text or _default_text(self.command, self.code)}"

    @classmethod
    def parse(cls, spec: str) -> FaultRule:
        """Parse COMMAND:CODE[:PROBABILITY | :every=N][:match=TEXT][:REPLY TEXT].

        The fields after CODE may come in any order; the first one that is neither a
        number, every=N nor match=TEXT starts the reply text (which may contain colons).
        """
        fields = spec.strip().split(":")
        if len(fields) < 2:
            raise _bad_rule(spec, "missing the reply code")
        command = fields[0].strip().lower()
        if command not in FAULT_COMMANDS:
            raise _bad_rule(spec, f"unknown command {fields[0]!r}")
        code_text = fields[1].strip()
        if not (len(code_text) == 3 and code_text.isdigit()):
            raise _bad_rule(spec, f"{code_text!r} is not a 3-digit reply code")
        probability: float | None = None
        every = 0
        match = ""
        rest = fields[2:]
        while rest:
            field_ = rest[0].strip()
            key, sep, value = field_.partition("=")
            if sep and key.lower() == "every":
                if every or probability is not None:
                    raise _bad_rule(spec, "give one probability or one every=N")
                if not value.isdigit() or int(value) < 1:
                    raise _bad_rule(spec, f"every= needs a whole number >= 1, got {value!r}")
                every = int(value)
            elif sep and key.lower() == "match":
                if match or not value:
                    raise _bad_rule(spec, "give one non-empty match=TEXT")
                match = value
            elif _is_number(field_):
                if every or probability is not None:
                    raise _bad_rule(spec, "give one probability or one every=N")
                probability = float(field_)
                if not (0 < probability <= 1):
                    raise _bad_rule(spec, f"the probability must be in (0, 1], got {field_}")
            else:
                break
            rest = rest[1:]
        return cls(
            command=command,
            code=int(code_text),
            probability=1.0 if probability is None else probability,
            every=every,
            match=match,
            text=":".join(rest).strip(),
        )


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _seconds(option: str, value: str | float) -> float:
    """A duration for `option` (50ms, 1s, 0.2); 0 is allowed and means none."""
    try:
        if float(value) == 0:
            return 0.0
    except (TypeError, ValueError):
        pass
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise ConfigError(f"{option}: {exc}", hint="write e.g. 50ms, 1s, 0.2 or 2m") from None
    if not math.isfinite(seconds):
        raise ConfigError(f"{option}: {value!r} is not a finite duration")
    return seconds


@dataclass(frozen=True)
class Faults:
    """What the sink does wrong on purpose (all off by default).

    rules: --fail rules, checked in order for each command; the first that fires
        answers, and the rules after it do not see that command.
    seed: seeds the one random.Random that probability rules draw from (None: random);
        a rule with probability 1 draws nothing.
    disconnect_after: the Nth message overall (counted across connections, in the
        order their final dots arrive) is not answered: the connection is dropped
        right after its final dot and the message is not stored. Once per run.
    delay: seconds to wait before every reply to a final dot (accepted or fault).
    delay_command: seconds to wait before every other reply (greeting, EHLO, MAIL,
        RCPT, DATA's 354, RSET, NOOP, QUIT, ...).
    greylist: None, or seconds: the first RCPT of a (sender, recipient) pair gets
        "450 4.2.0 Greylisted"; a later RCPT of that pair passes once this much time
        has passed since the first (0: any later one), and from then on always.
    """

    rules: tuple[FaultRule, ...] = ()
    seed: int | None = None
    disconnect_after: int | None = None
    delay: float = 0.0
    delay_command: float = 0.0
    greylist: float | None = None

    def __post_init__(self) -> None:
        if self.disconnect_after is not None and self.disconnect_after < 1:
            raise ConfigError(f"--disconnect-after must be at least 1, got {self.disconnect_after}")
        for name, value in (
            ("--delay", self.delay),
            ("--delay-command", self.delay_command),
            ("--greylist", self.greylist),
        ):
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"{name} must be a duration >= 0, got {value!r}")

    @property
    def active(self) -> bool:
        return bool(
            self.rules
            or self.disconnect_after is not None
            or self.delay
            or self.delay_command
            or self.greylist is not None
        )

    @classmethod
    def from_options(
        cls,
        fail: Iterable[str] = (),
        *,
        seed: int | None = None,
        disconnect_after: int | None = None,
        delay: str | float | None = None,
        delay_command: str | float | None = None,
        greylist: str | float | None = None,
    ) -> Faults:
        """Build from command-line values; anything invalid raises ConfigError."""
        return cls(
            rules=tuple(FaultRule.parse(spec) for spec in fail),
            seed=seed,
            disconnect_after=disconnect_after,
            delay=_seconds("--delay", delay) if delay is not None else 0.0,
            delay_command=(
                _seconds("--delay-command", delay_command) if delay_command is not None else 0.0
            ),
            greylist=_seconds("--greylist", greylist) if greylist is not None else None,
        )


class _Chaos:
    """The run-time state of fault injection (one per server; used on its loop only)."""

    def __init__(self, faults: Faults, stats: SinkStats) -> None:
        self.faults = faults
        self.stats = stats
        self.rng = random.Random(faults.seed)
        self.seen = [0] * len(faults.rules)
        self.by_command: dict[str, list[int]] = {}
        for i, rule in enumerate(faults.rules):
            self.by_command.setdefault(rule.command, []).append(i)
        self.messages = 0  # final dots seen, for disconnect_after
        self.first_try: dict[tuple[str, str], float] = {}  # greylisting
        self.counts: dict[str, int] | None = None
        if faults.rules or faults.disconnect_after is not None:
            self.counts = dict.fromkeys((rule.label for rule in faults.rules), 0)
            if faults.disconnect_after is not None:
                self.counts["disconnect"] = 0
        stats.faults = self.counts
        stats.greylisted = 0 if faults.greylist is not None else None

    def _count(self, label: str) -> None:
        assert self.counts is not None
        self.counts[label] += 1

    def fault(self, command: str, address: str | None = None) -> FaultRule | None:
        """The rule that answers this command, if one fires."""
        for i in self.by_command.get(command, ()):
            rule = self.faults.rules[i]
            if rule.match and (address is None or rule.match.lower() not in address.lower()):
                continue
            self.seen[i] += 1
            if rule.every:
                fires = self.seen[i] % rule.every == 0
            else:
                fires = rule.probability >= 1 or self.rng.random() < rule.probability
            if fires:
                self._count(rule.label)
                return rule
        return None

    def drop(self) -> bool:
        """Count a final dot; True if this message's connection is to be dropped."""
        self.messages += 1
        if self.messages == self.faults.disconnect_after:
            self._count("disconnect")
            return True
        return False

    def greylist(self, sender: str, recipient: str) -> str | None:
        """The 450 reply if greylisting holds this RCPT back, else None."""
        seconds = self.faults.greylist
        if seconds is None:
            return None
        key = (sender.lower(), recipient.lower())
        now = time.monotonic()
        first = self.first_try.get(key)
        if first is None:
            self.first_try[key] = now
        elif now - first >= seconds:
            return None
        assert self.stats.greylisted is not None
        self.stats.greylisted += 1
        if seconds:
            wait = f"{seconds:g} second" + ("" if seconds == 1 else "s")
            return f"450 4.2.0 Greylisted, try again in {wait}"
        return "450 4.2.0 Greylisted, try again later"


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


class _ChaosSMTP(_SinkSMTP):
    """The sink's SMTP with fault injection at the greeting, EHLO/HELO and DATA, the
    command delay, and hanging up (after a 421, or without a reply)."""

    def __init__(
        self, handler: _ChaosHandler, *, sessions: set[SMTP], chaos: _Chaos, **kwargs: Any
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

    def __init__(self, stats: SinkStats, writer: _MaildirWriter | None, chaos: _Chaos) -> None:
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
    faults: Faults | None,
) -> SinkStats:
    loop = asyncio.get_running_loop()
    stats = SinkStats(host=host)
    sessions: set[SMTP] = set()
    options: dict[str, Any] = {
        "data_size_limit": MAX_MESSAGE_SIZE,
        "decode_data": False,
        "enable_SMTPUTF8": True,
        "hostname": _SERVER_NAME,  # the default calls socket.getfqdn() per connection
        "ident": "txsend sink",
        "loop": loop,
    }
    factory: Callable[[], SMTP]
    if faults is not None and faults.active:
        chaos = _Chaos(faults, stats)
        chaos_handler = _ChaosHandler(stats, writer, chaos)

        def chaos_factory() -> SMTP:
            stats.connections += 1
            return _ChaosSMTP(chaos_handler, sessions=sessions, chaos=chaos, **options)

        factory = chaos_factory
    else:
        handler = _SinkHandler(stats, writer)

        def sink_factory() -> SMTP:
            stats.connections += 1
            return _SinkSMTP(handler, sessions=sessions, **options)

        factory = sink_factory

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
        faults=faults,
    )
    return asyncio.run(coro)
