"""The job's commands run for real through /bin/sh: environment, output into the logs,
bounded time (a command that never exits is killed, with its children), failures as
warnings."""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from txsend.app.hooks import KILL_GRACE, MAX_LINES, AlertCommands, run_command


def events(caplog: pytest.LogCaptureFixture, name: str) -> list[dict[str, Any]]:
    return [
        {"message": r.getMessage(), "level": r.levelname, **getattr(r, "fields", {})}
        for r in caplog.records
        if getattr(r, "event", None) == name
    ]


@pytest.fixture(autouse=True)
def _info(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="txsend")


def _gone(pid: int) -> bool:
    """The process has ended (a zombie nobody reaped has ended too)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def test_variables_and_the_users_environment_reach_the_command(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "env"
    result = run_command(
        "alert",
        f'echo "$TXSEND_ALERT_TEXT"; echo "$MINE" > {out}',
        {"TXSEND_ALERT_TEXT": 'it\'s "quoted" $HOME `x`'},
        5.0,
        base_env={"MINE": "from the user", "PATH": os.environ["PATH"]},
    )
    assert result.ok and result.exit_code == 0
    assert out.read_text() == "from the user\n"
    # the value reached the command as it is: no second round of shell expansion
    [line] = events(caplog, "command_output")
    assert line["line"] == 'it\'s "quoted" $HOME `x`' and line["hook"] == "alert"
    [done] = events(caplog, "command_done")
    assert done["level"] == "INFO" and done["exit_code"] == 0


def test_a_failing_command_is_a_warning_with_its_last_lines(
    caplog: pytest.LogCaptureFixture,
) -> None:
    result = run_command(
        "on_finish", "for i in 1 2 3 4 5 6 7; do echo line$i; done; echo oops >&2; exit 22", {}, 5.0
    )
    assert not result.ok and result.exit_code == 22 and not result.timed_out
    [failed] = events(caplog, "command_failed")
    assert failed["level"] == "WARNING"
    assert failed["exit_code"] == 22 and failed["timed_out"] is False
    assert failed["output"] == ["line4", "line5", "line6", "line7", "oops"]
    assert "on_finish command failed (exit 22): line4 | " in failed["message"]
    assert failed["message"].endswith("oops; the run goes on")
    assert len(events(caplog, "command_output")) == 8


def test_a_command_that_never_exits_is_killed_with_its_children(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pids = tmp_path / "pids"
    started = time.monotonic()
    result = run_command(
        "alert", f"sleep 300 & echo $! > {pids}; echo waiting; wait", {}, timeout=0.5
    )
    elapsed = time.monotonic() - started
    assert result.timed_out and result.exit_code is None
    assert elapsed < 0.5 + KILL_GRACE + 1.5, elapsed
    assert _gone(int(pids.read_text()))  # the shell's child went with it
    [failed] = events(caplog, "command_failed")
    assert "killed at its time limit, hook_timeout 0.5s" in failed["message"]
    assert failed["output"] == ["waiting"]


def test_a_command_that_ignores_sigterm_is_killed(tmp_path: Path) -> None:
    started = time.monotonic()
    result = run_command("alert", "trap '' TERM; while :; do sleep 1; done", {}, timeout=0.3)
    assert result.timed_out
    assert time.monotonic() - started < 0.3 + 2 * KILL_GRACE + 1.5


def test_output_is_bounded(caplog: pytest.LogCaptureFixture) -> None:
    # 5 MB without a newline, then many short lines
    command = "head -c 5000000 /dev/zero | tr '\\0' x; echo; seq 1 1000"
    result = run_command("alert", command, {}, 20.0)
    assert result.ok
    lines = events(caplog, "command_output")
    assert len(lines) == MAX_LINES + 1
    assert all(len(e["line"]) <= 2000 for e in lines[:-1])
    assert lines[-1]["dropped"] > 1000
    assert result.tail[-1] == "1000"


def test_output_that_is_not_utf8_is_logged_with_replacements(
    caplog: pytest.LogCaptureFixture,
) -> None:
    run_command("alert", "printf 'caf\\351 \\377\\n'", {}, 5.0)
    [line] = events(caplog, "command_output")
    assert line["line"] == "caf\ufffd \ufffd"


def test_a_shell_that_cannot_start_is_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr("txsend.app.hooks.SHELL", "/nonexistent/sh")
    result = run_command("alert", "true", {}, 5.0)
    assert not result.ok and result.exit_code is None
    [failed] = events(caplog, "command_failed")
    assert "could not start /nonexistent/sh" in failed["message"]


def test_alert_commands_run_in_order_and_never_block_the_caller(tmp_path: Path) -> None:
    log = tmp_path / "log"
    commands = AlertCommands(f'sleep 0.2; echo "$N" >> {log}', timeout=5.0)
    started = time.monotonic()
    for n in range(3):
        commands.submit(f"n{n}", {"N": str(n)})
    assert time.monotonic() - started < 0.15  # submit returns at once
    commands.finish()
    assert log.read_text().split() == ["0", "1", "2"]
    assert [r.ok for r in commands.results] == [True, True, True]


def test_finish_waits_at_most_the_timeout_and_drops_what_never_started(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    commands = AlertCommands("echo started; sleep 300", timeout=0.5)
    commands.submit("error_rate firing", {})
    commands.submit("error_rate resolved", {})
    started = time.monotonic()
    commands.finish()
    assert time.monotonic() - started < 0.5 + KILL_GRACE + 1.5
    failed = events(caplog, "command_failed")
    assert failed[0]["timed_out"] is True
    assert "alert command for error_rate resolved not run" in failed[1]["message"]
    assert len(commands.results) == 1


def test_finish_without_any_alert_returns_at_once() -> None:
    commands = AlertCommands("sleep 300", timeout=30.0)
    started = time.monotonic()
    commands.finish()
    assert time.monotonic() - started < 0.1


def test_output_of_a_daemon_it_left_behind_is_not_logged_after_it_ended(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A command that forks a daemon (in a session of its own) keeping the pipe open ends
    at once; what the daemon prints later is no output of the command: it used to be
    logged after command_done, even after the run's last line."""
    go, done = tmp_path / "go", tmp_path / "done"
    daemon = f"while [ ! -e {go} ]; do sleep 0.01; done; echo late; touch {done}"
    result = run_command("on_finish", f"setsid sh -c '{daemon}' & echo started", {}, 20.0)
    assert result.ok
    go.touch()  # the daemon prints now, then exits: the pipe's last writer is gone
    for reader in [t for t in threading.enumerate() if t.name == "on_finish-output"]:
        reader.join(30)  # it reads to the end of the pipe
        assert not reader.is_alive()
    deadline = time.monotonic() + 30
    while not done.exists():
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert [e["line"] for e in events(caplog, "command_output")] == ["started"]
    assert len(events(caplog, "command_done")) == 1
