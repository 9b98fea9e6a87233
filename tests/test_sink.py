"""`txsend.sink.serve`: the capture server, run in a thread and stopped by an event."""

from __future__ import annotations

import mailbox
import os
import signal
import smtplib
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.smtpd import ScriptedServer
from txsend.errors import ConfigError
from txsend.sink import SinkStats, format_stats, serve


@dataclass
class RunningSink:
    port: int
    stop: threading.Event
    thread: threading.Thread
    result: list[SinkStats] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)

    def finish(self) -> SinkStats:
        self.stop.set()
        self.thread.join(timeout=10)
        assert not self.thread.is_alive()
        if self.errors:
            raise self.errors[0]
        return self.result[0]


def _start(tmp_path: Path, **kwargs: object) -> RunningSink:
    port_file = tmp_path / "sink.port"
    stop = threading.Event()
    ready = threading.Event()
    sink = RunningSink(port=0, stop=stop, thread=threading.Thread(target=lambda: None))
    seen: list[tuple[str, int]] = []

    def on_ready(host: str, port: int) -> None:
        assert port_file.read_text() == f"{port}\n"  # written before on_ready
        seen.append((host, port))
        ready.set()

    def run() -> None:
        try:
            sink.result.append(
                serve(
                    "127.0.0.1",
                    0,
                    port_file=port_file,
                    on_ready=on_ready,
                    stop_event=stop,
                    **kwargs,  # type: ignore[arg-type]
                )
            )
        except BaseException as exc:
            sink.errors.append(exc)
            ready.set()

    sink.thread = threading.Thread(target=run, daemon=True)
    sink.thread.start()
    assert ready.wait(10)
    if sink.errors:
        raise sink.errors[0]
    host, sink.port = seen[0]
    assert host == "127.0.0.1"
    assert sink.port > 0
    return sink


@pytest.fixture
def maildir_sink(tmp_path: Path) -> Iterator[tuple[RunningSink, Path]]:
    maildir = tmp_path / "Maildir"
    sink = _start(tmp_path, maildir=maildir)
    try:
        yield sink, maildir
    finally:
        sink.stop.set()
        sink.thread.join(timeout=10)


def _message(i: int) -> bytes:
    return (
        f"From: Acme <noreply@acme.example>\r\n"
        f"To: User {i} <user{i}@example.com>\r\n"
        f"Subject: Welcome, user {i}\r\n"
        f"Message-ID: <{i}@acme.example>\r\n"
        f"\r\n"
        f"Hello {i}\r\n"
        f".dotted line\r\n"
    ).encode()


def test_maildir_capture_and_stats(maildir_sink: tuple[RunningSink, Path], tmp_path: Path) -> None:
    sink, maildir = maildir_sink
    with smtplib.SMTP("127.0.0.1", sink.port, timeout=10) as client:
        for i in range(3):
            client.sendmail("bounces@acme.example", [f"user{i}@example.com"], _message(i))
    stats = sink.finish()
    assert (stats.messages, stats.recipients, stats.connections) == (3, 3, 1)
    assert stats.bytes == sum(len(_message(i)) for i in range(3))
    assert stats.stopped_by == "stop_event"
    assert stats.port == sink.port
    assert not (tmp_path / "sink.port").exists()  # removed on exit
    assert format_stats(stats).startswith("sink: 3 messages, 3 recipients, ")

    box = mailbox.Maildir(maildir, create=False)
    messages = sorted(box, key=lambda m: str(m["Message-ID"]))
    assert len(messages) == 3
    assert list((maildir / "tmp").iterdir()) == []
    for i, msg in enumerate(messages):
        assert msg["Return-Path"] == "<bounces@acme.example>"
        assert msg["Delivered-To"] == f"user{i}@example.com"
        assert msg["Subject"] == f"Welcome, user {i}"
        assert str(msg.get_payload()).splitlines() == [f"Hello {i}", ".dotted line"]
    # stored as received (CRLF, dot-unstuffed), after the two prepended lines
    raw = sorted(p.read_bytes() for p in (maildir / "new").iterdir())
    assert raw[0] == (
        b"Return-Path: <bounces@acme.example>\r\nDelivered-To: user0@example.com\r\n" + _message(0)
    )


def test_discard_counts_only(tmp_path: Path) -> None:
    sink = _start(tmp_path, discard=True)
    try:
        with smtplib.SMTP("127.0.0.1", sink.port, timeout=10) as client:
            client.sendmail("a@acme.example", ["b@example.com", "c@example.com"], _message(1))
        with smtplib.SMTP("127.0.0.1", sink.port, timeout=10) as client:
            client.ehlo()
            assert client.has_extn("size")
            assert client.esmtp_features["size"] == str(50 * 1024 * 1024)
    finally:
        stats = sink.finish()
    assert (stats.messages, stats.recipients, stats.connections) == (1, 2, 2)
    assert list(tmp_path.iterdir()) == []  # neither a Maildir nor the port file


def test_port_in_use_is_a_config_error(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(ConfigError, match="already in use"):
            serve("127.0.0.1", port, discard=True, stop_event=threading.Event())


def test_maildir_and_discard_exclude_each_other(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        serve(maildir=tmp_path, discard=True)


def test_maildir_path_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="cannot create Maildir"):
        serve("127.0.0.1", 0, maildir=tmp_path / "file" / "box")


_SINK_SCRIPT = """
import sys
from pathlib import Path
from txsend.sink import format_stats, serve
stats = serve("127.0.0.1", 0, maildir=Path(sys.argv[1]), port_file=Path(sys.argv[2]))
print(format_stats(stats), stats.stopped_by, flush=True)
"""


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_stops_cleanly(tmp_path: Path, signum: signal.Signals) -> None:
    root = Path(__file__).resolve().parents[1]
    port_file = tmp_path / "port"
    env = {**os.environ, "PYTHONPATH": str(root)}
    proc = subprocess.Popen(
        [sys.executable, "-c", _SINK_SCRIPT, str(tmp_path / "box"), str(port_file)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        deadline = time.monotonic() + 10
        while not port_file.exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "sink did not write its port file"
            time.sleep(0.02)
        port = int(port_file.read_text())
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
            client.sendmail("a@acme.example", ["b@example.com"], _message(7))
            proc.send_signal(signum)
            out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert err == b""
    assert out.decode().startswith("sink: 1 messages, 1 recipients, ")
    assert out.decode().rstrip().endswith(signum.name)
    assert not port_file.exists()


# -- the bulk DATA reader, checked against aiosmtpd's own line reader -------------

_PAYLOADS = {
    "empty": b"",
    "one line": b"Subject: x\r\n\r\nbody\r\n",
    "lines ending in dots": b"Subject: x\r\n\r\nend.\r\nx.\r\n..\r\n...\r\n.a.\r\n",
    "stuffed first line": b"..starts with a dot\r\nnext\r\n",
    "blank lines": b"\r\n\r\n\r\n",
    "bare LF and CR": b"a\nb\rc\r\n.\nd\r\n",
    "long run without dots": b"".join(b"A" * 76 + b"\r\n" for _ in range(3000)),
    "dot lines across a long run": (b"B" * 76 + b".\r\n..\r\n") * 2000,
    "999 octets": b"x" * 999 + b"\r\n",
    "1000 octets": b"x" * 1000 + b"\r\n",
    "1000 with dot": b"." + b"x" * 999 + b"\r\n",
}


def _dot_stuff(payload: bytes) -> bytes:
    lines = payload.split(b"\r\n")
    return b"\r\n".join(b"." + ln if ln.startswith(b".") else ln for ln in lines)


def _converse(port: int, wire: bytes) -> list[bytes]:
    """EHLO, MAIL, RCPT, DATA, then `wire` in one write; the replies after the 354."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        reader = sock.makefile("rb")
        reader.readline()
        sock.sendall(b"EHLO test.example\r\n")
        while not reader.readline().startswith(b"250 "):
            pass
        sock.sendall(b"MAIL FROM:<a@acme.example>\r\n")
        assert reader.readline().startswith(b"250")
        sock.sendall(b"RCPT TO:<b@example.com>\r\n")
        assert reader.readline().startswith(b"250")
        sock.sendall(b"DATA\r\n")
        assert reader.readline().startswith(b"354")
        sock.sendall(wire + b"NOOP\r\nQUIT\r\n")  # pipelined after the final dot
        replies = [reader.readline().rstrip(b"\r\n") for _ in range(3)]
        reader.close()
    return replies


@pytest.mark.parametrize("name", list(_PAYLOADS))
def test_data_reader_matches_aiosmtpd(
    name: str, tmp_path: Path, smtp_server: ScriptedServer
) -> None:
    payload = _PAYLOADS[name]
    stuffed = _dot_stuff(payload)
    wire = stuffed + b".\r\n"
    expected = _converse(smtp_server.port, wire)
    maildir = tmp_path / "box"
    sink = _start(tmp_path, maildir=maildir)
    try:
        got = _converse(sink.port, wire)
    finally:
        stats = sink.finish()
    assert [r[:3] for r in got] == [r[:3] for r in expected]
    assert got[1:] == [b"250 OK", b"221 Bye"]
    stored = [p.read_bytes() for p in (maildir / "new").iterdir()]
    if expected[0].startswith(b"250"):
        assert smtp_server.received[0].data == payload
        (raw,) = stored
        assert raw.split(b"\r\n", 2)[2] == payload  # after Return-Path and Delivered-To
        assert stats.bytes == len(payload)
    else:
        assert got[0] == expected[0] == b"500 Line too long (see RFC5321 4.5.3.1.6)"
        assert stored == []
        assert stats.messages == 0


def test_data_over_the_size_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("txsend.sink.MAX_MESSAGE_SIZE", 1000)
    sink = _start(tmp_path, discard=True)
    try:
        at_limit = _converse(sink.port, b"y" * 998 + b"\r\n.\r\n")
        over = _converse(sink.port, (b"z" * 98 + b".\r\n") * 11 + b".\r\n")
    finally:
        stats = sink.finish()
    assert at_limit[0].startswith(b"250")
    assert over == [b"552 Error: Too much mail data", b"250 OK", b"221 Bye"]
    assert stats.messages == 1
