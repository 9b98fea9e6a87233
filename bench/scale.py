"""Scaling benchmark: txsend at 10k / 100k / 1M recipients, journal ingest alone, and a
byte-bound job (a 1 MB attachment per message) against smtp-source, all into smtp-sink.

Usage: python bench/scale.py [--sizes 10000,100000,1000000] [--big N] [--json]
       python bench/scale.py --ingest-only N [--repeat R] [--json]

For each size: a fresh job (the bench/run.py welcome message), `txsend run` measured from
outside (wall time, CPU, peak RSS), and `Journal.ingest` of the same rows alone
(rows/s). Then N messages with a 1 MB attachment through txsend and `smtp-source -l
1048576 -m N` through the same sink (MB/s). Takes minutes at 1M (about 10 here).

--ingest-only N: only the journal ingest: a job of N rows (the same CSV), read and
ingested into a fresh SQLite journal R times (default 3), each time in a child process
of its own, which prints rows/s, its CPU time (user+sys) and its peak RSS. Needs no
smtp-sink. `--ingest-job JOB` is that child: one ingest of JOB's rows, one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import run as bench
from run import SmtpSink, find_smtp_sink, free_port, run_measured

sys.path.insert(0, str(bench.ROOT))

import txsend
from txsend.content.ids import message_id_domain, new_message_id
from txsend.job.loading import load_job
from txsend.job.recipients import iter_rows

try:
    from txsend.content.ids import MessageIds
    from txsend.job.rowbatches import RecipientRows

    def ingest_args(job: Any, domain: str) -> tuple[Any, Any]:
        """What `txsend run` gives `Journal.ingest`: the rows and the Message-IDs."""
        return RecipientRows(job), MessageIds(domain)
except ImportError:  # an older txsend, measured for comparison

    def ingest_args(job: Any, domain: str) -> tuple[Any, Any]:
        """What `txsend run` gives `Journal.ingest`: the rows and the Message-IDs."""
        return iter_rows(job), lambda: new_message_id(domain)


from txsend.journal.sqlite import Journal

MB = 1024 * 1024


def txsend_run(
    sink: SmtpSink, job: Path, work: Path, name: str, concurrency: int, timeout: float
) -> dict[str, Any]:
    url = f"smtp://127.0.0.1:{sink.port}?tls=none"
    cmd = [str(bench.VENV_BIN / "txsend"), "run", str(job), "--relay", url, "--quiet"]
    cmd += ["--concurrency", str(concurrency), "--journal", str(work / f"{name}.db")]
    before = sink.messages()
    child = run_measured(
        cmd, cwd=work, stdout=work / f"{name}.out", stderr=work / f"{name}.err", timeout=timeout
    )
    counted = bench._settled_count(sink) - before
    return {
        "exit_code": child.returncode,
        "messages": counted,
        "seconds": round(child.seconds, 2),
        "cpu": round(child.cpu, 2),
        "peak_rss_mb": round(child.maxrss_mb, 1),
    }


def ingest_rate(job_file: Path, work: Path, name: str) -> dict[str, Any]:
    """Journal ingest alone: the rows of the job into a fresh journal, in this process."""
    return ingest_rate_into(job_file, work / f"{name}-ingest.db")


def ingest_job(job_file: Path, journal_path: Path) -> dict[str, Any]:
    """One ingest of a job's rows into a fresh journal, measured in this process."""
    journal_path.unlink(missing_ok=True)
    result = ingest_rate_into(job_file, journal_path)
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    result["txsend"] = str(Path(txsend.__file__).parent)
    return result


def ingest_rate_into(job_file: Path, journal_path: Path) -> dict[str, Any]:
    """Load the job, then time `Journal.ingest` of its rows into journal_path.

    Timed from opening the fresh journal to closing it (the last checkpoint included).
    """
    job = load_job(job_file, env={})
    domain = message_id_domain(job.from_addr)
    started = time.perf_counter()
    cpu0 = time.process_time()
    journal = Journal.open(journal_path)
    stats = journal.ingest(*ingest_args(job, domain))
    journal.close()
    seconds = time.perf_counter() - started
    cpu = time.process_time() - cpu0
    return {
        "rows": stats.new,
        "seconds": round(seconds, 3),
        "rows_per_s": round(stats.new / seconds) if seconds else None,
        "cpu": round(cpu, 3),
    }


def ingest_only(rows: int, repeat: int, as_json: bool) -> int:
    """N rows into a fresh journal, R times, each in a child process of its own."""
    work = Path(tempfile.mkdtemp(prefix="txsend-ingest-"))
    try:
        job = bench.write_job(work / "job", rows)
        runs = []
        for i in range(repeat):
            db = work / f"ingest-{i}.db"
            cmd = [sys.executable, __file__, "--ingest-job", str(job), "--journal", str(db)]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            runs.append(json.loads(out))
            for leftover in work.glob(f"ingest-{i}.db*"):
                leftover.unlink()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    median = {
        name: statistics.median(r[name] for r in runs)
        for name in ("seconds", "rows_per_s", "cpu", "peak_rss_mb")
    }
    if as_json:
        print(json.dumps({"machine": bench.machine(), "runs": runs, "median": median}, indent=2))
        return 0
    print(f"journal ingest of {rows} CSV rows into a fresh journal ({runs[0]['txsend']})")
    header = (
        f"{'run':>6}{'seconds':>10}{'rows/s':>10}{'CPU s':>8}{'CPU us/row':>12}{'peak RSS MB':>13}"
    )
    print(header)
    print("-" * len(header))
    for label, r in [*((str(i + 1), r) for i, r in enumerate(runs)), ("median", median)]:
        print(
            f"{label:>6}{r['seconds']:>10.2f}{r['rows_per_s']:>10.0f}{r['cpu']:>8.2f}"
            f"{r['cpu'] / rows * 1e6:>12.2f}{r['peak_rss_mb']:>13.1f}"
        )
    return 0


def byte_bound(sink: SmtpSink, work: Path, count: int, timeout: float) -> dict[str, Any]:
    """N messages carrying a 1 MB attachment, txsend vs smtp-source -l 1048576."""
    folder = work / "big"
    job = bench.write_job(folder, count)
    (folder / "report.bin").write_bytes(os.urandom(MB))
    job.write_text(
        job.read_text()
        + "attachments: [{path: report.bin, content_type: application/octet-stream}]\n"
        + "max_message_size: 2MB\n"
    )
    tx = txsend_run(sink, job, work, "big", 8, timeout)
    wire = 1.37 * MB  # base64 of 1 MB plus the message: measured below from the sink
    out: dict[str, Any] = {"messages": count, "txsend": tx}
    binary = shutil.which("smtp-source") or "/usr/sbin/smtp-source"
    if Path(binary).exists():
        before = sink.messages()
        cmd = [binary, "-d", "-s", "8", "-m", str(count), "-l", str(int(wire))]
        cmd += ["-f", "noreply@acme.example", "-t", "user@example.com", f"127.0.0.1:{sink.port}"]
        child = run_measured(
            cmd, cwd=work, stdout=work / "src.out", stderr=work / "src.err", timeout=timeout
        )
        out["smtp_source"] = {
            "messages": bench._settled_count(sink) - before,
            "seconds": round(child.seconds, 2),
            "cpu": round(child.cpu, 2),
        }
    for key in ("txsend", "smtp_source"):
        if key in out and out[key]["seconds"]:
            out[key]["mb_per_s"] = round(out[key]["messages"] * wire / MB / out[key]["seconds"], 1)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--big", type=int, default=300, help="messages with 1 MB (300)")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--timeout", type=float, default=3600)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--ingest-only", type=int, metavar="N", help="journal ingest of N rows")
    parser.add_argument("--repeat", type=int, default=3, help="ingests with --ingest-only (3)")
    parser.add_argument("--ingest-job", type=Path, metavar="JOB", help=argparse.SUPPRESS)
    parser.add_argument("--journal", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.ingest_job is not None:
        print(json.dumps(ingest_job(args.ingest_job, args.journal)))
        return 0
    if args.ingest_only is not None:
        return ingest_only(args.ingest_only, args.repeat, args.json)
    binary = find_smtp_sink()
    if binary is None:
        print("smtp-sink not found: run bench/ensure-smtp-sink.sh as root", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="txsend-scale-"))
    sink = SmtpSink(binary, free_port(), work / "smtp-sink.out")
    results: dict[str, Any] = {"machine": bench.machine(), "sizes": []}
    try:
        sink.start()
        for size in (int(x) for x in args.sizes.split(",")):
            folder = work / f"n{size}"
            job = bench.write_job(folder, size)
            entry = {
                "rows": size,
                "run": txsend_run(sink, job, work, f"n{size}", args.concurrency, args.timeout),
            }
            entry["ingest"] = ingest_rate(job, work, f"n{size}")
            results["sizes"].append(entry)
            print(f"{size} rows done", file=sys.stderr, flush=True)
            (work / f"n{size}.db").unlink(missing_ok=True)
        if args.big:
            results["byte_bound"] = byte_bound(sink, work, args.big, args.timeout)
    finally:
        sink.stop()
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print("txsend at scale (whole process, into smtp-sink)")
    header = (
        f"{'rows':>9}{'seconds':>10}{'msgs/s':>9}{'us/msg':>8}{'CPU us/msg':>12}"
        f"{'peak RSS MB':>13}{'ingest rows/s':>15}"
    )
    print(header)
    print("-" * len(header))
    for entry in results["sizes"]:
        r, i = entry["run"], entry["ingest"]
        rate = r["messages"] / r["seconds"] if r["seconds"] else 0
        wall_us = r["seconds"] / entry["rows"] * 1e6
        cpu_us = r["cpu"] / entry["rows"] * 1e6
        flag = "" if r["exit_code"] == 0 and r["messages"] == entry["rows"] else "  FAILED"
        print(
            f"{entry['rows']:>9}{r['seconds']:>10.1f}{rate:>9.0f}{wall_us:>8.0f}{cpu_us:>12.0f}"
            f"{r['peak_rss_mb']:>13.1f}{i['rows_per_s']:>15}{flag}"
        )
    sizes = results["sizes"]
    if len(sizes) >= 2:
        first, last = sizes[0], sizes[-1]
        growth = last["run"]["peak_rss_mb"] / first["run"]["peak_rss_mb"]
        print(f"peak RSS at {last['rows']} / at {first['rows']}: {growth:.2f}")
    big = results.get("byte_bound")
    if big:
        print()
        print(
            f"byte-bound: {big['messages']} messages with a 1 MB attachment (~1.37 MB on the wire)"
        )
        for key, label in (("txsend", "txsend"), ("smtp_source", "smtp-source -l 1.37 MB")):
            if key in big:
                b = big[key]
                print(
                    f"  {label:<24} {b['messages']:>5} messages {b['seconds']:>7.1f} s "
                    f"{b.get('mb_per_s', 0):>7.1f} MB/s"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
