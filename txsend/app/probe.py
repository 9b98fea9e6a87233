"""`txsend check`: which relays to probe (a URL, a job's relays, or TXSEND_RELAY), with
which passwords and limits, and the exit code that names the phase that failed.

Everything that can be wrong before a relay is dialled (a bad URL, a missing password, an
unreadable ca_file, a bad address) is an error here, before any relay is probed; what a
relay does is the probe's report, never an exception.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Any

from txsend.addresses import envelope_address, split_mailbox
from txsend.app import eventloop, jobs
from txsend.delivery.smtp.connection import tls_context_for
from txsend.delivery.smtp.probe import (
    ProbeEnvelope,
    ProbeLimits,
    ProbePhase,
    RelayProbe,
    probe,
)
from txsend.errors import ConfigError, UsageError
from txsend.job.credentials import relay_password
from txsend.job.relays import parse_relay_url
from txsend.job.spec import Job, JobOverrides
from txsend.models import RelayConfig

__all__ = ["CheckExit", "CheckRequest", "CheckResult", "CheckedRelay", "check"]

DEFAULT_LIMIT = 30.0  # seconds per phase without a job or --timeout


class CheckExit(IntEnum):
    """`txsend check`'s exit codes: the phase that failed (swaks numbers them alike)."""

    OK = 0
    CONNECT = 20
    GREETING = 21
    EHLO = 22
    MAIL = 23
    RCPT = 24
    AUTH = 28
    TLS = 29


PHASE_EXIT: dict[ProbePhase, CheckExit] = {
    ProbePhase.CONNECT: CheckExit.CONNECT,
    ProbePhase.GREETING: CheckExit.GREETING,
    ProbePhase.EHLO: CheckExit.EHLO,
    ProbePhase.EHLO_AFTER_TLS: CheckExit.EHLO,
    ProbePhase.TLS: CheckExit.TLS,
    ProbePhase.AUTH: CheckExit.AUTH,
    ProbePhase.MAIL: CheckExit.MAIL,
    ProbePhase.RCPT: CheckExit.RCPT,
}


@dataclass(frozen=True)
class CheckRequest:
    """What `txsend check` was asked: a relay URL and/or a job, and the optional
    recipient, sender and per-phase limit (seconds)."""

    relay_url: str | None = None
    job: Path | None = None
    rcpt: str | None = None
    mail_from: str | None = None
    timeout: float | None = None


@dataclass(frozen=True)
class CheckedRelay:
    """One relay's probe and the exit code its first failing phase gives."""

    probe: RelayProbe

    @property
    def exit_code(self) -> CheckExit:
        failed = self.probe.failed
        return CheckExit.OK if failed is None else PHASE_EXIT[failed.name]

    def to_json(self) -> dict[str, Any]:
        relay, failed = self.probe.relay, self.probe.failed
        return {
            "url": relay.url,
            "name": relay.name,
            "tls": str(relay.tls),
            "user": relay.username,
            "exit_code": int(self.exit_code),
            "failed_phase": str(failed.name) if failed is not None else None,
            "phases": [phase.to_json() for phase in self.probe.phases],
        }


@dataclass(frozen=True)
class CheckResult:
    """Every relay probed, in order; the exit code is the first failing relay's."""

    relays: tuple[CheckedRelay, ...]

    @property
    def exit_code(self) -> CheckExit:
        return next((r.exit_code for r in self.relays if r.exit_code), CheckExit.OK)

    def to_json(self) -> dict[str, Any]:
        return {
            "exit_code": int(self.exit_code),
            "relays": [relay.to_json() for relay in self.relays],
        }


def check(
    request: CheckRequest,
    on_relay: Callable[[CheckedRelay], None] | None = None,
    env: Mapping[str, str] = os.environ,
) -> CheckResult:
    """Probe every relay the request names, one after another; `on_relay` hears of each
    as soon as it is done. TxsendError (64, 65, 66, 78) before any relay is probed."""
    job = jobs.load(request.job, JobOverrides()) if request.job is not None else None
    relays = _relays(request.relay_url, job, env)
    limits = _limits(request.timeout, job)
    # an OAuth token command is bounded as a connection's (--timeout, else timeouts.connect)
    setting = "--timeout" if request.timeout is not None else "timeouts.connect"
    secrets = [_ready(relay, env, limits.connect, setting) for relay in relays]
    envelope = _envelope(request, job)
    return eventloop.run(_probe_all(relays, secrets, limits, envelope, on_relay))


async def _probe_all(
    relays: Sequence[RelayConfig],
    secrets: Sequence[str | None],
    limits: ProbeLimits,
    envelope: ProbeEnvelope | None,
    on_relay: Callable[[CheckedRelay], None] | None,
) -> CheckResult:
    done = []
    for relay, secret in zip(relays, secrets, strict=True):
        checked = CheckedRelay(await probe(relay, secret, limits, envelope))
        if on_relay is not None:
            on_relay(checked)
        done.append(checked)
    return CheckResult(tuple(done))


def _relays(url: str | None, job: Job | None, env: Mapping[str, str]) -> tuple[RelayConfig, ...]:
    """The relay URL given (the job's own relay of that URL, with its options, when the
    job has one), else the job's relays, else TXSEND_RELAY's."""
    if url is not None:
        given = parse_relay_url(url)
        if job is not None:
            for relay in job.relays:
                if _same_relay(relay, given):
                    return (relay,)
        return (given,)
    if job is not None:
        if not job.relays:
            raise ConfigError(
                f"job {job.name} has no relays to check",
                hint="add relays: to the job, or pass a relay URL: txsend check smtp://host:587",
            )
        return job.relays
    listed = [u.strip() for u in env.get("TXSEND_RELAY", "").split(",") if u.strip()]
    if not listed:
        raise UsageError(
            "no relay to check",
            hint="pass a relay URL (txsend check smtp://user@host:587), --job JOB, "
            "or set TXSEND_RELAY",
        )
    relays = []
    for item in listed:
        try:
            relays.append(parse_relay_url(item))
        except ConfigError as exc:
            raise ConfigError(f"TXSEND_RELAY: {exc.message}", hint=exc.hint) from None
    return tuple(relays)


def _same_relay(a: RelayConfig, b: RelayConfig) -> bool:
    return (a.host.lower(), a.port, a.tls, a.username) == (
        b.host.lower(),
        b.port,
        b.tls,
        b.username,
    )


def _ready(relay: RelayConfig, env: Mapping[str, str], timeout: float, setting: str) -> str | None:
    """The relay's password (None without a user), after its ca_file was loaded; a missing
    secret, a failing or slow (`timeout` seconds, named `setting`) token command or an
    unreadable ca_file is a ConfigError (78), as when sending."""
    try:
        tls_context_for(relay)
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(
            f"relay {relay.url}: cannot load ca_file {relay.ca_file}: {reason}",
            hint="ca_file must be a PEM file of CA certificates",
        ) from None
    return relay_password(relay, env, timeout=timeout, setting=setting)


def _envelope(request: CheckRequest, job: Job | None) -> ProbeEnvelope | None:
    """MAIL FROM and RCPT TO for --rcpt: --from, else the job's return path or From
    address, else the null sender."""
    if request.rcpt is None:
        if request.mail_from is not None:
            raise UsageError(
                "--from is the MAIL FROM of the --rcpt test, and there is no --rcpt",
                hint="add --rcpt ADDRESS to try MAIL FROM and RCPT TO (nothing is sent)",
            )
        return None
    rcpt = _address("--rcpt", split_mailbox(request.rcpt.strip())[1])
    if request.mail_from is not None:
        given = request.mail_from.strip()
        sender = "" if given in ("", "<>") else _address("--from", split_mailbox(given)[1])
    elif job is not None and (job.content.envelope.return_path or job.from_addr):
        sender = job.content.envelope.return_path or split_mailbox(job.from_addr)[1]
    else:
        sender = ""
    return ProbeEnvelope(mail_from=sender, rcpt=rcpt)


def _address(flag: str, value: str) -> str:
    try:
        return envelope_address(value.strip())
    except ValueError as exc:
        raise UsageError(f"{flag} {value!r}: {exc}", hint="e.g. someone@example.com") from None


def _limits(timeout: float | None, job: Job | None) -> ProbeLimits:
    if timeout is not None:
        return ProbeLimits(connect=timeout, command=timeout)
    if job is not None:
        timeouts = job.delivery.timeouts
        return ProbeLimits(connect=timeouts.connect, command=timeouts.command)
    return ProbeLimits(connect=DEFAULT_LIMIT, command=DEFAULT_LIMIT)
