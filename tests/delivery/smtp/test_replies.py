"""The reply reader behind pipelined transactions, against a real socket on 127.0.0.1.

A tiny asyncio server writes scripted bytes (whole replies, replies cut at every byte,
garbage, a reply and a hang-up); the reader is attached to a real client transport the
way SmtpConnection attaches it after aiosmtplib's handshake (`transport.set_protocol`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from txsend.delivery.smtp.replies import BadReply, ConnectionLost, ReplyReader

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


_handlers: list[asyncio.Task[None]] = []


async def connect(script: Script) -> tuple[ReplyReader, asyncio.Server]:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        _handlers.append(asyncio.current_task())  # type: ignore[arg-type]
        try:
            await script(r, w)
        except ConnectionError:
            pass
        finally:
            w.close()

    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_connection(asyncio.Protocol, "127.0.0.1", port)
    assert isinstance(transport, asyncio.WriteTransport)
    reader = ReplyReader(transport)
    transport.set_protocol(reader)
    return reader, server


async def close(reader: ReplyReader, server: asyncio.Server) -> None:
    reader.transport.abort()
    await asyncio.wait_for(reader.closed, 5)
    server.close()
    await server.wait_closed()
    await asyncio.gather(*_handlers, return_exceptions=True)
    _handlers.clear()
    await asyncio.sleep(0)  # let the server side's transports finish closing


def test_replies_cut_at_every_byte_and_multiline() -> None:
    async def script(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        data = b"250-first line\r\n250-second line\r\n250 last\r\n354 go ahead\r\n"
        for i in range(len(data)):
            w.write(data[i : i + 1])
            await w.drain()
        await r.read()

    async def main() -> None:
        reader, server = await connect(script)
        assert await reader.read(2, 5) == [
            (250, "first line\nsecond line\nlast"),
            (354, "go ahead"),
        ]
        await close(reader, server)

    asyncio.run(main())


def test_pipelined_replies_in_one_packet_are_kept_in_order() -> None:
    async def script(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        line = await r.readline()
        assert line.startswith(b"MAIL")
        w.write(b"250 2.1.0 Ok\r\n550 5.1.1 no such user\r\n503 5.5.1 need RCPT\r\n250 Ok\r\n")
        await r.read()

    async def main() -> None:
        reader, server = await connect(script)
        reader.write(b"MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\n")
        assert await reader.read(3, 5) == [
            (250, "2.1.0 Ok"),
            (550, "5.1.1 no such user"),
            (503, "5.5.1 need RCPT"),
        ]
        assert await reader.read(1, 5) == [(250, "Ok")]  # nothing was dropped
        await close(reader, server)

    asyncio.run(main())


@pytest.mark.parametrize(
    "garbage",
    [b"hello there\r\n", b"25 short\r\n", b"250x no separator\r\n", b"2" * 5000],
    ids=["text", "short code", "bad separator", "line too long"],
)
def test_anything_but_a_reply_is_refused(garbage: bytes) -> None:
    async def script(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(garbage)
        await w.drain()
        await r.read()

    async def main() -> None:
        reader, server = await connect(script)
        with pytest.raises(BadReply):
            await reader.read(1, 5)
        assert not reader.usable
        with pytest.raises(BadReply):
            reader.write(b"RSET\r\n")
        await close(reader, server)

    asyncio.run(main())


def test_a_reply_before_a_hang_up_is_kept() -> None:
    async def script(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await r.readline()
        w.write(b"421 4.3.2 shutting down\r\n")
        await w.drain()
        w.close()

    async def main() -> None:
        reader, server = await connect(script)
        reader.write(b"MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\n")
        with pytest.raises(ConnectionLost):
            await reader.read(3, 5)
        assert reader.take_available() == [(421, "4.3.2 shutting down")]
        await asyncio.wait_for(reader.closed, 5)
        await close(reader, server)

    asyncio.run(main())


def test_silence_times_out_and_the_reader_stays_usable() -> None:
    async def script(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await r.readline()
        await asyncio.sleep(0.5)
        w.write(b"250 late\r\n")
        await w.drain()
        await r.read()

    async def main() -> None:
        reader, server = await connect(script)
        reader.write(b"NOOP\r\n")
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(TimeoutError):
            await reader.read(1, 0.1)
        assert loop.time() - started < 0.4
        assert await reader.read(1, 5) == [(250, "late")]
        await close(reader, server)

    asyncio.run(main())
