"""The run's verdict: exit codes for unknown and skipped rows, a template that fails every
row, the outage clock of the relay pool, and how connection faults are classified."""

from __future__ import annotations

import socket
import sqlite3
import ssl
from pathlib import Path

import aiosmtplib
import pytest

from tests.jobs import cli, write_job
from tests.smtpd import ScriptedServer
from txsend.cli.verdict import final_line
from txsend.delivery.classify import CONNECT_RULES, classify_connect
from txsend.delivery.relays import COOL_DOWN, Circuit, RelayPool, RelayState
from txsend.delivery.smtp.connection import connect_fault
from txsend.delivery.smtp.results import ConnectFault
from txsend.models import RelayConfig, State, TlsMode
from txsend.reporting.stats import RunStats
from txsend.reporting.summary import Summary


def rows(job: Path) -> dict[str, tuple[str, int, str | None]]:
    with sqlite3.connect(job.parent / "job.journal.db") as db:
        return {
            key: (state, attempts, reply)
            for key, state, attempts, reply in db.execute(
                "SELECT key, state, attempts, reply FROM messages"
            )
        }


def final_lines(err: str) -> str:
    """The final line and what follows it."""
    lines = err.splitlines()
    start = max(i for i, line in enumerate(lines) if "(exit " in line)
    return "\n".join(lines[start:])


# --- exit codes: unknown and skipped rows --------------------------------------------------


@pytest.mark.parametrize(("on_unknown", "code"), [("skip", 1), ("resend", 75)])
def test_unknown_rows_never_exit_0(
    tmp_path: Path,
    smtp_server: ScriptedServer,
    capsys: pytest.CaptureFixture[str],
    on_unknown: str,
    code: int,
) -> None:
    """The final dot is answered by nothing: the message may have arrived (RFC 1047).
    Terminal by policy (skip) is 1, to be resent by resume is 75; never 0."""
    smtp_server.data_delay = 30.0  # longer than timeouts.data_end
    job = write_job(
        tmp_path,
        rows=2,
        delivery=f"  on_unknown: {on_unknown}\n  timeouts: {{data_end: 1s}}\n"
        "  give_up_unreachable: 20s\n",
    )
    result = cli(capsys, "run", job, "--relay", smtp_server.url, "--concurrency", "2")
    assert result.code == code, result.err
    assert {state for state, _, _ in rows(job).values()} == {"unknown"}
    tail = final_lines(result.err)
    assert "2 unknown" in tail
    if on_unknown == "skip":
        assert "on_unknown: skip" in tail and "txsend status" in tail
    else:
        assert "resume sends them again" in tail and "continue with: txsend resume" in tail


def test_skipped_by_an_error_is_exit_1_and_by_policy_is_0(
    tmp_path: Path, smtp_server: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    records = [
        {"email": "a@example.com", "first_name": "Ann", "plan": "x"},
        {"email": "a@example.com", "first_name": "Dup", "plan": "x"},  # duplicate key: policy
        {"email": "c@example.com", "first_name": "Cy", "plan": "x"},  # suppressed: policy
    ]
    job = write_job(tmp_path / "policy", records=records)
    (job.parent / "stop.csv").write_text("email\nc@example.com\n", encoding="utf-8")
    job.write_text(job.read_text() + "suppress: [stop.csv]\n", encoding="utf-8")
    result = cli(capsys, "run", job, "--relay", smtp_server.url)
    assert result.code == 0, result.err
    assert "2 skipped" in result.err and "by an error" not in result.err

    records = [
        {"email": "a@example.com", "first_name": "Ann", "plan": "x"},
        {"email": "not an address", "first_name": "Bad", "plan": "x"},  # invalid: an error
    ]
    job = write_job(tmp_path / "error", records=records)
    result = cli(capsys, "run", job, "--relay", smtp_server.url, "--json")
    assert result.code == 1, result.err
    assert "1 skipped (1 by an error)" in result.err
    assert '"skipped_by_error": 1' in result.out


def test_a_template_failing_every_row_stops_with_65_and_leaves_them_pending(
    tmp_path: Path, smtp_server: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    job = write_job(tmp_path, rows=30)
    (tmp_path / "t.txt").write_text("Hello {{ frist_name }}\n", encoding="utf-8")
    result = cli(capsys, "run", job, "--relay", smtp_server.url)
    assert result.code == 65, result.err
    assert "undefined variable 'frist_name'" in result.err
    assert "still pending" in result.err
    assert smtp_server.received == []
    assert {state for state, _, _ in rows(job).values()} == {"pending"}
    # fixed, the same journal sends every row
    (tmp_path / "t.txt").write_text("Hello {{ first_name }}\n", encoding="utf-8")
    fixed = cli(capsys, "run", job, "--relay", smtp_server.url, "--force")
    assert fixed.code == 0, fixed.err
    assert len(smtp_server.received) == 30


def test_a_template_failing_only_some_rows_skips_them(
    tmp_path: Path, smtp_server: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """Ten rows in a row failing the same way is the job's fault (65); nine, and then rows
    that render, are the rows' own failures (skipped, exit 1)."""
    records = [{"email": f"u{i}@example.com", "first_name": "U", "plan": "x"} for i in range(15)]
    job = write_job(tmp_path, records=records)
    (tmp_path / "t.txt").write_text("{{ 1 // (plan|length - 1) }}\n", encoding="utf-8")
    result = cli(capsys, "run", job, "--relay", smtp_server.url)
    assert result.code == 65  # every row fails the same way: the job's fault
    records[9:] = [
        {"email": f"w{i}@example.com", "first_name": "W", "plan": "xy"} for i in range(6)
    ]
    job = write_job(tmp_path / "some", records=records)
    (tmp_path / "some" / "t.txt").write_text("{{ 1 // (plan|length - 1) }}\n", encoding="utf-8")
    result = cli(capsys, "run", job, "--relay", smtp_server.url)
    assert result.code == 1, result.err
    states = rows(job)
    assert sum(state == "skipped" for state, _, _ in states.values()) == 9
    assert sum(state == "sent" for state, _, _ in states.values()) == 6


# --- the relay pool's outage clock, on an injected clock ------------------------------------


def relay(name: str, **kwargs: float) -> RelayState:
    config = RelayConfig(url=f"smtp://{name}:25?tls=none", host=name, port=25, tls=TlsMode.NONE)
    return RelayState(config, None, **kwargs)


def test_a_failing_probe_does_not_restart_the_outage() -> None:
    a = relay("a", max_cool_down=10.0)
    pool = RelayPool([a], clock=lambda: 0.0)
    assert pool.outage_since() is None
    for now in (100.0, 100.1, 100.2):  # three failures open the circuit
        a.failed("connection refused", now=now)
    assert a.circuit is Circuit.OPEN and a.retry_at == 100.2 + COOL_DOWN
    for now in (103.0, 108.0, 130.0):  # each probe fails again
        assert a.available(now)
        a.failed("connection refused", now=now)
    assert pool.outage_since() == 100.0
    # the cool-down doubles but never past the cap (a quarter of give_up_unreachable)
    assert a.retry_at - 130.0 <= 10.0
    a.succeeded()
    assert pool.outage_since() is None


def test_the_outage_begins_when_the_last_working_relay_fails() -> None:
    a, b = relay("a"), relay("b")
    pool = RelayPool([a, b], clock=lambda: 0.0)
    a.failed("refused", now=10.0)
    assert pool.outage_since() is None  # b has not failed
    b.failed("421", now=25.0)
    assert pool.outage_since() == 25.0
    a.failed("refused", now=40.0, fatal=True)  # out for the run: b alone counts
    assert pool.outage_since() == 25.0
    b.failed("421", now=50.0, fatal=True)
    assert pool.all_dead and pool.outage_since() is None


def test_a_dead_relay_stays_dead() -> None:
    a = relay("a")
    a.failed("TLS certificate not verified", now=1.0, fatal=True)
    a.succeeded()
    assert a.circuit is Circuit.DEAD
    assert not a.available(1e9)


# --- connection faults ----------------------------------------------------------------


def test_every_connection_fault_has_one_rule() -> None:
    assert [rule.fault for rule in CONNECT_RULES].count(ConnectFault.OTHER) == 1
    assert {rule.fault for rule in CONNECT_RULES} == set(ConnectFault)
    permanent = {rule.fault for rule in CONNECT_RULES if rule.permanent}
    assert ConnectFault.TLS_CERTIFICATE in permanent
    assert ConnectFault.REFUSED not in permanent and ConnectFault.TIMEOUT not in permanent


@pytest.mark.parametrize(
    ("exc", "stage", "fault"),
    [
        (aiosmtplib.SMTPConnectResponseError(421, "busy"), "connect", ConnectFault.GREETING_4XX),
        (aiosmtplib.SMTPConnectResponseError(554, "go away"), "connect", ConnectFault.GREETING_5XX),
        (aiosmtplib.SMTPHeloError(550, "no"), "ehlo", ConnectFault.EHLO_5XX),
        (
            aiosmtplib.SMTPResponseException(454, "TLS not available"),
            "connect",
            ConnectFault.STARTTLS_4XX,
        ),
        (aiosmtplib.SMTPAuthenticationError(535, "bad"), "auth", ConnectFault.AUTH_REFUSED),
        (aiosmtplib.SMTPAuthenticationError(454, "try later"), "auth", ConnectFault.OTHER),
        (
            aiosmtplib.SMTPException("SMTP STARTTLS extension not supported by server."),
            "connect",
            ConnectFault.STARTTLS_MISSING,
        ),
        (
            aiosmtplib.SMTPException("No suitable authentication method found."),
            "auth",
            ConnectFault.AUTH_UNAVAILABLE,
        ),
        (ConnectionRefusedError(111, "refused"), "connect", ConnectFault.REFUSED),
        (
            socket.gaierror(socket.EAI_NONAME, "Name or service not known"),
            "connect",
            ConnectFault.DNS,
        ),
        (socket.gaierror(socket.EAI_AGAIN, "Temporary failure"), "connect", ConnectFault.OTHER),
        (TimeoutError(), "ehlo", ConnectFault.TIMEOUT),
        (aiosmtplib.SMTPServerDisconnected("gone"), "ehlo", ConnectFault.RESET),
        (
            ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number"),
            "connect",
            ConnectFault.TLS_HANDSHAKE,
        ),
    ],
)
def test_connection_faults_are_classified(
    exc: BaseException, stage: str, fault: ConnectFault
) -> None:
    wrapped = aiosmtplib.SMTPConnectError("could not connect")
    wrapped.__cause__ = exc
    for error in (exc, wrapped) if not isinstance(exc, aiosmtplib.SMTPException) else (exc,):
        got, _, reason = connect_fault(error, stage)
        assert got is fault, (error, reason)
        assert reason
    assert classify_connect(fault).fault is fault


def test_a_certificate_error_names_what_failed() -> None:
    error = ssl.SSLCertVerificationError(1, "certificate verify failed")
    error.verify_message = "unable to get local issuer certificate"
    wrapped = aiosmtplib.SMTPConnectError("Error connecting")
    wrapped.__cause__ = error
    fault, code, reason = connect_fault(wrapped, "connect")
    assert (fault, code) == (ConnectFault.TLS_CERTIFICATE, None)
    assert "unable to get local issuer certificate" in reason
    assert "ca_file" in classify_connect(fault).hint


# --- the final line names the command that really continues the job ----------------------


def summary(counts: dict[str, int], exit_code: int, *, resend: bool = True) -> Summary:
    return Summary(
        "job",
        1,
        {state: counts.get(state.value, 0) for state in State},
        RunStats(),
        None,
        exit_code,
        resend_unknown=resend,
    )


def test_a_worker_left_with_unknown_rows_names_resume() -> None:
    line = final_line(
        summary({"sent": 5, "unknown": 2}, 75),
        "--journal postgresql://db/x",
        "worker",
        "job.yaml --journal postgresql://db/x",
    )
    assert "continue with: txsend resume job.yaml --journal postgresql://db/x" in line
    assert "txsend worker" not in line


def test_a_worker_with_deferred_and_unknown_rows_names_both() -> None:
    line = final_line(
        summary({"deferred": 1, "unknown": 2}, 75),
        "--journal postgresql://db/x",
        "worker",
        "job.yaml --journal postgresql://db/x",
    )
    assert "continue with: txsend worker --journal postgresql://db/x" in line
    assert "the unknown rows with: txsend resume job.yaml --journal postgresql://db/x" in line


def test_unknown_rows_left_by_policy_point_at_status() -> None:
    line = final_line(summary({"sent": 1, "unknown": 1}, 1, resend=False), "job.yaml", "run")
    assert "on_unknown: skip" in line
    assert "see the failed rows with: txsend status job.yaml" in line
    assert "continue with" not in line


def test_a_hang_up_during_the_tls_handshake_is_a_tls_fault() -> None:
    """smtps: the peer closed before any greeting could be read (aiosmtplib raises a
    connect error from a bare reset); with plain SMTP the same is a transient reset."""
    wrapped = aiosmtplib.SMTPConnectError("Error connecting to 127.0.0.1 on port 1: ")
    wrapped.__cause__ = ConnectionResetError()
    assert connect_fault(wrapped, "connect", tls=True)[0] is ConnectFault.TLS_HANDSHAKE
    assert connect_fault(wrapped, "connect", tls=False)[0] is ConnectFault.RESET
    greeting_lost = aiosmtplib.SMTPConnectError("Error connecting to 127.0.0.1 on port 1")
    greeting_lost.__cause__ = aiosmtplib.SMTPServerDisconnected("Connection lost")
    assert connect_fault(greeting_lost, "connect", tls=True)[0] is ConnectFault.RESET
