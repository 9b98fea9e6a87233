"""Throughput benchmark: txsend against a plain aiosmtplib loop, both into smtp-sink.

Usage: python bench/run.py [--rows N] [--concurrency C] [--sizes 2k,5k] [--json] [--keep]
                           [--txsend PATH] [--no-peers]

For each message size (2k: ~1.9 KB, two paragraphs and a compact HTML part; 5k: ~4.9 KB,
~1 KB text and ~3 KB HTML) it generates a job of N recipients in a temporary folder and,
against one Postfix smtp-sink on a free 127.0.0.1 port, runs:

  (a) txsend run JOB --relay smtp://127.0.0.1:PORT?tls=none --concurrency C --quiet
  (b) bench/reference.py: pre-rendered messages over C reused aiosmtplib connections

one after the other, each measured from outside (wall time, and CPU and peak RSS of
the child from wait4), and prints a table per size with txsend's ratios to each peer.
See bench/README.md for how to read it.
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

    @property
    def cpu_us_per_msg(self) -> float:
        """Client CPU microseconds (user + sys) per message."""
        return self.cpu / self.messages * 1e6 if self.messages else 0.0

    def as_dict(self) -> dict[str, Any]:
        """JSON form, with the derived columns."""
        out = asdict(self)
        out["msgs_per_s"] = round(self.msgs_per_s, 1)
        out["cpu_per_1000"] = round(self.cpu_per_1000, 4)
        out["cpu_us_per_msg"] = round(self.cpu_us_per_msg, 1)
        return out


# -- the job ------------------------------------------------------------------


def write_job(folder: Path, rows: int, size: str = reference.DEFAULT_SIZE) -> Path:
    """Write job.yaml, its templates (of a reference.SIZES workload) and recipients.csv;
    return the job file."""
    text, html = reference.templates(size)
    templates = folder / "templates"
    templates.mkdir(parents=True)
    (templates / "welcome.txt").write_text(text, encoding="utf-8")
    (templates / "welcome.html").write_text(html, encoding="utf-8")
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
    cmd: list[str],
    *,
    cwd: Path,
    stdout: Path,
    stderr: Path,
    timeout: float,
    env: dict[str, str] | None = None,
) -> ChildRun:
    """Run cmd to completion; wall time from here, CPU and peak RSS from wait4."""
    env = {**(env or os.environ), "NO_COLOR": "1"}
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # clients run as installed: bytecode cached
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


def _measure_into_sink(
    sink: SmtpSink,
    result: Result,
    cmd: list[str],
    work: Path,
    name: str,
    timeout: float,
    expected: int,
    env: dict[str, str] | None = None,
) -> ChildRun:
    """Run one client to completion and fill result from it and from the sink's counter."""
    before, sink_cpu0 = sink.messages(), sink.cpu()
    run = run_measured(
        cmd,
        cwd=work,
        stdout=work / f"{name}.out",
        stderr=work / f"{name}.err",
        timeout=timeout,
        env=env,
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
    elif counted != expected:
        result.status = f"failed: smtp-sink counted {counted} of {expected} messages"
    if not result.ok:
        result.detail = _tail(work / f"{name}.err") or _tail(work / f"{name}.out")
    return run


def bench_txsend(
    sink: SmtpSink,
    job: Path,
    rows: int,
    concurrency: int,
    work: Path,
    timeout: float,
    binary: Path,
    loop: str,
) -> Result:
    """The txsend CLI, whole process (ingest, render, journal, send), on one event loop."""
    result = Result(client=f"txsend, whole process ({loop})", status="ok")
    if not binary.exists():
        result.status = f"not available: {binary} not found (is the CLI installed?)"
        return result
    url = f"smtp://127.0.0.1:{sink.port}?tls=none"
    journal = work / f"{job.parent.name}-{loop}.db"
    cmd = [str(binary), "run", str(job), "--relay", url, "--journal", str(journal)]
    cmd += ["--concurrency", str(concurrency), "--quiet"]
    env = {**os.environ, "TXSEND_LOOP": loop}
    name = f"txsend-{job.parent.name}-{loop}"
    _measure_into_sink(sink, result, cmd, work, name, timeout, rows, env)
    return result


def bench_smtp_source(
    sink: SmtpSink, rows: int, work: Path, timeout: float, size: int, sessions: int = 16
) -> Result:
    """Postfix's smtp-source (C): the physical limit of this machine and sink."""
    result = Result(client=f"smtp-source, {sessions} sessions (C)", status="ok")
    binary = shutil.which("smtp-source") or (
        "/usr/sbin/smtp-source" if Path("/usr/sbin/smtp-source").exists() else None
    )
    if binary is None:
        result.status = "not available: smtp-source not found (Debian's postfix package)"
        return result
    cmd = [binary, "-d", "-s", str(sessions), "-m", str(rows), "-l", str(size)]
    cmd += ["-f", reference.FROM_ADDR, "-t", "user@example.com", f"127.0.0.1:{sink.port}"]
    _measure_into_sink(sink, result, cmd, work, f"smtp-source-{size}", timeout, rows)
    return result


def bench_reference(
    sink: SmtpSink,
    rows: int,
    concurrency: int,
    work: Path,
    timeout: float,
    loops: list[str],
    size: str = reference.DEFAULT_SIZE,
) -> list[Result]:
    """bench/reference.py: pre-rendered messages over a raw aiosmtplib loop, per event loop,
    and what composing each message with EmailMessage costs on top."""
    cmd = [sys.executable, str(BENCH_DIR / "reference.py"), "--host", "127.0.0.1"]
    cmd += ["--port", str(sink.port), "--count", str(rows), "--connections", str(concurrency)]
    cmd += ["--loops", ",".join(loops), "--size", size]
    whole = Result(client="reference (whole process)", status="ok")
    name = f"reference-{size}"
    run = _measure_into_sink(sink, whole, cmd, work, name, timeout, rows * len(loops))
    results: list[Result] = []
    render_seconds = 0.0
    for line in _tail(work / f"{name}.out", 10):
        if not line.startswith("{"):
            continue
        report = json.loads(line)
        name = f"aiosmtplib, pre-rendered ({report['loop']})"
        if "skipped" in report:
            results.append(Result(client=name, status=f"not available: {report['skipped']}"))
            continue
        phase = Result(client=name, status=whole.status if not whole.ok else "ok")
        phase.messages = int(report["sent"])
        phase.seconds = float(report["seconds"])
        phase.cpu = float(report["cpu"])
        phase.maxrss_mb = float(report["maxrss_mb"])
        render_seconds = float(report["render_seconds"])
        results.append(phase)
    if not results:
        results.append(Result(client="aiosmtplib, pre-rendered", status=whole.status))
    asyncio_line = next((r for r in results if r.client.endswith("(asyncio)") and r.ok), None)
    if asyncio_line is not None:
        # the same client composing each message with EmailMessage: render + send
        composing = Result(client="aiosmtplib + EmailMessage per msg", status="ok")
        composing.messages = asyncio_line.messages
        composing.seconds = render_seconds + asyncio_line.seconds
        composing.cpu = render_seconds + asyncio_line.cpu  # rendering is CPU-bound
        composing.maxrss_mb = run.maxrss_mb
        composing.detail = [f"composing {rows} EmailMessages took {render_seconds:.2f} s"]
        results.append(composing)
    return results


def bench_nodemailer(
    sink: SmtpSink,
    rows: int,
    concurrency: int,
    work: Path,
    timeout: float,
    size: str = reference.DEFAULT_SIZE,
) -> list[Result]:
    """nodemailer's pool (Node.js), pre-rendered and composing, when node and npm exist."""
    node, npm = shutil.which("node"), shutil.which("npm")
    names = ("nodemailer pool, pre-rendered", "nodemailer pool, composing")
    if node is None or npm is None:
        return [Result(client=n, status="not available: node/npm not found") for n in names]
    folder = BENCH_DIR / "node"
    if not (folder / "node_modules" / "nodemailer").exists():
        done = subprocess.run(
            [npm, "install", "--silent", "--no-audit", "--no-fund"],
            cwd=folder,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if done.returncode != 0:
            why = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["npm failed"]
            return [Result(client=n, status=f"not available: npm install: {why[0]}") for n in names]
    text, html = reference.templates(size)
    templates = work / f"templates-{size}.json"
    templates.write_text(
        json.dumps(
            {
                "from_name": reference.FROM_NAME,
                "from_addr": reference.FROM_ADDR,
                "reply_to": reference.REPLY_TO,
                "campaign": reference.CAMPAIGN,
                "subject": reference.SUBJECT_TEMPLATE,
                "name": reference.NAME_TEMPLATE,
                "text": text,
                "html": html,
                "rows": [reference.row(i) for i in range(64)],
            }
        )
    )
    results = []
    for name, mode in zip(names, ("raw", "compose"), strict=True):
        cmd = [node, str(folder / "nodemailer-bench.mjs"), "--port", str(sink.port)]
        cmd += ["--count", str(rows), "--connections", str(concurrency), "--mode", mode]
        cmd += ["--templates", str(templates)]
        whole = Result(client=name, status="ok")
        out = f"nodemailer-{mode}-{size}"
        _measure_into_sink(sink, whole, cmd, work, out, timeout, rows)
        phase = Result(client=name, status=whole.status)
        for line in _tail(work / f"{out}.out", 5):
            if line.startswith("{"):
                report = json.loads(line)
                phase.messages = int(report["sent"])
                phase.seconds = float(report["seconds"])
                phase.cpu = float(report["cpu"])
                phase.maxrss_mb = whole.maxrss_mb
                phase.detail = [f"nodemailer {report['nodemailer']}, send phase"]
        if not whole.ok:
            phase.detail = whole.detail
        results.append(phase)
    return results


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


def _find(results: list[Result], prefix: str) -> Result | None:
    return next((r for r in results if r.client.startswith(prefix) and r.ok), None)


def ratios(results: list[Result]) -> dict[str, float | None]:
    """The issue's targets: txsend's best line against each peer, by msgs/s."""
    tx = max(
        (r for r in results if r.client.startswith("txsend") and r.ok),
        key=lambda r: r.msgs_per_s,
        default=None,
    )

    def over(peer: Result | None) -> float | None:
        if tx is None or peer is None or peer.msgs_per_s <= 0:
            return None
        return round(tx.msgs_per_s / peer.msgs_per_s, 3)

    return {
        "vs_aiosmtplib_asyncio": over(_find(results, "aiosmtplib, pre-rendered (asyncio)")),
        "vs_aiosmtplib_uvloop": over(_find(results, "aiosmtplib, pre-rendered (uvloop)")),
        "vs_nodemailer_composing": over(_find(results, "nodemailer pool, composing")),
        "vs_smtp_source": over(_find(results, "smtp-source")),
        "txsend_cpu_us_per_msg": round(tx.cpu_us_per_msg, 1) if tx is not None else None,
    }


def print_table(info: dict[str, Any], results: list[Result]) -> None:
    """The human-readable report."""
    print(
        f"machine: {info['nproc']} CPUs usable (nproc), {info['implementation']} "
        f"{info['python']}, {info['platform']}, load average {info['loadavg_before'][0]}"
    )
    print(
        f"job: {info['rows']} rows (~{info['message_bytes']} bytes each), concurrency "
        f"{info['concurrency']}, smtp-sink on 127.0.0.1:{info['port']}"
    )
    print()
    source = _find(results, "smtp-source")
    header = (
        f"{'client':<38}{'msgs/s':>9}{'CPU us/msg':>12}{'peak RSS MB':>13}"
        f"{'vs smtp-source':>16}{'seconds':>9}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        if not r.ok and r.seconds == 0:
            print(f"{r.client:<38}  {r.status}")
            continue
        vs = f"{r.msgs_per_s / source.msgs_per_s:.2f}" if source and source.msgs_per_s else "-"
        print(
            f"{r.client:<38}{r.msgs_per_s:>9.0f}{r.cpu_us_per_msg:>12.0f}{r.maxrss_mb:>13.1f}"
            f"{vs:>16}{r.seconds:>9.2f}" + ("" if r.ok else "  FAILED")
        )
    print()
    for r in results:
        if r.ok:
            for line in r.detail:
                print(f"{r.client}: {line}")
    for r in results:
        if r.sink_cpu is not None and r.sink_counted and r.ok:
            print(
                f"smtp-sink during {r.client}: {r.sink_cpu / r.sink_counted * 1e6:.0f} us CPU "
                "per message"
            )
    rat = ratios(results)
    print()

    def show(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.2f}x"

    print(
        "txsend (best loop) msgs/s vs: "
        f"aiosmtplib asyncio {show(rat['vs_aiosmtplib_asyncio'])} (target 1.5x), "
        f"aiosmtplib uvloop {show(rat['vs_aiosmtplib_uvloop'])}, "
        f"nodemailer composing {show(rat['vs_nodemailer_composing'])} (target 2x), "
        f"smtp-source {show(rat['vs_smtp_source'])} (stretch 0.3x)"
    )
    if rat["txsend_cpu_us_per_msg"] is not None:
        print(f"txsend CPU per message: {rat['txsend_cpu_us_per_msg']:.0f} us (target 150 us)")
    for r in results:
        if not r.ok and not r.status.startswith("not available"):
            print(f"\n{r.client}: {r.status}", file=sys.stderr)
            for line in r.detail:
                print(f"  | {line}", file=sys.stderr)


def bench_size(
    args: argparse.Namespace,
    sink: SmtpSink,
    work: Path,
    size: str,
    message_bytes: int,
    loops: list[str],
) -> list[Result]:
    """Every client on one workload (a message size), one after the other."""
    results: list[Result] = []
    job = write_job(work / size, args.rows, size)
    if not args.no_peers:
        results.append(bench_smtp_source(sink, args.rows, work, args.timeout, message_bytes))
    for loop in loops:
        binary = args.txsend.absolute()
        results.append(
            bench_txsend(sink, job, args.rows, args.concurrency, work, args.timeout, binary, loop)
        )
    results.extend(
        bench_reference(sink, args.rows, args.concurrency, work, args.timeout, loops, size)
    )
    if not args.no_peers:
        results.extend(
            bench_nodemailer(sink, args.rows, args.concurrency, work, args.timeout, size)
        )
    return results


def print_ratios(workloads: dict[str, list[Result]], message_bytes: dict[str, int]) -> None:
    """The issue's targets, one line per message size."""

    def show(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.2f}x"

    print("txsend (best loop) against the raw aiosmtplib loop (asyncio), per message size:")
    for size, results in workloads.items():
        rat = ratios(results)
        cpu = rat["txsend_cpu_us_per_msg"]
        print(
            f"  {size} ({message_bytes[size]} bytes): "
            f"{show(rat['vs_aiosmtplib_asyncio'])} (target 1.5x), "
            f"smtp-source {show(rat['vs_smtp_source'])} (stretch 0.3x), "
            f"txsend CPU {'n/a' if cpu is None else f'{cpu:.0f}'} us/msg (target 150 us)"
        )


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
    parser.add_argument("--no-peers", action="store_true", help="txsend and aiosmtplib only")
    parser.add_argument(
        "--sizes",
        default=",".join(reference.SIZES),
        help=f"message sizes, comma-separated (default {','.join(reference.SIZES)})",
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

    try:
        import uvloop  # noqa: F401

        loops = ["uvloop", "asyncio"]
    except ImportError:
        loops = ["asyncio"]
    sizes = [x.strip() for x in args.sizes.split(",") if x.strip()]
    unknown = [x for x in sizes if x not in reference.SIZES]
    if unknown or not sizes:
        parser.error(f"--sizes: choose from {','.join(reference.SIZES)}")
    info = machine()
    info.update(rows=args.rows, concurrency=args.concurrency, smtp_sink=binary)
    work = Path(tempfile.mkdtemp(prefix="txsend-bench-"))
    workloads: dict[str, list[Result]] = {}
    message_bytes = {size: len(reference.render(0, size)[1]) for size in sizes}
    sink = SmtpSink(binary, free_port(), work / "smtp-sink.out")
    info["port"] = sink.port
    try:
        sink.start()
        for size in sizes:
            workloads[size] = bench_size(args, sink, work, size, message_bytes[size], loops)
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
                    "workloads": {
                        size: {
                            "message_bytes": message_bytes[size],
                            "results": [r.as_dict() for r in results],
                            "ratio": ratios(results),
                        }
                        for size, results in workloads.items()
                    },
                },
                indent=2,
            )
        )
    else:
        for size, results in workloads.items():
            print_table({**info, "message_bytes": message_bytes[size]}, results)
            print()
        print_ratios(workloads, message_bytes)
    results = [r for rs in workloads.values() for r in rs]
    failed = [r for r in results if not r.ok and not r.status.startswith("not available")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
