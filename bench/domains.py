"""Per-domain pace under load: txsend with 50 recipient domains, each with a `domains:`
entry, against the same job without one and the raw aiosmtplib loop, into smtp-sink.

Every domain's entry is generous (`--domain-rate`, default 500/s, and `connections: 4`),
so what this measures is what the per-domain bookkeeping costs: the domain lookup of
every row, the reservation of a slot before a message goes to a relay, the slot taken
as its transaction begins. The throughput target of the performance work (txsend at
least 1.5x the raw aiosmtplib loop on asyncio) must still hold. A second workload gives
every domain a pace that binds (`--binding-rate`, default 40/s: 2000 messages a second in
all) and shows how close txsend comes to what the paces allow. The clients take turns for
`--repeats` rounds (3) and the medians are shown. See bench/README.md.
"""

from __future__ import annotations

import argparse
import csv
import shutil
import sys
import tempfile
from pathlib import Path

import reference
import run

from txsend.units import parse_rate

DOMAINS = 50
TARGET = 1.5  # txsend msgs/s over the aiosmtplib loop's (asyncio)


def write_job(folder: Path, rows: int, domains: int, rate: str, connections: int) -> Path:
    """bench/run.py's job, its recipients spread over `domains` domains (round robin),
    and with a `domains:` entry for each when `rate` is not empty."""
    job = run.write_job(folder, rows)
    with open(folder / "recipients.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(reference.row(0)))
        writer.writeheader()
        for i in range(rows):
            values = reference.row(i)
            values["email"] = f"user{i:07d}@d{i % domains:02d}.example"
            writer.writerow(values)
    if rate:
        entries = "".join(
            f"  d{n:02d}.example: {{rate: {rate}, connections: {connections}}}\n"
            for n in range(domains)
        )
        job.write_text(job.read_text(encoding="utf-8") + "domains:\n" + entries, "utf-8")
    return job


def _median(results: list[run.Result]) -> run.Result:
    """The round of median throughput (its CPU and memory with it); a failed round wins,
    so that a failure is never hidden."""
    failed = [r for r in results if not r.ok]
    if failed:
        return failed[0]
    return sorted(results, key=lambda r: r.msgs_per_s)[len(results) // 2]


def _row(r: run.Result, note: str = "") -> str:
    if not r.ok:
        return f"{r.client:42} {r.status}"
    cpu = r.cpu / r.messages * 1000 if r.messages else 0.0
    return f"{r.client:42} {r.msgs_per_s:8.0f} {cpu:16.3f} {r.maxrss_mb:12.1f}{note}"


def main(argv: list[str] | None = None) -> int:
    """Run the workloads; 0 if every step sent every message, 1 otherwise, 2 if no sink."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20000, help="recipients (default 20000)")
    parser.add_argument("--concurrency", type=int, default=32, help="connections (default 32)")
    parser.add_argument("--domain-rate", default="500/s", help="each domain's rate: (500/s)")
    parser.add_argument(
        "--binding-rate",
        default="40/s",
        help="each domain's rate in the second workload, where the pace is the limit "
        "(40/s: 2000 messages a second in all; empty: skip it)",
    )
    parser.add_argument("--domain-connections", type=int, default=4, help="each domain's (4)")
    parser.add_argument("--repeats", type=int, default=3, help="rounds; medians shown (3)")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per step (900)")
    parser.add_argument("--loop", default="asyncio", help="txsend's event loop (asyncio)")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    binary = run.find_smtp_sink()
    if binary is None:
        print("smtp-sink not found: run bench/ensure-smtp-sink.sh as root", file=sys.stderr)
        return 2
    txsend = (run.VENV_BIN / "txsend").absolute()
    work = Path(tempfile.mkdtemp(prefix="txsend-bench-domains-"))
    sink = run.SmtpSink(binary, run.free_port(), work / "smtp-sink.out")
    steps = [("with domains:", args.domain_rate), ("without domains:", "")]
    if args.binding_rate:
        steps.append((f"pace-bound, {args.binding_rate} a domain:", args.binding_rate))
    rounds: dict[str, list[run.Result]] = {}
    try:
        sink.start()
        # the clients take turns, round after round: a busy moment of the machine falls on
        # all of them alike, and the medians leave out one bad round
        for round_ in range(args.repeats):
            for n, (label, rate) in enumerate(steps):
                # a folder (and so a journal) of its own each round: a journal that sent
                # everything already would send nothing
                folder = work / f"round{round_}-job{n}"
                job = write_job(folder, args.rows, DOMAINS, rate, args.domain_connections)
                result = run.bench_txsend(
                    sink, job, args.rows, args.concurrency, work, args.timeout, txsend, args.loop
                )
                result.client = f"txsend {label} ({args.loop})"
                rounds.setdefault(result.client, []).append(result)
            for result in run.bench_reference(
                sink, args.rows, args.concurrency, work, args.timeout, [args.loop]
            ):
                rounds.setdefault(result.client, []).append(result)
    finally:
        sink.stop()
        shutil.rmtree(work, ignore_errors=True)

    results = [_median(each) for each in rounds.values()]
    print(
        f"{args.rows} messages to {DOMAINS} domains, each {args.domain_rate} and "
        f"connections: {args.domain_connections}; {args.concurrency} connections; "
        f"median of {args.repeats} rounds"
    )
    print(f"{'client':42} {'msgs/s':>8} {'CPU s/1000 msgs':>16} {'peak RSS MB':>12}")
    for r in results:
        note = ""
        if r.ok and r.client.startswith("txsend pace-bound"):
            cap = DOMAINS * parse_rate(args.binding_rate).per_second
            note = f"   {r.msgs_per_s / cap:.0%} of the {cap:.0f}/s the paces allow"
        print(_row(r, note))
    paced = next((r for r in results if r.client.startswith("txsend with") and r.ok), None)
    peer = next((r for r in results if r.client.startswith("aiosmtplib, pre") and r.ok), None)
    if paced is not None and peer is not None and peer.msgs_per_s > 0:
        ratio = paced.msgs_per_s / peer.msgs_per_s
        verdict = "met" if ratio >= TARGET else "NOT met"
        print(f"txsend with domains: vs aiosmtplib: {ratio:.2f}x (target {TARGET}x): {verdict}")
    failed = [r for each in rounds.values() for r in each if not r.ok]
    failed = [r for r in failed if not r.status.startswith("not available")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
