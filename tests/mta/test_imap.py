"""ImapSource against a real Dovecot: what it reads, how it marks, moves and deletes, and how
it fails (a wrong CA, a wrong password, a closed port, a silent server, a bad URL)."""

from __future__ import annotations

import contextlib
import imaplib
import re
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.dovecot import DovecotServer, TestCA, dovecot_server
from tests.postfix import wait_until
from txsend.errors import ConfigError, ExitCode, TxsendError, UnreachableError
from txsend.feedback.events import Item
from txsend.feedback.imap import ImapSource, mailbox_name, parse_url

# Dovecot's own capabilities after login, less MOVE (and less UIDPLUS for the second)
WITHOUT_MOVE = "IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ UIDPLUS"
WITHOUT_MOVE_OR_UIDPLUS = "IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+"


def _raw(n: int) -> bytes:
    return (
        f"From: MAILER-DAEMON@relay.test\r\nTo: bounces@acme.example\r\n"
        f"Subject: report {n}\r\nMessage-ID: <r{n}@relay.test>\r\n\r\nbody {n}\r\n"
    ).encode()


class Client:
    """The test's own view of the mailbox, through imaplib."""

    def __init__(self, server: DovecotServer) -> None:
        context = ssl.create_default_context(cafile=str(server.ca_file))
        self.imap = imaplib.IMAP4_SSL(
            "127.0.0.1", server.imaps_port, ssl_context=context, timeout=5
        )
        self.imap.login(server.user, server.password)

    def append(self, raw: bytes, folder: str = "INBOX", flags: str | None = None) -> None:
        self.imap.create(mailbox_name(folder))
        typ, data = self.imap.append(mailbox_name(folder), flags, None, raw)
        assert typ == "OK", data

    def flags(self, folder: str = "INBOX") -> list[set[str]]:
        """The flags of each message of a folder, in order."""
        typ, data = self.imap.select(mailbox_name(folder), readonly=True)
        assert typ == "OK", data
        if int(data[0]) == 0:
            return []
        typ, data = self.imap.fetch("1:*", "(FLAGS)")
        assert typ == "OK", data
        found = []
        for line in data:
            assert isinstance(line, bytes)
            match = re.search(rb"FLAGS \(([^)]*)\)", line)
            assert match is not None, line
            found.append(set(match.group(1).decode().split()) - {"\\Recent"})
        return found

    def count(self, folder: str = "INBOX") -> int:
        return len(self.flags(folder))

    def close(self) -> None:
        self.imap.logout()


@pytest.fixture
def client(dovecot: DovecotServer) -> Iterator[Client]:
    view = Client(dovecot)
    yield view
    view.close()


def _source(server: DovecotServer, url: str | None = None, **options: object) -> ImapSource:
    kwargs: dict[str, object] = {"ca_file": server.ca_file, "timeout": 5.0}
    kwargs.update(options)
    return ImapSource(url or server.url(), server.password, **kwargs)  # type: ignore[arg-type]


def test_reads_the_unhandled_messages_and_marks_them_handled(
    dovecot: DovecotServer, client: Client
) -> None:
    for n in range(3):
        client.append(_raw(n))

    with _source(dovecot) as source:
        items = list(source)
        assert [item.raw for item in items] == [_raw(n) for n in range(3)]
        sources = [item.source for item in items]
        assert all(re.fullmatch(r"imap:INBOX;UIDVALIDITY=\d+;UID=\d+", s) for s in sources)
        assert [int(s.rsplit("=", 1)[1]) for s in sources] == [1, 2, 3]
        assert client.flags() == [set(), set(), set()]  # reading alone changes nothing
        for item in items:
            source.handled(item)

    assert client.flags() == [{"\\Seen", "$TxsendHandled"}] * 3
    with _source(dovecot) as again:
        assert list(again) == []
    assert client.count() == 3  # flagged, never deleted unless asked


def test_a_message_flagged_handled_elsewhere_is_skipped(
    dovecot: DovecotServer, client: Client
) -> None:
    client.append(_raw(1), flags="($TxsendHandled)")
    client.append(_raw(2))
    client.append(_raw(3), flags="(\\Deleted)")

    with _source(dovecot) as source:
        assert [item.raw for item in source] == [_raw(2)]


def _session_line(server: DovecotServer, count: int) -> str:
    """The log line of the count-th IMAP session to end, waited for (Dovecot writes it just
    after LOGOUT)."""
    wait_until(lambda: len(server.sessions()) >= count, 5.0, "the session's log line")
    return server.sessions()[count - 1]


def test_handled_messages_are_moved_to_move_to(dovecot: DovecotServer, client: Client) -> None:
    for n in range(3):
        client.append(_raw(n))
    client.append(_raw(9), flags="(\\Deleted)")  # someone else's, left alone

    with _source(dovecot, move_to="Processed") as source:  # created when missing
        for item in source:
            source.handled(item)

    assert client.flags("INBOX") == [{"\\Deleted"}]
    assert client.flags("Processed") == [{"\\Seen", "$TxsendHandled"}] * 3
    assert " deleted=0 " in _session_line(dovecot, 1)  # MOVE flags nothing \Deleted


@pytest.mark.parametrize("uidplus", [True, False])
def test_without_move_handled_messages_are_copied_then_expunged(uidplus: bool) -> None:
    with dovecot_server(WITHOUT_MOVE if uidplus else WITHOUT_MOVE_OR_UIDPLUS) as server:
        view = Client(server)
        try:
            for n in range(2):
                view.append(_raw(n))
            view.append(_raw(8), flags="(\\Deleted)")  # someone else's
            view.append(_raw(9), folder="Processed")
            with _source(server, move_to="Processed") as source:
                for item in source:
                    source.handled(item)
            # UID EXPUNGE (RFC 4315) removes ours only; a plain EXPUNGE every \Deleted one
            assert view.flags("INBOX") == ([{"\\Deleted"}] if uidplus else [])
            assert view.flags("Processed") == [set()] + [{"\\Seen", "$TxsendHandled"}] * 2
        finally:
            view.close()
        assert " deleted=2 " in _session_line(server, 1)  # COPY, then \Deleted on each


def test_delete_expunges_handled_messages_only(dovecot: DovecotServer, client: Client) -> None:
    for n in range(3):
        client.append(_raw(n))

    with _source(dovecot, delete=True) as source:
        items = list(source)
        source.handled(items[0])
        source.handled(items[2])

    assert client.flags() == [set()]
    with _source(dovecot) as again:
        assert [item.raw for item in again] == [_raw(1)]


def test_many_messages_are_fetched_in_batches(dovecot: DovecotServer, client: Client) -> None:
    raws = [_raw(n) for n in range(120)]
    for raw in raws:
        dovecot.drop(raw.replace(b"\r\n", b"\n"))  # a Maildir file has bare LF

    with _source(dovecot) as source:
        got = list(source)
    assert sorted(item.raw for item in got) == sorted(raws)
    assert len({item.source for item in got}) == 120


def test_a_folder_name_is_percent_decoded_and_sent_in_modified_utf7(
    dovecot: DovecotServer, client: Client
) -> None:
    client.append(_raw(1), folder="Rückläufer/2026")
    url = dovecot.url("R%C3%BCckl%C3%A4ufer/2026")

    with _source(dovecot, url) as source:
        [item] = list(source)
    assert item.raw == _raw(1)
    assert item.source.startswith("imap:Rückläufer/2026;UIDVALIDITY=")


def test_starttls_is_used_on_the_plain_port(dovecot: DovecotServer, client: Client) -> None:
    client.append(_raw(1))

    with _source(dovecot, dovecot.url(starttls=True)) as source:
        assert [item.raw for item in source] == [_raw(1)]
    assert ", TLS," in dovecot.logins()[-1]


def test_plain_imap_needs_allow_insecure_auth(dovecot: DovecotServer, client: Client) -> None:
    plain = f"imap://{dovecot.user}@127.0.0.1:{dovecot.imap_port}/INBOX?tls=none"
    with pytest.raises(ConfigError, match="in clear") as refused:
        _source(dovecot, plain)
    assert refused.value.exit_code == ExitCode.CONFIG

    client.append(_raw(1))
    with _source(dovecot, plain + "&allow_insecure_auth=true") as source:
        assert [item.raw for item in source] == [_raw(1)]
    assert ", TLS," not in dovecot.logins()[-1]


def test_a_certificate_from_another_ca_is_refused(dovecot: DovecotServer, tmp_path: Path) -> None:
    other = TestCA.create("another CA").write(tmp_path / "other.pem")
    for url in (dovecot.url(), dovecot.url(starttls=True)):
        started = time.monotonic()
        with pytest.raises(UnreachableError) as refused:
            list(_source(dovecot, url, ca_file=other))
        assert time.monotonic() - started < 5.0  # the timeout given; it fails at once
        assert refused.value.exit_code == ExitCode.UNAVAILABLE
        message = str(refused.value)
        assert "127.0.0.1:" in message and "certificate not trusted" in message
        assert "\n" not in message


def test_without_ca_file_the_system_cas_do_not_trust_the_test_ca(
    dovecot: DovecotServer,
) -> None:
    with pytest.raises(UnreachableError, match="certificate not trusted") as refused:
        _source(dovecot, ca_file=None).connect()
    assert refused.value.hint is not None and "ca_file" in refused.value.hint


def test_a_wrong_password_is_refused(dovecot: DovecotServer) -> None:
    source = ImapSource(dovecot.url(), "wrong", ca_file=dovecot.ca_file, timeout=5.0)
    with pytest.raises(UnreachableError) as refused:
        list(source)
    message = str(refused.value)
    assert f"127.0.0.1:{dovecot.imaps_port}" in message
    assert f"login refused for {dovecot.user!r}" in message
    assert "b'" not in message and "\n" not in message


def test_a_closed_port_is_unreachable(tmp_path: Path) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
        port = held.getsockname()[1]
        for url in (f"imaps://u@127.0.0.1:{port}/", f"imap://u@127.0.0.1:{port}/"):
            with pytest.raises(UnreachableError, match=f"127.0.0.1:{port}: .*refused"):
                ImapSource(url, "pw", timeout=5.0).connect()


def test_a_server_that_never_greets_times_out() -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)  # the kernel accepts the connection; nothing ever answers
        port = silent.getsockname()[1]
        started = time.monotonic()
        with pytest.raises(UnreachableError, match=f"127.0.0.1:{port}: .*timed out"):
            ImapSource(f"imap://u@127.0.0.1:{port}/", "pw", timeout=0.5).connect()
        assert time.monotonic() - started < 4.0  # bounded by the timeout, not hanging


class _DrippingServer:
    """An IMAP server on loopback that greets, then answers every command with untagged
    lines, one every few milliseconds, without end: each read gets bytes in time."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._stop = threading.Event()
        self.commands = 0
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        with contextlib.suppress(OSError):
            conn, _ = self._listener.accept()
            with conn:
                conn.sendall(b"* OK IMAP4rev1 ready\r\n")
                conn.recv(1024)  # the first command, whatever it is
                self.commands += 1
                while not self._stop.wait(0.005):
                    conn.sendall(b"* OK still thinking\r\n")

    def close(self) -> None:
        self._stop.set()
        self._listener.close()
        self._thread.join(10)


def test_a_server_that_drips_untagged_lines_forever_times_out() -> None:
    server = _DrippingServer()
    failed: list[BaseException] = []

    def connect() -> None:
        try:
            ImapSource(f"imap://u@127.0.0.1:{server.port}/", "pw", timeout=0.5).connect()
        except BaseException as exc:
            failed.append(exc)

    try:
        client = threading.Thread(target=connect, daemon=True)
        client.start()
        client.join(30)  # far past the timeout: a client still waiting never ends
        assert not client.is_alive(), "the exchange was not bounded by the timeout"
    finally:
        server.close()
    assert server.commands == 1
    [error] = failed
    assert isinstance(error, UnreachableError), error
    assert f"127.0.0.1:{server.port}" in str(error) and "timed out" in str(error)
    assert error.exit_code == ExitCode.UNAVAILABLE


def test_a_missing_folder_is_a_config_error(dovecot: DovecotServer) -> None:
    with pytest.raises(ConfigError, match="'Nope' cannot be opened"):
        _source(dovecot, dovecot.url("Nope")).connect()


def test_an_item_of_another_folder_is_refused(dovecot: DovecotServer, client: Client) -> None:
    client.append(_raw(1))
    with _source(dovecot) as source:
        [item] = list(source)
        with pytest.raises(TxsendError, match="not a message of this IMAP folder"):
            source.handled(Item(item.source.replace("imap:INBOX", "imap:Other"), item.raw))
        with pytest.raises(TxsendError, match="not a message of this IMAP folder"):
            source.handled(Item(re.sub(r"UIDVALIDITY=\d+", "UIDVALIDITY=7", item.source), b""))
    assert client.flags() == [set()]


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://u@host/", "scheme"),
        ("imaps://host/INBOX", "no user"),
        ("imaps://u:secret@host/INBOX", "password does not belong"),
        ("imaps://u@/INBOX", "no host"),
        ("imaps://u@host:99999/", "out of range"),
        ("imaps://u@host/?tls=starttls", "TLS already"),
        ("imap://u@host/?tls=maybe", "tls=maybe"),
        ("imap://u@host/?tls=none", "in clear"),
        ("imap://u@host/?tls=none&allow_insecure_auth=yes", "true or false"),
        ("imap://u@host/?folder=x", "unknown parameter 'folder'"),
        ("imaps://u@host/IN%0ABOX", "control character"),
    ],
)
def test_a_bad_url_is_a_config_error(url: str, why: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(why)):
        ImapSource(url, "pw")


def test_urls_parse_to_their_parts() -> None:
    plain = parse_url("imap://bounce%40acme.example@mail.acme.example/Bounces%2FLate")
    assert (plain.user, plain.host, plain.port) == ("bounce@acme.example", "mail.acme.example", 143)
    assert (plain.folder, plain.tls) == ("Bounces/Late", "starttls")
    tls = parse_url("imaps://u@[::1]/")
    assert (tls.port, tls.folder, tls.tls, tls.where) == (993, "INBOX", "implicit", "[::1]:993")


def test_mailbox_names_use_modified_utf7() -> None:
    # RFC 3501 5.1.3's example, and the escapes a quoted string needs
    assert mailbox_name("~peter/mail/台北/日本語") == '"~peter/mail/&U,BTFw-/&ZeVnLIqe-"'
    assert mailbox_name('A&B "x"\\') == '"A&-B \\"x\\"\\\\"'
