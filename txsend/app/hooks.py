"""The job's commands: `alerts.command` on every alert change, `on_finish_command` at the end.

A command runs through ``/bin/sh -c`` (so one `curl` can use ``$TXSEND_ALERT_TEXT``) with
the user's own environment plus the TXSEND_* variables of the event: nothing else, and
no secret txsend read itself (a relay password from password_file or password_cmd never
enters it). Its stdin is /dev/null; its stdout and stderr are read line by line into the
logs (event `command_output`, info), so with --log-format json nothing but JSON reaches
stderr. It runs at most `timeout` seconds: then its process group gets SIGTERM, and
SIGKILL a second later. Its failure (an exit code other than 0, a timeout, a shell that
cannot start) is a warning (`command_failed`, with the last lines of its output) and
never changes the run's exit code.

Alert commands never hold up sending: `AlertCommands` runs them one after another, in
the order the alerts changed, on a thread of its own; at the end of the run `finish`
waits for them at most `timeout` seconds in all, then kills what still runs and drops
what never started (a warning names them).
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import IO

from txsend.logs import event

__all__ = ["AlertCommands", "CommandResult", "run_command"]

SHELL = "/bin/sh"
KILL_GRACE = 1.0  # seconds between SIGTERM and SIGKILL
READER_JOIN = 1.0  # seconds to wait for the rest of the output once the command ended
MAX_LINES = 200  # output lines logged per command; the rest are counted, not logged
MAX_LINE = 2000  # characters of one logged line
TAIL = 5  # last lines repeated in the failure warning


@dataclass(frozen=True)
class CommandResult:
    """How a command ended: its exit code (None if it could not start or was killed)."""

    exit_code: int | None
    timed_out: bool
    seconds: float
    tail: tuple[str, ...]  # its last lines of output

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out


def run_command(
    hook: str,
    command: str,
    variables: Mapping[str, str],
    timeout: float,
    *,
    base_env: Mapping[str, str] | None = None,
    hook_timeout: float | None = None,
) -> CommandResult:
    """Run `command` to its end or its `timeout`; log its output and how it ended.

    `hook_timeout`: the job's setting, named in the warning when `timeout` is what was
    left of it at the end of the run."""
    env = dict(os.environ if base_env is None else base_env)
    env.update(variables)
    started = time.monotonic()
    try:
        process = subprocess.Popen(
            [SHELL, "-c", command],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # its own process group: a timeout kills its children too
        )
    except OSError as exc:
        result = CommandResult(None, False, 0.0, (exc.strerror or str(exc),))
        _log_end(hook, result)
        return result
    assert process.stdout is not None
    tail: deque[str] = deque(maxlen=TAIL)
    ended = threading.Event()  # set once the command's end is logged: later lines are not its
    reader = threading.Thread(
        target=_read_output,
        args=(hook, process.stdout, tail, ended),
        name=f"{hook}-output",
        daemon=True,
    )
    reader.start()
    timed_out = False
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        _kill(process)
    except BaseException:  # an interrupt while waiting: leave no command behind
        _kill(process)
        raise
    # a grandchild that left the process group may hold the pipe: the reader is a daemon,
    # and goes on draining it silently (closing it when the pipe ends)
    reader.join(READER_JOIN)
    ended.set()
    result = CommandResult(
        None if timed_out else process.returncode,
        timed_out,
        time.monotonic() - started,
        tuple(tail),
    )
    _log_end(hook, result, timeout if hook_timeout is None else hook_timeout)
    return result


def _kill(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the command's process group, SIGKILL after KILL_GRACE; reaps it."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(KILL_GRACE)
    # whatever is left of the group (the shell's children, or a shell ignoring SIGTERM)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(KILL_GRACE)


def _read_output(hook: str, stream: IO[bytes], tail: deque[str], ended: threading.Event) -> None:
    """Log each line of the command's output (bounded), keeping the last few, until the
    command's end is logged (`ended`); then drain what a daemon it left writes, unlogged."""
    with stream:
        _log_lines(hook, stream, tail, ended)
        with contextlib.suppress(OSError, ValueError):
            while stream.read(65536):
                pass


def _log_lines(hook: str, stream: IO[bytes], tail: deque[str], ended: threading.Event) -> None:
    logged = 0
    dropped = 0
    try:
        while chunk := stream.readline(MAX_LINE):  # a line without end cannot fill memory
            if ended.is_set():
                return
            line = chunk.decode("utf-8", "replace").rstrip("\r\n")
            if not line.strip():
                continue
            tail.append(line)
            if logged < MAX_LINES:
                logged += 1
                event(logging.INFO, "command_output", f"{hook}: {line}", hook=hook, line=line)
            else:
                dropped += 1
    except (OSError, ValueError):  # the pipe was closed under us
        return
    if dropped:
        event(
            logging.INFO,
            "command_output",
            f"{hook}: {dropped} more lines not logged",
            hook=hook,
            line=None,
            dropped=dropped,
        )


def _log_end(hook: str, result: CommandResult, timeout: float | None = None) -> None:
    seconds = round(result.seconds, 3)
    if result.ok:
        event(
            logging.INFO,
            "command_done",
            f"{hook} command done in {seconds:g} s",
            hook=hook,
            exit_code=0,
            seconds=seconds,
        )
        return
    if result.timed_out:
        why = f"killed at its time limit, hook_timeout {timeout:g}s"
    elif result.exit_code is None:
        why = f"could not start {SHELL}"
    elif result.exit_code < 0:
        why = f"killed by signal {-result.exit_code}"
    else:
        why = f"exit {result.exit_code}"
    output = " | ".join(result.tail)
    event(
        logging.WARNING,
        "command_failed",
        f"{hook} command failed ({why})" + (f": {output}" if output else "") + "; the run goes on",
        hook=hook,
        exit_code=result.exit_code,
        timed_out=result.timed_out,
        seconds=seconds,
        output=list(result.tail),
    )


class AlertCommands:
    """Runs alert commands in order on a thread of their own; see the module docstring."""

    def __init__(self, command: str, timeout: float) -> None:
        self.command = command
        self.timeout = timeout
        self._queue: queue.Queue[tuple[str, Mapping[str, str]] | None] = queue.Queue()
        self._deadline: float | None = None  # set by finish: nothing starts after it
        self._thread: threading.Thread | None = None
        self.results: list[CommandResult] = []

    def submit(self, label: str, variables: Mapping[str, str]) -> None:
        """Queue one run of the command (returns at once)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="alert-commands", daemon=True)
            self._thread.start()
        self._queue.put((label, dict(variables)))

    def finish(self) -> None:
        """Wait for the queued commands, `timeout` seconds at most in all."""
        thread = self._thread
        if thread is None:
            return
        self._deadline = time.monotonic() + self.timeout
        self._queue.put(None)
        # each command kills itself at the deadline; the margin covers SIGTERM, SIGKILL
        # and reading the rest of its output
        thread.join(self.timeout + KILL_GRACE + READER_JOIN + 1.0)

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            label, variables = item
            timeout = self.timeout
            if self._deadline is not None:
                timeout = self._deadline - time.monotonic()
                if timeout <= 0:
                    event(
                        logging.WARNING,
                        "command_failed",
                        f"alert command for {label} not run: the run ended and "
                        f"hook_timeout ({self.timeout:g} s) was spent",
                        hook="alert",
                        exit_code=None,
                        timed_out=True,
                        seconds=0.0,
                        output=[],
                    )
                    continue
            self.results.append(
                run_command("alert", self.command, variables, timeout, hook_timeout=self.timeout)
            )
