"""`txsend.sink.server.serve`: the capture server, run in a thread and stopped by an event."""

from __future__ import annotations

import contextlib
import mailbox
import os
import random
import signal
import smtplib
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.sinks import RunningSink, start_sink
from tests.smtpd import ScriptedServer
from txsend.cli.app import run_cli
from txsend.errors import ConfigError
from txsend.sink.capture import SinkStats, format_stats
from txsend.sink.faults import FaultRule, Faults
from txsend.sink.server import serve


@pytest.fixture
def maildir_sink(tmp_path: Path) -> Iterator[tuple[RunningSink, Path]]:
    maildir = tmp_path / "Maildir"
    sink = start_sink(tmp_path, maildir=maildir)
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
    sink = start_sink(tmp_path, discard=True)
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
from txsend.sink.capture import format_stats
from txsend.sink.server import serve
stats = serve("127.0.0.1", 0, maildir=Path(sys.argv[1]), port_file=Path(sys.argv[2]))
print(format_stats(stats), stats.stopped_by, flush=True)
"""


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_stops_cleanly(tmp_path: Path, signum: signal.Signals) -> None:
    root = Path(__file__).resolve().parents[2]
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
    sink = start_sink(tmp_path, maildir=maildir)
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
    monkeypatch.setattr("txsend.sink.server.MAX_MESSAGE_SIZE", 1000)
    sink = start_sink(tmp_path, discard=True)
    try:
        at_limit = _converse(sink.port, b"y" * 998 + b"\r\n.\r\n")
        over = _converse(sink.port, (b"z" * 98 + b".\r\n") * 11 + b".\r\n")
    finally:
        stats = sink.finish()
    assert at_limit[0].startswith(b"250")
    assert over == [b"552 Error: Too much mail data", b"250 OK", b"221 Bye"]
    assert stats.messages == 1


# -- fault injection ----------------------------------------------------------------


def _faults(*rules: str, **options: object) -> Faults:
    return Faults.from_options(rules, **options)  # type: ignore[arg-type]


@contextlib.contextmanager
def _raw(port: int) -> Iterator[Callable[[bytes | None], bytes]]:
    """A bare SMTP client: send(line or None) writes it and returns the next reply's last
    line (b"" once the server has closed the connection)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        reader = sock.makefile("rb")

        def send(line: bytes | None) -> bytes:
            if line is not None:
                sock.sendall(line)
            while True:
                reply = reader.readline()
                if reply[3:4] != b"-":
                    return reply.rstrip(b"\r\n")

        try:
            yield send
        finally:
            reader.close()


@pytest.mark.parametrize(
    ("spec", "expected", "reply"),
    [
        ("rcpt:451:0.3", FaultRule("rcpt", 451, probability=0.3), "451 4.3.0 try again later"),
        ("dot:554:every=10", FaultRule("dot", 554, every=10), "554 5.7.1 transaction failed"),
        ("mail:421", FaultRule("mail", 421), "421 4.3.2 service not available, closing"),
        ("rcpt:550:match=@bounce.", FaultRule("rcpt", 550, match="@bounce."), "550 5.1.1 no such"),
        (
            "RCPT:452:every=2:match=x@y:4.2.2 mailbox full: sorry",
            FaultRule("rcpt", 452, every=2, match="x@y", text="4.2.2 mailbox full: sorry"),
            "452 4.2.2 mailbox full: sorry",
        ),
        ("connect:554:1", FaultRule("connect", 554), "554 5.7.1 no SMTP service here"),
        ("ehlo:503:0.25:go away", FaultRule("ehlo", 503, 0.25, text="go away"), "503 go away"),
    ],
)
def test_rule_syntax(spec: str, expected: FaultRule, reply: str) -> None:
    rule = FaultRule.parse(spec)
    assert rule == expected
    assert rule.reply.startswith(reply)
    assert rule.text or rule.reply.endswith(" (txsend sink fault)")
    assert FaultRule.parse(rule.spec) == rule


@pytest.mark.parametrize(
    "spec",
    [
        "nonsense",
        "rcpt",
        "rcpt:250",
        "rcpt:45",
        "rcpt:4510",
        "helo:451",
        "rcpt:451:0",
        "rcpt:451:1.5",
        "rcpt:451:-0.5",
        "rcpt:451:nan",
        "rcpt:451:every=0",
        "rcpt:451:every=x",
        "rcpt:451:0.5:every=2",
        "rcpt:451:every=2:every=3",
        "rcpt:451:match=",
        "dot:451:match=x",
    ],
)
def test_bad_rule_is_a_config_error(spec: str) -> None:
    with pytest.raises(ConfigError, match="bad --fail rule") as info:
        Faults.from_options([spec])
    assert info.value.hint is not None
    assert "expected COMMAND:CODE[:PROBABILITY | :every=N][:match=TEXT]" in info.value.hint


@pytest.mark.parametrize(
    "options",
    [
        {"delay": "soon"},
        {"delay": "-1s"},
        {"delay_command": "nan"},
        {"greylist": "-1"},
        {"disconnect_after": 0},
    ],
)
def test_bad_fault_options(options: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        Faults.from_options([], **options)  # type: ignore[arg-type]


def test_fault_options_parse() -> None:
    faults = _faults(delay="50ms", delay_command="0.2", greylist="0", seed=3)
    assert (faults.delay, faults.delay_command, faults.greylist, faults.seed) == (0.05, 0.2, 0, 3)
    assert faults.active
    assert _faults(greylist="1m").greylist == 60
    assert not _faults(seed=3).active


@pytest.mark.parametrize(
    "cli_args",
    [["--fail", "nonsense"], ["--delay", "soon"], ["--greylist", "-1"]],
)
def test_cli_bad_fault_exits_78_before_binding(
    cli_args: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    port_file = tmp_path / "port"
    with socket.socket() as busy:  # binding would fail with "already in use"
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code = run_cli(
            ["sink", "--port", str(port), "--port-file", str(port_file), "--discard", *cli_args]
        )
    err = capsys.readouterr().err
    assert code == 78, err
    assert "already in use" not in err
    assert not port_file.exists()
    if cli_args[0] == "--fail":
        assert "txsend: error: bad --fail rule 'nonsense'" in err
        assert "hint: expected COMMAND:CODE" in err


_CONVERSATION: list[tuple[str, bytes | None, bytes]] = [
    ("connect", None, b"220 "),
    ("ehlo", b"EHLO client.example\r\n", b"250 "),
    ("mail", b"MAIL FROM:<a@acme.example>\r\n", b"250 "),
    ("rcpt", b"RCPT TO:<b@example.com>\r\n", b"250 "),
    ("data", b"DATA\r\n", b"354 "),
    ("dot", b"Subject: x\r\n\r\nhello\r\n.\r\n", b"250 "),
]
_CODES = {"connect": 554, "ehlo": 550, "mail": 451, "rcpt": 550, "data": 554, "dot": 452}


@pytest.mark.parametrize("close", [False, True], ids=["code", "421"])
@pytest.mark.parametrize("command", [step[0] for step in _CONVERSATION])
def test_fault_at_each_command(command: str, close: bool, tmp_path: Path) -> None:
    code = 421 if close else _CODES[command]
    rule = FaultRule(command, code)
    sink = start_sink(tmp_path, discard=True, faults=_faults(f"{command}:{code}"))
    try:
        with _raw(sink.port) as send:
            for step, line, ok in _CONVERSATION:
                reply = send(line)
                if step == command:
                    assert reply == rule.reply.encode()
                    break
                assert reply.startswith(ok), (step, reply)
            if close:  # 421: the server closes the connection after the reply
                assert send(None) == b""
            elif command == "connect":  # RFC 5321 3.1: only QUIT from here on
                assert send(b"EHLO client.example\r\n").startswith(b"503 5.5.1 ")
                assert send(b"QUIT\r\n").startswith(b"221 ")
                assert send(None) == b""
            else:  # the connection goes on
                assert send(b"NOOP\r\n") == b"250 OK"
                assert send(b"QUIT\r\n").startswith(b"221 ")
    finally:
        stats = sink.finish()
    assert stats.faults == {rule.label: 1}
    assert stats.messages == 0
    assert stats.greylisted is None
    assert format_stats(stats).endswith(f", 1 faults injected ({command} {code}: 1)")


def test_every_nth_message(tmp_path: Path) -> None:
    maildir = tmp_path / "box"
    sink = start_sink(tmp_path, maildir=maildir, faults=_faults("dot:451:every=3"))
    failed = []
    try:
        with smtplib.SMTP("127.0.0.1", sink.port, timeout=10) as client:
            for i in range(1, 11):
                try:
                    client.sendmail("a@acme.example", [f"user{i}@example.com"], _message(i))
                except smtplib.SMTPDataError as exc:
                    assert (exc.smtp_code, exc.smtp_error) == (
                        451,
                        b"4.3.0 try again later (txsend sink fault)",
                    )
                    failed.append(i)
    finally:
        stats = sink.finish()
    assert failed == [3, 6, 9]
    assert (stats.messages, stats.faults) == (7, {"dot 451": 3})
    assert len(list((maildir / "new").iterdir())) == 7  # refused messages are not stored


def test_match_and_rule_order(tmp_path: Path) -> None:
    faults = _faults("rcpt:550:match=@bounce.", "rcpt:452:every=2:match=@full.", "rcpt:451:every=3")
    sink = start_sink(tmp_path, discard=True, faults=faults)
    codes = []
    try:
        with smtplib.SMTP("127.0.0.1", sink.port, timeout=10) as client:
            client.ehlo()
            client.mail("a@acme.example")
            for rcpt in [
                "x@bounce.example",  # rule 1
                "y@example.com",  # rule 3 sees it: 1
                "Z@Bounce.Example",  # rule 1 (case-insensitive)
                "a@full.example",  # rule 2: 1; rule 3: 2
                "b@full.example",  # rule 2: 2, fires
                "c@example.com",  # rule 3: 3, fires
                "d@example.com",  # rule 3: 4
            ]:
                codes.append(client.rcpt(rcpt)[0])
    finally:
        stats = sink.finish()
    assert codes == [550, 250, 550, 250, 452, 451, 250]
    assert stats.faults == {"rcpt 550": 2, "rcpt 452": 1, "rcpt 451": 1}


def _rcpt_pattern(port: int, count: int) -> list[bool]:
    """Whether each of `count` RCPTs was refused."""
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.ehlo()
        client.mail("a@acme.example")
        return [client.rcpt(f"user{i}@example.com")[0] == 451 for i in range(count)]


def test_seed_makes_probability_reproducible(tmp_path: Path) -> None:
    patterns = []
    for seed in (42, 42, 43):
        sink = start_sink(tmp_path, discard=True, faults=_faults("rcpt:451:0.5", seed=seed))
        try:
            patterns.append(_rcpt_pattern(sink.port, 40))
        finally:
            stats = sink.finish()
        assert stats.faults == {"rcpt 451": sum(patterns[-1])}
    rng = random.Random(42)
    assert patterns[0] == patterns[1] == [rng.random() < 0.5 for _ in range(40)]
    assert 0 < sum(patterns[0]) < 40
    assert patterns[2] != patterns[0]


def test_greylist_any_retry_passes(tmp_path: Path) -> None:
    sink = start_sink(tmp_path, discard=True, faults=_faults(greylist="0"))
    try:
        with smtplib.SMTP("127.0.0.1", sink.port, timeout=10) as client:
            client.ehlo()
            client.mail("a@acme.example")
            assert client.rcpt("b@example.com") == (450, b"4.2.0 Greylisted, try again later")
            assert client.rcpt("b@example.com")[0] == 250
            assert client.rcpt("c@example.com")[0] == 450  # another pair
        with smtplib.SMTP("127.0.0.1", sink.port, timeout=10) as client:
            assert client.sendmail("A@acme.example", ["B@example.com"], _message(1)) == {}
            with pytest.raises(smtplib.SMTPRecipientsRefused):
                client.sendmail("other@acme.example", ["b@example.com"], _message(2))
    finally:
        stats = sink.finish()
    assert (stats.messages, stats.greylisted, stats.faults) == (1, 3, None)
    assert format_stats(stats).endswith(" s, 3 greylisted")


def test_greylist_holds_retries_for_seconds(tmp_path: Path) -> None:
    sink = start_sink(tmp_path, discard=True, faults=_faults(greylist="1"))
    try:
        with smtplib.SMTP("127.0.0.1", sink.port, timeout=10) as client:
            client.ehlo()
            client.mail("a@acme.example")
            first = time.monotonic()
            held = (450, b"4.2.0 Greylisted, try again in 1 second")
            assert client.rcpt("b@example.com") == held
            assert client.rcpt("b@example.com") == held  # too early
            assert time.monotonic() - first < 1
            time.sleep(max(0.0, first + 1.1 - time.monotonic()))
            assert client.rcpt("b@example.com")[0] == 250
    finally:
        stats = sink.finish()
    assert stats.greylisted == 2


def test_disconnect_after_nth_message(tmp_path: Path) -> None:
    maildir = tmp_path / "box"
    sink = start_sink(tmp_path, maildir=maildir, faults=_faults(disconnect_after=3))
    try:
        with smtplib.SMTP("127.0.0.1", sink.port, timeout=10) as client:
            for i in (1, 2):
                client.sendmail("a@acme.example", ["b@example.com"], _message(i))
        with _raw(sink.port) as send:  # the 3rd message, on another connection
            for _, line, ok in _CONVERSATION[:-1]:
                assert send(line).startswith(ok)
            assert send(_message(3) + b".\r\n") == b""  # closed, no reply at all
        with smtplib.SMTP("127.0.0.1", sink.port, timeout=10) as client:  # only once
            for i in (4, 5):
                client.sendmail("a@acme.example", ["b@example.com"], _message(i))
    finally:
        stats = sink.finish()
    assert (stats.messages, stats.connections, stats.faults) == (4, 3, {"disconnect": 1})
    assert len(list((maildir / "new").iterdir())) == 4


def test_disconnect_seen_by_smtplib(tmp_path: Path) -> None:
    sink = start_sink(tmp_path, discard=True, faults=_faults(disconnect_after=1))
    try:
        with (
            smtplib.SMTP("127.0.0.1", sink.port, timeout=10) as client,
            pytest.raises(smtplib.SMTPServerDisconnected),
        ):
            client.sendmail("a@acme.example", ["b@example.com"], _message(1))
    finally:
        stats = sink.finish()
    assert stats.messages == 0


def test_delays(tmp_path: Path) -> None:
    sink = start_sink(tmp_path, discard=True, faults=_faults(delay="300ms", delay_command="0.1"))
    try:
        with smtplib.SMTP("127.0.0.1", sink.port, timeout=10) as client:
            started = time.monotonic()
            assert client.noop()[0] == 250
            assert time.monotonic() - started >= 0.1
            client.ehlo()
            client.mail("a@acme.example")
            client.rcpt("b@example.com")
            started = time.monotonic()
            assert client.data(_message(1))[0] == 250
            assert time.monotonic() - started >= 0.1 + 0.3  # the 354, then the final reply
    finally:
        stats = sink.finish()
    assert stats.messages == 1
    assert stats.faults is None  # delays are not faults


def test_dot_delay_only(tmp_path: Path) -> None:
    sink = start_sink(tmp_path, discard=True, faults=_faults(delay="0.2"))
    try:
        with smtplib.SMTP("127.0.0.1", sink.port, timeout=10) as client:
            client.ehlo()
            started = time.monotonic()
            client.sendmail("a@acme.example", ["b@example.com"], _message(1))
            assert time.monotonic() - started >= 0.2
    finally:
        sink.finish()


def test_format_stats_with_faults() -> None:
    stats = SinkStats(messages=95, recipients=95, bytes=1000, connections=3, seconds=1.25)
    plain = "sink: 95 messages, 95 recipients, 1000 bytes, 3 connections in 1.2 s"
    assert format_stats(stats) == plain
    stats.faults = {"rcpt 451": 8, "dot 554": 4}
    stats.greylisted = 3
    assert format_stats(stats) == (
        plain + ", 12 faults injected (rcpt 451: 8, dot 554: 4), 3 greylisted"
    )
