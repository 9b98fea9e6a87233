"""Bounces and complaints read from an IMAP folder (stdlib imaplib), marked once handled.

URL: ``imaps://user@host[:993]/FOLDER`` (TLS from the first byte), or
``imap://user@host[:143]/FOLDER`` with STARTTLS (the default; ``?tls=starttls`` says so).
A plain session (``?tls=none``) is refused unless the URL also says
``allow_insecure_auth=true``: the password would cross the network in clear. The folder is
the URL's path, percent-decoded (default INBOX); certificates are verified and the host
name checked, against ``ca_file`` when given, else the system's CAs.

What is read: the messages of the folder without the keyword ``$TxsendHandled`` (and not
flagged ``\\Deleted``), by UID, fetched in batches with ``BODY.PEEK[]`` so that reading
changes nothing. ``handled(item)`` — called after the journal committed what the message
said — sets ``\\Seen`` and ``$TxsendHandled``, then moves it to ``move_to`` when asked (UID
MOVE, RFC 6851; else COPY, ``\\Deleted`` and UID EXPUNGE) or removes it only with
``delete=True``. A run that dies between the journal and ``handled`` reads the message
again next time; the journal counts it once.

Every exchange with the server (the greeting, each command with all of its answer) ends
within ``timeout``, however the server drips its bytes. A refused or timed-out connection, a
certificate that does not verify, a refused login or a lost connection raise
UnreachableError (exit 69), one line naming host:port and what failed; a bad URL raises
ConfigError (78).
"""

from __future__ import annotations

import base64
import contextlib
import imaplib
import io
import re
import socket
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote, urlsplit

from txsend.errors import ConfigError, MissingInputError, TxsendError, UnreachableError
from txsend.feedback.events import Item

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

HANDLED = "$TxsendHandled"
BATCH = 50  # messages per UID FETCH
DEFAULT_PORTS = {"imaps": 993, "imap": 143}
TLS_MODES = ("implicit", "starttls", "none")
MAX_LINE = 1_000_000  # bytes of one line from the server (imaplib's own limit)


@dataclass(frozen=True, slots=True)
class ImapUrl:
    """A parsed ``imaps://`` or ``imap://`` URL."""

    host: str
    port: int
    user: str
    folder: str
    tls: str  # "implicit" | "starttls" | "none"

    @property
    def where(self) -> str:
        """host:port, as error messages name the server."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_url(url: str) -> ImapUrl:
    """Parse and check an IMAP URL; ConfigError naming what is wrong."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"bad IMAP URL {url!r}: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise ConfigError(f"bad IMAP URL {url!r}: the scheme must be imaps:// or imap://")
    if not parts.hostname:
        raise ConfigError(f"bad IMAP URL {url!r}: no host")
    if parts.password is not None:
        raise ConfigError(
            f"bad IMAP URL {url!r}: a password does not belong in the URL",
            hint="give it through password_env, password_file or password_cmd",
        )
    if not parts.username:
        raise ConfigError(f"bad IMAP URL {url!r}: no user (imaps://user@host/FOLDER)")
    if parts.fragment:
        raise ConfigError(f"bad IMAP URL {url!r}: a #fragment means nothing here")
    try:
        query = dict(parse_qsl(parts.query, keep_blank_values=True, strict_parsing=False))
    except ValueError as exc:
        raise ConfigError(f"bad IMAP URL {url!r}: {exc}") from None
    unknown = sorted(set(query) - {"tls", "allow_insecure_auth"})
    if unknown:
        raise ConfigError(
            f"bad IMAP URL {url!r}: unknown parameter {unknown[0]!r} "
            "(known: tls, allow_insecure_auth)"
        )
    default_tls = "implicit" if scheme == "imaps" else "starttls"
    tls = query.get("tls", default_tls).lower()
    if tls not in TLS_MODES:
        raise ConfigError(f"bad IMAP URL {url!r}: tls={tls} (starttls or none)")
    if scheme == "imaps" and tls != "implicit":
        raise ConfigError(f"bad IMAP URL {url!r}: imaps:// is TLS already; use imap:// for tls=")
    if scheme == "imap" and tls == "implicit":
        raise ConfigError(f"bad IMAP URL {url!r}: for TLS from the start, use imaps://")
    insecure = query.get("allow_insecure_auth", "false").lower()
    if insecure not in ("true", "false"):
        raise ConfigError(f"bad IMAP URL {url!r}: allow_insecure_auth must be true or false")
    if tls == "none" and insecure != "true":
        raise ConfigError(
            f"bad IMAP URL {url!r}: tls=none would send the password in clear",
            hint="use imaps:// or tls=starttls; for a loopback test server add "
            "allow_insecure_auth=true",
        )
    folder = unquote(parts.path[1:] if parts.path.startswith("/") else parts.path) or "INBOX"
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in folder):
        raise ConfigError(f"bad IMAP URL {url!r}: a control character in the folder name")
    return ImapUrl(
        host=parts.hostname,
        port=port if port is not None else DEFAULT_PORTS[scheme],
        user=unquote(parts.username),
        folder=folder,
        tls=tls,
    )


def mailbox_name(name: str) -> str:
    """A folder name as an IMAP quoted string, in modified UTF-7 (RFC 3501 5.1.3)."""
    out: list[str] = []
    pending: list[str] = []

    def shift() -> None:
        if pending:
            packed = base64.b64encode("".join(pending).encode("utf-16-be")).decode("ascii")
            out.append("&" + packed.rstrip("=").replace("/", ",") + "-")
            pending.clear()

    for char in name:
        if 0x20 <= ord(char) <= 0x7E:
            shift()
            out.append("&-" if char == "&" else char)
        else:
            pending.append(char)
    shift()
    text = "".join(out)
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def source_id(folder: str, uidvalidity: int, uid: int) -> str:
    """The Item.source of one message: "imap:FOLDER;UIDVALIDITY=n;UID=m"."""
    return f"imap:{folder};UIDVALIDITY={uidvalidity};UID={uid}"


_SOURCE = re.compile(r"^imap:(?P<folder>.*);UIDVALIDITY=(?P<validity>\d+);UID=(?P<uid>\d+)$")
_UID = re.compile(rb"\bUID (\d+)")


class ImapSource:
    """The unhandled messages of one IMAP folder, one session (see the module docstring)."""

    def __init__(
        self,
        url: str,
        password: str,
        *,
        ca_file: Path | None = None,
        move_to: str | None = None,
        delete: bool = False,
        timeout: float = 30.0,
    ) -> None:
        self.url = parse_url(url)
        if move_to is not None and delete:
            raise ConfigError("an IMAP source either moves handled messages or deletes them")
        if move_to is not None and (not move_to or any(ord(c) < 0x20 for c in move_to)):
            raise ConfigError(f"bad IMAP folder name for handled messages: {move_to!r}")
        if move_to is not None and move_to == self.url.folder:
            raise ConfigError(f"handled messages cannot be moved to the folder read: {move_to!r}")
        self._password = password
        self._ca_file = ca_file
        self._move_to = move_to
        self._delete = delete
        self._timeout = timeout
        self._imap: imaplib.IMAP4 | None = None
        self._capabilities: frozenset[str] = frozenset()
        self._uidvalidity = 0

    # -- the session -------------------------------------------------------------------------

    def connect(self) -> None:
        """Connect, log in and select the folder (done by the first use when not called)."""
        if self._imap is not None:
            return
        imap = self._open()
        try:
            self._login(imap)
            self._select(imap)
            if self._move_to is not None:
                self._create(imap, self._move_to)
        except BaseException:
            _logout(imap)
            raise
        self._imap = imap

    def _tls_context(self) -> ssl.SSLContext:
        if self._ca_file is not None and not self._ca_file.exists():
            raise MissingInputError(f"{self._ca_file}: the IMAP CA file does not exist")
        try:
            context = ssl.create_default_context(
                cafile=str(self._ca_file) if self._ca_file is not None else None
            )
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError(f"{self._ca_file}: not a usable CA file: {exc}") from None
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        return context

    def _open(self) -> imaplib.IMAP4:
        """A connected session, TLS done; UnreachableError when it cannot be had."""
        url = self.url
        context = self._tls_context() if url.tls != "none" else None
        stage = "connection"
        imap: imaplib.IMAP4 | None = None
        try:
            if url.tls == "implicit":
                stage = "TLS connection"
                imap = _ImplicitTls(url.host, url.port, ssl_context=context, timeout=self._timeout)
            else:
                imap = _Plain(url.host, url.port, timeout=self._timeout)
            if url.tls != "starttls":
                return imap
            if "STARTTLS" in imap.capabilities:
                stage = "STARTTLS"
                imap.starttls(context)
                return imap
            failure = UnreachableError(
                f"IMAP server {url.where}: STARTTLS is not offered",
                hint="use imaps:// if the server has a TLS port",
            )
        except ssl.SSLCertVerificationError as exc:
            failure = UnreachableError(
                f"IMAP server {url.where}: certificate not trusted: {exc.verify_message}",
                hint="give the server's CA with ca_file" if self._ca_file is None else None,
            )
        except ssl.SSLError as exc:
            failure = UnreachableError(
                f"IMAP server {url.where}: TLS handshake failed: {exc.reason or exc}"
            )
        except (imaplib.IMAP4.error, OSError, EOFError) as exc:
            failure = UnreachableError(f"IMAP server {url.where}: {stage} failed: {_why(exc)}")
        if imap is not None:  # a greeting came, TLS did not: close the plain socket now
            with contextlib.suppress(OSError):
                imap.shutdown()
        raise failure

    def _login(self, imap: imaplib.IMAP4) -> None:
        url = self.url
        try:
            if "AUTH=PLAIN" in imap.capabilities:
                # SASL PLAIN carries a UTF-8 password, which LOGIN (ASCII atoms) cannot
                secret = f"\0{url.user}\0{self._password}".encode()
                imap.authenticate("PLAIN", lambda _challenge: secret)
            elif "LOGINDISABLED" in imap.capabilities:
                raise UnreachableError(
                    f"IMAP server {url.where}: login is disabled on this connection"
                )
            else:
                imap.login(url.user, self._password)
            typ, data = imap.capability()
        except imaplib.IMAP4.abort as exc:
            raise UnreachableError(
                f"IMAP server {url.where}: connection lost at login: {_why(exc)}"
            ) from None
        except imaplib.IMAP4.error as exc:
            raise UnreachableError(
                f"IMAP server {url.where}: login refused for {url.user!r}: {_why(exc)}"
            ) from None
        except (OSError, EOFError) as exc:
            raise UnreachableError(
                f"IMAP server {url.where}: connection lost at login: {_why(exc)}"
            ) from None
        words = b" ".join(d for d in data if isinstance(d, bytes)).decode("ascii", "replace")
        self._capabilities = frozenset(words.upper().split()) if typ == "OK" else frozenset()

    def _select(self, imap: imaplib.IMAP4) -> None:
        url = self.url
        try:
            typ, data = imap.select(mailbox_name(url.folder))
            if typ != "OK":
                raise ConfigError(
                    f"IMAP server {url.where}: folder {url.folder!r} cannot be opened: "
                    f"{_text(data)}"
                )
            _, validity = imap.response("UIDVALIDITY")
        except (imaplib.IMAP4.abort, OSError, EOFError) as exc:
            raise UnreachableError(
                f"IMAP server {url.where}: connection lost opening {url.folder!r}: {_why(exc)}"
            ) from None
        except imaplib.IMAP4.error as exc:
            raise ConfigError(
                f"IMAP server {url.where}: folder {url.folder!r} cannot be opened: {_why(exc)}"
            ) from None
        try:
            self._uidvalidity = int(_text(validity).split()[0])
        except (ValueError, IndexError):
            self._uidvalidity = 0  # RFC 3501 requires it; a server without one gets 0

    def _create(self, imap: imaplib.IMAP4, folder: str) -> None:
        """Make the folder handled messages go to; one that exists already is fine."""
        try:  # NO [ALREADYEXISTS] is an answer, not an error; a real problem shows at MOVE
            imap.create(mailbox_name(folder))
        except (imaplib.IMAP4.abort, OSError, EOFError) as exc:
            raise UnreachableError(
                f"IMAP server {self.url.where}: connection lost creating {folder!r}: {_why(exc)}"
            ) from None
        except imaplib.IMAP4.error:
            return

    def _command(self, what: str, *args: Any) -> list[Any]:
        """One UID command; its data. UnreachableError when the session broke or the
        server refused (NO/BAD), naming the command."""
        imap = self._session()
        try:
            typ, data = imap.uid(*args)
        except (imaplib.IMAP4.abort, OSError, EOFError) as exc:
            raise UnreachableError(
                f"IMAP server {self.url.where}: connection lost during {what}: {_why(exc)}"
            ) from None
        except imaplib.IMAP4.error as exc:
            raise UnreachableError(
                f"IMAP server {self.url.where}: {what} refused: {_why(exc)}"
            ) from None
        if typ != "OK":
            raise UnreachableError(f"IMAP server {self.url.where}: {what} refused: {_text(data)}")
        # what MOVE and EXPUNGE report unasked would pile up in imaplib's dict otherwise
        for name in ("EXPUNGE", "EXISTS", "RECENT", "FETCH", "VANISHED"):
            imap.untagged_responses.pop(name, None)
        return list(data)

    def _session(self) -> imaplib.IMAP4:
        self.connect()
        assert self._imap is not None
        return self._imap

    # -- MailSource --------------------------------------------------------------------------

    def __iter__(self) -> Iterator[Item]:
        """The folder's messages not yet handled, oldest UID first."""
        self.connect()
        found = self._command("SEARCH", "SEARCH", "UNDELETED", "UNKEYWORD", HANDLED)
        uids = sorted({int(n) for chunk in found if chunk for n in chunk.split()})
        for start in range(0, len(uids), BATCH):
            batch = uids[start : start + BATCH]
            data = self._command("FETCH", "FETCH", _uid_set(batch), "(UID BODY.PEEK[])")
            for uid, raw in _fetched(data):
                yield Item(source_id(self.url.folder, self._uidvalidity, uid), raw)

    def handled(self, item: Item) -> None:
        """Mark one message read by this source as done: flag it, then move or delete it
        when asked."""
        uid = self._uid_of(item)
        self._command("STORE", "STORE", uid, "+FLAGS.SILENT", f"(\\Seen {HANDLED})")
        if self._move_to is not None:
            target = mailbox_name(self._move_to)
            if "MOVE" in self._capabilities:
                self._command("MOVE", "MOVE", uid, target)
            else:
                self._command("COPY", "COPY", uid, target)
                self._remove(uid)
        elif self._delete:
            self._remove(uid)

    def _remove(self, uid: str) -> None:
        self._command("STORE", "STORE", uid, "+FLAGS.SILENT", "(\\Deleted)")
        if "UIDPLUS" in self._capabilities:
            self._command("EXPUNGE", "EXPUNGE", uid)
        else:  # without UID EXPUNGE (RFC 4315), EXPUNGE removes every \Deleted message
            imap = self._session()
            try:
                imap.expunge()
            except (imaplib.IMAP4.error, OSError, EOFError) as exc:
                raise UnreachableError(
                    f"IMAP server {self.url.where}: EXPUNGE failed: {_why(exc)}"
                ) from None

    def _uid_of(self, item: Item) -> str:
        match = _SOURCE.match(item.source)
        if (
            match is None
            or match["folder"] != self.url.folder
            or int(match["validity"]) != self._uidvalidity
        ):
            raise TxsendError(f"not a message of this IMAP folder: {item.source}")
        return match["uid"]

    def close(self) -> None:
        """Log out (never CLOSE, which would expunge what others flagged \\Deleted)."""
        imap, self._imap = self._imap, None
        if imap is not None:
            _logout(imap)

    def __enter__(self) -> ImapSource:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class _Bounded(imaplib.IMAP4):
    """An IMAP session whose every exchange ends within `timeout`: the greeting, and each
    command with all of its answer. imaplib's timeout bounds one socket read only, so a
    server that drips bytes, or untagged lines without end, would keep it forever; here
    every read of the socket gets what is left of the exchange's time, and none is left
    once it has passed."""

    _limit: float | None = None
    _deadline = 0.0
    _reader: io.BufferedReader | None = None
    _read_from: object = None  # the socket it reads (another one once STARTTLS is done)

    def _start_exchange(self) -> None:
        if self._limit is not None:
            self._deadline = time.monotonic() + self._limit

    def _left(self) -> float | None:
        if self._limit is None:
            return None
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("timed out")
        return left

    def _buffered(self) -> io.BufferedReader:
        if self._reader is None or self._read_from is not self.sock:
            # a new socket (TLS just began): what was buffered before it is dropped
            self._reader = io.BufferedReader(_DeadlineReads(self))
            self._read_from = self.sock
        return self._reader

    def read(self, size: int) -> bytes:
        return self._buffered().read(size)

    def readline(self) -> bytes:
        line = self._buffered().readline(MAX_LINE + 1)
        if len(line) > MAX_LINE:
            raise self.error(f"got more than {MAX_LINE} bytes")
        return line

    def send(self, data: ReadableBuffer) -> None:
        self._start_exchange()
        self.sock.settimeout(self._left())
        super().send(data)


class _DeadlineReads(io.RawIOBase):
    """The session's current socket as a raw stream, each read bounded by the exchange's
    time left."""

    def __init__(self, session: _Bounded) -> None:
        self._session = session

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        sock = self._session.sock
        sock.settimeout(self._session._left())
        return sock.recv_into(buffer)


class _Plain(_Bounded):
    """imaplib.IMAP4 (plain, or STARTTLS later) with every exchange bounded."""

    def open(self, host: str = "", port: int = 143, timeout: float | None = None) -> None:
        self._limit = timeout
        self._start_exchange()  # the greeting
        super().open(host, port, timeout)


class _ImplicitTls(_Bounded, imaplib.IMAP4_SSL):
    """IMAP4_SSL with every exchange bounded, whose socket is closed when the TLS handshake
    fails (imaplib leaves it to the garbage collector). open() is the documented place to
    change how a session connects."""

    def open(self, host: str = "", port: int | None = 993, timeout: float | None = None) -> None:
        self.host, self.port = host, 993 if port is None else port
        self._limit = timeout
        self._start_exchange()  # the handshake and the greeting
        raw = socket.create_connection((host, self.port), timeout)
        try:
            self.sock = self.ssl_context.wrap_socket(raw, server_hostname=host)
        except BaseException:
            raw.close()
            raise
        self.file = self.sock.makefile("rb")


def _fetched(data: list[Any]) -> Iterator[tuple[int, bytes]]:
    """(UID, raw message) from imaplib's answer to UID FETCH (UID BODY.PEEK[]): a list of
    (b'n (UID u BODY[] {size}', literal) tuples, each followed by b')' or b' UID u)'."""
    for index, entry in enumerate(data):
        if not isinstance(entry, tuple) or len(entry) != 2:
            continue
        head, raw = entry
        match = _UID.search(head)
        if match is None and index + 1 < len(data) and isinstance(data[index + 1], bytes):
            match = _UID.search(data[index + 1])  # a server may send UID after the body
        if match is not None and isinstance(raw, bytes):
            yield int(match.group(1)), raw


def _uid_set(uids: list[int]) -> str:
    """1,2,3,7 → "1:3,7"."""
    ranges: list[str] = []
    first = last = uids[0]
    for uid in uids[1:]:
        if uid == last + 1:
            last = uid
            continue
        ranges.append(f"{first}:{last}" if last > first else str(first))
        first = last = uid
    ranges.append(f"{first}:{last}" if last > first else str(first))
    return ",".join(ranges)


def _text(data: Any) -> str:
    """The server's words from imaplib's data list, one line."""
    if isinstance(data, list | tuple):
        parts = [d.decode("utf-8", "replace") if isinstance(d, bytes) else str(d) for d in data]
        return " ".join(p for p in parts if p and p != "None").strip() or "no reason given"
    return str(data)


def _why(exc: BaseException) -> str:
    """One line for an exception: its text, else its class name."""
    if isinstance(exc, socket.timeout | TimeoutError):
        return "timed out"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, socket.gaierror):
        return f"host not found ({exc.strerror})"
    text = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    # imaplib says "LOGIN command error: BAD [b'...']": keep the server's words
    text = re.sub(r"\[b(['\"])(.*?)\1\]", r"\2", text)
    text = " ".join(text.split())
    return text or type(exc).__name__


def _logout(imap: imaplib.IMAP4) -> None:
    """LOGOUT, ignoring a session already broken; the socket is closed either way."""
    try:
        imap.logout()
    except (imaplib.IMAP4.error, OSError, EOFError):
        with contextlib.suppress(OSError):
            imap.shutdown()
