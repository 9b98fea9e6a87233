"""Start-up benchmark: whole `txsend` commands as a CI pipeline calls them, repeated.

Each command runs N times as a fresh process (hyperfine-style: min, median and max of the
wall time), beside two floors measured the same way: the interpreter alone, and the
interpreter importing Typer (which every command needs to parse its flags). The 10-row
run sends into Postfix's smtp-sink, each repeat with a fresh journal.

    .venv/bin/python bench/startup.py [--repeats 15]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import run as bench
from run import SmtpSink, find_smtp_sink, free_port


def timed(cmd: list[str], repeats: int, before: object = None) -> list[float]:
    """Wall seconds of `cmd` over `repeats` runs (one warm-up run first, not counted)."""
    seconds = []
    for n in range(repeats + 1):
        if callable(before):
            before(n)
        started = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, check=False)
        elapsed = time.perf_counter() - started
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} exited {done.returncode}: {done.stderr[-400:]!r}")
        if n:
            seconds.append(elapsed)
    return seconds


def line(label: str, seconds: list[float]) -> str:
    ms = [s * 1000 for s in seconds]
    return f"{label:<44}{min(ms):>8.0f}{statistics.median(ms):>10.0f}{max(ms):>8.0f}{len(ms):>6}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15, help="runs per command (default 15)")
    parser.add_argument("--txsend", type=Path, default=bench.VENV_BIN / "txsend")
    args = parser.parse_args(argv)
    python = str(bench.VENV_BIN / "python")
    txsend = str(args.txsend)
    work = Path(tempfile.mkdtemp(prefix="txsend-startup-"))
    small = bench.write_job(work / "small", 10)
    three = bench.write_job(work / "three", 3)

    print(f"{'command (wall ms, fresh process)':<44}{'min':>8}{'median':>10}{'max':>8}{'runs':>6}")
    print("-" * 76)
    print(line("python -c pass (the floor)", timed([python, "-c", "pass"], args.repeats)))
    print(line("python -c 'import typer'", timed([python, "-c", "import typer"], args.repeats)))
    print(line("txsend --version", timed([txsend, "--version"], args.repeats)))
    print(line("txsend --help", timed([txsend, "--help"], args.repeats)))
    print(line("txsend run --help", timed([txsend, "run", "--help"], args.repeats)))
    print(line("txsend validate (3 rows)", timed([txsend, "validate", str(three)], args.repeats)))

    binary = find_smtp_sink()
    if binary is None:
        print("smtp-sink not found: the 10-row run is left out (bench/ensure-smtp-sink.sh)")
        return 0
    sink = SmtpSink(binary, free_port(), work / "smtp-sink.out")
    sink.start()
    try:
        journal = work / "small.journal.db"
        url = f"smtp://127.0.0.1:{sink.port}?tls=none"
        cmd = [txsend, "run", str(small), "--relay", url, "--quiet", "--journal", str(journal)]

        def fresh(n: int) -> None:
            for path in work.glob("small.journal.db*"):
                path.unlink()

        print(line("txsend run, 10 rows into smtp-sink", timed(cmd, args.repeats, fresh)))
    finally:
        sink.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
