"""Per-domain pace end to end (the job's `domains:`): the real CLI into ScriptedServer,
checked by when each transaction BEGAN at the server (`Received.mail_at`)."""

from __future__ import annotations

import itertools
import json
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest

from tests.jobs import cli, write_job
from tests.smtpd import Received, ScriptedServer

FAST_RETRY = (
    "  retry: {attempts: 5, backoff: 50ms, max_backoff: 200ms}\n  give_up_unreachable: 5s\n"
)
THROTTLE = "451 4.7.1 Too many messages to a.example, slow down"


def people(*groups: tuple[str, int]) -> list[dict[str, str]]:
    """Rows interleaved across domains: ("a.example", 3), ("b.example", 2) gives
    a0, b0, a1, b1, a2."""
    rows = []
    for i in range(max(n for _d, n in groups)):
        for domain, n in groups:
            if i < n:
                rows.append({"email": f"u{i}@{domain}", "first_name": f"U{i}", "plan": "x"})
    return rows


def job_with(tmp_path: Path, server: ScriptedServer, records: list[dict[str, str]], domains: str,
             connections: int = 4) -> Path:  # fmt: skip
    return write_job(
        tmp_path,
        records=records,
        delivery=FAST_RETRY,
        extra_yaml=(
            f"relays:\n  - url: {server.url}\n    connections: {connections}\ndomains:\n{domains}"
        ),
    )


def of(server: ScriptedServer, domain: str) -> list[Received]:
    found = [r for r in server.received if r.rcpt_tos[0].endswith("@" + domain)]
    return sorted(found, key=lambda r: r.mail_at or 0.0)


def most_in_window(times: list[float], window: float) -> int:
    """The most of `times` within any span of `window` seconds."""
    times = sorted(times)
    best = 0
    first = 0
    for last, t in enumerate(times):
        while t - times[first] > window:
            first += 1
        best = max(best, last - first + 1)
    return best


def journal_states(path: Path) -> dict[str, str]:
    with sqlite3.connect(path) as db:
        return dict(db.execute("SELECT key, state FROM messages"))


def test_a_paced_domain_is_spaced_and_others_do_not_wait_for_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with ScriptedServer() as server:
        job = job_with(
            tmp_path,
            server,
            people(("a.example", 12), ("b.example", 40)),
            "  a.example: {rate: 4/s}\n",
        )
        result = cli(capsys, "run", job, "--json")
    assert result.code == 0, result.err
    a, b = of(server, "a.example"), of(server, "b.example")
    assert (len(a), len(b)) == (12, 40)
    starts = [r.mail_at for r in a if r.mail_at is not None]
    assert len(starts) == 12
    # 4/s with a burst of 1: at most 1 + 4 in any second; 0.2 s of slack for scheduling
    assert most_in_window(starts, 1.0 - 0.2) <= 5, starts
    # 12 at 4/s: the 12th begins at least (12 - 1) / 4 s after the first (less the slack)
    assert starts[-1] - starts[0] >= 11 / 4 - 0.3
    # no head-of-line blocking: b.example is done long before a.example's last message
    assert max(r.at for r in b) < starts[-1] - 1.0
    report = json.loads(result.out)
    domains = report["run"]["domains"]
    assert domains["a.example"]["configured"] is True
    assert domains["a.example"]["outcomes"] == {"sent": 12}
    assert domains["a.example"]["attempts"] == 12
    assert domains["a.example"]["pace"] == 4.0
    assert domains["b.example"] == {
        "configured": False,
        "attempts": 40,
        "outcomes": {"sent": 40},
        "throttles": 0,
        "pace": None,
        "slowed": False,
        "in_flight": 0,
        "waiting": 0,
    }


def test_one_connection_for_a_domain_never_overlaps_across_the_relays_connections(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # 30 rows of a.example: more than its backlog (16), so the producer passes rows over
    # and takes them back later
    with ScriptedServer() as server:
        server.data_delay = 0.03
        job = job_with(
            tmp_path,
            server,
            people(("a.example", 30), ("b.example", 30)),
            "  a.example: {connections: 1}\n",
            connections=4,
        )
        result = cli(capsys, "run", job, "--json")
    assert result.code == 0, result.err
    a, b = of(server, "a.example"), of(server, "b.example")
    assert (len(a), len(b)) == (30, 30)
    for before, after in itertools.pairwise(a):
        assert after.mail_at is not None and after.mail_at >= before.at, (before, after)
    # b.example used the other connections meanwhile: done before a.example
    assert max(r.at for r in b) < a[-1].at
    overlapping = sum(
        1
        for x in b
        for y in b
        if x is not y and x.mail_at is not None and x.mail_at < y.at and (y.mail_at or 0) < x.at
    )
    assert overlapping > 0  # b.example's transactions did run side by side
    assert set(journal_states(tmp_path / "job.journal.db").values()) == {"sent"}
    report = json.loads(result.out)
    assert report["run"]["domains"]["a.example"]["outcomes"] == {"sent": 30}


class ThrottleA(dict[str, str]):
    """rcpt_replies: the first `times` RCPTs to a.example get a throttling reply."""

    def __init__(self, times: int) -> None:
        super().__init__()
        self.left = times
        self.lock = threading.Lock()

    def get(self, address: str, default: str | None = None) -> str | None:  # type: ignore[override]
        with self.lock:
            if address.endswith("@a.example") and self.left > 0:
                self.left -= 1
                return THROTTLE
        return default


def test_a_throttling_reply_to_a_recipient_slows_its_domain_not_the_relay(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with ScriptedServer() as server:
        server.rcpt_replies = ThrottleA(3)
        server.data_delay = 0.01
        job = job_with(
            tmp_path,
            server,
            people(("a.example", 10), ("b.example", 80)),
            "  a.example: {rate: 50/s}\n",
            connections=2,
        )
        result = cli(capsys, "run", job, "--json")
    assert result.code == 0, result.err
    a, b = of(server, "a.example"), of(server, "b.example")
    assert (len(a), len(b)) == (10, 80)
    report = json.loads(result.out)
    figures = report["run"]["domains"]["a.example"]
    assert figures["throttles"] == 3
    assert figures["slowed"] is True
    assert figures["pace"] < 50
    assert figures["outcomes"] == {"sent": 10, "deferred": 3}  # each transaction's outcome
    assert figures["attempts"] == 13
    # the relay was not paused: a pause (1 s, then 2 s, 4 s) would leave a gap in
    # b.example's transactions, which go on throughout
    starts = [r.mail_at or 0.0 for r in b]
    gaps = [later - earlier for earlier, later in itertools.pairwise(starts)]
    assert max(gaps) < 0.9, gaps


class ThrottleAFor(dict[str, str]):
    """rcpt_replies: every RCPT to a.example gets a throttling reply for `seconds` from the
    first one (the server's clock), as a relay that throttles one domain for a while."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds
        self.since: float | None = None
        self.throttled = 0
        self.lock = threading.Lock()

    def get(self, address: str, default: str | None = None) -> str | None:  # type: ignore[override]
        if not address.endswith("@a.example"):
            return default
        with self.lock:
            now = time.monotonic()
            if self.since is None:
                self.since = now
            if now - self.since < self.seconds:
                self.throttled += 1
                return THROTTLE
        return default


def test_a_domain_throttled_for_a_while_never_opens_the_relays_circuit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every RCPT to a.example is throttled for 2 s: the relay is never paused nor its
    circuit opened (that would stall b.example for 2 s and more), b.example keeps its pace."""
    with ScriptedServer() as server:
        throttle = ThrottleAFor(2.0)
        server.rcpt_replies = throttle
        server.data_delay = 0.01
        job = job_with(
            tmp_path,
            server,
            people(("a.example", 100), ("b.example", 60)),
            "  a.example: {rate: 200/s}\n  b.example: {rate: 20/s}\n",
            connections=4,
        )
        result = cli(capsys, "run", job, "--json", "--log-format", "json")
    assert result.code == 0, result.err
    events = [json.loads(line) for line in result.err.splitlines() if line.startswith("{")]
    names = {e.get("event") for e in events}
    assert "circuit_opened" not in names, [e for e in events if e.get("event") == "circuit_opened"]
    assert "domain_throttled" in names
    assert throttle.throttled >= 3  # enough in a row to have opened the circuit before
    a, b = of(server, "a.example"), of(server, "b.example")
    assert (len(a), len(b)) == (100, 60)
    # b.example's pace is 20/s (one every 50 ms): its transactions go on throughout the
    # throttling; a relay pause or an open circuit (2 s) would leave a gap of a second or more
    starts = [r.mail_at or 0.0 for r in b]
    gaps = [later - earlier for earlier, later in itertools.pairwise(starts)]
    assert max(gaps) < 0.9, gaps
    report = json.loads(result.out)
    assert report["run"]["domains"]["a.example"]["throttles"] >= 3
    assert set(journal_states(tmp_path / "job.journal.db").values()) == {"sent"}


# --- MX groups ----------------------------------------------------------------------------


@contextmanager
def dns_responder(
    mx: dict[str, list[str]],
    *,
    silent: str = "\0",
    once: str | None = "custom.example",
    queries: list[str] | None = None,
) -> Iterator[int]:
    """A tiny DNS server on 127.0.0.1 (UDP): MX answers for `mx`, NXDOMAIN otherwise; no
    answer at all to names starting with `silent`. `once` is looked up once per run;
    `queries` gets the names asked."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.1)
    stop = threading.Event()
    queries = [] if queries is None else queries

    def serve() -> None:
        while not stop.is_set():
            try:
                wire, peer = sock.recvfrom(4096)
            except TimeoutError:
                continue
            query = dns.message.from_wire(wire)
            response = dns.message.make_response(query)
            question = query.question[0]
            name = question.name.to_text().rstrip(".").lower()
            queries.append(name)
            if name.startswith(silent):
                continue
            hosts = mx.get(name)
            if hosts is None:
                response.set_rcode(dns.rcode.NXDOMAIN)
            elif question.rdtype == dns.rdatatype.MX:
                records = [f"{10 * (n + 1)} {host}." for n, host in enumerate(hosts)]
                response.answer.append(
                    dns.rrset.from_text_list(question.name, 300, "IN", "MX", records)
                )
            sock.sendto(response.to_wire(), peer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield sock.getsockname()[1]
    finally:
        stop.set()
        thread.join(5)
        sock.close()
    if once is not None:
        assert queries.count(once) == 1, queries  # once per domain per run


def test_an_mx_group_holds_domains_whose_mx_host_matches(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with dns_responder({"custom.example": ["aspmx.l.google.test"]}) as port:
        monkeypatch.setenv("TXSEND_DNS", f"127.0.0.1:{port}")
        with ScriptedServer() as server:
            server.data_delay = 0.02
            job = job_with(
                tmp_path,
                server,
                people(("custom.example", 8), ("nomx.example", 8)),
                "  google:\n    mx: [.google.test]\n    connections: 1\n",
            )
            result = cli(capsys, "run", job, "--json")
    assert result.code == 0, result.err
    custom = of(server, "custom.example")
    assert len(custom) == 8
    for before, after in itertools.pairwise(custom):
        assert after.mail_at is not None and after.mail_at >= before.at
    domains = json.loads(result.out)["run"]["domains"]
    assert domains["google"]["configured"] is True
    assert domains["google"]["outcomes"] == {"sent": 8}
    assert domains["nomx.example"]["outcomes"] == {"sent": 8}  # NXDOMAIN: no match
    assert "MX lookup of nomx.example failed" in result.err


def test_mx_lookups_that_never_end_hold_up_no_other_domain(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # 15 domains whose resolver never answers come first; each lookup gives up after
    # timeouts.connect (2 s). One after another they took 30 s and held every row behind
    # them; run side by side, off the producer's path, they take about one timeout.
    timeout = 2.0
    hanging = [(f"hang{i}.example", 1) for i in range(15)]
    records = people(*hanging) + people(("custom.example", 6), ("fast.example", 30))
    with dns_responder({"custom.example": ["aspmx.l.google.test"]}, silent="hang") as port:
        monkeypatch.setenv("TXSEND_DNS", f"127.0.0.1:{port}")
        with ScriptedServer() as server:
            job = write_job(
                tmp_path,
                records=records,
                delivery=FAST_RETRY + f"  timeouts: {{connect: {timeout:g}s}}\n",
                extra_yaml=(
                    f"relays:\n  - url: {server.url}\n    connections: 4\n"
                    "domains:\n  google:\n    mx: [.google.test]\n    connections: 1\n"
                ),
            )
            began = time.monotonic()
            result = cli(capsys, "run", job, "--json")
            took = time.monotonic() - began
    assert result.code == 0, result.err
    assert len(server.received) == 15 + 6 + 30
    assert result.err.count("MX lookup of hang") == 15
    # about one timeout (and the sending), far from the 15 timeouts of their sum
    assert took < 4 * timeout + 4.0, took
    # fast.example was not held up: every one of its mails began before the first mail of
    # a domain still being looked up (those go only once their lookup gave up)
    fast = [r.mail_at for r in of(server, "fast.example")]
    hung = [r.mail_at for d, _n in hanging for r in of(server, d)]
    assert all(t is not None for t in fast + hung)
    assert max(fast) < min(hung)  # type: ignore[type-var]
    domains = json.loads(result.out)["run"]["domains"]
    assert domains["google"]["outcomes"] == {"sent": 6}
    assert domains["fast.example"]["outcomes"] == {"sent": 30}


def test_a_dry_run_looks_up_no_mx(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    queries: list[str] = []
    with dns_responder({}, once=None, queries=queries) as port:
        monkeypatch.setenv("TXSEND_DNS", f"127.0.0.1:{port}")
        with ScriptedServer() as server:
            job = job_with(
                tmp_path,
                server,
                people(("custom.example", 3)),
                "  google:\n    mx: [.google.test]\n    connections: 1\n",
            )
            result = cli(capsys, "run", job, "--dry-run")
    assert result.code == 0, result.err
    assert queries == [] and "MX lookup" not in result.err
    assert server.received == []


@pytest.mark.parametrize("value", ["garbage", "1.2.3.4.5", "127.0.0.1:abc", "127.0.0.1:99999", ""])
def test_a_bad_txsend_dns_is_refused_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("TXSEND_DNS", value)
    with ScriptedServer() as server:
        job = job_with(
            tmp_path,
            server,
            people(("custom.example", 2)),
            "  google:\n    mx: [.google.test]\n    connections: 1\n",
        )
        result = cli(capsys, "run", job)
        checked = cli(capsys, "validate", job)
    assert result.code == 78, result.err
    assert f"TXSEND_DNS={value!r}" in result.err and "host[:port][,host...]" in result.err
    assert "Traceback" not in result.err
    assert server.received == []
    assert checked.code == 65
    assert f"TXSEND_DNS={value!r}" in checked.out + checked.err
    # a job that looks nothing up does not care
    plain = job_with(
        tmp_path / "plain", server, people(("a.example", 1)), "  a.example: {rate: 1/s}\n"
    )
    assert cli(capsys, "validate", plain).code == 0


def test_rows_passed_over_across_many_claims_are_all_sent(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # 900 rows: several claims (256 rows each); a.example (one connection) keeps its
    # backlog full, so most of its rows are passed over and taken back later
    with ScriptedServer() as server:
        job = job_with(
            tmp_path,
            server,
            people(("a.example", 300), ("b.example", 600)),
            "  a.example: {connections: 1}\n",
        )
        result = cli(capsys, "run", job, "--json")
    assert result.code == 0, result.err
    assert (len(of(server, "a.example")), len(of(server, "b.example"))) == (300, 600)
    states = journal_states(tmp_path / "job.journal.db")
    assert len(states) == 900 and set(states.values()) == {"sent"}
    assert sorted(r.rcpt_tos[0] for r in server.received) == sorted(
        {r.rcpt_tos[0] for r in server.received}
    )  # none twice
