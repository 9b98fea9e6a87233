"""One test per exit code of SPEC.md, each through the real CLI."""

from __future__ import annotations

import os
import signal
import socket
import threading
from pathlib import Path

import pytest

from tests.jobs import cli, write_job
from tests.smtpd import ScriptedServer
from txsend.errors import ExitCode


def test_0_every_row_sent(
    tmp_path: Path, smtp_server: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    result = cli(capsys, "run", write_job(tmp_path, rows=3), "--relay", smtp_server.url)
    assert result.code == ExitCode.OK == 0


def test_1_some_bounced(
    tmp_path: Path, smtp_server: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    smtp_server.rcpt_replies["user1@example.com"] = "550 5.1.1 no such user"
    result = cli(capsys, "run", write_job(tmp_path, rows=3), "--relay", smtp_server.url)
    assert result.code == ExitCode.SOME_FAILED == 1


def test_64_usage(capsys: pytest.CaptureFixture[str]) -> None:
    result = cli(capsys, "run", "--limit", "0", "job.yaml")
    assert result.code == ExitCode.USAGE == 64
    assert "Traceback" not in result.err


def test_65_bad_job(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    job = write_job(tmp_path, rows=1, subject="Hello {{ first_name ")
    result = cli(capsys, "validate", job)
    assert result.code == ExitCode.DATA == 65
    assert "job.yaml" in result.err


def test_66_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result = cli(capsys, "run", tmp_path / "missing.yaml")
    assert result.code == ExitCode.NO_INPUT == 66


def test_69_no_relay_reachable(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    job = write_job(tmp_path, rows=2)
    result = cli(capsys, "run", job, "--relay", f"smtp://127.0.0.1:{port}?tls=none")
    assert result.code == ExitCode.UNAVAILABLE == 69


def test_70_internal_error(
    tmp_path: Path,
    smtp_server: ScriptedServer,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from txsend.delivery.smtp.connection import SmtpConnection

    async def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug in the transport")

    monkeypatch.setattr(SmtpConnection, "send", broken)
    result = cli(capsys, "run", write_job(tmp_path, rows=2), "--relay", smtp_server.url)
    assert result.code == ExitCode.SOFTWARE == 70
    assert "a bug in the transport" in result.err
    assert "bug" in result.err.lower()


def test_75_deferred_rows_remain(
    tmp_path: Path, smtp_server: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    smtp_server.rcpt_replies["user0@example.com"] = "451 4.7.1 try again later"
    result = cli(capsys, "run", write_job(tmp_path, rows=2), "--relay", smtp_server.url)
    assert result.code == ExitCode.TEMPFAIL == 75
    assert "resume" in result.err


def test_78_configuration(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    job = write_job(
        tmp_path,
        rows=1,
        extra_yaml="relays:\n  - url: smtps://u@127.0.0.1:2525\n    password_env: TXSEND_NOPE\n",
    )
    result = cli(capsys, "run", job)
    assert result.code == ExitCode.CONFIG == 78
    assert "TXSEND_NOPE" in result.err


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_130_143_interrupted(
    tmp_path: Path,
    smtp_server: ScriptedServer,
    capsys: pytest.CaptureFixture[str],
    signum: int,
    code: int,
) -> None:
    smtp_server.data_delay = 0.05
    job = write_job(tmp_path, rows=200)

    def interrupt() -> None:
        # once messages arrive the run's signal handlers are in place (a signal sent on
        # a timer could land before them: SIGTERM would end pytest itself)
        smtp_server.wait_for(3, timeout=120)
        os.kill(os.getpid(), signum)

    sender = threading.Thread(target=interrupt, daemon=True)
    sender.start()
    result = cli(capsys, "run", job, "--relay", smtp_server.url, "--concurrency", "2")
    sender.join(timeout=5)
    assert result.code == code
    assert 0 < len(smtp_server.received) < 200
    assert "txsend resume" in result.err
