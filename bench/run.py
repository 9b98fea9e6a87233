"""Throughput benchmark: txsend against a plain aiosmtplib loop, both into smtp-sink.

Usage: python bench/run.py [--rows N] [--concurrency C] [--json] [--keep] [--txsend PATH]

Generates a job (N recipients, a welcome message with ~1 KB text and ~3 KB HTML) in a
temporary folder, starts Postfix's smtp-sink on a free 127.0.0.1 port, then runs:

  (a) txsend run JOB --relay smtp://127.0.0.1:PORT?tls=none --concurrency C --quiet
  (b) bench/reference.py: pre-rendered messages over C reused aiosmtplib connections

one after the other, each measured from outside (wall time, and CPU and peak RSS of
the child from wait4), and prints a table. See bench/README.md for how to read it.
Exits 0 only if every step sent every message.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import reference

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
VENV_BIN = ROOT / ".venv" / "bin"
SINK_CANDIDATES = ("/usr/sbin/smtp-sink", "/usr/bin/smtp-sink")
_MESG = re.compile(rb"mesg=(\d+)")


@dataclass
class ChildRun:
    """Resource usage of one finished child process, from os.wait4."""

    returncode: int
    seconds: float
    cpu: float
    maxrss_mb: float
    timed_out: bool = False


@dataclass
class Result:
    """One line of the table."""

    client: str
    status: str  # "ok" or why not
    messages: int = 0
    seconds: float = 0.0
    cpu: float = 0.0
    maxrss_mb: float = 0.0
    sink_counted: int | None = None
    sink_cpu: float | None = None
    detail: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether this step sent everything it should have."""
        return self.status == "ok"

    @property
    def msgs_per_s(self) -> float:
        """Throughput."""
        return self.messages / self.seconds if self.seconds > 0 else 0.0

    @property
    def cpu_per_1000(self) -> float:
        """CPU seconds (user + sys) per 1000 messages."""
        return self.cpu / self.messages * 1000 if self.messages else 0.0

    def as_dict(self) -> dict[str, Any]:
        """JSON form, with the derived columns."""
        out = asdict(self)
        out["msgs_per_s"] = round(self.msgs_per_s, 1)
        out["cpu_per_1000"] = round(self.cpu_per_1000, 4)
        return out


# -- the job ------------------------------------------------------------------


def write_job(folder: Path, rows: int) -> Path:
    """Write job.yaml, its templates and recipients.csv; return the job file."""
    templates = folder / "templates"
    templates.mkdir(parents=True)
    (templates / "welcome.txt").write_text(reference.TEXT_TEMPLATE, encoding="utf-8")
    (templates / "welcome.html").write_text(reference.HTML_TEMPLATE, encoding="utf-8")
    with open(folder / "recipients.csv", "w", newline="", encoding="utf-8") as fh:
        fields = list(reference.row(0))
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        for i in range(rows):
            writer.writerow(reference.row(i))
    job = folder / "job.yaml"
    job.write_text(
        f"""name: bench-welcome
from: "{reference.FROM_NAME} <{reference.FROM_ADDR}>"
reply_to: {reference.REPLY_TO}
subject: "{reference.SUBJECT_TEMPLATE}"
text: templates/welcome.txt
html: templates/welcome.html
inline_css: false
recipients:
  file: recipients.csv
  to: email
  name: "{reference.NAME_TEMPLATE}"
  key: email
headers: {{X-Campaign: {reference.CAMPAIGN}}}
""",
        encoding="utf-8",
    )
    return job


# -- smtp-sink ------------------------------------------------------------------


def find_smtp_sink() -> str | None:
    """Path of Postfix's smtp-sink, if installed."""
    found = shutil.which("smtp-sink")
    if found:
        return found
    return next((p for p in SINK_CANDIDATES if os.access(p, os.X_OK)), None)


def free_port() -> int:
    """A port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class SmtpSink:
    """smtp-sink as a child process, with its running counters (-c) in a file."""

    def __init__(self, binary: str, port: int, out: Path) -> None:
        self.port = port
        self.out = out
        cmd = [binary, "-c"]
        if os.geteuid() == 0:
            cmd += ["-u", "nobody"]  # required when started as root
        cmd += [f"127.0.0.1:{port}", "1024"]
        self.cmd = cmd
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10) -> None:
        """Start it and wait until it accepts connections."""
        with open(self.out, "wb") as fh:
            self.proc = subprocess.Popen(
                self.cmd, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"smtp-sink exited with {self.proc.returncode}: "
                    + self.out.read_text(errors="replace").strip()
                )
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                    if sock.recv(512).startswith(b"220"):
                        sock.sendall(b"QUIT\r\n")
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"smtp-sink did not answer on 127.0.0.1:{self.port}")
            time.sleep(0.05)

    def messages(self) -> int:
        """Messages received so far (the last "mesg=N" of its -c counters)."""
        counts = _MESG.findall(self.out.read_bytes())
        return int(counts[-1]) if counts else 0

    def cpu(self) -> float | None:
        """CPU seconds (user + sys) it has used so far, from /proc; None elsewhere."""
        if self.proc is None:
            return None
        try:
            stat = Path(f"/proc/{self.proc.pid}/stat").read_text()
        except OSError:
            return None
        fields = stat.rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        """Terminate it (SIGTERM, then SIGKILL after 5 s)."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# -- measuring a child ------------------------------------------------------------


def run_measured(
    cmd: list[str], *, cwd: Path, stdout: Path, stderr: Path, timeout: float
) -> ChildRun:
    """Run cmd to completion; wall time from here, CPU and peak RSS from wait4."""
    env = {**os.environ, "NO_COLOR": "1"}
    with open(stdout, "wb") as out, open(stderr, "wb") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(
            cmd, cwd=cwd, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env
        )
    timed_out = threading.Event()

    def kill() -> None:
        timed_out.set()
        proc.kill()

    timer = threading.Timer(timeout, kill)
    timer.start()
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    finally:
        timer.cancel()
    seconds = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
    return ChildRun(
        returncode=proc.returncode,
        seconds=seconds,
        cpu=usage.ru_utime + usage.ru_stime,
        maxrss_mb=usage.ru_maxrss / 1024,  # KiB on Linux
        timed_out=timed_out.is_set(),
    )


def _tail(path: Path, lines: int = 15) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    return text.strip().splitlines()[-lines:]


def _settled_count(sink: SmtpSink) -> int:
    """The sink's message counter, once it has stopped moving (its output is async)."""
    last = sink.messages()
    for _ in range(20):
        time.sleep(0.05)
        now = sink.messages()
        if now == last:
            return now
        last = now
    return last


def bench_txsend(
    sink: SmtpSink,
    job: Path,
    rows: int,
    concurrency: int,
    work: Path,
    timeout: float,
    binary: Path,
) -> Result:
    """Step (a): the txsend CLI, whole process."""
    result = Result(client="txsend (whole process)", status="ok")
    if not binary.exists():
        result.status = f"not available: {binary} not found (is the CLI installed?)"
        return result
    url = f"smtp://127.0.0.1:{sink.port}?tls=none"
    cmd = [str(binary), "run", str(job), "--relay", url]
    cmd += ["--concurrency", str(concurrency), "--quiet"]
    before, sink_cpu0 = sink.messages(), sink.cpu()
    run = run_measured(
        cmd, cwd=work, stdout=work / "txsend.out", stderr=work / "txsend.err", timeout=timeout
    )
    counted = _settled_count(sink) - before
    sink_cpu1 = sink.cpu()
    result.messages, result.seconds = counted, run.seconds
    result.cpu, result.maxrss_mb = run.cpu, run.maxrss_mb
    result.sink_counted = counted
    if sink_cpu0 is not None and sink_cpu1 is not None:
        result.sink_cpu = sink_cpu1 - sink_cpu0
    if run.timed_out:
        result.status = f"failed: killed after {timeout:.0f} s"
    elif run.returncode != 0:
        result.status = f"failed: exit code {run.returncode}"
    elif counted != rows:
        result.status = f"failed: smtp-sink counted {counted} of {rows} messages"
    if not result.ok:
        result.detail = _tail(work / "txsend.err") or _tail(work / "txsend.out")
    return result


def bench_reference(
    sink: SmtpSink, rows: int, concurrency: int, work: Path, timeout: float
) -> tuple[Result, Result]:
    """Step (b): bench/reference.py, send phase (its own numbers) and whole process."""
    cmd = [sys.executable, str(BENCH_DIR / "reference.py"), "--host", "127.0.0.1"]
    cmd += ["--port", str(sink.port), "--count", str(rows), "--connections", str(concurrency)]
    before, sink_cpu0 = sink.messages(), sink.cpu()
    run = run_measured(
        cmd, cwd=work, stdout=work / "reference.out", stderr=work / "reference.err", timeout=timeout
    )
    counted = _settled_count(sink) - before
    sink_cpu1 = sink.cpu()
    sink_cpu = None if sink_cpu0 is None or sink_cpu1 is None else sink_cpu1 - sink_cpu0

    whole = Result(
        client="reference (whole process)",
        status="ok",
        messages=counted,
        seconds=run.seconds,
        cpu=run.cpu,
        maxrss_mb=run.maxrss_mb,
        sink_counted=counted,
        sink_cpu=sink_cpu,
    )
    phase = Result(client="reference (send phase)", status="ok")
    report: dict[str, Any] = {}
    for line in reversed(_tail(work / "reference.out", 5)):
        if line.startswith("{"):
            report = json.loads(line)
            break
    if report:
        phase.messages = int(report["sent"])
        phase.seconds = float(report["seconds"])
        phase.cpu = float(report["cpu"])
        phase.maxrss_mb = float(report["maxrss_mb"])
        phase.sink_counted = counted
        phase.detail = [f"pre-rendering {rows} messages took {report['render_seconds']:.2f} s"]
    if run.timed_out:
        whole.status = f"failed: killed after {timeout:.0f} s"
    elif run.returncode != 0 or not report:
        whole.status = f"failed: exit code {run.returncode}"
    elif counted != rows:
        whole.status = f"failed: smtp-sink counted {counted} of {rows} messages"
    if not whole.ok:
        whole.detail = _tail(work / "reference.err") or _tail(work / "reference.out")
        phase.status = whole.status
    return phase, whole


# -- output ---------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 0
    return {
        "nproc": usable,
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "loadavg_before": [round(x, 2) for x in os.getloadavg()],
    }


def ratios(results: list[Result]) -> dict[str, float | None]:
    """txsend msgs/s divided by the reference's, per reference line."""
    by_name = {r.client: r for r in results}
    tx = by_name.get("txsend (whole process)")
    out: dict[str, float | None] = {}
    for name, key in (
        ("reference (send phase)", "vs_send_phase"),
        ("reference (whole process)", "vs_whole_process"),
    ):
        ref = by_name.get(name)
        ok = tx is not None and tx.ok and ref is not None and ref.ok and ref.msgs_per_s > 0
        out[key] = round(tx.msgs_per_s / ref.msgs_per_s, 3) if ok and tx and ref else None
    return out


def print_table(info: dict[str, Any], results: list[Result]) -> None:
    """The human-readable report."""
    print(
        f"machine: {info['nproc']} CPUs usable (nproc), {info['implementation']} "
        f"{info['python']}, {info['platform']}, load average {info['loadavg_before'][0]}"
    )
    print(
        f"job: {info['rows']} rows, concurrency {info['concurrency']}, "
        f"smtp-sink on 127.0.0.1:{info['port']}"
    )
    print()
    header = (
        f"{'client':<28}{'messages':>9}{'seconds':>10}{'msgs/s':>10}"
        f"{'CPU s/1000':>12}{'peak RSS MB':>13}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        if not r.ok and r.seconds == 0:
            print(f"{r.client:<28}  {r.status}")
            continue
        print(
            f"{r.client:<28}{r.messages:>9}{r.seconds:>10.2f}{r.msgs_per_s:>10.0f}"
            f"{r.cpu_per_1000:>12.3f}{r.maxrss_mb:>13.1f}" + ("" if r.ok else "  FAILED")
        )
    print()
    by_name = {r.client: r for r in results}
    for r in results:
        if r.sink_cpu is None or r.seconds <= 0 or r.client == "reference (send phase)":
            continue
        # While the messages flowed: the reference's send phase, txsend's whole run.
        phase = by_name.get("reference (send phase)")
        window = r.seconds
        if r.client.startswith("reference") and phase is not None and phase.seconds > 0:
            window = phase.seconds
        per_msg = r.sink_cpu / r.sink_counted * 1000 if r.sink_counted else 0.0
        print(
            f"smtp-sink during {r.client.split(' ')[0]}: counted {r.sink_counted} messages, "
            f"used {r.sink_cpu:.2f} s CPU ({r.sink_cpu / window * 100:.0f}% of one core "
            f"while sending, {per_msg:.2f} ms per message)"
        )
    for r in results:
        if r.ok:
            for line in r.detail:
                print(f"{r.client}: {line}")
    rat = ratios(results)
    print()
    if rat["vs_send_phase"] is not None:
        print(
            f"txsend / reference msgs/s: {rat['vs_send_phase']:.2f} (vs send phase), "
            f"{rat['vs_whole_process']:.2f} (vs whole process)"
        )
    else:
        print("txsend / reference msgs/s: n/a (a step did not complete)")
    for r in results:
        if not r.ok:
            print(f"\n{r.client}: {r.status}", file=sys.stderr)
            for line in r.detail:
                print(f"  | {line}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; 0 if every step sent every message, 1 otherwise, 2 if no sink."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20000, help="recipients (default 20000)")
    parser.add_argument("--concurrency", type=int, default=32, help="connections (default 32)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument(
        "--timeout", type=float, default=900, help="seconds allowed per step (default 900)"
    )
    parser.add_argument(
        "--txsend",
        type=Path,
        default=VENV_BIN / "txsend",
        help="the txsend executable (default: .venv/bin/txsend)",
    )
    args = parser.parse_args(argv)
    if args.rows < 1 or args.concurrency < 1:
        parser.error("--rows and --concurrency must be at least 1")

    binary = find_smtp_sink()
    if binary is None:
        print(
            "smtp-sink not found: run bench/ensure-smtp-sink.sh as root "
            "(it installs Debian's postfix package and leaves the daemon stopped)",
            file=sys.stderr,
        )
        return 2

    info = machine()
    info.update(rows=args.rows, concurrency=args.concurrency, smtp_sink=binary)
    work = Path(tempfile.mkdtemp(prefix="txsend-bench-"))
    results: list[Result] = []
    sink = SmtpSink(binary, free_port(), work / "smtp-sink.out")
    info["port"] = sink.port
    try:
        job = write_job(work, args.rows)
        sink.start()
        results.append(
            bench_txsend(
                sink, job, args.rows, args.concurrency, work, args.timeout, args.txsend.absolute()
            )
        )
        results.extend(bench_reference(sink, args.rows, args.concurrency, work, args.timeout))
    finally:
        sink.stop()
        if args.keep:
            print(f"work folder kept: {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)

    if args.json:
        print(
            json.dumps(
                {
                    "machine": info,
                    "results": [r.as_dict() for r in results],
                    "ratio": ratios(results),
                },
                indent=2,
            )
        )
    else:
        print_table(info, results)
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
