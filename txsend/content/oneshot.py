"""The renderers of `txsend send`: one message, the same bytes for each of its recipients.

Each envelope recipient is a journal row of its own, so that each is classified and
recorded on its own; every row's copy is the same message (one Message-ID, the journal's,
and one Date, the first call's), addressed in its header to the To and Cc given, never
to its row. `SameMessage` renders it through the job's `Renderer` (from --text, --html,
--markdown); `ReadyRenderer` sends a message that came ready on stdin.
"""

from __future__ import annotations

from txsend.content.ready import ReadyMessage
from txsend.content.renderer import Renderer
from txsend.models import RenderedMessage, Row

__all__ = ["ReadyRenderer", "SameMessage"]


class SameMessage:
    """The job's renderer, with one Date for every copy and every later call."""

    def __init__(self, renderer: Renderer, date: str) -> None:
        self._renderer = renderer
        self._date = date
        self.warnings = renderer.warnings

    def render(self, row: Row, message_id: str) -> RenderedMessage:
        """The message, to the row's address."""
        return self._renderer.render(row, message_id, date=self._date)


class ReadyRenderer:
    """A ready message, to each row's address, from one envelope sender."""

    def __init__(self, message: ReadyMessage, mail_from: str, date: str) -> None:
        self._message = message
        self._mail_from = mail_from
        self._date = date
        self._data: tuple[str, bytes] | None = None  # (Message-ID, bytes): built once
        self.warnings: list[str] = []

    def render(self, row: Row, message_id: str) -> RenderedMessage:
        """The message as it came (Bcc removed, Date and Message-ID added if missing)."""
        if self._data is None or self._data[0] != message_id:
            self._data = (message_id, self._message.data(message_id, self._date))
        return RenderedMessage(
            key=row.key,
            mail_from=self._mail_from,
            rcpt_to=row.address,
            data=self._data[1],
            smtputf8=not (row.address.isascii() and self._mail_from.isascii())
            or self._message.utf8_header,
            eight_bit=self._message.eight_bit,
        )
