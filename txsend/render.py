"""Render one message per recipient row: Jinja2 templates to RFC 5322 / MIME bytes.

`Renderer.render` is the hot path: everything constant for the job is compiled and
encoded once in `Renderer.__init__`, so per row there are only the Jinja renders, the
header-injection and address checks, and a few string joins. `Renderer.render_slow`
builds the same message with `email.message.EmailMessage`; it is the reference the
tests compare the fast path against.
"""

from __future__ import annotations

import binascii
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import formataddr, formatdate
from types import CodeType
from typing import Any

import jinja2
from jinja2.sandbox import SandboxedEnvironment

from txsend.errors import JobError, RowError, UsageError
from txsend.models import Job, RenderedMessage, Row, Template

CRLF = "\r\n"
MAX_LINE = 998  # RFC 5322 section 2.1.1: MUST
FOLD_AT = 78  # RFC 5322 section 2.1.1: SHOULD

# Anything str.splitlines() treats as a line break, plus the other C0 controls and DEL;
# EmailMessage refuses the same set, and none of it may reach a header line.
_BAD_HEADER_CHAR = re.compile("[\x00-\x08\x0a-\x1f\x7f\x85\u2028\u2029]")
_LINE_BREAK = re.compile("[\r\n\x0b\x0c\x1c-\x1e\x85\u2028\u2029]")
# Text that a reader would decode as an RFC 2047 encoded-word must itself be encoded.
_ENCODED_WORD = re.compile(r"=\?[^?\s]*\?[bBqQ]\?")
# A fold point: whitespace after a non-blank, with something non-blank still to come,
# so that no folded line is blank.
_FOLD_POINT = re.compile(r"(?<=\S)[ \t](?=[ \t]*\S)")
_LOCAL_PART = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+"
_DOMAIN = r"(?:[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*|\[[A-Za-z0-9:.]+\])"
_ADDR_SPEC = re.compile(f"{_LOCAL_PART}@{_DOMAIN}")
_LOCAL_PART_RE = re.compile(_LOCAL_PART)
_DOMAIN_RE = re.compile(_DOMAIN)
_NAME_ADDR = re.compile(r"\s*(.*?)\s*<([^<>]*)>\s*", re.DOTALL)
_HEADER_NAME = re.compile(r"[!-9;-~]+")  # RFC 5322 ftext
_TEMPLATE_MARKERS = ("{{", "{%", "{#")
_INLINE_ORIGIN = re.compile(r"(.+):(\d+)")
_UNDEFINED_NAME = re.compile(r"'(.+)' is undefined")
# Headers txsend writes itself; a job header with one of these names would duplicate it.
_RESERVED_HEADERS = frozenset(
    {
        "date",
        "from",
        "reply-to",
        "to",
        "subject",
        "message-id",
        "mime-version",
        "content-type",
        "content-transfer-encoding",
    }
)
_PARTS = ("text", "html", "subject")


def message_id_domain(from_addr: str) -> str:
    """Return the (A-label) domain of a From address, for Message-IDs."""
    _name, addr = _split_mailbox(from_addr)
    try:
        checked = _check_address(addr)
    except ValueError as exc:
        raise JobError(f"invalid From address {from_addr!r}: {exc}") from None
    return checked.rpartition("@")[2].lower()


def new_message_id(domain: str) -> str:
    """Return a new random Message-ID, angle brackets included."""
    return f"<{secrets.token_hex(16)}@{domain}>"


def _finalize(value: Any) -> Any:
    # JSONL null would otherwise render as the word "None" in a customer's email.
    return "" if value is None else value


def _new_boundary() -> str:
    # "=_" cannot occur in quoted-printable output, so only 7bit parts can ever clash.
    return "=_txsend_" + secrets.token_hex(12)


class _Compiled:
    """One compiled template, or its constant output, and where it came from."""

    __slots__ = ("constant", "filename", "label", "strip", "template")

    def __init__(
        self,
        env: SandboxedEnvironment,
        source: str,
        *,
        label: str,
        file: str,
        base_line: int | None,
        strip: bool = False,
    ) -> None:
        # base_line: the file line of the template's first line; None when the template
        # is a value inside the job file whose line is unknown (then the label says which).
        self.label = label  # "templates/welcome.txt", "job.yaml:12", "job.yaml (headers.X)"
        self.filename = label
        self.constant: str | None = None
        # Header values lose surrounding blanks: they carry no meaning, and readers
        # disagree on keeping them (an encoded leading space survives, a plain one not).
        self.strip = strip
        try:
            code = env.compile(source, name=label, filename=label)
            assert isinstance(code, CodeType)
            # A plain dict, not make_globals()'s ChainMap: every render copies the globals
            # into a new context, and copying a ChainMap costs more than the render itself.
            self.template = env.template_class.from_code(env, code, dict(env.globals))
        except jinja2.TemplateSyntaxError as exc:
            if base_line is None:
                message = f"template syntax error in {label}, line {exc.lineno}: {exc.message}"
                raise JobError(message, file=file) from None
            line = base_line + exc.lineno - 1
            raise JobError(f"template syntax error: {exc.message}", file=file, line=line) from None
        if not any(marker in source for marker in _TEMPLATE_MARKERS):
            self.constant = self.template.render()
            if strip:
                self.constant = self.constant.strip(" \t")

    def render(self, data: Mapping[str, Any], row: Row) -> str:
        """Render with a row's data; any Jinja or runtime error becomes a RowError."""
        if self.constant is not None:
            return self.constant
        try:
            out = self.template.render(data)
        except jinja2.UndefinedError as exc:
            where = self._where(exc)
            match = _UNDEFINED_NAME.fullmatch(exc.message or "")
            if match:
                reason = f"undefined variable '{match[1]}' in {where}"
            else:
                reason = f"undefined value in {where}: {exc.message}"
            raise RowError(reason, row=row.number, key=row.key) from exc
        except Exception as exc:
            reason = f"template error in {self._where(exc)}: {type(exc).__name__}: {exc}"
            raise RowError(reason, row=row.number, key=row.key) from exc
        return out.strip(" \t") if self.strip else out

    def _where(self, exc: BaseException) -> str:
        # Jinja rewrites tracebacks so template frames carry the template's file and line.
        line = None
        tb = exc.__traceback__
        while tb is not None:
            if tb.tb_frame.f_code.co_filename == self.filename:
                line = tb.tb_lineno
            tb = tb.tb_next
        if line is None:
            return self.label
        match = _INLINE_ORIGIN.fullmatch(self.label)
        if match:
            return f"{match[1]}:{int(match[2]) + line - 1}"
        return f"{self.label}:{line}"


@dataclass(frozen=True, slots=True)
class _Fields:
    """The per-row values both render paths share."""

    rcpt: str
    name: str
    subject: str
    headers: tuple[tuple[str, str], ...]
    text: str | None
    html: str | None


class Renderer:
    """Turns recipient rows into complete RFC 5322 messages for one job."""

    def __init__(self, job: Job) -> None:
        """Compile every template and precompute everything constant for the job."""
        if job.text is None and job.html is None:
            raise JobError("the job has neither a text nor an html template", file=str(job.source))
        self.job = job
        common: dict[str, Any] = {"undefined": jinja2.StrictUndefined, "finalize": _finalize}
        body_env = SandboxedEnvironment(autoescape=False, keep_trailing_newline=True, **common)
        html_env = SandboxedEnvironment(autoescape=True, keep_trailing_newline=True, **common)
        # Header templates drop one trailing newline (Jinja's default): a subject kept in
        # a file nearly always ends with one, and it must not count as header injection.
        header_env = SandboxedEnvironment(autoescape=False, keep_trailing_newline=False, **common)
        source = str(job.source)

        self._subject = self._compile(header_env, job.subject, strip=True)
        self._text = self._compile(body_env, job.text) if job.text else None
        self._html = self._compile(html_env, job.html) if job.html else None
        self._name: _Compiled | None = None
        if job.recipients.name:
            self._name = _Compiled(
                header_env,
                job.recipients.name,
                label=f"{source} (recipients.name)",
                file=source,
                base_line=None,
                strip=True,
            )

        self._headers: list[tuple[str, _Compiled]] = []
        for hname, hvalue in job.headers.items():
            if not _HEADER_NAME.fullmatch(hname):
                raise JobError(f"invalid header name {hname!r}", file=source)
            if hname.lower() in _RESERVED_HEADERS:
                raise JobError(f"header {hname!r} is set by txsend itself", file=source)
            compiled = _Compiled(
                header_env,
                str(hvalue),
                label=f"{source} (headers.{hname})",
                file=source,
                base_line=None,
                strip=True,
            )
            if compiled.constant is not None and _BAD_HEADER_CHAR.search(compiled.constant):
                raise JobError(f"line break or control character in header {hname}", file=source)
            self._headers.append((hname, compiled))
        self._headers_constant = all(c.constant is not None for _, c in self._headers)
        # MIME-Version and every constant custom header, in job order, as one string.
        self._after_mid = "MIME-Version: 1.0\r\n"
        if self._headers_constant:
            self._after_mid += "".join(
                f"{n}: {_unstructured(n, c.constant or '')}\r\n" for n, c in self._headers
            )

        from_name, from_addr = self._job_mailbox(job.from_addr, "From")
        self.mail_from = from_addr
        self._from = (from_name, from_addr)
        self._reply_to: tuple[str, str] | None = None
        lines = f"From: {_mailbox('From', from_name, from_addr)}\r\n"
        if job.reply_to:
            self._reply_to = self._job_mailbox(job.reply_to, "Reply-To")
            lines += f"Reply-To: {_mailbox('Reply-To', *self._reply_to)}\r\n"
        self._from_lines = lines

        self._subject_const: str | None = None
        if self._subject.constant is not None:
            self._check_constant_header("Subject", self._subject.constant)
            self._subject_const = _unstructured("Subject", self._subject.constant)

        self._boundary = _new_boundary()
        self._mime = _MimeLayout(self._boundary)
        self._date_sec = -1
        self._date = ""

    def _compile(
        self, env: SandboxedEnvironment, tpl: Template, *, strip: bool = False
    ) -> _Compiled:
        base_line = 1
        file = tpl.origin
        if tpl.path is None:
            # Inline template "job.yaml:12": report errors as job.yaml:(12 + line - 1).
            match = _INLINE_ORIGIN.fullmatch(tpl.origin)
            if match:
                file, base_line = match[1], int(match[2])
        return _Compiled(
            env, tpl.source, label=tpl.origin, file=file, base_line=base_line, strip=strip
        )

    def _job_mailbox(self, value: str, what: str) -> tuple[str, str]:
        name, addr = _split_mailbox(value)
        try:
            checked = _check_address(addr)
        except ValueError as exc:
            message = f"invalid {what} address {value!r}: {exc}"
            raise JobError(message, file=str(self.job.source)) from None
        if _BAD_HEADER_CHAR.search(name):
            raise JobError(f"control character in {what} name", file=str(self.job.source))
        return name, checked

    def _check_constant_header(self, what: str, value: str) -> None:
        if _BAD_HEADER_CHAR.search(value):
            raise JobError(f"line break or control character in {what}", file=str(self.job.source))

    def _now(self) -> str:
        sec = int(time.time())
        if sec != self._date_sec:
            self._date = formatdate(sec, localtime=True)
            self._date_sec = sec
        return self._date

    def _fields(self, row: Row) -> _Fields:
        """Render and check every per-row value; raise RowError for anything unsendable."""
        data = row.data
        try:
            rcpt = _check_address(row.address.strip())
        except ValueError as exc:
            reason = f"invalid address {row.address!r}: {exc}"
            raise RowError(reason, row=row.number, key=row.key) from None
        name = ""
        if self._name is not None:
            name = self._name.render(data, row)
            _check_header(name, "display name", row)
        subject = self._subject.render(data, row)
        _check_header(subject, "Subject", row)
        headers: tuple[tuple[str, str], ...] = ()
        if self._headers:
            rendered = []
            for hname, compiled in self._headers:
                value = compiled.render(data, row)
                _check_header(value, hname, row)
                rendered.append((hname, value))
            headers = tuple(rendered)
        text = self._text.render(data, row) if self._text is not None else None
        html = self._html.render(data, row) if self._html is not None else None
        return _Fields(rcpt, name, subject, headers, text, html)

    def render(self, row: Row, message_id: str, *, date: str | None = None) -> RenderedMessage:
        """Render one row into the bytes to send (fast path)."""
        f = self._fields(row)
        if self._subject_const is not None:
            subject = self._subject_const
        else:
            subject = _unstructured("Subject", f.subject)
        if self._headers_constant:
            after_mid = self._after_mid
        else:
            after_mid = self._after_mid + "".join(
                f"{n}: {_unstructured(n, v)}\r\n" for n, v in f.headers
            )
        head = (
            f"Date: {date or self._now()}\r\n{self._from_lines}"
            f"To: {_mailbox('To', f.name, f.rcpt)}\r\nSubject: {subject}\r\n"
            f"Message-ID: {message_id}\r\n{after_mid}"
        ).encode("ascii")

        if f.text is not None and f.html is not None:
            text, text_cte = _encode_body(f.text)
            html, html_cte = _encode_body(f.html)
            mime = self._mime
            if mime.clashes(text) or mime.clashes(html):
                mime = _MimeLayout(_new_boundary())
                while mime.clashes(text) or mime.clashes(html):
                    mime = _MimeLayout(_new_boundary())
            data = b"".join(
                (
                    head,
                    mime.start,
                    _PART_HEADERS["plain", text_cte],
                    text,
                    mime.delimiter,
                    _PART_HEADERS["html", html_cte],
                    html,
                    mime.close,
                )
            )
        elif f.text is not None:
            text, cte = _encode_body(f.text)
            data = b"".join((head, _PART_HEADERS["plain", cte], text))
        else:
            assert f.html is not None
            html, cte = _encode_body(f.html)
            data = b"".join((head, _PART_HEADERS["html", cte], html))
        return RenderedMessage(key=row.key, mail_from=self.mail_from, rcpt_to=f.rcpt, data=data)

    def render_slow(self, row: Row, message_id: str, *, date: str) -> bytes:
        """Build the same message with EmailMessage (reference path, for tests)."""
        f = self._fields(row)
        msg = EmailMessage(policy=SMTP)
        msg["Date"] = date
        msg["From"] = Address(display_name=self._from[0], addr_spec=self._from[1])
        if self._reply_to is not None:
            msg["Reply-To"] = Address(display_name=self._reply_to[0], addr_spec=self._reply_to[1])
        msg["To"] = Address(display_name=f.name, addr_spec=f.rcpt)
        msg["Subject"] = f.subject
        msg["Message-ID"] = message_id
        msg["MIME-Version"] = "1.0"
        for hname, value in f.headers:
            msg[hname] = value
        if f.text is not None:
            text, cte = _normalise_body(f.text)
            msg.set_content(text, subtype="plain", charset="utf-8", cte=cte)
        if f.html is not None:
            html, cte = _normalise_body(f.html)
            if f.text is not None:
                msg.add_alternative(html, subtype="html", charset="utf-8", cte=cte)
            else:
                msg.set_content(html, subtype="html", charset="utf-8", cte=cte)
        if msg.is_multipart():
            msg.set_boundary(self._boundary)
        return msg.as_bytes()

    def render_part(self, row: Row, part: str) -> str:
        """Return one rendered template ("text", "html" or "subject") for a row."""
        if part not in _PARTS:
            raise UsageError(f"unknown part {part!r}; expected one of {', '.join(_PARTS)}")
        if part == "subject":
            subject = self._subject.render(row.data, row)
            _check_header(subject, "Subject", row)
            return subject
        compiled = self._text if part == "text" else self._html
        if compiled is None:
            raise RowError(f"the job has no {part} template", row=row.number, key=row.key)
        return compiled.render(row.data, row)


class _MimeLayout:
    """The constant multipart/alternative framing for one boundary."""

    __slots__ = ("boundary", "close", "delimiter", "start")

    def __init__(self, boundary: str) -> None:
        self.boundary = boundary.encode("ascii")
        self.start = (
            f'Content-Type: multipart/alternative; boundary="{boundary}"\r\n\r\n--{boundary}\r\n'
        ).encode("ascii")
        # The CRLF before "--boundary" belongs to the delimiter (RFC 2046 section 5.1.1),
        # so a part body "x\r\n" is followed by "\r\n--boundary", as email.generator does.
        self.delimiter = f"\r\n--{boundary}\r\n".encode("ascii")
        self.close = f"\r\n--{boundary}--\r\n".encode("ascii")

    def clashes(self, body: bytes) -> bool:
        """Whether the boundary string occurs in an encoded part body."""
        return self.boundary in body


_PART_HEADERS = {
    (subtype, cte): (
        f'Content-Type: text/{subtype}; charset="utf-8"\r\nContent-Transfer-Encoding: {cte}\r\n\r\n'
    ).encode("ascii")
    for subtype in ("plain", "html")
    for cte in ("7bit", "quoted-printable")
}


def _normalise_body(body: str) -> tuple[str, str]:
    """LF line endings, a final newline, and the transfer encoding the body needs."""
    if "\r" in body:
        body = body.replace("\r\n", "\n").replace("\r", "\n")
    if not body.endswith("\n"):
        body += "\n"
    if (
        body.isascii()
        and "\x00" not in body
        # body ends with "\n", so a body of <= 999 chars has no line over 998.
        and (len(body) <= MAX_LINE + 1 or max(map(len, body.split("\n"))) <= MAX_LINE)
    ):
        return body, "7bit"
    return body, "quoted-printable"


def _encode_body(body: str) -> tuple[bytes, str]:
    """The encoded part body with CRLF line endings, and its Content-Transfer-Encoding."""
    body, cte = _normalise_body(body)
    crlf = body.replace("\n", "\r\n")
    if cte == "7bit":
        return crlf.encode("ascii"), cte
    # b2a_qp keeps CRLF line ends when the data uses them, and soft-breaks at 76.
    return binascii.b2a_qp(crlf.encode("utf-8"), istext=True), cte


def _check_header(value: str, what: str, row: Row) -> None:
    """Refuse a rendered header value that would break out of its header line."""
    bad = _BAD_HEADER_CHAR.search(value)
    if bad is not None:
        kind = "line break" if _LINE_BREAK.match(bad.group()) else "control character"
        raise RowError(f"{kind} in {what} from data; row skipped", row=row.number, key=row.key)


def _unstructured(name: str, value: str) -> str:
    """The body of an unstructured header line: as is, folded, or RFC 2047-encoded."""
    if value.isascii() and ("=?" not in value or _ENCODED_WORD.search(value) is None):
        if len(name) + 2 + len(value) <= FOLD_AT:
            return value
        folded = _fold(len(name) + 2, value)
        if folded is not None:
            return folded
    return _encoded_words(len(name) + 2, value)


def _encoded_words(prefix: int, value: str) -> str:
    """RFC 2047 B-encode value as utf-8 encoded-words, one per line, lines <= 78 columns."""
    data = value.encode("utf-8")
    # An encoded-word is at most 75 chars: 12 for "=?utf-8?b??=", so 60 base64 chars
    # (45 octets). The first one also shares its line with "Name: ".
    size = max(4, (FOLD_AT - prefix - 12) // 4 * 3)
    words = []
    pos = 0
    end = len(data)
    while pos < end:
        stop = pos + size
        if stop < end:
            # Prefer to end a word just after a space: RFC 2047 readers drop the folding
            # whitespace between words, but some (Python's address parser) keep it, and a
            # stray space is better there between words than inside one.
            space = data.rfind(b" ", pos + size // 3, stop)
            if space >= 0:
                stop = space + 1
            else:
                # Never split a UTF-8 sequence: back off over continuation octets.
                while stop > pos + 1 and data[stop] & 0xC0 == 0x80:
                    stop -= 1
        words.append(binascii.b2a_base64(data[pos:stop], newline=False).decode("ascii"))
        pos = stop
        size = 45
    return "\r\n ".join([f"=?utf-8?b?{word}?=" for word in words])


def _fold(prefix: int, value: str) -> str | None:
    """Fold ASCII text at whitespace to <= 78 columns where possible; None if a line > 998."""
    lines = []
    start = 0
    last = -1  # the last fold point seen on the current line
    width = FOLD_AT - prefix
    for match in _FOLD_POINT.finditer(value):
        pos = match.start()
        if pos - start > width and last > start:
            lines.append(value[start:last])
            start = last
            width = FOLD_AT
        last = pos
    if len(value) - start > width and last > start:
        lines.append(value[start:last])
        start = last
    lines.append(value[start:])
    if len(lines[0]) + prefix > MAX_LINE or any(len(line) > MAX_LINE for line in lines[1:]):
        return None
    return CRLF.join(lines)


def _mailbox(field: str, name: str, addr: str) -> str:
    """A header value for one mailbox: `addr`, `Name <addr>`, or an encoded name."""
    if not name:
        return addr
    if name.isascii() and ("=?" not in name or _ENCODED_WORD.search(name) is None):
        value = formataddr((name, addr))
        if len(field) + 2 + len(value) <= FOLD_AT:
            return value
        # Folding inside the quoted display name is fine: FWS is allowed there and
        # unfolding gives the same text back.
        folded = _fold(len(field) + 2, value)
        if folded is not None:
            return folded
    encoded = _encoded_words(len(field) + 2, name)
    last_line = encoded.rpartition("\n")[2]
    used = len(last_line) + (0 if "\n" in encoded else len(field) + 2)
    sep = " " if used + len(addr) + 3 <= FOLD_AT else "\r\n "
    return f"{encoded}{sep}<{addr}>"


def _split_mailbox(value: str) -> tuple[str, str]:
    """Split "Name <addr>" (quoted or not) or a bare address into (name, addr)."""
    match = _NAME_ADDR.fullmatch(value)
    if match is None:
        return "", value.strip()
    name = match[1]
    if len(name) >= 2 and name[0] == '"' and name[-1] == '"':
        name = re.sub(r"\\(.)", r"\1", name[1:-1])
    return name, match[2].strip()


def _check_address(addr: str) -> str:
    """Return the envelope form of an addr-spec (A-label domain), or raise ValueError(reason)."""
    if _ADDR_SPEC.fullmatch(addr):
        return addr
    if _LINE_BREAK.search(addr):
        raise ValueError("line break in address")
    if _BAD_HEADER_CHAR.search(addr):
        raise ValueError("control character in address")
    if not addr:
        raise ValueError("empty address")
    if any(ch.isspace() for ch in addr):
        raise ValueError("space in address")
    if "<" in addr or ">" in addr:
        raise ValueError("'<' or '>' in address")
    ats = addr.count("@")
    if ats != 1:
        raise ValueError("no '@' in address" if ats == 0 else "more than one '@' in address")
    local, _, domain = addr.partition("@")
    if not local:
        raise ValueError("empty local part")
    if not domain:
        raise ValueError("empty domain")
    if not local.isascii():
        raise ValueError("non-ASCII local part needs SMTPUTF8, not supported yet")
    if not _LOCAL_PART_RE.fullmatch(local):
        raise ValueError("invalid character in local part")
    if not domain.isascii():
        try:
            domain = domain.encode("idna").decode("ascii")
        except UnicodeError:
            raise ValueError("invalid international domain name") from None
    if not _DOMAIN_RE.fullmatch(domain):
        raise ValueError("invalid domain")
    return f"{local}@{domain}"
