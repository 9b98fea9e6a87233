"""The messages of a test send (`txsend run JOB --test-to ADDR`): a real row's message,
delivered to a reviewer.

Each message is the one the row's recipient would get, rendered from the row's data,
except that it is addressed to the test address (the envelope recipient and the To
header, without a display name), its Subject starts with `[TEST] `, and the recipient it
was meant for is named in `X-Txsend-Intended-To`. Everything else (From, the bodies, the
custom headers, List-Unsubscribe, attachments) is as the row's recipient would see it,
and a job that signs with DKIM signs the message as changed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from email.utils import formataddr

from txsend.addresses import envelope_address
from txsend.content.renderer import MessageFields, Renderer
from txsend.job.spec import Job
from txsend.models import Row

__all__ = ["INTENDED_HEADER", "SUBJECT_MARK", "TestSendRenderer", "reviewer_key"]

INTENDED_HEADER = "X-Txsend-Intended-To"
SUBJECT_MARK = "[TEST] "


def reviewer_key(address: str, key: str) -> str:
    """The key, in a test send's journal, of row `key`'s message to the test `address`."""
    return f"test:{address}:{key}"


def intended(name: str, address: str) -> str:
    """The intended recipient as the header names them: `Name <addr>`, or `addr`."""
    if not name:
        return address
    if name.isascii() and address.isascii():
        return formataddr((name, address))
    return f"{name} <{address}>"  # encoded as an unstructured header value


class TestSendRenderer(Renderer):
    """A renderer whose messages go to a test address (see the module docstring).

    `originals` maps each test row's key (`reviewer_key`) to the job's row it shows; a test
    row's address is the test address. Every per-row value is rendered from the original
    row, so its errors name the original row number and key.
    """

    __test__ = False  # not a pytest test class, whatever its name says

    def __init__(
        self, job: Job, originals: Mapping[str, Row], *, verp_secret: bytes | None = None
    ) -> None:
        super().__init__(job, verp_secret=verp_secret)
        self._originals = originals
        # per message now: the Subject (marked) and the headers (one more)
        self._subject_const = None
        self._headers_constant = False
        self._after_mid = self._fixed_header_lines()

    def _fields(self, row: Row) -> MessageFields:
        original = self._originals[row.key]
        fields = super()._fields(original)
        return replace(
            fields,
            rcpt=envelope_address(row.address),  # checked as --test-to was read
            name="",
            subject=SUBJECT_MARK + fields.subject,
            headers=(*fields.headers, (INTENDED_HEADER, intended(fields.name, fields.rcpt))),
        )
