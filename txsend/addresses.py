"""Email addresses: the one rule for what txsend will put in an envelope or a header.

Part of the kernel: the job loader checks From and Reply-To when it reads a job
(`mailbox_problem`), and the renderer checks them again, with every recipient, when it
builds a message (`split_mailbox`, `envelope_address`), so both layers share this
module and agree on what an address is. `envelope_address` is strict RFC 5321
addr-spec syntax (dot-atom local part, domain or address literal), plus RFC 6531's
UTF-8 local parts and internationalised domains sent as IDNA A-labels.
"""

from __future__ import annotations

import re
from email.utils import getaddresses

import idna

__all__ = [
    "BAD_HEADER_CHAR",
    "LINE_BREAK",
    "a_label",
    "address_forms",
    "comparable_address",
    "envelope_address",
    "mailbox_problem",
    "split_mailbox",
]

BAD_HEADER_CHAR = re.compile("[\x00-\x08\x0a-\x1f\x7f\x85\u2028\u2029]")
"""Anything str.splitlines() treats as a line break, plus the other C0 controls and DEL.

EmailMessage refuses the same set, and none of it may reach a header line or an
SMTP command.
"""

LINE_BREAK = re.compile("[\r\n\x0b\x0c\x1c-\x1e\x85\u2028\u2029]")
"""The characters of `BAD_HEADER_CHAR` that some reader would take for a line break."""

_LOCAL_PART = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+"
# RFC 6531 section 3.3: with SMTPUTF8, any non-ASCII character is atext too.
_LOCAL_PART_UTF8 = re.compile(r"(?:[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]|[^\x00-\x7f])+")
_DOMAIN = r"(?:[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*|\[[A-Za-z0-9:.]+\])"
_ADDR_SPEC = re.compile(f"{_LOCAL_PART}@{_DOMAIN}")
_LOCAL_PART_RE = re.compile(_LOCAL_PART)
_DOMAIN_RE = re.compile(_DOMAIN)
_NAME_ADDR = re.compile(r"\s*(.*?)\s*<([^<>]*)>\s*", re.DOTALL)
_TEMPLATE_MARKERS = ("{{", "{%")
_EXAMPLE = "(write e.g. 'Acme <noreply@acme.example>')"


def split_mailbox(value: str) -> tuple[str, str]:
    """Split "Name <addr>" (quoted or not) or a bare address into (name, addr)."""
    match = _NAME_ADDR.fullmatch(value)
    if match is None:
        return "", value.strip()
    name = match[1]
    if len(name) >= 2 and name[0] == '"' and name[-1] == '"':
        name = re.sub(r"\\(.)", r"\1", name[1:-1])
    return name, match[2].strip()


def a_label(domain: str) -> str:
    """An internationalised domain as A-labels (IDNA 2008 with UTS 46 mapping)."""
    try:
        return idna.encode(domain, uts46=True).decode("ascii")
    except idna.IDNAError as exc:
        raise ValueError(f"invalid international domain name ({exc})") from None


def envelope_address(addr: str) -> str:
    """Return the envelope form of an addr-spec (A-label domain), or raise ValueError(reason).

    A non-ASCII local part is kept (it needs a relay with SMTPUTF8, RFC 6531); the
    domain is always sent as A-labels, which every relay takes.
    """
    if _ADDR_SPEC.fullmatch(addr):
        return addr
    _refuse_shape(addr)
    local, _, domain = addr.partition("@")
    if not local:
        raise ValueError("empty local part")
    if not domain:
        raise ValueError("empty domain")
    if not (_LOCAL_PART_RE if local.isascii() else _LOCAL_PART_UTF8).fullmatch(local):
        raise ValueError("invalid character in local part")
    if not domain.isascii():
        domain = a_label(domain)
    if not _DOMAIN_RE.fullmatch(domain):
        raise ValueError("invalid domain")
    return f"{local}@{domain}"


def comparable_address(address: str) -> str:
    """An address as suppressions compare it: stripped, lowercased, and its domain in
    A-labels, since that is how it went out in RCPT TO and how DSNs and providers report
    it (user@bücher.example and USER@xn--bcher-kva.example are one mailbox)."""
    address = address.strip().lower()
    local, at, domain = address.rpartition("@")
    if at and domain and not domain.isascii():
        try:
            return f"{local}@{a_label(domain)}"
        except ValueError:
            return address  # not a valid IDN: compared as written
    return address


def address_forms(address: str) -> list[str]:
    """The address as written, then with its domain in A-labels or in U-labels (whichever
    it is not in): the ways one internationalised mailbox may be written in a journal."""
    forms = [address]
    local, at, domain = address.rpartition("@")
    if not at or not domain:
        return forms
    try:
        if not domain.isascii():
            other = a_label(domain)
        elif "xn--" in domain.lower():
            other = idna.decode(domain.lower())
        else:
            return forms
    except (ValueError, idna.IDNAError):
        return forms
    if other.lower() != domain.lower():
        forms.append(f"{local}@{other}")
    return forms


def _refuse_shape(addr: str) -> None:
    # The faults that make a value no addr-spec at all, in the order a user would fix them.
    if LINE_BREAK.search(addr):
        raise ValueError("line break in address")
    if BAD_HEADER_CHAR.search(addr):
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


def mailbox_problem(value: str, *, single: bool) -> str | None:
    """Why a From / Reply-To value written in a job or a flag is unusable, or None.

    `single`: exactly one mailbox is allowed. A single mailbox is checked as the
    renderer reads it (`split_mailbox`), so that what loads also renders; a list is
    split by `email.utils.getaddresses` and every address in it is checked.
    """
    if any(marker in value for marker in _TEMPLATE_MARKERS):
        return "must be a fixed address, not a template"
    pairs = getaddresses([value])
    if not pairs or any("@" not in addr for _, addr in pairs):
        return f"not an email address: {value!r} {_EXAMPLE}"
    if single and len(pairs) != 1:
        return f"expected one address, got {len(pairs)}"
    addrs = [split_mailbox(value)[1]] if len(pairs) == 1 else [addr for _, addr in pairs]
    for addr in addrs:
        try:
            envelope_address(addr)
        except ValueError as exc:
            return f"invalid email address {addr!r}: {exc} {_EXAMPLE}"
    return None
