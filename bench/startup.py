"""Start-up benchmark: whole `txsend` commands as a CI pipeline calls them, repeated.

Each command runs N times as a fresh process (hyperfine-style: min, median and max of the
wall time, and the median CPU time of the child, user + sys from wait4, which a busy
machine disturbs less), beside two floors measured the same way: the interpreter alone,
and the interpreter importing Typer (which every command but --version and --help needs
to parse its flags). The 10-row run sends into Postfix's smtp-sink, each repeat with a
fresh journal. With --txsend given more than once (say, an older checkout's script), the
executables take turns run by run, so that both see the same machine. The children run
with bytecode caching on (PYTHONDONTWRITEBYTECODE removed from their environment), as
an installed package runs: the warm-up round writes the .pyc files.

    .venv/bin/python bench/startup.py [--repeats 15] [--txsend PATH ...]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import run as bench
from run import SmtpSink, find_smtp_sink, free_port

Before = Callable[[], None] | None
# as installed: Python caches bytecode (a wheel's installer writes it, an editable
# checkout's first run does), which PYTHONDONTWRITEBYTECODE in the caller's shell would stop
CHILD_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def once(cmd: list[str], before: Before = None) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one run of cmd, which must exit 0."""
    if before is not None:
        before()
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=CHILD_ENV)
    assert proc.stderr is not None
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - started
    proc.stderr.close()
    proc.returncode = code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"{' '.join(cmd)} exited {code}: {err[-400:]!r}")
    return elapsed, usage.ru_utime + usage.ru_stime


def timed(
    cmds: list[list[str]], repeats: int, before: Before = None
) -> list[list[tuple[float, float]]]:
    """For each command, (wall, CPU) over `repeats` runs, the commands taking turns (one
    warm-up round first, not counted)."""
    runs: list[list[tuple[float, float]]] = [[] for _ in cmds]
    for n in range(repeats + 1):
        for i, cmd in enumerate(cmds):
            measured = once(cmd, before)
            if n:
                runs[i].append(measured)
    return runs


def line(label: str, runs: list[tuple[float, float]]) -> str:
    ms = [wall * 1000 for wall, _ in runs]
    cpu = statistics.median(c * 1000 for _, c in runs)
    return (
        f"{label:<48}{min(ms):>7.0f}{statistics.median(ms):>8.0f}{max(ms):>7.0f}"
        f"{cpu:>8.0f}{len(ms):>6}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15, help="runs per command (default 15)")
    parser.add_argument(
        "--txsend",
        type=Path,
        action="append",
        help="a txsend executable (repeatable; default .venv/bin/txsend)",
    )
    args = parser.parse_args(argv)
    python = str(bench.VENV_BIN / "python")
    binaries = [str(p) for p in (args.txsend or [bench.VENV_BIN / "txsend"])]
    names = [f"[{i}] txsend" if len(binaries) > 1 else "txsend" for i in range(len(binaries))]
    work = Path(tempfile.mkdtemp(prefix="txsend-startup-"))
    small = bench.write_job(work / "small", 10)
    three = bench.write_job(work / "three", 3)

    def show(label: str, args_: list[str], before: Before = None) -> None:
        runs = timed([[b, *args_] for b in binaries], args.repeats, before)
        for name, measured in zip(names, runs, strict=True):
            print(line(f"{name} {label}", measured))

    if len(binaries) > 1:
        for i, b in enumerate(binaries):
            print(f"[{i}] {b}")
    print(
        f"{'command (ms, fresh process)':<48}{'min':>7}{'median':>8}{'max':>7}{'CPU':>8}{'runs':>6}"
    )
    print("-" * 84)
    print(line("python -c pass (the floor)", timed([[python, "-c", "pass"]], args.repeats)[0]))
    typer = timed([[python, "-c", "import typer"]], args.repeats)[0]
    print(line("python -c 'import typer'", typer))
    show("--version", ["--version"])
    show("--help", ["--help"])
    show("run --help", ["run", "--help"])
    show("validate (3 rows)", ["validate", str(three)])

    binary = find_smtp_sink()
    if binary is None:
        print("smtp-sink not found: the 10-row run is left out (bench/ensure-smtp-sink.sh)")
        return 0
    sink = SmtpSink(binary, free_port(), work / "smtp-sink.out")
    sink.start()
    try:
        journal = work / "small.journal.db"
        url = f"smtp://127.0.0.1:{sink.port}?tls=none"

        def fresh() -> None:
            for path in work.glob("small.journal.db*"):
                path.unlink()

        show(
            "run, 10 rows into smtp-sink",
            ["run", str(small), "--relay", url, "--quiet", "--journal", str(journal)],
            fresh,
        )
    finally:
        sink.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
