"""`txsend send --idempotency-key`: a re-run reports the first outcome and sends nothing;
a deferred send is retried by the next call; two calls at once never send twice; a call
killed (SIGKILL) before DATA, in the body or after the final dot, re-run with its key,
sends each recipient exactly once, except the one documented window (the final dot went
out and no reply was recorded: `--on-unknown resend` sends again and says so).

The servers stall deterministically (tests/faultserver.py hangs at a chosen command; the
tests wait for that command to arrive, never for a fixed time). The bounded-wait tests
run the CLI as a child process, so that a send that never ended would be killed and
reported instead of stalling the suite.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.faultserver import HANG, FaultServer
from tests.jobs import private_state
from tests.jobs import send_cli as send
from tests.smtpd import ScriptedServer, TlsFiles, make_tls_files

FROM = "CI <ci@acme.example>"
HARD_LIMIT = 60.0  # seconds a child process may run before the test calls it a hang


@pytest.fixture(autouse=True)
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return private_state(tmp_path, monkeypatch)


def message(folder: Path, relay: str, key: str = "deploy-42", *extra: object) -> list[object]:
    """A message to two recipients, with an idempotency key."""
    body = folder / "body.txt"
    if not body.exists():
        body.write_text("Deployed {{ version }}.\n", encoding="utf-8")
    return [
        "--to",
        "ann@example.com",
        "--cc",
        "bob@example.com",
        "--from",
        FROM,
        "--subject",
        "Deployed",
        "--text",
        body,
        "--relay",
        relay,
        "--idempotency-key",
        key,
        *extra,
    ]


_CHILDREN: list[subprocess.Popen[str]] = []


@pytest.fixture(autouse=True)
def no_child_left() -> Iterator[None]:
    """A test that fails midway leaves no child process behind."""
    yield
    while _CHILDREN:
        proc = _CHILDREN.pop()
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def child(state: Path, *args: object, stdin: bytes = b"") -> subprocess.Popen[str]:
    """`python -m txsend send ARGS` as a child process (to be killed, or timed)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TXSEND_")}
    env["TXSEND_STATE_DIR"] = str(state)
    with tempfile.TemporaryFile() as source:
        source.write(stdin)
        source.seek(0)
        proc = subprocess.Popen(
            [sys.executable, "-m", "txsend", "send", *map(str, args)],
            stdin=source,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
    _CHILDREN.append(proc)
    return proc


def finish(proc: subprocess.Popen[str], limit: float = HARD_LIMIT) -> tuple[int, str, str]:
    """Wait for a child within `limit`; a child that does not end is a failed test."""
    try:
        out, err = proc.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail(f"txsend send did not end within {limit} s")
    return proc.returncode, out, err


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    """Poll a condition the test waits for (a command arrived, a row was written)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.01)


def journal_of(state: Path, key: str = "deploy-42") -> Path:
    digest = hashlib.sha256(key.encode()).hexdigest()[:40]
    return state / "send" / f"{digest}.db"


def rows(state: Path, key: str = "deploy-42") -> dict[str, dict[str, Any]]:
    path = journal_of(state, key)
    if not path.exists():
        return {}
    try:
        with sqlite3.connect(path) as db:
            db.row_factory = sqlite3.Row
            return {r["address"]: dict(r) for r in db.execute("SELECT * FROM messages")}
    except sqlite3.OperationalError:  # a child process is making the journal right now
        return {}


def states(state: Path, key: str = "deploy-42") -> dict[str, str]:
    return {address: row["state"] for address, row in rows(state, key).items()}


def kill(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=10)
    assert proc.returncode == -signal.SIGKILL


# --------------------------------------------------------------------------- replay


def test_the_same_command_twice_sends_once_and_replays_the_outcome(
    tmp_path: Path,
    smtp_server: ScriptedServer,
    state: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    args = message(tmp_path, smtp_server.url, "deploy-42", "--json")
    first = send(capsys, monkeypatch, *args)
    assert first.code == 0, first.err
    assert len(smtp_server.received) == 2
    connections = smtp_server.connections
    again = send(capsys, monkeypatch, *args)
    assert again.code == 0, again.err
    assert len(smtp_server.received) == 2  # nothing sent again
    assert smtp_server.connections == connections  # nor even connected
    one, two = json.loads(first.out), json.loads(again.out)
    assert (one["replayed"], two["replayed"]) == (False, True)
    assert one["message_id"] == two["message_id"]
    assert one["recipients"] == two["recipients"]
    assert two["idempotency_key"] == "deploy-42"
    assert "[replayed]" in again.err and "nothing was sent now" in again.err
    # the key is hashed into the file name; the journal is the owner's alone
    path = journal_of(state)
    assert path.exists()
    assert two["journal"] == str(path)
    assert oct(path.stat().st_mode & 0o777) == oct(0o600)


def test_a_replay_needs_no_relay_and_exits_as_the_first_call_did(
    tmp_path: Path,
    smtp_server: ScriptedServer,
    state: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    smtp_server.rcpt_replies["bob@example.com"] = "550 5.1.1 <bob@example.com> no such user"
    first = send(capsys, monkeypatch, *message(tmp_path, smtp_server.url))
    assert first.code == 1, first.err
    assert states(state) == {"ann@example.com": "sent", "bob@example.com": "bounced"}
    received = len(smtp_server.received)
    # the same message and key without a reachable relay: the first outcome, exit 1
    dead = message(tmp_path, "smtp://127.0.0.1:1?tls=none")
    again = send(capsys, monkeypatch, *dead)
    assert again.code == 1, again.err
    assert "550 5.1.1" in again.err and "[replayed]" in again.err
    assert len(smtp_server.received) == received


def test_the_key_with_another_message_is_refused_with_65(
    tmp_path: Path,
    smtp_server: ScriptedServer,
    state: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert send(capsys, monkeypatch, *message(tmp_path, smtp_server.url)).code == 0
    args = message(tmp_path, smtp_server.url)
    for changed in (
        [*args, "--bcc", "eve@example.com"],
        [a if a != "Deployed" else "Rolled back" for a in args],
        [a if a != FROM else "other@acme.example" for a in args],
        [*args, "--attach", tmp_path / "body.txt"],
    ):
        result = send(capsys, monkeypatch, *changed)
        assert result.code == 65, result.err
        assert "'deploy-42' was used for another message" in result.err
    (tmp_path / "body.txt").write_text("Deployed 2.0.\n", encoding="utf-8")
    body = send(capsys, monkeypatch, *args)
    assert body.code == 65 and "text changed" in body.err
    assert len(smtp_server.received) == 2
    # a new key for the new message
    assert send(capsys, monkeypatch, *message(tmp_path, smtp_server.url, "deploy-43")).code == 0
    assert len(smtp_server.received) == 4


def test_keys_never_become_paths(
    tmp_path: Path,
    smtp_server: ScriptedServer,
    state: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    key = "../../../escape/../x y\\z"
    assert send(capsys, monkeypatch, *message(tmp_path, smtp_server.url, key)).code == 0
    name = journal_of(state, key).name
    made = {p.name for p in (state / "send").iterdir()}
    assert {name, name + ".lock"} <= made
    assert all(n.startswith(name) for n in made)  # the journal, its lock, its WAL files
    assert sorted(p.name for p in tmp_path.iterdir()) == ["body.txt", "state"]


def test_the_state_directory_follows_xdg(monkeypatch: pytest.MonkeyPatch) -> None:
    from txsend.app.oneshot import journal_path, state_dir

    assert state_dir({"TXSEND_STATE_DIR": "/s", "XDG_STATE_HOME": "/x"}) == Path("/s")
    assert state_dir({"XDG_STATE_HOME": "/x", "HOME": "/h"}) == Path("/x/txsend")
    assert state_dir({"XDG_STATE_HOME": "rel", "HOME": "/h"}) == Path("/h/.local/state/txsend")
    assert state_dir({"HOME": "/h"}) == Path("/h/.local/state/txsend")
    path = journal_path("k/../../etc", {"TXSEND_STATE_DIR": "/s"})
    assert path.parent == Path("/s/send") and ".." not in path.name


# --------------------------------------------------------------------------- deferred


def test_a_deferred_recipient_is_retried_by_the_next_call_with_the_key(
    tmp_path: Path,
    smtp_server: ScriptedServer,
    state: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    smtp_server.rcpt_replies["bob@example.com"] = "451 4.3.0 try again later"
    args = message(tmp_path, smtp_server.url, "deploy-42", "--retry-backoff", "10m")
    first = send(capsys, monkeypatch, *args)
    assert first.code == 75, first.err
    assert states(state) == {"ann@example.com": "sent", "bob@example.com": "deferred"}
    assert "run the same command again" in first.err
    # too early: nothing is due, nothing is sent, still 75
    early = send(capsys, monkeypatch, *args)
    assert early.code == 75, early.err
    assert [r.rcpt_tos for r in smtp_server.received] == [["ann@example.com"]]
    # the retry time comes (the journal's clock moved on), the relay takes it now
    with sqlite3.connect(journal_of(state)) as db:
        db.execute("UPDATE messages SET next_attempt_at = 0 WHERE state = 'deferred'")
    del smtp_server.rcpt_replies["bob@example.com"]
    later = send(capsys, monkeypatch, *args)
    assert later.code == 0, later.err
    assert Counter(r.rcpt_tos[0] for r in smtp_server.received) == {
        "ann@example.com": 1,
        "bob@example.com": 1,
    }
    assert rows(state)["bob@example.com"]["attempts"] == 2
    # and once settled, a replay
    assert send(capsys, monkeypatch, *args).code == 0
    assert len(smtp_server.received) == 2


def test_without_a_key_a_deferred_send_says_nothing_remembers_it(
    tmp_path: Path,
    smtp_server: ScriptedServer,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    smtp_server.rcpt_replies["ann@example.com"] = "452 4.2.2 mailbox full"
    args = [*message(tmp_path, smtp_server.url)[:-2], "--retry-backoff", "10m"]
    result = send(capsys, monkeypatch, *args)
    assert result.code == 75
    assert "nothing remembers this send" in result.err


# --------------------------------------------------------------------------- bounded


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_a_relay_that_refuses_connections_ends_with_69_and_says_why(
    tmp_path: Path, state: Path
) -> None:
    relay = f"smtp://127.0.0.1:{free_port()}?tls=none"
    started = time.monotonic()
    code, _, err = finish(child(state, *message(tmp_path, relay), "--give-up", "1s"))
    assert code == 69, err
    assert time.monotonic() - started < 1 + 15  # give-up, plus a busy machine's start-up
    assert "connection refused" in err and "gave up" in err
    assert set(states(state).values()) == {"pending"}
    # the next call with the key, through a relay that answers, sends them
    with ScriptedServer() as server:
        code, _, err = finish(child(state, *message(tmp_path, server.url)))
        assert code == 0, err
        assert sorted(r.rcpt_tos[0] for r in server.received) == [
            "ann@example.com",
            "bob@example.com",
        ]


@pytest.mark.slow
@pytest.mark.parametrize("stall", ["CONNECT", "MAIL", "DATA", "."])
def test_a_relay_that_never_answers_ends_within_the_timeout(
    stall: str, tmp_path: Path, state: Path
) -> None:
    with FaultServer({stall: HANG}) as server:
        started = time.monotonic()
        code, _, err = finish(
            child(
                state,
                *message(tmp_path, server.url),
                "--timeout",
                "1s",
                "--give-up",
                "2s",
                "--retry-backoff",
                "10m",
            )
        )
        elapsed = time.monotonic() - started
    assert code in (69, 75), err
    assert elapsed < 2 + 2 + 15, err  # timeouts and give-up, plus start-up on a busy machine
    assert "timed out" in err or "no reply" in err or "gave up" in err, err
    assert "Traceback" not in err
    left = set(states(state).values())
    # before the final dot: nothing went out; after it: the reply was lost (unknown)
    assert left <= ({"unknown"} if stall == "." else {"pending", "deferred"}), left


# --------------------------------------------------------------------------- concurrency


@pytest.mark.slow
def test_a_second_call_while_the_first_sends_gets_75_and_never_sends(
    tmp_path: Path,
    state: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with FaultServer({"RCPT": HANG}) as server:
        first = child(state, *message(tmp_path, server.url, "deploy-42", "--timeout", "30s"))
        try:
            wait_until(lambda: "RCPT" in server.commands, "the first call's RCPT")
            second = send(capsys, monkeypatch, *message(tmp_path, server.url))
            assert second.code == 75, second.err
            assert "in progress" in second.err and f"pid {first.pid}" in second.err
            assert server.commands.count("MAIL") == 1  # the second call never began one
        finally:
            kill(first)
        # killed before DATA: the rows are pending; the next call sends each once
        assert set(states(state).values()) == {"pending"}
        server.script.clear()
        again = send(capsys, monkeypatch, *message(tmp_path, server.url))
        assert again.code == 0, again.err
        assert server.arrivals() == Counter({"ann@example.com": 1, "bob@example.com": 1})
        assert "mid-send" not in again.err and "sent again" not in again.err


@pytest.mark.slow
def test_sigterm_stops_within_the_grace_and_the_key_continues(
    tmp_path: Path,
    state: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with FaultServer({"RCPT": HANG}) as server:
        proc = child(state, *message(tmp_path, server.url), "--grace", "1s")
        wait_until(lambda: "RCPT" in server.commands, "the RCPT")
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code, _, err = finish(proc)
        assert code == 143, err
        assert time.monotonic() - started < 1 + 10, err
        assert "Traceback" not in err
        assert set(states(state).values()) == {"pending"}  # stopped before DATA
        server.script.clear()
        again = send(capsys, monkeypatch, *message(tmp_path, server.url))
        assert again.code == 0, again.err
        assert server.arrivals() == Counter({"ann@example.com": 1, "bob@example.com": 1})


# --------------------------------------------------------------------------- kill -9


@pytest.mark.slow
def test_killed_in_the_body_then_rerun_sends_each_once(
    tmp_path: Path,
    state: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with FaultServer({"BODY": HANG}) as server:
        proc = child(state, *message(tmp_path, server.url))
        wait_until(lambda: "sending" in states(state).values(), "a row in DATA")
        kill(proc)
        assert not server.arrivals()  # the message never ended: nothing was kept
        assert sorted(states(state).values()) == ["pending", "sending"]
        server.script.clear()
        again = send(capsys, monkeypatch, *message(tmp_path, server.url))
        assert again.code == 0, again.err
        assert server.arrivals() == Counter({"ann@example.com": 1, "bob@example.com": 1})
        assert "sent again (--on-unknown resend)" in again.err
        assert set(states(state).values()) == {"sent"}


@pytest.mark.slow
def test_killed_after_the_final_dot_is_the_documented_window(
    tmp_path: Path,
    state: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The relay kept the message but its reply never came: the rerun cannot know, sends
    it again (--on-unknown resend, the job's default) and says so."""
    with FaultServer({".": HANG}) as server:
        proc = child(state, *message(tmp_path, server.url))
        wait_until(lambda: bool(server.arrivals()), "the first final dot")
        kill(proc)
        assert server.arrivals() == Counter({"ann@example.com": 1})
        assert states(state) == {"ann@example.com": "sending", "bob@example.com": "pending"}
        server.script.clear()
        again = send(capsys, monkeypatch, *message(tmp_path, server.url, "deploy-42", "--json"))
        assert again.code == 0, again.err
        assert server.arrivals() == Counter({"ann@example.com": 2, "bob@example.com": 1})
        assert "may have arrived too" in again.err
        assert json.loads(again.out)["resent_unknown"] == 1


@pytest.mark.slow
def test_killed_after_the_final_dot_with_on_unknown_skip_sends_no_duplicate(
    tmp_path: Path,
    state: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with FaultServer({".": HANG}) as server:
        proc = child(state, *message(tmp_path, server.url))
        wait_until(lambda: bool(server.arrivals()), "the first final dot")
        kill(proc)
        server.script.clear()
        args = message(tmp_path, server.url, "deploy-42", "--on-unknown", "skip")
        again = send(capsys, monkeypatch, *args)
        assert again.code == 1, again.err  # unknown, left as it is: see the report
        assert server.arrivals() == Counter({"ann@example.com": 1, "bob@example.com": 1})
        assert states(state) == {"ann@example.com": "unknown", "bob@example.com": "sent"}
        replay = send(capsys, monkeypatch, *args)  # settled: a replay, the same exit
        assert replay.code == 1 and "[replayed]" in replay.err


# --------------------------------------------------------------------------- smtp-sink

SMTP_SINK = shutil.which("smtp-sink")


@pytest.mark.skipif(SMTP_SINK is None, reason="Postfix's smtp-sink is not installed")
def test_smtp_sink_gets_each_recipient_once_over_two_calls(
    tmp_path: Path,
    state: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tests.delivery.test_delivery import postfix_sink

    with postfix_sink() as sink:
        ready = (
            b"From: bot@acme.example\nTo: ann@example.com\nCc: bob@example.com\n"
            b"Bcc: carl@example.com\nSubject: via smtp-sink\n\nhello\n"
        )
        args = ["--stdin", "--relay", sink.url, "--idempotency-key", "sink-1"]
        assert send(capsys, monkeypatch, *args, stdin=ready).code == 0
        assert send(capsys, monkeypatch, *args, stdin=ready).code == 0
        dumps = sink.messages()
    rcpts = Counter(
        line.removeprefix("X-Rcpt-Args: <").partition(">")[0]
        for text in dumps
        for line in text.splitlines()
        if line.startswith("X-Rcpt-Args: <")
    )
    assert rcpts == Counter(["ann@example.com", "bob@example.com", "carl@example.com"])
    assert all("carl" not in text.split("X-Rcpt-Args")[0] for text in dumps)
    assert states(state, "sink-1") == {
        "ann@example.com": "sent",
        "bob@example.com": "sent",
        "carl@example.com": "sent",
    }


@pytest.mark.skipif(SMTP_SINK is None, reason="Postfix's smtp-sink is not installed")
def test_smtp_sink_soft_refusal_is_75_then_retried(
    tmp_path: Path,
    state: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tests.delivery.test_delivery import postfix_sink

    args = message(tmp_path, "", "soft", "--retry-backoff", "10m")
    with postfix_sink("-r", "rcpt") as sink:
        args[args.index("--relay") + 1] = sink.url
        result = send(capsys, monkeypatch, *args)
    assert result.code == 75, result.err
    assert set(states(state, "soft").values()) == {"deferred"}
    assert "450 4.3.0" in result.err


# --------------------------------------------------------------------------- secrets

USER = "mailer"
PASSWORD = "s3nd-Pa55word-91c2"


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("TLS tests need the openssl command line to make test certificates")
    return make_tls_files(tmp_path_factory.mktemp("tls"), openssl=openssl)


@pytest.fixture
def auth_server(tls_files: TlsFiles) -> Iterator[ScriptedServer]:
    with ScriptedServer(tls_context=tls_files.server_context(), require_starttls=True) as server:
        server.credentials = {USER: PASSWORD}
        yield server


@pytest.mark.slow
def test_the_relay_password_comes_from_the_environment_and_never_shows(
    tmp_path: Path, state: Path, auth_server: ScriptedServer, tls_files: TlsFiles
) -> None:
    url = f"smtp://{USER}@127.0.0.1:{auth_server.port}?tls=starttls"
    args = [*message(tmp_path, url), "--json", "--log-level", "debug"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("TXSEND_")}
    env.update(
        TXSEND_STATE_DIR=str(state),
        TXSEND_RELAY_PASSWORD=PASSWORD,
        SSL_CERT_FILE=str(tls_files.ca_file),
    )
    done = subprocess.run(
        [sys.executable, "-m", "txsend", "send", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=HARD_LIMIT,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert {r.login for r in auth_server.received} == {USER}
    assert all(r.tls for r in auth_server.received)
    assert PASSWORD not in done.stdout + done.stderr
    for path in (state / "send").iterdir():
        assert PASSWORD.encode() not in path.read_bytes()
    # without the password: 78, before anything is journalled or sent
    del env["TXSEND_RELAY_PASSWORD"]
    other = [*message(tmp_path, url, "other-key")]
    done = subprocess.run(
        [sys.executable, "-m", "txsend", "send", *map(str, other)],
        capture_output=True,
        text=True,
        env=env,
        timeout=HARD_LIMIT,
        check=False,
    )
    assert done.returncode == 78, done.stderr
    assert "TXSEND_RELAY_PASSWORD" in done.stderr
    assert states(state, "other-key") == {}


def test_a_regenerated_ready_message_still_replays(
    smtp_server: ScriptedServer,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A CI step that builds the message anew on each run stamps a new Date and
    Message-ID (and may write LF where the first wrote CRLF): still the same message for
    its key. A changed Subject or body is not."""

    def generated(stamp: int, subject: str = "Deployed", newline: bytes = b"\r\n") -> bytes:
        lines = [
            b"From: CI <ci@acme.example>",
            b"To: ann@example.com",
            b"Subject: " + subject.encode(),
            f"Date: Sun, 06 Dec 2026 10:0{stamp}:00 +0000".encode(),
            f"Message-ID: <build-{stamp}@ci.acme.example>".encode(),
            b"",
            b"Version 2.0 is live.",
            b"",
        ]
        return newline.join(lines)

    args = ["--stdin", "--relay", smtp_server.url, "--idempotency-key", "build-7", "--json"]
    first = send(capsys, monkeypatch, *args, stdin=generated(1))
    assert first.code == 0, first.err
    again = send(capsys, monkeypatch, *args, stdin=generated(2, newline=b"\n"))
    assert again.code == 0, again.err
    assert json.loads(again.out)["replayed"] is True
    assert len(smtp_server.received) == 1
    for changed in (generated(3, subject="Rolled back"), generated(3).replace(b"2.0", b"2.1")):
        refused = send(capsys, monkeypatch, *args, stdin=changed)
        assert refused.code == 65, refused.err
        assert "message changed" in refused.err
    assert len(smtp_server.received) == 1
