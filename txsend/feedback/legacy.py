"""The bounces of MTAs that send no DSN (Exim's text, qmail's QSBMF, ...), by flufl.bounce.

flufl.bounce (Mailman's detectors, Apache-2.0) says which addresses failed permanently and
which temporarily, nothing more: no status, no diagnostic. Two of its habits are handled
here: a detector that raises stops the whole scan (`all_failures` re-raises; its Yale
detector does so for any message without a From address), and it logs that exception with
a traceback on the "flufl.bounce" logger, which is silenced so that it never reaches stderr.
"""

from __future__ import annotations

import logging
import re
from email.message import Message

import flufl.bounce

from txsend.feedback import fields
from txsend.feedback.dsn import MAX_RECIPIENTS
from txsend.feedback.mime import MAX_BLOCK_TEXT, returned_headers, walk

_LOG = logging.getLogger("flufl.bounce")
_LOG.addHandler(logging.NullHandler())
_LOG.propagate = False
_MESSAGE_ID_LINE = re.compile(r"^\s*Message-ID:\s*(<[^<>\s]{1,500}>)", re.IGNORECASE | re.MULTILINE)
_RETURNED = {"message/rfc822", "message/global", "text/rfc822-headers", "message/rfc822-headers"}


def failures(message: Message) -> tuple[list[str], list[str]] | str:
    """(permanent, temporary) failed addresses, sorted; or why none could be read."""
    try:
        temporary, permanent = flufl.bounce.all_failures(message)
    except Exception as exc:
        return f"not a delivery report (flufl.bounce: {type(exc).__name__})"
    return _addresses(permanent), _addresses(temporary - permanent)


def original_message_id(message: Message) -> str | None:
    """The Message-ID of the original a text bounce quotes, if it quotes one."""
    for part in walk(message):
        content_type = part.get_content_type()
        if content_type in _RETURNED:
            headers = returned_headers(part)
            if headers is not None and headers.get("message-id"):
                return fields.message_id(headers.get("message-id"))
        elif content_type == "text/plain":
            data = part.get_payload(decode=True)
            if isinstance(data, bytes):
                found = _MESSAGE_ID_LINE.search(data[:MAX_BLOCK_TEXT].decode("utf-8", "replace"))
                if found:
                    return found.group(1)
    return None


def _addresses(found: frozenset[bytes]) -> list[str]:
    addresses = {a.decode("ascii", "replace").strip().strip("<>") for a in found}
    return sorted(a for a in addresses if a)[:MAX_RECIPIENTS]
