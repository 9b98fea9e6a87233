"""Ingest into a PostgreSQL journal: `PgJournal.ingest` of a job's rows, alone.

Usage: python bench/pg_ingest.py [--rows 100000] [--repeat 3] [--json]

Starts a throwaway PostgreSQL server (tests/pgserver.py), writes the bench/run.py welcome
job with R recipients, then --repeat times, each into a fresh database: opens the
journal, binds the job and ingests its rows as `txsend run` does (the CSV read, the
message ids, the COPY), measuring the ingest call alone: wall time, rows/s, the CPU of
this process and of the PostgreSQL server (/proc, as bench/scale_out.py reads it). Exits 2
without PostgreSQL.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import run as bench
import scale_out

sys.path.insert(0, str(bench.ROOT))

from tests.pgserver import fresh_database, throwaway_server
from txsend.content.ids import message_id_domain, new_message_id
from txsend.job.loading import load_job
from txsend.job.recipients import iter_rows
from txsend.journal.postgres.journal import PgJournal


def ingest_once(job_file: Path, server_url: str, postmaster: int, name: str) -> dict[str, Any]:
    """One ingest of the job's rows into a fresh database."""
    job = load_job(job_file, env={})
    url = fresh_database(server_url, name)
    journal = PgJournal.open(url, job_name=job.name)
    try:
        journal.bind_job(job.name, {}, {})
        domain = message_id_domain(job.from_addr)
        db0, cpu0 = scale_out.postgres_cpu(postmaster), time.process_time()
        started = time.perf_counter()
        stats = journal.ingest(iter_rows(job), lambda: new_message_id(domain))
        seconds = time.perf_counter() - started
        cpu = time.process_time() - cpu0
        time.sleep(0.3)  # the server's CPU counters of a busy backend lag a little
        db_cpu = scale_out.postgres_cpu(postmaster) - db0
    finally:
        journal.close()
    return {
        "rows": stats.new,
        "seconds": round(seconds, 3),
        "rows_per_s": round(stats.new / seconds) if seconds else None,
        "txsend_cpu": round(cpu, 2),
        "db_cpu": round(db_cpu, 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="txsend-pg-ingest-"))
    results: list[dict[str, Any]] = []
    try:
        job_file = bench.write_job(work / "job", args.rows)
        with throwaway_server() as server_url:
            postmaster = scale_out.postmaster_pid(server_url)
            for i in range(args.repeat):
                results.append(ingest_once(job_file, server_url, postmaster, f"ingest_{i}"))
    except BaseException as exc:
        if type(exc).__name__ in ("Skipped", "Failed"):  # no PostgreSQL (tests/pgserver.py)
            print(f"cannot start PostgreSQL: {exc}", file=sys.stderr)
            return 2
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"PgJournal.ingest of {args.rows} rows (the welcome job), each into a fresh database")
    print(f"{'run':>4}{'seconds':>9}{'rows/s':>9}{'txsend CPU s':>14}{'DB CPU s':>10}")
    for i, r in enumerate(results, 1):
        print(
            f"{i:>4}{r['seconds']:>9.2f}{r['rows_per_s']:>9}{r['txsend_cpu']:>14.2f}"
            f"{r['db_cpu']:>10.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
