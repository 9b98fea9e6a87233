"""A transaction cut off mid-command (the grace after SIGINT/SIGTERM is over, a second
signal): the connection is dropped, not closed politely.

A QUIT behind a command whose reply never came would be answered by that reply first,
and close() would wait (5 s) for a reply to QUIT from a relay that answers nothing:
`--grace` would be overrun by that wait. The server hangs at a chosen command; the test
waits for that command to arrive, never for a fixed time.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.faultserver import HANG, FaultServer
from txsend.delivery.smtp.connection import SmtpConnection
from txsend.job.relays import parse_relay_url
from txsend.models import RenderedMessage, Timeouts

MESSAGE = RenderedMessage(
    key="k",
    mail_from="ci@acme.example",
    rcpt_to="ann@example.com",
    data=b"From: ci@acme.example\r\nTo: ann@example.com\r\n\r\nbody\r\n",
)


async def _arrived(server: FaultServer, verb: str) -> None:
    while verb not in server.commands:
        await asyncio.sleep(0.01)


async def _never() -> bool:
    raise AssertionError("DATA must not be reached")


@pytest.mark.parametrize("stall", ["MAIL", "RCPT", "DATA"])
def test_a_cancelled_transaction_drops_the_connection_without_quit(stall: str) -> None:
    with FaultServer({stall: HANG}) as server:

        async def scenario() -> None:
            connection = SmtpConnection(parse_relay_url(server.url), None, Timeouts())
            await connection.open()
            task = asyncio.create_task(connection.send(MESSAGE, _never))
            async with asyncio.timeout(30):  # a hang of the test itself, not a clock race
                await _arrived(server, stall)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert not connection.is_open
            async with asyncio.timeout(30):
                await connection.close()

        asyncio.run(scenario())
        assert server.commands.count(stall) == 1
        assert b"QUIT" not in b"".join(server.unanswered)
