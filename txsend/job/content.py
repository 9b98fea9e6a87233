"""The content sections of a job file: markdown, attachments, unsubscribe, DKIM, flags.

Split from `txsend.job.loading` so that each stays readable: it calls `load_content` and
`job_headers` with the top-level mapping. Errors carry the job file's line like
everything else in the job file. The header-name rule and the headers txsend writes
itself are defined here once; the renderer checks a job built in code by the same rule.
"""

from __future__ import annotations

import re
from pathlib import Path

from txsend.addresses import a_label
from txsend.errors import JobError, MissingInputError
from txsend.job.envelope import ENVELOPE_KEYS, load_envelope
from txsend.job.paths import PathEscapes, absolute, confine
from txsend.job.yamlmap import Section, read_text
from txsend.models import AttachmentSpec, Content, DkimSpec, Template, Unsubscribe
from txsend.units import describe_value, parse_size

# RFC 5322 section 3.6.8: field-name = 1*ftext, printable US-ASCII except ":".
FIELD_NAME = re.compile(r"[\x21-\x39\x3b-\x7e]+\Z")
RESERVED_HEADERS: dict[str, str] = {
    "from": "use from: in the job",
    "to": "the recipient comes from the recipients file (recipients.to)",
    "subject": "use subject: in the job",
    "reply-to": "use reply_to: in the job",
    "date": "txsend sets it",
    "message-id": "txsend sets it (fixed per row, reused on retries)",
    "mime-version": "txsend sets it",
}

CONTENT_KEYS = (
    frozenset(
        {
            "markdown",
            "auto_text",
            "inline_css",
            "transactional",
            "auto_submitted",
            "precedence",
            "feedback_id",
            "attachments",
            "unsubscribe",
            "dkim",
        }
    )
    | ENVELOPE_KEYS
)
_ATTACHMENT_KEYS = frozenset({"path", "content_type", "filename", "compress", "compress_over"})
_UNSUBSCRIBE_KEYS = frozenset({"url", "mailto", "one_click"})
_DKIM_KEYS = frozenset({"domain", "selector", "key_file", "algorithm", "headers"})
DKIM_ALGORITHMS = ("rsa-sha256", "ed25519-sha256")
_PRECEDENCE = ("bulk", "list")
_CONTENT_TYPE = re.compile(r"[a-z0-9!#$&^_.+-]+/[a-z0-9!#$&^_.+-]+\Z", re.IGNORECASE)
_DOMAIN = re.compile(r"[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+\Z")
_SELECTOR = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*\Z")
_TEMPLATE_MARKERS = ("{{", "{%")


def load_content(root: Section, base: Path, *, has_body: bool) -> Content:
    """Read every content key of the top-level mapping into a Content."""
    markdown = _markdown(root, base, has_body=has_body)
    transactional = _opt_bool(root, "transactional") or False
    precedence = root.opt_str("precedence")
    if precedence is not None and precedence.strip().lower() not in _PRECEDENCE:
        raise root.error("precedence", f"expected one of {', '.join(_PRECEDENCE)}")
    feedback_id = root.opt_str("feedback_id")
    if feedback_id is not None and ("\n" in feedback_id or "\r" in feedback_id):
        raise root.error("feedback_id", "must be one line")
    auto_text = _opt_bool(root, "auto_text")
    return Content(
        markdown=markdown,
        auto_text=True if auto_text is None else auto_text,
        inline_css=_opt_bool(root, "inline_css") or False,
        transactional=transactional,
        auto_submitted=_opt_bool(root, "auto_submitted"),
        precedence=precedence.strip().lower() if precedence is not None else None,
        feedback_id=feedback_id.strip() if feedback_id is not None else None,
        attachments=_attachments(root, base),
        unsubscribe=_unsubscribe(root),
        dkim=_dkim(root, base),
        envelope=load_envelope(root),
    )


def _opt_bool(section: Section, key: str) -> bool | None:
    value = section.value(key)
    if value is None:
        return None
    if not isinstance(value, bool):
        raise section.error(key, f"expected true or false, got {describe_value(value)}")
    return value


def _markdown(root: Section, base: Path, *, has_body: bool) -> Template | None:
    relative = root.opt_str("markdown")
    if relative is None:
        return None
    if has_body:
        raise root.error(
            "markdown",
            "set either markdown or text/html, not both",
            hint="markdown: makes both the html and the text part",
        )
    resolved = absolute(base / relative)
    if not resolved.exists():
        raise MissingInputError(
            f"{root.where('markdown')}: template file not found: {relative}",
            hint=f"looked for {resolved}; paths are relative to the job file's folder",
        )
    if not resolved.is_file():
        raise root.error("markdown", f"{relative} is not a file")
    return Template(read_text(resolved, relative), origin=relative, path=resolved)


def _attachments(root: Section, base: Path) -> tuple[AttachmentSpec, ...]:
    specs = []
    for index, (item, line) in enumerate(root.opt_list("attachments")):
        name = f"attachments[{index}]"
        if isinstance(item, str):  # shorthand: `- files/terms.pdf`
            item = {"path": item}
        if not isinstance(item, dict):
            raise JobError(
                f"{name}: expected a mapping or a path, got {describe_value(item)}",
                file=root.display,
                line=line,
                hint="e.g. attachments: [{path: files/terms.pdf}]",
            )
        section = Section(root.display, item, name, line)
        section.check_keys(_ATTACHMENT_KEYS)
        path = section.req_str("path", hint="e.g. path: files/terms.pdf").strip()
        content_type = section.opt_str("content_type")
        if content_type is not None and not _CONTENT_TYPE.match(content_type.strip()):
            raise section.error("content_type", f"not a MIME type: {content_type!r}")
        compress = section.opt_str("compress")
        if compress is not None and compress.strip().lower() != "zip":
            raise section.error("compress", "the only compression is zip")
        compress_over = 0
        if section.value("compress_over") is not None:
            if compress is None:
                raise section.error("compress_over", "set compress: zip as well")
            try:
                compress_over = parse_size(section.value("compress_over"))
            except ValueError as exc:
                raise section.error("compress_over", str(exc)) from None
        filename = section.opt_str("filename")
        if filename is not None and any(ch in filename for ch in '\r\n"\\/'):
            raise section.error("filename", "must be a plain file name")
        origin = f"{root.display}:{section.line_of('path')}"
        spec = AttachmentSpec(
            path=path,
            origin=origin,
            content_type=content_type.strip().lower() if content_type else None,
            filename=filename,
            compress="zip" if compress is not None else None,
            compress_over=compress_over,
        )
        if not any(marker in path for marker in _TEMPLATE_MARKERS):
            _check_fixed_attachment(section, base, spec)
        specs.append(spec)
    return tuple(specs)


def _check_fixed_attachment(section: Section, base: Path, spec: AttachmentSpec) -> None:
    """A path without a template must exist inside the job's folder before anything runs."""
    try:
        confine(base, spec.path)
    except PathEscapes as exc:
        raise section.error("path", str(exc)) from None
    except FileNotFoundError:
        raise MissingInputError(
            f"{section.where('path')}: attachment not found: {spec.path}",
            hint=f"looked in {base}; paths are relative to the job file's folder",
        ) from None


def _unsubscribe(root: Section) -> Unsubscribe | None:
    value = root.value("unsubscribe")
    if value is None:
        return None
    if isinstance(value, str):  # shorthand: `unsubscribe: https://...`
        section = Section(root.display, {"url": value}, "unsubscribe", root.line_of("unsubscribe"))
    else:
        maybe = root.opt_map("unsubscribe")
        assert maybe is not None
        section = maybe
        section.check_keys(_UNSUBSCRIBE_KEYS)
    url = section.opt_str("url")
    mailto = section.opt_str("mailto")
    one_click = _opt_bool(section, "one_click") or False
    if url is None and mailto is None:
        raise section.error(
            "url", "needs a url, a mailto address or both", hint=_UNSUBSCRIBE_EXAMPLE
        )
    if url is not None:
        url = url.strip()
        scheme = url.split(":", 1)[0].lower() if ":" in url else ""
        if scheme not in ("https", "http") and not url.startswith("{{"):
            raise section.error("url", "must be an https:// address", hint=_UNSUBSCRIBE_EXAMPLE)
        if one_click and scheme == "http":
            raise section.error("url", "one_click needs an https:// address (RFC 8058)")
    if mailto is not None:
        mailto = mailto.strip().removeprefix("mailto:")
        if "@" not in mailto and not any(marker in mailto for marker in _TEMPLATE_MARKERS):
            raise section.error("mailto", f"not an email address: {mailto!r}")
    if one_click and url is None:
        raise section.error("one_click", "needs url: (an https address that takes a POST)")
    return Unsubscribe(
        url=url, mailto=mailto, one_click=one_click, origin=f"{root.display} (unsubscribe)"
    )


_UNSUBSCRIBE_EXAMPLE = (
    'e.g. unsubscribe: {url: "https://acme.example/u/{{ token }}", '
    "mailto: unsub@acme.example, one_click: true}"
)


def _dkim(root: Section, base: Path) -> DkimSpec | None:
    section = root.opt_map("dkim")
    if section is None:
        return None
    section.check_keys(_DKIM_KEYS)
    hint = "e.g. dkim: {domain: acme.example, selector: s1, key_file: dkim.pem}"
    domain = section.req_str("domain", hint=hint).strip().lower()
    if not _DOMAIN.match(domain):
        try:
            domain = a_label(domain)  # the same IDNA mapping as every address gets
        except (ValueError, UnicodeError):
            raise section.error("domain", f"not a domain name: {domain!r}") from None
        if not _DOMAIN.match(domain):
            raise section.error("domain", f"not a domain name: {domain!r}")
    selector = section.req_str("selector", hint=hint).strip()
    if not _SELECTOR.match(selector):
        raise section.error("selector", f"not a DKIM selector: {selector!r}")
    key_rel = section.req_str("key_file", hint=hint).strip()
    key_file = absolute(base / key_rel)
    if not key_file.is_file():
        raise MissingInputError(
            f"{section.where('key_file')}: DKIM key file not found: {key_rel}",
            hint="generate one with: openssl genpkey -algorithm ED25519 -out dkim.pem",
        )
    algorithm = (section.opt_str("algorithm") or "rsa-sha256").strip().lower()
    if algorithm not in DKIM_ALGORITHMS:
        raise section.error("algorithm", f"expected one of {', '.join(DKIM_ALGORITHMS)}")
    headers: tuple[str, ...] | None = None
    items = section.opt_list("headers")
    if section.value("headers") is not None:
        names = []
        for item, line in items:
            if not isinstance(item, str) or not FIELD_NAME.match(item.strip()):
                raise JobError(
                    f"dkim.headers: not a header name: {item!r}", file=root.display, line=line
                )
            names.append(item.strip().lower())
        headers = tuple(names)
    return DkimSpec(
        domain=domain, selector=selector, key_file=key_file, algorithm=algorithm, headers=headers
    )


def job_headers(root: Section) -> dict[str, str]:
    """headers: extra header fields, checked against the ones txsend sets itself."""
    section = root.opt_map("headers")
    if section is None:
        return {}
    headers: dict[str, str] = {}
    seen: dict[str, str] = {}
    for key, value in section.data.items():
        if not FIELD_NAME.match(key):
            raise section.error(
                key, "not a valid header name (printable ASCII, no spaces or colons)"
            )
        lower = key.lower()
        if lower in RESERVED_HEADERS:
            raise section.error(key, "cannot be set here", hint=RESERVED_HEADERS[lower])
        if lower.startswith("content-"):
            raise section.error(key, "cannot be set here", hint="txsend builds the MIME parts")
        if lower in seen:
            raise section.error(key, f"given twice (also as {seen[lower]})")
        seen[lower] = key
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise section.error(key, f"expected a string, got {describe_value(value)}")
        text = str(value)
        if "\r" in text or "\n" in text:
            raise section.error(key, "a header value must be one line")
        headers[key] = text
    return headers
