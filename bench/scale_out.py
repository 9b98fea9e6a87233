"""Scale-out benchmark: 1, 2 and 4 txsend processes on one job through a PostgreSQL journal.

Usage: python bench/scale_out.py [--rows 4000] [--connections 8] [--workers 1,2,4]
                                 [--delay 0.05] [--timeout 120] [--json] [--keep]

Starts a throwaway PostgreSQL server (tests/pgserver.py). For each N: a fresh database,
a fresh `txsend sink --discard --delay 0.05` (every final dot answered after 50 ms), and
N processes started at once, each `txsend run JOB --journal postgresql://...
--concurrency C` (the first to lock the job ingests it, the others wait for it; all of
them send). Checks that every process exited 0, that the sink counted exactly R messages
and that the journal holds R sent rows, then prints one line per N: wall time from the
start to the last exit, msgs/s, the SMTP transaction p50 of the workers' reports, the
N*C/latency extrapolation, CPU seconds per 1000 messages of the txsend processes (wait4),
of the PostgreSQL server (/proc) and of the sink (wait4), how busy the machine was, and
the peak RSS of a worker. Exits 0 if every N passed, 1 if one failed, 2 without
PostgreSQL. See bench/README.md, "Scale-out".
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import run as bench

sys.path.insert(0, str(bench.ROOT))

from tests.pgserver import fresh_database, throwaway_server

_SINK_LINE = re.compile(r"sink: (\d+) messages")
_CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- PostgreSQL's CPU ---------------------------------------------------------------


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (state is index 0)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()


def postmaster_pid(url: str) -> int:
    """The postmaster of the throwaway server: data/ is next to the socket folder run/."""
    sockets = parse_qs(urlsplit(url).query)["host"][0]
    pid_file = Path(sockets).parent / "data" / "postmaster.pid"
    return int(pid_file.read_text().splitlines()[0])


def postgres_cpu(postmaster: int) -> float:
    """CPU seconds (user + sys) of the server so far: the postmaster with the children it
    has reaped (backends of closed connections), plus its live children."""
    fields = _stat_fields(postmaster)
    if fields is None:
        raise RuntimeError(f"the postmaster (pid {postmaster}) is gone")
    ticks = sum(int(x) for x in fields[11:15])  # utime, stime, cutime, cstime
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        child = _stat_fields(int(entry.name))
        if child is not None and int(child[1]) == postmaster:  # ppid
            ticks += int(child[11]) + int(child[12])
    return ticks / _CLK_TCK


def machine_busy() -> float:
    """CPU seconds the whole machine has been busy (all cores; /proc/stat less idle and
    iowait)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    ticks = [int(x) for x in fields[:8]]  # user nice system idle iowait irq softirq steal
    return (sum(ticks) - ticks[3] - ticks[4]) / _CLK_TCK


def journal_states(url: str) -> dict[str, int | str]:
    """Rows per state in the job's journal (or why they cannot be read)."""
    import psycopg

    try:
        with psycopg.connect(url) as conn:
            rows = conn.execute("SELECT state, count(*) FROM txsend_messages GROUP BY state")
            return {str(state): int(n) for state, n in rows.fetchall()}
    except psycopg.Error as exc:  # no tables: no worker got that far
        return {"error": str(exc).strip()[:200]} if str(exc).strip() else {"error": repr(exc)}


# -- the sink -----------------------------------------------------------------------


class Sink:
    """`txsend sink --discard --delay D` as a child; its count comes from its exit line."""

    def __init__(self, work: Path, delay: float) -> None:
        self.work = work
        self.port_file = work / "sink.port"
        self.out = work / "sink.out"
        cmd = [str(bench.VENV_BIN / "txsend"), "sink", "--port", "0"]
        cmd += ["--port-file", str(self.port_file), "--discard", "--delay", str(delay)]
        self.cmd = cmd
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    def start(self, timeout: float = 20) -> None:
        with open(self.out, "wb") as out, open(self.work / "sink.err", "wb") as err:
            self.proc = subprocess.Popen(self.cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while not (self.port_file.exists() and self.port_file.read_text().strip()):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                detail = (self.work / "sink.err").read_text(errors="replace").strip()
                raise RuntimeError(f"txsend sink did not start: {detail}")
            time.sleep(0.05)
        self.port = int(self.port_file.read_text().strip())

    def stop(self) -> int | None:
        """SIGTERM; returns the messages it counted (None if it did not say)."""
        proc = self.proc
        if proc is None:
            return None
        self.proc = None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        found = _SINK_LINE.search(self.out.read_text(errors="replace"))
        return int(found.group(1)) if found else None


# -- one case -----------------------------------------------------------------------


@dataclass
class Worker:
    """One txsend process of a case."""

    returncode: int | None = None
    seconds: float = 0.0  # from the common start to its exit
    cpu: float = 0.0
    maxrss_mb: float = 0.0
    timed_out: bool = False
    sent: int = 0
    send_seconds: float = 0.0  # its run's own clock: from after the ingest to the end
    report: dict[str, Any] = field(default_factory=dict)


@dataclass
class Case:
    """The measurements for N workers."""

    workers: int
    connections: int
    rows: int
    status: str = "ok"
    seconds: float = 0.0
    sink_counted: int | None = None
    sink_cpu: float = 0.0
    db_cpu: float = 0.0
    busy: float = 0.0  # CPU seconds the whole machine was busy from sink start to stop
    window: float = 0.0  # seconds from sink start to stop
    p50: float | None = None  # seconds, all workers' transactions together
    per_worker: list[Worker] = field(default_factory=list)
    detail: list[str] = field(default_factory=list)

    @property
    def cpu(self) -> float:
        return sum(w.cpu for w in self.per_worker)

    @property
    def other_cpu(self) -> float:
        """CPU the machine spent during the case outside the workers, sink and database."""
        return self.busy - self.cpu - self.db_cpu - self.sink_cpu

    @property
    def send_seconds(self) -> float:
        """The longest send phase of a worker (its start-up and the ingest left out)."""
        return max((w.send_seconds for w in self.per_worker), default=0.0)

    @property
    def msgs_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0

    def per_1000(self, seconds: float) -> float:
        return seconds / self.rows * 1000 if self.rows else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "workers": self.workers,
            "connections": self.connections,
            "rows": self.rows,
            "status": self.status,
            "seconds": round(self.seconds, 2),
            "msgs_per_s": round(self.msgs_per_s, 1),
            "p50_ms": round(self.p50 * 1000, 1) if self.p50 is not None else None,
            "txsend_cpu": round(self.cpu, 2),
            "db_cpu": round(self.db_cpu, 2),
            "sink_cpu": round(self.sink_cpu, 2),
            "machine_busy_cpu": round(self.busy, 2),
            "sink_counted": self.sink_counted,
            "per_worker": [
                {
                    "exit_code": w.returncode,
                    "seconds": round(w.seconds, 2),
                    "cpu": round(w.cpu, 2),
                    "peak_rss_mb": round(w.maxrss_mb, 1),
                    "sent": w.sent,
                    "send_seconds": w.send_seconds,
                }
                for w in self.per_worker
            ],
            "detail": self.detail,
        }


def merged_p50(reports: list[dict[str, Any]]) -> float | None:
    """The p50 SMTP transaction time of all the workers' transactions (histogram buckets
    of their reports added up; within ~5%, like txsend's own)."""
    counts: dict[float, int] = {}
    for report in reports:
        for bucket in report.get("run", {}).get("latency_histogram", []):
            counts[bucket["le_ms"]] = counts.get(bucket["le_ms"], 0) + int(bucket["count"])
    total = sum(counts.values())
    if not total:
        return None
    rank, seen = (total + 1) // 2, 0
    for edge in sorted(counts):
        seen += counts[edge]
        if seen >= rank:
            return edge / 1000
    return None


def run_case(
    n: int, args: argparse.Namespace, server_url: str, postmaster: int, work: Path
) -> Case:
    case = Case(workers=n, connections=args.connections, rows=args.rows)
    folder = work / f"n{n}"
    job = bench.write_job(folder / "job", args.rows)
    url = fresh_database(server_url, f"scale_out_n{n}")
    sink = Sink(folder, args.delay)
    busy0, window0 = machine_busy(), time.perf_counter()
    sink.start()
    relay = f"smtp://127.0.0.1:{sink.port}?tls=none"
    env = {**os.environ, "NO_COLOR": "1"}
    workers = [Worker() for _ in range(n)]
    procs: list[subprocess.Popen[bytes]] = []
    try:
        db0 = postgres_cpu(postmaster)
        started = time.perf_counter()
        for i in range(n):
            cmd = [str(bench.VENV_BIN / "txsend"), "run", str(job), "--journal", url]
            cmd += ["--relay", relay, "--concurrency", str(args.connections), "--quiet"]
            cmd += ["--report", str(folder / f"w{i}.json")]
            with open(folder / f"w{i}.out", "wb") as out, open(folder / f"w{i}.err", "wb") as err:
                procs.append(
                    subprocess.Popen(
                        cmd, cwd=folder, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env
                    )
                )

        def wait(i: int) -> None:
            proc, worker = procs[i], workers[i]
            _, status, usage = os.wait4(proc.pid, 0)
            worker.seconds = time.perf_counter() - started
            proc.returncode = worker.returncode = os.waitstatus_to_exitcode(status)
            worker.cpu = usage.ru_utime + usage.ru_stime
            worker.maxrss_mb = usage.ru_maxrss / 1024  # KiB on Linux

        waiters = [threading.Thread(target=wait, args=(i,), daemon=True) for i in range(n)]
        for thread in waiters:
            thread.start()
        deadline = time.monotonic() + args.timeout
        for i, thread in enumerate(waiters):
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                workers[i].timed_out = True
        if any(w.timed_out for w in workers):
            for proc in procs:
                if proc.returncode is None:
                    proc.kill()
            for thread in waiters:
                thread.join()
        case.seconds = max(w.seconds for w in workers)
        time.sleep(0.3)  # let the postmaster reap the backends of the closed connections
        case.db_cpu = postgres_cpu(postmaster) - db0
    except BaseException:
        for proc in procs:  # an error or Ctrl-C here: no worker outlives the benchmark
            if proc.returncode is None:
                proc.kill()
        raise
    finally:
        sink_cpu0 = _children_cpu()
        case.sink_counted = sink.stop()
        case.sink_cpu = _children_cpu() - sink_cpu0
        case.busy, case.window = machine_busy() - busy0, time.perf_counter() - window0
    case.per_worker = workers
    reports = []
    for i, worker in enumerate(workers):
        try:
            worker.report = json.loads((folder / f"w{i}.json").read_text())
        except (OSError, ValueError):
            continue
        reports.append(worker.report)
        run = worker.report.get("run", {})
        worker.sent = int(run.get("outcomes", {}).get("sent", 0))
        worker.send_seconds = float(run.get("seconds", 0.0))
    case.p50 = merged_p50(reports)
    states = journal_states(url)
    failed = [i for i, w in enumerate(workers) if w.timed_out or w.returncode != 0]
    if failed:
        i = failed[0]
        why = (
            "killed after the timeout" if workers[i].timed_out else f"exit {workers[i].returncode}"
        )
        case.status = f"FAILED: worker {i}: {why}"
        case.detail = bench._tail(folder / f"w{i}.err") or bench._tail(folder / f"w{i}.out")
    elif case.sink_counted != args.rows:
        case.status = f"FAILED: the sink counted {case.sink_counted} of {args.rows} messages"
    elif states != {"sent": args.rows}:
        case.status = f"FAILED: journal states {states}"
    return case


def _children_cpu() -> float:
    """User + sys CPU of this process's reaped children (os.times)."""
    usage = os.times()
    return usage.children_user + usage.children_system


# -- output -------------------------------------------------------------------------


def print_table(results: dict[str, Any], cases: list[Case], args: argparse.Namespace) -> None:
    machine = results["machine"]
    cores = machine["nproc"]
    load = " ".join(f"{x:.2f}" for x in machine["loadavg"])
    print(f"machine: {cores} cores usable ({machine['cpu_count']} online), load average {load}")
    statement = (
        f"On this {cores}-core machine all the workers, the sink and PostgreSQL share "
        f"{cores} cores: the lines past the CPU knee are what this machine does, and "
        "N*C/lat is the extrapolation for workers on hosts with their own cores (with a "
        "sink and a database that keep up)."
    )
    print(textwrap.fill(statement, width=92))
    measured = [c for c in cases if c.p50 is not None and c.status == "ok"]
    first = min(measured, key=lambda c: c.workers, default=None)
    base = first.p50 if first is not None else None
    print(
        f"{args.rows} rows, {args.connections} connections per worker, sink --delay "
        f"{args.delay:g} s; lat = the p50 SMTP transaction at N={first.workers}: "
        f"{first.p50 * 1000:.1f} ms"
        if first is not None and first.p50 is not None
        else "no latency measured: N*C/lat is not computed"
    )
    print()
    header = (
        f"{'N':>2}{'wall s':>8}{'send s':>8}{'msgs/s':>8}{'p50 ms':>8}{'N*C/lat':>9}"
        f"{'txsend CPU':>12}{'DB CPU':>8}{'sink CPU':>10}{'busy':>6}{'other':>7}{'RSS MB':>8}"
        f"{'sent/worker':>13}"
    )
    print(header)
    print(f"{'':>43}{'s per 1000 messages':^30}{'%':>6}{'CPU s':>7}{'max':>8}{'min-max':>13}")
    print("-" * len(header))
    cores = max(1, cores)
    for c in cases:
        expected = c.workers * c.connections / base if base else 0.0
        p50 = f"{c.p50 * 1000:.1f}" if c.p50 is not None else "-"
        rss = max((w.maxrss_mb for w in c.per_worker), default=0.0)
        sent = [w.sent for w in c.per_worker]
        split = f"{min(sent)}-{max(sent)}" if len(sent) > 1 else str(sent[0] if sent else 0)
        busy = c.busy / (c.window * cores) * 100 if c.window else 0.0
        flag = "" if c.status == "ok" else f"  {c.status}"
        print(
            f"{c.workers:>2}{c.seconds:>8.2f}{c.send_seconds:>8.2f}{c.msgs_per_s:>8.0f}{p50:>8}"
            f"{expected:>9.0f}{c.per_1000(c.cpu):>12.2f}{c.per_1000(c.db_cpu):>8.2f}"
            f"{c.per_1000(c.sink_cpu):>10.2f}{busy:>6.0f}{c.other_cpu:>7.1f}{rss:>8.1f}"
            f"{split:>13}{flag}"
        )
        for line in c.detail:
            print(f"      {line}")
    ok = [c for c in cases if c.status == "ok"]
    if ok:
        last = max(ok, key=lambda c: c.workers)
        per_msg = (last.cpu + last.db_cpu + last.sink_cpu) / last.rows
        print(
            f"CPU per message at N={last.workers}, workers + database + sink: "
            f"{per_msg * 1000:.2f} ms, so at most ~{cores / per_msg:.0f} msgs/s fit on "
            f"{cores} cores (the CPU knee of this machine)"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=4000)
    parser.add_argument("--connections", type=int, default=8, help="per worker (8)")
    parser.add_argument("--workers", default="1,2,4", help="values of N (1,2,4)")
    parser.add_argument("--delay", type=float, default=0.05, help="sink delay after DATA (s)")
    parser.add_argument("--timeout", type=float, default=120, help="per N, seconds")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs)")
    args = parser.parse_args(argv)
    counts = [int(x) for x in args.workers.split(",")]
    machine = bench.machine()
    results: dict[str, Any] = {
        "machine": {
            "nproc": machine["nproc"],
            "cpu_count": machine["cpu_count"],
            "python": machine["python"],
            "loadavg": machine["loadavg_before"],
        },
        "cases": [],
    }
    work = Path(tempfile.mkdtemp(prefix="txsend-scale-out-"))
    cases: list[Case] = []
    try:
        with throwaway_server() as server_url:
            postmaster = postmaster_pid(server_url)
            for n in counts:
                case = run_case(n, args, server_url, postmaster, work)
                cases.append(case)
                print(f"N={n} done: {case.status}", file=sys.stderr, flush=True)
    except BaseException as exc:
        # tests/pgserver.py skips (a pytest outcome, not an Exception) without PostgreSQL
        if type(exc).__name__ in ("Skipped", "Failed"):
            print(f"cannot start PostgreSQL: {exc}", file=sys.stderr)
            return 2
        raise
    finally:
        if args.keep:
            print(f"work folder kept: {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    results["cases"] = [c.as_dict() for c in cases]
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print_table(results, cases, args)
    return 0 if all(c.status == "ok" for c in cases) else 1


if __name__ == "__main__":
    sys.exit(main())
