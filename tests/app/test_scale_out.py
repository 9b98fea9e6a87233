"""Several txsend processes on one job through a PostgreSQL journal (issue: scale-out).

Each test starts real `txsend` processes against the in-process aiosmtpd server and a
throwaway PostgreSQL server, then checks what arrived at the server against the journal:
every row terminal, no Message-ID twice, rows of a dead or paused worker handled as the
crash protocol says.
"""

from __future__ import annotations

import gc
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.jobs import cli, txsend_subprocess, write_job
from tests.pgserver import password_role
from tests.smtpd import Received, ScriptedServer
from txsend.journal.records import Record
from txsend.models import State

pytestmark = pytest.mark.slow
jsonschema = pytest.importorskip("jsonschema")
SCHEMA = Path(__file__).resolve().parents[2] / "docs" / "report.schema.json"
psycopg = pytest.importorskip("psycopg", reason="the postgresql extra is not installed")

_MESSAGE_ID = re.compile(rb"^Message-ID:\s*(<[^>\r\n]+>)", re.MULTILINE | re.IGNORECASE)
LEASE = "3s"


def message_id(received: Received) -> str:
    found = _MESSAGE_ID.search(received.data)
    assert found is not None, received.data[:300]
    return found.group(1).decode()


def query(url: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        rows: list[tuple[Any, ...]] = conn.execute(sql, params).fetchall()
        return rows


def probe(url: str, sql: str, *params: Any) -> bool:
    """True when the query returns a row (False before the first worker made the tables)."""
    try:
        return bool(query(url, sql, *params))
    except psycopg.errors.UndefinedTable:
        return False


def in_data_of(url: str, pid: int) -> tuple[int, set[str]]:
    """A worker process's lease epoch and the keys it holds in `sending`."""
    (epoch,) = query(url, "SELECT epoch FROM txsend_workers WHERE pid = %s", pid)[0]
    rows = query(
        url, "SELECT key FROM txsend_messages WHERE owner_epoch = %s AND state = 'sending'", epoch
    )
    return epoch, {key for (key,) in rows}


def wait_in_data(url: str, pid: int) -> None:
    """Wait until the worker has at least two rows in DATA."""
    wait_until(
        lambda: probe(
            url,
            "SELECT 1 FROM txsend_messages m JOIN txsend_workers w ON "
            "w.epoch = m.owner_epoch WHERE w.pid = %s AND m.state = 'sending' "
            "GROUP BY w.epoch HAVING count(*) >= 2",
            pid,
        ),
        60,
        f"worker {pid} to be in DATA",
    )


def states(url: str) -> dict[str, int]:
    return dict(query(url, "SELECT state, count(*) FROM txsend_messages GROUP BY state"))


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def finish(procs: list[subprocess.Popen[str]], timeout: float = 90) -> list[int]:
    """Wait for every process; their exit codes (stderr shown on failure)."""
    codes = []
    for proc in procs:
        try:
            _, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
            raise AssertionError(f"a worker did not finish: {err[-2000:]}") from None
        codes.append(proc.returncode)
        if proc.returncode not in (0, 75, -9):
            print(err[-3000:])
    return codes


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    with ScriptedServer() as smtp:
        yield smtp


_STARTED: list[subprocess.Popen[str]] = []


@pytest.fixture(autouse=True)
def _no_worker_left() -> Iterator[None]:
    """A failed test leaves no txsend process behind (a paused one is resumed first)."""
    yield
    while _STARTED:
        proc = _STARTED.pop()
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)
            proc.kill()
        proc.communicate()


def relay(smtp: ScriptedServer) -> str:
    return f"smtp://127.0.0.1:{smtp.port}?tls=none"


def start(
    job: Path, url: str, smtp: ScriptedServer, *extra: object, command: str = "run"
) -> subprocess.Popen[str]:
    args: list[object] = [command]
    if command != "worker":
        args.append(job)
    return track(
        txsend_subprocess(
            *args, "--journal", url, "--relay", relay(smtp), "--lease", LEASE, "--quiet", *extra
        )
    )


def track(proc: subprocess.Popen[str]) -> subprocess.Popen[str]:
    _STARTED.append(proc)
    return proc


def ingested(url: str) -> bool:
    return probe(url, "SELECT 1 FROM txsend_jobs WHERE ingest_complete")


def test_four_workers_send_20000_rows_once(
    tmp_path: Path, pg_url: str, server: ScriptedServer
) -> None:
    job = write_job(tmp_path / "job", 20_000)
    # three hosts start the job at once (one ingests, two wait for it) and one joins with
    # `txsend worker`, from the job the first stored in the database
    procs = [start(job, pg_url, server, "--concurrency", 4) for _ in range(3)]
    wait_until(lambda: ingested(pg_url), 60, "the ingest")
    procs.append(start(job, pg_url, server, "--concurrency", 4, command="worker"))
    assert finish(procs, timeout=240) == [0, 0, 0, 0]

    assert states(pg_url) == {"sent": 20_000}
    sent_ids = {m for (m,) in query(pg_url, "SELECT message_id FROM txsend_messages")}
    arrived = [message_id(r) for r in server.received]
    assert len(arrived) == 20_000
    assert set(arrived) == sent_ids  # the server's Message-IDs are the journal's sent rows
    assert not [m for m, n in Counter(arrived).items() if n > 1]
    # every worker sent a share; nothing stays claimed
    per_run = query(
        pg_url,
        "SELECT r.command, count(*) FROM txsend_messages m JOIN txsend_runs r "
        "ON r.id = m.run_id GROUP BY r.id, r.command",
    )
    assert len(per_run) == 4 and all(n > 0 for _, n in per_run)
    assert "worker" in {command for command, _ in per_run}
    assert query(pg_url, "SELECT count(*) FROM txsend_messages WHERE owner_epoch IS NOT NULL") == [
        (0,)
    ]


def test_killed_worker_rows_go_to_the_others_and_its_data_rows_become_unknown(
    tmp_path: Path, pg_url: str, server: ScriptedServer
) -> None:
    server.data_delay = 0.1  # every worker always has transactions in DATA
    job = write_job(tmp_path / "job", 1500)
    procs = [start(job, pg_url, server, "--concurrency", 4) for _ in range(3)]
    victim = procs[0]
    wait_in_data(pg_url, victim.pid)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    epoch, in_data = in_data_of(pg_url, victim.pid)
    claimed = {
        key
        for (key,) in query(
            pg_url,
            "SELECT key FROM txsend_messages WHERE owner_epoch = %s AND state <> 'sending'",
            epoch,
        )
    }
    assert in_data and claimed  # it died holding rows in DATA and rows not started
    assert finish(procs[1:], timeout=180) == [75, 75]  # unknown rows remain for `resume`

    rows = dict(query(pg_url, "SELECT key, state FROM txsend_messages"))
    assert {key for key, state in rows.items() if state == "unknown"} == in_data
    assert all(rows[key] == "sent" for key in claimed)  # the others sent its claimed rows
    assert all(state in ("sent", "unknown") for state in rows.values())
    assert query(pg_url, "SELECT count(*) FROM txsend_messages WHERE owner_epoch IS NOT NULL") == [
        (0,)
    ]
    arrived = Counter(message_id(r) for r in server.received)
    assert not [m for m, n in arrived.items() if n > 1]  # nothing twice
    ids = dict(query(pg_url, "SELECT key, message_id FROM txsend_messages"))
    # an unknown row was never sent again by the others (at most the victim's own try)
    assert all(arrived[ids[key]] <= 1 for key in in_data)
    sent = {key for key, state in rows.items() if state == "sent"}
    assert all(arrived[ids[key]] == 1 for key in sent)
    assert query(pg_url, "SELECT state FROM txsend_workers WHERE epoch = %s", epoch) == [
        ("reaped",)
    ]
    # `status` shows who worked the job: the victim reaped, the others stopped
    status = track(txsend_subprocess("status", job, "--journal", pg_url, "--json"))
    out, err = status.communicate(timeout=60)
    assert status.returncode == 0, err
    report = json.loads(out)
    jsonschema.validate(report, json.loads(SCHEMA.read_text()))
    by_pid = {w["pid"]: w for w in report["workers"]}
    assert by_pid[victim.pid]["state"] == "reaped"
    assert [by_pid[p.pid]["state"] for p in procs[1:]] == ["stopped", "stopped"]
    assert all(w["rows_claimed"] == w["rows_in_data"] == 0 for w in report["workers"])


def test_paused_worker_past_its_lease_sends_nothing_more_and_is_refused(
    tmp_path: Path, pg_url: str, server: ScriptedServer
) -> None:
    server.data_delay = 0.1
    job = write_job(tmp_path / "job", 600)
    paused, other = (start(job, pg_url, server, "--concurrency", 4) for _ in range(2))
    wait_in_data(pg_url, paused.pid)
    paused.send_signal(signal.SIGSTOP)
    stopped_at = time.monotonic()
    try:
        epoch, in_data = in_data_of(pg_url, paused.pid)
        # the other worker reaps the paused one's lease and finishes the job
        assert finish([other], timeout=120) == [75]
        assert time.monotonic() - stopped_at > 3.0
        assert query(pg_url, "SELECT state FROM txsend_workers WHERE epoch = %s", epoch) == [
            ("reaped",)
        ]
        before = len(server.received)
    finally:
        paused.send_signal(signal.SIGCONT)
    resumed_at = time.monotonic()
    code = finish([paused], timeout=60)[0]
    assert code == 75  # it stops: its lease is gone

    late = [r for r in server.received[before:] if r.at >= resumed_at]
    ids = dict(query(pg_url, "SELECT message_id, key FROM txsend_messages"))
    # after SIGCONT it only finished the transactions it was in when paused ...
    assert {ids[message_id(r)] for r in late} <= in_data
    rows = dict(query(pg_url, "SELECT key, state FROM txsend_messages"))
    # ... and its late `sent` writes for them were refused: they stay unknown
    assert {key for key, state in rows.items() if state == "unknown"} == in_data
    assert all(state in ("sent", "unknown") for state in rows.values())
    arrived = Counter(message_id(r) for r in server.received)
    assert not [m for m, n in arrived.items() if n > 1]


def test_rate_holds_across_four_workers(
    tmp_path: Path, pg_url: str, server: ScriptedServer
) -> None:
    rows = 1600  # 8 seconds at 200/s
    job = write_job(
        tmp_path / "job",
        rows,
        extra_yaml=f"relays:\n  - url: {relay(server)}\n    rate: 200/s\n    connections: 8\n",
    )
    # The arrival times are taken by the server thread in this process: a collection of
    # the test process's garbage (about 100 ms, some 5 s in) would bunch them up.
    gc.disable()
    try:
        procs = [
            track(txsend_subprocess("run", job, "--journal", pg_url, "--lease", LEASE, "--quiet"))
            for _ in range(4)
        ]
        assert finish(procs, timeout=120) == [0, 0, 0, 0]
    finally:
        gc.enable()
    assert states(pg_url) == {"sent": rows}
    # when each transaction began at the relay: the pace the limiter keeps (arrival of the
    # final dot adds each transaction's own latency, which varies)
    times = sorted(r.mail_at for r in server.received if r.mail_at is not None)
    assert len(times) == rows
    busiest, low = 0, 0
    for high, at in enumerate(times):
        while at - times[low] >= 1.0:
            low += 1
        busiest = max(busiest, high - low + 1)
    mean = (rows - 1) / (times[-1] - times[0])
    print(f"rate test: busiest 1-second window {busiest}, mean {mean:.1f}/s")
    assert busiest <= 210, f"{busiest} messages in one second"
    assert mean >= 185, f"mean {mean:.1f}/s"
    # all four sent a share of the paced traffic
    shares = query(pg_url, "SELECT run_id, count(*) FROM txsend_messages GROUP BY run_id")
    assert len(shares) == 4


def test_abort_of_one_worker_stops_all_and_resume_completes(
    tmp_path: Path, pg_url: str, server: ScriptedServer
) -> None:
    server.data_delay = 0.05
    with ScriptedServer() as bad:
        bad.rcpt_replies = {
            f"user{i}@example.com": "550 5.1.1 no such mailbox" for i in range(3000)
        }
        job = write_job(
            tmp_path / "job",
            3000,
            delivery="  abort_on: {error_rate: 0.2, min_messages: 20}\n",
        )
        # three workers go through a good relay; one through a relay refusing everything:
        # its error-rate abort must stop the other three
        good = [start(job, pg_url, server, "--concurrency", 2) for _ in range(3)]
        wait_until(lambda: ingested(pg_url) and len(server.received) > 20, 60, "sending")
        failing = start(job, pg_url, bad, "--concurrency", 2)
        wait_until(
            lambda: probe(pg_url, "SELECT 1 FROM txsend_jobs WHERE abort_reason IS NOT NULL"),
            60,
            "the abort",
        )
        aborted_at = time.monotonic()
        codes = finish([failing, *good], timeout=60)
        stopped_within = time.monotonic() - aborted_at
    assert codes == [75, 75, 75, 75]
    assert stopped_within < 2.0 + 1.0  # the watch interval and the in-flight transactions
    counts = states(pg_url)
    assert counts.get("pending", 0) > 0  # work was left
    sent_before = len(server.received)
    assert query(pg_url, "SELECT count(*) FROM txsend_messages WHERE owner_epoch IS NOT NULL") == [
        (0,)
    ]

    # a host joining the aborted job claims nothing and says why
    late = start(job, pg_url, server, command="worker")
    _, err = late.communicate(timeout=60)
    assert late.returncode == 75 and "another worker stopped the job" in err, err
    assert len(server.received) == sent_before

    server.data_delay = 0.0
    resumed = track(
        txsend_subprocess("resume", job, "--journal", pg_url, "--relay", relay(server), "--quiet")
    )
    assert finish([resumed], timeout=120) == [1]  # done; the bounced rows are failures
    counts = states(pg_url)
    assert set(counts) <= {"sent", "bounced"}
    assert sum(counts.values()) == 3000
    assert counts["bounced"] == len(query(pg_url, "SELECT 1 FROM txsend_messages WHERE code = 550"))
    arrived = Counter(message_id(r) for r in server.received)
    assert not [m for m, n in arrived.items() if n > 1]
    assert len(arrived) == counts["sent"]
    assert query(pg_url, "SELECT abort_reason FROM txsend_jobs") == [(None,)]


def test_worker_needs_a_postgresql_url_and_a_stored_job(tmp_path: Path, pg_url: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TXSEND_")}
    done = subprocess.run(
        [sys.executable, "-m", "txsend", "worker", "--journal", str(tmp_path / "j.db")],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert done.returncode == 64 and "postgresql://" in done.stderr
    assert "Traceback" not in done.stderr

    def worker(*args: str) -> subprocess.CompletedProcess[str]:
        # --lease 2s: a worker waits up to twice its lease for a job being stored
        return subprocess.run(
            [sys.executable, "-m", "txsend", "worker", "--journal", pg_url, "--lease", "2s", *args],
            capture_output=True,
            text=True,
            env=env,
            check=False,
            timeout=60,
        )

    # no job came while it waited: nothing to join
    done = worker()
    assert done.returncode == 64 and "--job NAME" in done.stderr, done.stderr
    assert "waiting up to 4s for a job to be stored" in done.stderr
    assert "Traceback" not in done.stderr
    # a job whose first host is still ingesting past the bound: try again (75)
    from txsend.journal.postgres.journal import PgJournal

    journal = PgJournal.open(pg_url, job_name="half")
    journal.bind_job("half", {}, {"source": str(tmp_path / "job.yaml"), "overrides": {}})
    journal.close()
    started = time.monotonic()
    done = worker("--job", "half")
    assert done.returncode == 75, done.stderr
    assert "the job is still being ingested: try again" in done.stderr
    assert done.stderr.count("waiting up to 4s for job 'half' to be ingested") == 1
    assert time.monotonic() - started >= 4
    # without --job, the job being ingested is the one to join
    done = worker()
    assert done.returncode == 75 and "'half'" in done.stderr, done.stderr
    # its files could not be packed (stored empty): no waiting, it never gets them
    with psycopg.connect(pg_url) as conn:
        conn.execute("UPDATE txsend_jobs SET ingest_complete = true, bundle = ''::bytea")
    done = worker("--job", "half")
    assert done.returncode == 64 and "stored without its files" in done.stderr, done.stderr
    assert "waiting" not in done.stderr


def test_worker_joins_a_stored_job_with_its_own_dkim_key(
    tmp_path: Path, pg_url: str, server: ScriptedServer
) -> None:
    samples = Path(__file__).resolve().parents[2] / "sample_jobs"
    shutil.copytree(samples, tmp_path / "job")
    key = tmp_path / "job" / "keys" / "dkim-test.pem"
    key.chmod(0o600)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TXSEND_")}

    def txsend(cwd: Path, *args: object) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "txsend", *map(str, args)],
            cwd=cwd,
            env=env | {"PYTHONPATH": str(Path(__file__).resolve().parents[2])},
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )

    job = tmp_path / "job" / "monthly-newsletter.yaml"
    stored = txsend(tmp_path, "run", job, "--journal", pg_url, "--dry-run", "--quiet")
    assert stored.returncode == 0, stored.stderr
    worker = ("worker", "--journal", pg_url, "--relay", relay(server), "--quiet")
    (tmp_path / "bare").mkdir()
    missing = txsend(tmp_path / "bare", *worker)
    assert missing.returncode == 66, missing.stderr
    assert "DKIM key file not found" in missing.stderr and "Traceback" not in missing.stderr
    host = tmp_path / "host"
    (host / "keys").mkdir(parents=True)
    shutil.copy(key, host / "keys")
    done = txsend(host, *worker)
    assert done.returncode == 0, done.stderr
    assert states(pg_url) == {"sent": 40}
    assert len(server.received) == 40
    assert all("DKIM-Signature" in r.message for r in server.received)
    # status and report read the shared journal from any host
    status = txsend(tmp_path, "status", job, "--journal", pg_url, "--json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["counts"]["sent"] == 40
    report = txsend(tmp_path, "report", job, "--journal", pg_url, "--json")
    assert report.returncode == 0, report.stderr
    assert [run["command"] for run in json.loads(report.stdout)["runs"]] == ["run", "worker"]


def read_line(proc: subprocess.Popen[str], text: str, timeout: float) -> str:
    """Wait (bounded) for a line of the process's stderr that holds `text`."""
    assert proc.stderr is not None
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        if not select.select([proc.stderr], [], [], left)[0]:
            break
        line = proc.stderr.readline()
        if not line:  # the process ended
            break
        if text in line:
            return line
    raise AssertionError(f"no line with {text!r} on stderr within {timeout}s")


@pytest.mark.parametrize("named", [True, False], ids=["with --job", "without --job"])
def test_worker_started_before_the_ingest_ends_waits_and_sends_its_share(
    tmp_path: Path, pg_url: str, server: ScriptedServer, named: bool
) -> None:
    """A worker started while the first host is still storing the job (bound, not yet
    ingested, no files) waits for it instead of exiting 64, then sends beside it."""
    from txsend.app.jobs import fingerprint, load
    from txsend.job.spec import JobOverrides
    from txsend.journal.postgres.journal import PgJournal

    job = write_job(tmp_path / "job", 2000)
    server.data_delay = 0.01  # the run lasts a few seconds: time for the worker to join
    # the first host's first step, as `txsend run` takes it: the job bound, nothing more
    first = PgJournal.open(pg_url, job_name="test-job")
    spec = {"source": str(job.resolve()), "overrides": {}}
    first.bind_job("test-job", fingerprint(load(job, JobOverrides())), spec)
    first.close()
    assert query(pg_url, "SELECT ingest_complete, bundle FROM txsend_jobs") == [(False, None)]
    named_job = ["--job", "test-job"] if named else []
    worker = track(
        txsend_subprocess(
            "worker", "--journal", pg_url, "--relay", relay(server), "--lease", "30s", *named_job
        )
    )
    read_line(worker, "waiting up to 60s for job 'test-job' to be ingested", timeout=60)
    assert worker.poll() is None
    run = start(job, pg_url, server)  # the first host ingests, stores the files, sends
    assert finish([run, worker], timeout=180) == [0, 0]

    assert states(pg_url) == {"sent": 2000}
    arrived = Counter(message_id(r) for r in server.received)
    assert len(arrived) == 2000 and all(n == 1 for n in arrived.values())
    assert set(arrived) == {m for (m,) in query(pg_url, "SELECT message_id FROM txsend_messages")}
    per_command = dict(
        query(
            pg_url,
            "SELECT r.command, count(*) FROM txsend_messages m JOIN txsend_runs r "
            "ON r.id = m.run_id GROUP BY r.command",
        )
    )
    assert per_command.get("worker", 0) > 0, per_command  # the worker sent its share
    assert sum(per_command.values()) == 2000


def test_worker_joining_while_others_hold_every_row_waits_for_them(
    tmp_path: Path, pg_url: str, server: ScriptedServer
) -> None:
    from txsend.journal.postgres.journal import PgJournal

    job = write_job(tmp_path / "job", 20)
    stored = track(txsend_subprocess("run", job, "--journal", pg_url, "--dry-run", "--quiet"))
    assert finish([stored], timeout=60) == [0]  # the job is in the database, rows pending
    # another host (this process) claims every row and keeps its lease renewed
    other = PgJournal.open(pg_url, job_name="test-job", lease=60)
    try:
        held = other.claim(20, include_unknown=False)
        assert len(held) == 20
        worker = start(job, pg_url, server, command="worker")
        # the worker finds no free row as soon as it joins; it must not read "done" or
        # "try again" into that while the other host holds rows: it waits (a renewal of
        # its own lease, every 0.75 s, shows that it stayed past its first claims; the
        # join itself stamps both times within a statement)
        renewed = "SELECT 1 FROM txsend_workers WHERE pid = %s AND renewed_at > started_at + 0.5"
        wait_until(
            lambda: worker.poll() is not None or probe(pg_url, renewed, worker.pid),
            60,
            "the worker to join and renew its lease",
        )
        assert worker.poll() is None, worker.communicate()[1]
        # the other host sends half itself, and gives the other half back
        run = other.start_run("run")
        assert other.write([(c.key, run) for c in held[:10]], []) == set()
        done = [Record(c.key, State.SENT, 250, "250 ok", "elsewhere") for c in held[:10]]
        assert other.write([], done) == set()
    finally:
        other.close()  # releases the rows it still holds
    assert finish([worker], timeout=120) == [0]  # the job's verdict: every row sent
    assert states(pg_url) == {"sent": 20}
    arrived = Counter(message_id(r) for r in server.received)
    ids = dict(query(pg_url, "SELECT key, message_id FROM txsend_messages"))
    assert sorted(arrived) == sorted(ids[c.key] for c in held[10:])  # the half given back
    assert all(n == 1 for n in arrived.values())


def test_journal_url_errors_are_clear(tmp_path: Path) -> None:
    job = write_job(tmp_path / "job", 3)
    relay_url = "smtp://127.0.0.1:9?tls=none"
    cases = [
        # a password inline would land in shell history and process lists
        ("postgresql://txsend:hunter2@127.0.0.1:9/mail", 78, "TXSEND_PG_PASSWORD"),
        # nothing listens there
        (f"postgresql://txsend@/mail?host={tmp_path}", 75, "cannot reach the journal database"),
    ]
    for url, code, says in cases:
        proc = txsend_subprocess("run", job, "--journal", url, "--relay", relay_url)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == code, err
        assert says in err and "Traceback" not in err
        assert "hunter2" not in out + err


@pytest.fixture
def no_pg_password(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No password from the caller's environment; HOME (for ~/.pgpass) is returned."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for name in ("TXSEND_PG_PASSWORD", "PGPASSWORD", "PGPASSFILE", "PGUSER"):
        monkeypatch.delenv(name, raising=False)
    return home


def passfile(path: Path, user: str, password: str) -> Path:
    path.write_text(f"*:*:*:{user}:{password}\n", encoding="utf-8")
    path.chmod(0o600)  # libpq ignores a password file others may read
    return path


def test_wrong_database_password_is_a_configuration_error(
    tmp_path: Path,
    pg_url: str,
    no_pg_password: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = password_role(pg_url, "mailer_pw", "the-Right-0ne")
    job = write_job(tmp_path / "job", 3)
    run = ("run", job, "--journal", url, "--relay", "smtp://127.0.0.1:9?tls=none")

    # from TXSEND_PG_PASSWORD: waiting does not make a wrong password right (78, not 75)
    monkeypatch.setenv("TXSEND_PG_PASSWORD", "Wr0ng-from-env")
    result = cli(capsys, *run)
    assert result.code == 78, result.err
    assert 'user "mailer_pw"' in result.err and "TXSEND_PG_PASSWORD" in result.err
    assert "Wr0ng-from-env" not in result.out + result.err
    assert "Traceback" not in result.err
    monkeypatch.delenv("TXSEND_PG_PASSWORD")

    # from a PGPASSFILE: its path is named
    named = passfile(tmp_path / "pgpass", "mailer_pw", "Wr0ng-from-file")
    monkeypatch.setenv("PGPASSFILE", str(named))
    result = cli(capsys, *run)
    assert result.code == 78, result.err
    assert 'user "mailer_pw"' in result.err and str(named) in result.err
    assert "Wr0ng-from-file" not in result.out + result.err
    monkeypatch.delenv("PGPASSFILE")

    # from libpq's default password file, ~/.pgpass
    default = passfile(no_pg_password / ".pgpass", "mailer_pw", "Wr0ng-from-home")
    result = cli(capsys, *run)
    assert result.code == 78, result.err
    assert 'user "mailer_pw"' in result.err and str(default) in result.err
    assert "Wr0ng-from-home" not in result.out + result.err
    default.unlink()

    # none at all
    result = cli(capsys, *run)
    assert result.code == 78, result.err
    assert 'user "mailer_pw"' in result.err and "no password was given" in result.err

    # and the right one works
    monkeypatch.setenv("TXSEND_PG_PASSWORD", "the-Right-0ne")
    result = cli(capsys, *run, "--dry-run", "--quiet")
    assert result.code == 0, result.err
    assert "the-Right-0ne" not in result.out + result.err


def test_missing_database_or_role_is_a_configuration_error(
    tmp_path: Path, pg_url: str, no_pg_password: Path
) -> None:
    job = write_job(tmp_path / "job", 3)
    base, _, options = pg_url.partition("?")
    server = base.rsplit("/", 1)[0]
    cases = [
        (f"{server}/no_such_db?{options}", 'database "no_such_db" does not exist'),
        (f"{server.replace('postgres@', 'nobody_here@')}/txsend?{options}", "nobody_here"),
    ]
    for url, says in cases:
        # a real process, as cron starts it: exit 78 tells it not to try again
        proc = txsend_subprocess("run", job, "--journal", url, "--relay", "smtp://127.0.0.1:9")
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 78, err
        assert says in err and "Traceback" not in err
