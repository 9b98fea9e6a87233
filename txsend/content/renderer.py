"""Render one message per recipient row: Jinja2 templates to RFC 5322 / MIME bytes.

`Renderer.render` is the hot path: everything constant for the job is compiled and
encoded once in `Renderer.__init__`, so per row there are only the Jinja renders, the
header-injection and address checks, and a few string joins. `Renderer.render_slow`
builds the same message with `email.message.EmailMessage`; it is the reference the
tests compare the fast path against. Templates are compiled by
`txsend.content.templates`, header lines encoded by `txsend.content.headers`, and
addresses checked by `txsend.addresses`, the rule the job loader applies too.
"""

from __future__ import annotations

import base64
import re
import time
from dataclasses import dataclass
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import formatdate
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Protocol
from urllib.parse import unquote

from txsend.addresses import BAD_HEADER_CHAR, envelope_address, split_mailbox
from txsend.content.attachments import Part, attachment_part, inline_part
from txsend.content.headers import (
    check_header,
    header_value,
    mailbox,
    unstructured,
    unsubscribe_problem,
)
from txsend.content.mime import Framer, normalise_body, text_leaf
from txsend.content.templates import CompiledTemplate, compile_template, environments
from txsend.errors import JobError, MissingInputError, RowError, RowFailed, UsageError
from txsend.job.content import FIELD_NAME, RESERVED_HEADERS
from txsend.job.envelope import check_verp_address, verp_pattern
from txsend.job.paths import PathEscapes, confine
from txsend.job.spec import Job
from txsend.models import (
    Addressees,
    AttachmentSpec,
    Content,
    RenderedMessage,
    Row,
    Unsubscribe,
)
from txsend.verp import PLACEHOLDER, make_token

if TYPE_CHECKING:
    from txsend.content.dkim import DkimSigner
    from txsend.content.html import CssInliner

__all__ = ["Renderer", "Renders"]

_PARTS = ("text", "html", "subject")
# A cid: URL in an attribute or url(...) (RFC 2392); the name is a file in the job's folder.
_CID = re.compile(r"""\bcid:([^"'\s)>]+)""", re.IGNORECASE)
_BAD_FILENAME = frozenset("/\\\r\n\x00\t\x7f")


@dataclass(frozen=True, slots=True)
class MessageFields:
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
    path: CompiledTemplate
    filename: CompiledTemplate | None


class Renders(Protocol):
    """What the delivery engine asks of a renderer: a row's message, and the warnings
    about the job for the run's output. `Renderer` is the one for jobs; `txsend send`
    has its own for a message that is the same for every recipient."""

    warnings: list[str]

    def render(self, row: Row, message_id: str) -> RenderedMessage:
        """The message for one row, with the Message-ID the journal gave it."""
        ...


class Renderer:
    """Turns recipient rows into complete RFC 5322 messages for one job."""

    def __init__(self, job: Job, *, verp_secret: bytes | None = None) -> None:
        """Compile every template, read shared files, precompute everything constant.

        With `verp_secret` (the journal's), each message carries its row's VERP token as
        the DSN's ENVID and, when the job asks for `verp:`, in its envelope sender."""
        if job.text is None and job.html is None and job.content.markdown is None:
            raise JobError("the job has neither a text nor an html template", file=str(job.source))
        self.job = job
        self._source = str(job.source)
        self._compile_templates(job)
        self._setup_html(job.content)
        self._headers: list[tuple[str, CompiledTemplate]] = []
        self._add_job_headers(job.headers)
        self._add_content_headers(job.content)
        self._headers_constant = all(c.constant is not None for _, c in self._headers)
        self._after_mid = self._fixed_header_lines()

        self._from = self._job_mailbox(job.from_addr, "From")
        self.mail_from = job.content.envelope.return_path or self._from[1]
        self._secret = verp_secret
        self._verp = self._verp_pattern(job)
        self._reply_to = self._job_mailbox(job.reply_to, "Reply-To") if job.reply_to else None
        self._from_lines = self._sender_lines()
        # `txsend send`: one To/Cc for every copy; None: each copy is addressed to its row
        self._addressed: tuple[str, bool] | None = None
        if job.content.addressees is not None:
            self._addressed = self._addressee_lines(job.content.addressees)
        self._subject_const = self._fixed_subject()

        self._framer = Framer()
        self._date_sec = -1
        self._date = ""
        self._base = job.base_dir
        # Attachments whose path is fixed are read and encoded once for the whole run.
        self._files = [self._prepare_attachment(spec) for spec in job.content.attachments]
        self._images: dict[str, Part] = {}
        # For `validate`: messages whose text had lines over 998 (quoted-printable sent),
        # and the largest per-recipient attachment seen.
        self.long_line_messages = 0
        self.largest_row_attachment = 0
        self.warnings: list[str] = []  # about the job, for the run's output
        self.signer = self._dkim_signer(job.content)

    @property
    def fixed_attachments(self) -> list[tuple[str, int]]:
        """(file name, size as sent) of each attachment every message carries."""
        return [(p.filename, p.size) for p in self._files if isinstance(p, Part)]

    @property
    def has_text_part(self) -> bool:
        """Whether messages carry a text/plain part (written, from Markdown, or auto)."""
        return self._text is not None or self._markdown is not None or self._auto_text

    def _compile_templates(self, job: Job) -> None:
        """The subject, the bodies and the recipient's display name."""
        self._envs = envs = environments()
        self._subject = compile_template(envs.header, job.subject, strip=True)
        self._text = compile_template(envs.body, job.text) if job.text else None
        self._html = compile_template(envs.html, job.html) if job.html else None
        # Markdown is rendered by Jinja without escaping, then to HTML with raw HTML
        # escaped (htmlparts), so data cannot inject markup either way.
        markdown = job.content.markdown
        self._markdown = compile_template(envs.body, markdown) if markdown else None
        self._name: CompiledTemplate | None = None
        if job.recipients.name:
            self._name = self._header_template(job.recipients.name, "recipients.name")

    def _setup_html(self, content: Content) -> None:
        """Load the html helpers the job uses: Markdown, CSS inlining, the auto text part."""
        self._auto_text = content.auto_text and self._text is None and self._markdown is None
        self._htmlparts: ModuleType | None = None
        self._css: CssInliner | None = None
        self._html_memo: tuple[str, str, str | None] | None = None
        if self._markdown is None and not content.inline_css and not self._auto_text:
            return
        # Imported only for jobs that use them: they cost a tenth of a second at startup.
        from txsend.content import html as htmlparts

        self._htmlparts = htmlparts
        if content.inline_css:
            self._css = htmlparts.CssInliner()

    def _header_template(
        self, value: str, what: str, *, origin: str | None = None
    ) -> CompiledTemplate:
        return CompiledTemplate(
            self._envs.header,
            value,
            label=origin or f"{self._source} ({what})",
            file=self._source,
            base_line=None,
            strip=True,
        )

    def _add_job_headers(self, headers: dict[str, str]) -> None:
        """The job's `headers:`, in job order, refusing names txsend writes itself."""
        for hname, hvalue in headers.items():
            if not FIELD_NAME.match(hname):
                raise JobError(f"invalid header name {hname!r}", file=self._source)
            if hname.lower() in RESERVED_HEADERS or hname.lower().startswith("content-"):
                raise JobError(f"header {hname!r} is set by txsend itself", file=self._source)
            self._add_header(hname, str(hvalue), f"headers.{hname}")

    def _add_header(self, hname: str, value: str, what: str) -> None:
        compiled = self._header_template(value, what)
        if compiled.constant is not None and BAD_HEADER_CHAR.search(compiled.constant):
            raise JobError(f"line break or control character in header {hname}", file=self._source)
        self._headers.append((hname, compiled))

    def _add_content_headers(self, content: Content) -> None:
        """List-Unsubscribe, Feedback-ID, Auto-Submitted, Precedence from the job's keys."""
        if content.unsubscribe is not None:
            self._add_unsubscribe(content.unsubscribe)
        if content.feedback_id is not None:
            self._add_keyed_header("Feedback-ID", content.feedback_id, "feedback_id")
        auto_submitted = content.auto_submitted
        if auto_submitted is None:
            auto_submitted = content.transactional
        if auto_submitted:
            self._add_keyed_header("Auto-Submitted", "auto-generated", "transactional")
        if content.precedence is not None:
            self._add_keyed_header("Precedence", content.precedence, "precedence")

    def _add_unsubscribe(self, unsubscribe: Unsubscribe) -> None:
        """List-Unsubscribe (and -Post for one-click), checked now when it is constant."""
        targets = []
        if unsubscribe.url is not None:
            targets.append(f"<{unsubscribe.url}>")
        if unsubscribe.mailto is not None:
            targets.append(f"<mailto:{unsubscribe.mailto}>")
        self._add_keyed_header("List-Unsubscribe", ", ".join(targets), "unsubscribe")
        if unsubscribe.one_click:
            self._add_keyed_header(
                "List-Unsubscribe-Post", "List-Unsubscribe=One-Click", "unsubscribe"
            )
        constant = self._headers[-1 - unsubscribe.one_click][1].constant
        if constant is not None:
            problem = unsubscribe_problem(constant, one_click=unsubscribe.one_click)
            if problem is not None:
                raise JobError(f"unsubscribe: {problem}", file=self._source)

    def _add_keyed_header(self, hname: str, value: str, key: str) -> None:
        """Add a header a job key sets, unless `headers:` sets it too."""
        taken = {name.lower(): name for name, _ in self._headers}
        if hname.lower() in taken:
            raise JobError(
                f"header {taken[hname.lower()]} is also set by {key}: set it in one place",
                file=self._source,
            )
        self._add_header(hname, value, key)

    def _fixed_header_lines(self) -> str:
        """MIME-Version and, when all are constant, every custom header, in job order."""
        lines = "MIME-Version: 1.0\r\n"
        if self._headers_constant:
            lines += "".join(
                f"{n}: {header_value(n, c.constant or '')}\r\n" for n, c in self._headers
            )
        return lines

    def _sender_lines(self) -> str:
        """The From and Reply-To header lines, the same in every message."""
        lines = f"From: {mailbox('From', *self._from)}\r\n"
        if self._reply_to is not None:
            lines += f"Reply-To: {mailbox('Reply-To', *self._reply_to)}\r\n"
        return lines

    def _addressee_lines(self, addressees: Addressees) -> tuple[str, bool]:
        """The To and Cc lines every copy carries, and whether they need SMTPUTF8."""
        lines = ""
        utf8 = False
        for hname, values in (("To", addressees.to), ("Cc", addressees.cc)):
            if not values:
                continue
            boxes = [self._mailbox(name, addr, hname, utf8_ok=True) for name, addr in values]
            utf8 = utf8 or any(not addr.isascii() for _, addr in boxes)
            # one mailbox a line: each folds on its own, and no line grows past 78 columns
            lines += f"{hname}: " + ",\r\n ".join(mailbox(hname, *box) for box in boxes) + "\r\n"
        if not addressees.to:
            lines = "To: undisclosed-recipients:;\r\n" + lines  # RFC 5322 group syntax
        return lines, utf8

    def _fixed_subject(self) -> str | None:
        """The encoded Subject when it is the same for every row, else None."""
        constant = self._subject.constant
        if constant is None:
            return None
        if BAD_HEADER_CHAR.search(constant):
            raise JobError("line break or control character in Subject", file=self._source)
        return unstructured("Subject", constant)

    def _prepare_attachment(self, spec: AttachmentSpec) -> Part | _RowFile:
        """A fixed attachment, read and encoded now, or the templates of a per-row one."""
        if spec.literal:  # a file named on the command line, as it was named
            try:
                return attachment_part(spec, Path(spec.path), spec.filename)
            except OSError as exc:
                raise MissingInputError(
                    f"{spec.origin}: {spec.path}: {exc.strerror or exc}"
                ) from None
        path = self._header_template(spec.path, "attachments.path", origin=spec.origin)
        filename = None
        if spec.filename is not None:
            filename = self._header_template(
                spec.filename, "attachments.filename", origin=spec.origin
            )
        if path.constant is not None and (filename is None or filename.constant is not None):
            fixed_name = filename.constant if filename is not None else None
            return self._fixed_attachment(spec, path.constant, fixed_name)
        return _RowFile(spec, path, filename)

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

    def _dkim_signer(self, content: Content) -> DkimSigner | None:
        """The job's DKIM signer, if it signs; its warnings join the renderer's."""
        dkim = content.dkim
        if dkim is None:
            return None
        # Imported only for jobs that sign: dkimpy takes a fifth of a second to import.
        from txsend.content.dkim import DkimSigner

        signer = DkimSigner(
            domain=dkim.domain,
            selector=dkim.selector,
            key_file=dkim.key_file,
            algorithm=dkim.algorithm,
            headers=dkim.headers,
            source=self._source,
        )
        self.warnings.extend(signer.warnings)
        return signer

    def _job_mailbox(self, value: str, what: str) -> tuple[str, str]:
        return self._mailbox(*split_mailbox(value), what, shown=value)

    def _mailbox(
        self, name: str, addr: str, what: str, *, utf8_ok: bool = False, shown: str = ""
    ) -> tuple[str, str]:
        """(name, address) checked for a header: the address valid, the name one line."""
        value = shown or (f"{name} <{addr}>" if name else addr)
        try:
            checked = envelope_address(addr)
        except ValueError as exc:
            message = f"invalid {what} address {value!r}: {exc}"
            raise JobError(message, file=self._source) from None
        if not checked.isascii() and not utf8_ok:
            raise JobError(
                f"the {what} address {addr!r} has a non-ASCII local part",
                file=self._source,
                hint="relays without SMTPUTF8 refuse it; use an ASCII address",
            )
        if BAD_HEADER_CHAR.search(name):
            raise JobError(f"control character in {what} name", file=self._source)
        return name, checked

    def _now(self) -> str:
        sec = int(time.time())
        if sec != self._date_sec:
            self._date = formatdate(sec, localtime=True)
            self._date_sec = sec
        return self._date

    def _fields(self, row: Row) -> MessageFields:
        """Render and check every per-row value; raise RowError for anything unsendable."""
        data = row.data
        try:
            rcpt = envelope_address(row.address.strip())
        except ValueError as exc:
            reason = f"invalid address {row.address!r}: {exc}"
            raise RowError(reason, row=row.number, key=row.key) from None
        name = ""
        if self._name is not None:
            name = self._name.render(data, row)
            check_header(name, "display name", row)
        subject = self._subject.render(data, row)
        check_header(subject, "Subject", row)
        headers = self._row_headers(row) if self._headers else ()
        text, html = self._bodies(row, subject)
        images: tuple[Part, ...] = ()
        if html is not None and "cid:" in html:
            images = self._inline_images(html, row)
        files: tuple[Part, ...] = ()
        if self._files:
            files = tuple(self._attachment(item, row) for item in self._files)
        return MessageFields(rcpt, name, subject, headers, text, html, images, files)

    def _row_headers(self, row: Row) -> tuple[tuple[str, str], ...]:
        """The custom headers rendered for a row, each checked."""
        rendered = []
        for hname, compiled in self._headers:
            value = compiled.render(row.data, row)
            check_header(value, hname, row)
            if hname == "List-Unsubscribe" and compiled.constant is None:
                problem = unsubscribe_problem(value, one_click=self._one_click)
                if problem is not None:
                    raise RowError(f"unsubscribe: {problem}", row=row.number, key=row.key)
            rendered.append((hname, value))
        return tuple(rendered)

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
            subject = unstructured("Subject", f.subject)
        if self._headers_constant:
            after_mid = self._after_mid
        else:
            after_mid = self._after_mid + "".join(
                f"{n}: {header_value(n, v)}\r\n" for n, v in f.headers
            )
        if self._addressed is None:
            to = f"To: {mailbox('To', f.name, f.rcpt)}\r\n"
            smtputf8 = not f.rcpt.isascii()
        else:
            to = self._addressed[0]
            smtputf8 = self._addressed[1] or not f.rcpt.isascii()
        head = (
            f"Date: {date or self._now()}\r\n{self._from_lines}"
            f"{to}Subject: {subject}\r\n"
            f"Message-ID: {message_id}\r\n{after_mid}"
        )
        text = text_leaf(f.text, "plain") if f.text is not None else None
        html = text_leaf(f.html, "html") if f.html is not None else None
        if (text is not None and text.long_lines) or (html is not None and html.long_lines):
            self.long_line_messages += 1
        data = head.encode("utf-8" if smtputf8 else "ascii") + self._framer.body(
            text, html, f.images, f.files
        )
        if self.signer is not None:
            data = self.signer.sign(data)
        if self._secret is None:
            return RenderedMessage(
                key=row.key, mail_from=self.mail_from, rcpt_to=f.rcpt, data=data, smtputf8=smtputf8
            )
        token = make_token(self._secret, self.job.name, message_id)
        mail_from = self.mail_from if self._verp is None else self._verp.replace(PLACEHOLDER, token)
        return RenderedMessage(
            key=row.key,
            mail_from=mail_from,
            rcpt_to=f.rcpt,
            data=data,
            smtputf8=smtputf8,
            envid=token,
        )

    def envelope_sender(self, message_id: str) -> str:
        """The envelope sender of the message with this Message-ID (for `preview`)."""
        if self._secret is None or self._verp is None:
            return self.mail_from
        return self._verp.replace(PLACEHOLDER, make_token(self._secret, self.job.name, message_id))

    def _verp_pattern(self, job: Job) -> str | None:
        envelope = job.content.envelope
        if not envelope.verp:
            return None
        pattern = envelope.verp_pattern or verp_pattern(self.mail_from)
        problem = check_verp_address(pattern)
        if problem is not None:
            raise JobError(f"verp: {pattern}: {problem}", file=str(job.source))
        return pattern

    def render_slow(self, row: Row, message_id: str, *, date: str) -> bytes:
        """Build the same message with EmailMessage (reference path, for tests)."""
        f = self._fields(row)
        msg = EmailMessage(policy=SMTP)
        msg["Date"] = date
        msg["From"] = Address(display_name=self._from[0], addr_spec=self._from[1])
        if self._reply_to is not None:
            msg["Reply-To"] = Address(display_name=self._reply_to[0], addr_spec=self._reply_to[1])
        addressees = self.job.content.addressees
        if addressees is None:
            msg["To"] = Address(display_name=f.name, addr_spec=f.rcpt)
        else:
            msg["To"] = [_address(*box) for box in addressees.to] or "undisclosed-recipients:;"
            if addressees.cc:
                msg["Cc"] = [_address(*box) for box in addressees.cc]
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
            check_header(subject, "Subject", row)
            return subject
        subject = self._subject.render(row.data, row)
        text, html = self._bodies(row, subject)
        body = text if part == "text" else html
        if body is None:
            raise RowError(f"the job has no {part} part", row=row.number, key=row.key)
        return body


def _address(name: str, addr: str) -> Address:
    """A mailbox for the reference path."""
    return Address(display_name=name, addr_spec=envelope_address(addr))
