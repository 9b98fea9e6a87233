"""Builders for job folders in tmp_path, and a way to run the CLI in-process."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from txsend.cli.app import run_cli

TEXT = "Hello {{ first_name }},\nyour plan is {{ plan }}.\n"
HTML = "<p>Hello <b>{{ first_name }}</b>, your plan is {{ plan }}.</p>\n"


def write_job(
    folder: Path,
    rows: int = 5,
    *,
    extra_yaml: str = "",
    subject: str = "Welcome, {{ first_name }}!",
    records: list[dict[str, str]] | None = None,
    delivery: str = "  retry: {backoff: 10m, max_backoff: 1h}\n  give_up_unreachable: 1s\n",
) -> Path:
    """A YAML job with text+HTML templates and `rows` recipients; returns the job path.

    By default a deferred row is retried only after 10 minutes (so a run ends with it
    deferred, exit 75) and a run gives up on unreachable relays after one second.
    """
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "t.txt").write_text(TEXT, encoding="utf-8")
    (folder / "t.html").write_text(HTML, encoding="utf-8")
    if records is None:
        records = [
            {"email": f"user{i}@example.com", "first_name": f"User{i}", "plan": "pro"}
            for i in range(rows)
        ]
    with (folder / "people.csv").open("w", newline="", encoding="utf-8") as out:
        writer = csv.DictWriter(out, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows(records)
    job = folder / "job.yaml"
    job.write_text(
        "name: test-job\n"
        'from: "Acme <noreply@acme.example>"\n'
        f"subject: {subject!r}\n"
        "text: t.txt\n"
        "html: t.html\n"
        "recipients:\n"
        "  file: people.csv\n"
        '  name: "{{ first_name }}"\n'
        "headers: {X-Campaign: test}\n"
        + (f"delivery:\n{delivery}" if delivery else "")
        + extra_yaml,
        encoding="utf-8",
    )
    return job


@dataclass
class Result:
    code: int
    out: str
    err: str


def cli(capsys: pytest.CaptureFixture[str], *args: object) -> Result:
    """Run `txsend ARGS` in this process and capture its output."""
    code = run_cli([str(a) for a in args])
    captured = capsys.readouterr()
    return Result(code, captured.out, captured.err)


def txsend_subprocess(*args: object) -> subprocess.Popen[str]:
    """`python -m txsend ARGS` as a child process (for signals and crashes), without the
    caller's TXSEND_* environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TXSEND_")}
    return subprocess.Popen(
        [sys.executable, "-m", "txsend", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def send_cli(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    *args: object,
    stdin: bytes = b"",
) -> Result:
    """`txsend send ARGS` in this process, with `stdin` as its standard input."""
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin)))
    return cli(capsys, "send", *args)


def private_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A state directory of the test's own (`txsend send` keys), and no relay or relay
    password from the caller's environment."""
    folder = tmp_path / "state"
    monkeypatch.setenv("TXSEND_STATE_DIR", str(folder))
    for name in ("TXSEND_RELAY", "TXSEND_RELAY_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    return folder


def process_gone(pid: int, within: float = 10.0) -> bool:
    """True once `pid` no longer runs (gone, or a zombie waiting for init)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
                if stat.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.05)
    return False
