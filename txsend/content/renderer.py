"""Render one message per recipient row: Jinja2 templates to RFC 5322 / MIME bytes.

`Renderer.render` is the hot path: everything constant for the job is compiled and
encoded once in `Renderer.__init__`, so per row there are only the Jinja renders, the
header-injection and address checks, and a few string joins. `Renderer.render_slow`
builds the same message with `email.message.EmailMessage`; it is the reference the
tests compare the fast path against.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import formataddr, formatdate
from types import CodeType, ModuleType
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import idna
import jinja2
from jinja2.sandbox import SandboxedEnvironment

from txsend.content.attachments import Part, PathEscapes, attachment_part, confine, inline_part
from txsend.content.mime import MAX_LINE, Framer, normalise_body, text_leaf
from txsend.errors import (
    JobError,
    MissingInputError,
    RowError,
    RowFailed,
    TemplateRowError,
    UsageError,
)
from txsend.models import AttachmentSpec, Content, Job, RenderedMessage, Row, Template

if TYPE_CHECKING:
    from txsend.content.dkim import DkimSigner

CRLF = "\r\n"
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
# RFC 6531 section 3.3: with SMTPUTF8, any non-ASCII character is atext too.
_LOCAL_PART_UTF8 = re.compile(r"(?:[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]|[^\x00-\x7f])+")
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
# A cid: URL in an attribute or url(...) (RFC 2392); the name is a file in the job's folder.
_CID = re.compile(r"""\bcid:([^"'\s)>]+)""", re.IGNORECASE)
_BAD_FILENAME = frozenset("/\\\r\n\x00\t\x7f")


def message_id_domain(from_addr: str) -> str:
    """Return the (A-label) domain of a From address, for Message-IDs."""
    _name, addr = _split_mailbox(from_addr)
    try:
        checked = _check_address(addr)
    except ValueError as exc:
        raise JobError(f"invalid From address {from_addr!r}: {exc}") from None
    return checked.rpartition("@")[2].lower()


_RANDOM = bytearray()  # os.urandom bytes drawn 4 KB at a time, 16 per Message-ID


def new_message_id(domain: str) -> str:
    """Return a new random Message-ID (128 random bits), angle brackets included."""
    global _RANDOM
    if len(_RANDOM) < 16:
        _RANDOM = bytearray(os.urandom(4096))
    part = _RANDOM[-16:]
    del _RANDOM[-16:]
    return f"<{part.hex()}@{domain}>"


def _finalize(value: Any) -> Any:
    # JSONL null would otherwise render as the word "None" in a customer's email.
    return "" if value is None else value


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
            raise TemplateRowError(reason, row=row.number, key=row.key) from exc
        except Exception as exc:
            reason = f"template error in {self._where(exc)}: {type(exc).__name__}: {exc}"
            raise TemplateRowError(reason, row=row.number, key=row.key) from exc
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
    images: tuple[Part, ...]
    files: tuple[Part, ...]


@dataclass(frozen=True, slots=True)
class _RowFile:
    """An attachment whose path or file name depends on the row."""

    spec: AttachmentSpec
    path: _Compiled
    filename: _Compiled | None


class Renderer:
    """Turns recipient rows into complete RFC 5322 messages for one job."""

    def __init__(self, job: Job) -> None:
        """Compile every template, read shared files, precompute everything constant."""
        content = job.content
        if job.text is None and job.html is None and content.markdown is None:
            raise JobError("the job has neither a text nor an html template", file=str(job.source))
        self.job = job
        common: dict[str, Any] = {"undefined": jinja2.StrictUndefined, "finalize": _finalize}
        body_env = SandboxedEnvironment(autoescape=False, keep_trailing_newline=True, **common)
        html_env = SandboxedEnvironment(autoescape=True, keep_trailing_newline=True, **common)
        # Header templates drop one trailing newline (Jinja's default): a subject kept in
        # a file nearly always ends with one, and it must not count as header injection.
        header_env = SandboxedEnvironment(autoescape=False, keep_trailing_newline=False, **common)
        self._header_env = header_env
        source = str(job.source)

        self._subject = self._compile(header_env, job.subject, strip=True)
        self._text = self._compile(body_env, job.text) if job.text else None
        self._html = self._compile(html_env, job.html) if job.html else None
        # Markdown is rendered by Jinja without escaping, then to HTML with raw HTML
        # escaped (htmlparts), so data cannot inject markup either way.
        self._markdown = self._compile(body_env, content.markdown) if content.markdown else None
        self._auto_text = content.auto_text and self._text is None and self._markdown is None
        # Imported only for jobs that use them: they cost a tenth of a second at startup.
        self._htmlparts: ModuleType | None = None
        if self._markdown is not None or content.inline_css or self._auto_text:
            from txsend.content import html as htmlparts

            self._htmlparts = htmlparts
        self._css = htmlparts.CssInliner() if content.inline_css else None
        self._html_memo: tuple[str, str, str | None] | None = None
        self._name: _Compiled | None = None
        if job.recipients.name:
            self._name = self._header_template(job.recipients.name, "recipients.name")

        self._headers: list[tuple[str, _Compiled]] = []
        for hname, hvalue in job.headers.items():
            if not _HEADER_NAME.fullmatch(hname):
                raise JobError(f"invalid header name {hname!r}", file=source)
            if hname.lower() in _RESERVED_HEADERS:
                raise JobError(f"header {hname!r} is set by txsend itself", file=source)
            self._add_header(hname, str(hvalue), f"headers.{hname}")
        self._add_content_headers(content)
        self._headers_constant = all(c.constant is not None for _, c in self._headers)
        # MIME-Version and every constant custom header, in job order, as one string.
        self._after_mid = "MIME-Version: 1.0\r\n"
        if self._headers_constant:
            self._after_mid += "".join(
                f"{n}: {_header_value(n, c.constant or '')}\r\n" for n, c in self._headers
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

        self._framer = Framer()
        self._date_sec = -1
        self._date = ""
        self._base = job.base_dir
        # Attachments whose path is fixed are read and encoded once for the whole run.
        self._files: list[Part | _RowFile] = []
        for spec in content.attachments:
            path = self._header_template(spec.path, "attachments.path", origin=spec.origin)
            filename = None
            if spec.filename is not None:
                filename = self._header_template(
                    spec.filename, "attachments.filename", origin=spec.origin
                )
            if path.constant is not None and (filename is None or filename.constant is not None):
                fixed_name = filename.constant if filename is not None else None
                self._files.append(self._fixed_attachment(spec, path.constant, fixed_name))
            else:
                self._files.append(_RowFile(spec, path, filename))
        self._images: dict[str, Part] = {}
        # For `validate`: messages whose text had lines over 998 (quoted-printable sent),
        # and the largest per-recipient attachment seen.
        self.long_line_messages = 0
        self.largest_row_attachment = 0
        self.warnings: list[str] = []  # about the job, for the run's output
        self.signer: DkimSigner | None = None
        if content.dkim is not None:
            from txsend.content.dkim import DkimSigner

            dkim = content.dkim
            self.signer = DkimSigner(
                domain=dkim.domain,
                selector=dkim.selector,
                key_file=dkim.key_file,
                algorithm=dkim.algorithm,
                headers=dkim.headers,
                source=source,
            )
            self.warnings.extend(self.signer.warnings)

    @property
    def fixed_attachments(self) -> list[tuple[str, int]]:
        """(file name, size as sent) of each attachment every message carries."""
        return [(p.filename, p.size) for p in self._files if isinstance(p, Part)]

    @property
    def has_text_part(self) -> bool:
        """Whether messages carry a text/plain part (written, from Markdown, or auto)."""
        return self._text is not None or self._markdown is not None or self._auto_text

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

    def _header_template(self, value: str, what: str, *, origin: str | None = None) -> _Compiled:
        source = str(self.job.source)
        return _Compiled(
            self._header_env,
            value,
            label=origin or f"{source} ({what})",
            file=source,
            base_line=None,
            strip=True,
        )

    def _add_header(self, hname: str, value: str, what: str) -> None:
        compiled = self._header_template(value, what)
        if compiled.constant is not None and _BAD_HEADER_CHAR.search(compiled.constant):
            raise JobError(
                f"line break or control character in header {hname}", file=str(self.job.source)
            )
        self._headers.append((hname, compiled))

    def _add_content_headers(self, content: Content) -> None:
        """List-Unsubscribe, Feedback-ID, Auto-Submitted, Precedence from the job's keys."""
        taken = {name.lower(): name for name, _ in self._headers}

        def add(hname: str, value: str, key: str) -> None:
            if hname.lower() in taken:
                raise JobError(
                    f"header {taken[hname.lower()]} is also set by {key}: set it in one place",
                    file=str(self.job.source),
                )
            self._add_header(hname, value, key)

        unsubscribe = content.unsubscribe
        if unsubscribe is not None:
            targets = []
            if unsubscribe.url is not None:
                targets.append(f"<{unsubscribe.url}>")
            if unsubscribe.mailto is not None:
                targets.append(f"<mailto:{unsubscribe.mailto}>")
            add("List-Unsubscribe", ", ".join(targets), "unsubscribe")
            if unsubscribe.one_click:
                add("List-Unsubscribe-Post", "List-Unsubscribe=One-Click", "unsubscribe")
            constant = self._headers[-1 - unsubscribe.one_click][1].constant
            if constant is not None:
                problem = _unsubscribe_problem(constant, one_click=unsubscribe.one_click)
                if problem is not None:
                    raise JobError(f"unsubscribe: {problem}", file=str(self.job.source))
        if content.feedback_id is not None:
            add("Feedback-ID", content.feedback_id, "feedback_id")
        auto_submitted = content.auto_submitted
        if auto_submitted is None:
            auto_submitted = content.transactional
        if auto_submitted:
            add("Auto-Submitted", "auto-generated", "transactional")
        if content.precedence is not None:
            add("Precedence", content.precedence, "precedence")

    def _fixed_attachment(self, spec: AttachmentSpec, path: str, filename: str | None) -> Part:
        try:
            return attachment_part(spec, confine(self._base, path), filename)
        except PathEscapes as exc:
            raise JobError(f"attachment {exc}", file=spec.origin) from None
        except OSError as exc:
            raise MissingInputError(
                f"{spec.origin}: attachment {path}: {exc.strerror or exc}",
                hint="paths are relative to the job file's folder",
            ) from None

    def _job_mailbox(self, value: str, what: str) -> tuple[str, str]:
        name, addr = _split_mailbox(value)
        try:
            checked = _check_address(addr)
        except ValueError as exc:
            message = f"invalid {what} address {value!r}: {exc}"
            raise JobError(message, file=str(self.job.source)) from None
        if not checked.isascii():
            raise JobError(
                f"the {what} address {addr!r} has a non-ASCII local part",
                file=str(self.job.source),
                hint="relays without SMTPUTF8 refuse it; use an ASCII address",
            )
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
                if hname == "List-Unsubscribe" and compiled.constant is None:
                    problem = _unsubscribe_problem(value, one_click=self._one_click)
                    if problem is not None:
                        raise RowError(f"unsubscribe: {problem}", row=row.number, key=row.key)
                rendered.append((hname, value))
            headers = tuple(rendered)
        text, html = self._bodies(row, subject)
        images: tuple[Part, ...] = ()
        if html is not None and "cid:" in html:
            images = self._inline_images(html, row)
        files: tuple[Part, ...] = ()
        if self._files:
            files = tuple(self._attachment(item, row) for item in self._files)
        return _Fields(rcpt, name, subject, headers, text, html, images, files)

    @property
    def _one_click(self) -> bool:
        unsubscribe = self.job.content.unsubscribe
        return unsubscribe is not None and unsubscribe.one_click

    def _bodies(self, row: Row, subject: str) -> tuple[str | None, str | None]:
        """The text and html bodies of a row, after Markdown, CSS inlining and auto text."""
        data = row.data
        text = self._text.render(data, row) if self._text is not None else None
        if self._markdown is not None:
            text = self._markdown.render(data, row)
            assert self._htmlparts is not None
            html: str | None = self._htmlparts.markdown_to_html(text, title=subject)
        else:
            html = self._html.render(data, row) if self._html is not None else None
        if html is None or (self._css is None and not self._auto_text):
            return text, html
        memo = self._html_memo
        if memo is not None and memo[0] == html:  # a constant html template: done once
            return (text if not self._auto_text else memo[2]), memo[1]
        source = html
        if self._css is not None:
            try:
                html = self._css.inline(html)
            except ValueError as exc:
                raise RowError(f"inline_css: {exc}", row=row.number, key=row.key) from None
        auto = None
        if self._auto_text:
            assert self._htmlparts is not None
            auto = self._htmlparts.html_to_text(html)
        self._html_memo = (source, html, auto)
        return (text if not self._auto_text else auto), html

    def _inline_images(self, html: str, row: Row) -> tuple[Part, ...]:
        parts = []
        seen = set()
        for match in _CID.finditer(html):
            cid = unquote(match[1])
            if cid in seen:
                continue
            seen.add(cid)
            part = self._images.get(cid)
            if part is None:
                try:
                    part = inline_part(cid, confine(self._base, cid))
                except PathEscapes as exc:
                    raise RowFailed(
                        f"inline image cid:{exc}", row=row.number, key=row.key
                    ) from None
                except OSError as exc:
                    raise RowFailed(
                        f"inline image cid:{cid}: {exc.strerror or exc} in the job's folder",
                        row=row.number,
                        key=row.key,
                    ) from None
                self._images[cid] = part
            parts.append(part)
        return tuple(parts)

    def _attachment(self, item: Part | _RowFile, row: Row) -> Part:
        if isinstance(item, Part):
            return item
        path = item.path.render(row.data, row)
        filename = None
        if item.filename is not None:
            filename = item.filename.render(row.data, row)
            if not filename or any(ch in filename for ch in _BAD_FILENAME):
                reason = f"attachment file name {filename!r} is empty or has / \\ or a control"
                raise RowError(reason, row=row.number, key=row.key)
        try:
            part = attachment_part(item.spec, confine(self._base, path), filename)
        except PathEscapes as exc:
            raise RowFailed(f"attachment {exc}", row=row.number, key=row.key) from None
        except OSError as exc:
            reason = f"attachment {path}: {exc.strerror or exc} in the job's folder"
            raise RowFailed(reason, row=row.number, key=row.key) from None
        self.largest_row_attachment = max(self.largest_row_attachment, part.size)
        return part

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
                f"{n}: {_header_value(n, v)}\r\n" for n, v in f.headers
            )
        head = (
            f"Date: {date or self._now()}\r\n{self._from_lines}"
            f"To: {_mailbox('To', f.name, f.rcpt)}\r\nSubject: {subject}\r\n"
            f"Message-ID: {message_id}\r\n{after_mid}"
        )
        smtputf8 = not f.rcpt.isascii()
        text = text_leaf(f.text, "plain") if f.text is not None else None
        html = text_leaf(f.html, "html") if f.html is not None else None
        if (text is not None and text.long_lines) or (html is not None and html.long_lines):
            self.long_line_messages += 1
        data = head.encode("utf-8" if smtputf8 else "ascii") + self._framer.body(
            text, html, f.images, f.files
        )
        if self.signer is not None:
            data = self.signer.sign(data)
        return RenderedMessage(
            key=row.key, mail_from=self.mail_from, rcpt_to=f.rcpt, data=data, smtputf8=smtputf8
        )

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
        html_part: EmailMessage | None = None
        if f.text is not None:
            text, cte = normalise_body(f.text)
            msg.set_content(text, subtype="plain", charset="utf-8", cte=cte)
        if f.html is not None:
            html, cte = normalise_body(f.html)
            if f.text is not None:
                msg.add_alternative(html, subtype="html", charset="utf-8", cte=cte)
                html_part = msg.get_payload()[1]  # type: ignore[index,assignment]
            else:
                msg.set_content(html, subtype="html", charset="utf-8", cte=cte)
                html_part = msg
        for image in f.images:
            assert html_part is not None
            maintype, _, subtype = image.content_type.partition("/")
            html_part.add_related(
                base64.b64decode(image.body),
                maintype,
                subtype,
                cid=f"<{image.cid}>",
                disposition="inline",
                filename=image.filename,
            )
        for file in f.files:
            maintype, _, subtype = file.content_type.partition("/")
            msg.add_attachment(
                base64.b64decode(file.body), maintype, subtype, filename=file.filename
            )
        data = msg.as_bytes()
        return self.signer.sign(data) if self.signer is not None else data

    def render_part(self, row: Row, part: str) -> str:
        """Return one rendered part ("text", "html" or "subject") of a row, as sent."""
        if part not in _PARTS:
            raise UsageError(f"unknown part {part!r}; expected one of {', '.join(_PARTS)}")
        if part == "subject":
            subject = self._subject.render(row.data, row)
            _check_header(subject, "Subject", row)
            return subject
        subject = self._subject.render(row.data, row)
        text, html = self._bodies(row, subject)
        body = text if part == "text" else html
        if body is None:
            raise RowError(f"the job has no {part} part", row=row.number, key=row.key)
        return body


def _unsubscribe_problem(value: str, *, one_click: bool) -> str | None:
    """Why a rendered List-Unsubscribe value is unusable, or None."""
    for target in value.split(", "):
        if not (target.startswith("<") and target.endswith(">")):
            return f"{target!r} is not one <address>"
        inner = target[1:-1]
        if not inner or any(ch.isspace() or ch in '<>"' for ch in inner):
            return f"{inner!r} has a space, a quote or an angle bracket; use |urlencode"
        if len(inner) > 900:
            return "an address longer than 900 characters"
        scheme = inner.split(":", 1)[0].lower()
        if scheme == "mailto":
            if "@" not in inner:
                return f"{inner!r} is not an email address"
        elif scheme == "https" or (scheme == "http" and not one_click):
            if "://" not in inner or not inner.isascii():
                return f"{inner!r} is not an ASCII https:// URL"
        else:
            return f"{inner!r} is not an https:// or mailto: address"
    return None


def _check_header(value: str, what: str, row: Row) -> None:
    """Refuse a rendered header value that would break out of its header line."""
    bad = _BAD_HEADER_CHAR.search(value)
    if bad is not None:
        kind = "line break" if _LINE_BREAK.match(bad.group()) else "control character"
        raise RowError(f"{kind} in {what} from data; row skipped", row=row.number, key=row.key)


def _header_value(name: str, value: str) -> str:
    """A header value as written: List-Unsubscribe folds only between its <...> entries."""
    if name == "List-Unsubscribe":
        # Never folded inside a URL; relaxed DKIM canonicalisation ignores the folds.
        return ",\r\n ".join(value.split(", ")) if len(value) + 18 > FOLD_AT else value
    return _unstructured(name, value)


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
    if not addr.isascii():  # SMTPUTF8: the address goes in the header as UTF-8 (RFC 6532)
        return _mailbox(field, name, "x@x").replace("<x@x>", f"<{addr}>")
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


def _a_label(domain: str) -> str:
    """An internationalised domain as A-labels (IDNA 2008 with UTS 46 mapping)."""
    try:
        return idna.encode(domain, uts46=True).decode("ascii")
    except idna.IDNAError as exc:
        raise ValueError(f"invalid international domain name ({exc})") from None


def _check_address(addr: str) -> str:
    """Return the envelope form of an addr-spec (A-label domain), or raise ValueError(reason).

    A non-ASCII local part is kept (it needs a relay with SMTPUTF8, RFC 6531); the
    domain is always sent as A-labels, which every relay takes.
    """
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
    if not (_LOCAL_PART_RE if local.isascii() else _LOCAL_PART_UTF8).fullmatch(local):
        raise ValueError("invalid character in local part")
    if not domain.isascii():
        domain = _a_label(domain)
    if not _DOMAIN_RE.fullmatch(domain):
        raise ValueError("invalid domain")
    return f"{local}@{domain}"
