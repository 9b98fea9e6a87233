"""Applying the command-line flags to a loaded job.

Both kinds of job (a YAML job file, a CSV/JSONL list alone) go through `apply`: each flag
given replaces what the job says, after the same checks the job file's key would get,
and the job keeps the flags it was shaped by (`Job.flags`, paths resolved) for the
journal, so that `resume` rebuilds the same job.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from txsend.addresses import mailbox_problem
from txsend.errors import ConfigError, MissingInputError, UsageError
from txsend.job.paths import absolute
from txsend.job.relays import parse_relay_url
from txsend.job.spec import Job, JobOverrides
from txsend.job.yamlmap import fraction_problem, read_text
from txsend.models import AbortPolicy, RelayConfig, Template

__all__ = ["apply"]


def apply(job: Job, flags: JobOverrides, env: Mapping[str, str]) -> Job:
    """The job with the flags applied, remembering them (paths resolved) in `Job.flags`.

    With no --relay and no relays in the job, TXSEND_RELAY (comma-separated URLs) names
    them; it is not remembered, so a resumed job reads it again.
    """
    changes: dict[str, Any] = {}
    if flags.name is not None:
        if not flags.name.strip():
            raise UsageError("--name must not be empty")
        changes["name"] = flags.name
    if flags.from_addr is not None:
        problem = mailbox_problem(flags.from_addr, single=True)
        if problem:
            raise UsageError(f"--from: {problem}")
        changes["from_addr"] = flags.from_addr
    if flags.subject is not None:
        if not flags.subject.strip():
            raise UsageError("--subject must not be empty")
        changes["subject"] = Template(flags.subject, origin="--subject")
    if flags.text is not None:
        changes["text"] = _flag_template(flags.text, "--text")
    if flags.html is not None:
        changes["html"] = _flag_template(flags.html, "--html")
    if flags.relays:
        changes["relays"] = tuple(
            _same_relay(relay, job.relays) for relay in _relays(flags.relays, "--relay")
        )
    elif not job.relays and env.get("TXSEND_RELAY", "").strip():
        changes["relays"] = _relays((env["TXSEND_RELAY"],), "TXSEND_RELAY")
    rate = None
    if flags.abort_on_error_rate is not None:
        rate = float(flags.abort_on_error_rate)
        problem = fraction_problem(rate)
        if problem:
            raise UsageError(f"--abort-on-error-rate {problem}", hint="e.g. 0.2 for 20%")
        abort_on = job.delivery.abort_on
        min_messages = abort_on.min_messages if abort_on is not None else 100
        changes["delivery"] = replace(job.delivery, abort_on=AbortPolicy(rate, min_messages))
    if flags.journal is not None:
        changes["journal"] = flags.journal
    # what the journal keeps: the flags as given, their template paths resolved
    applied = replace(
        flags,
        text=changes["text"].path if "text" in changes else None,
        html=changes["html"].path if "html" in changes else None,
        abort_on_error_rate=rate,
    )
    return replace(job, **changes, flags=applied)


def _relays(given: tuple[str, ...], flag: str) -> tuple[RelayConfig, ...]:
    """Relay URLs from flags, each of which may list several, comma-separated."""
    return tuple(
        _flag_relay(url.strip(), flag) for item in given for url in item.split(",") if url.strip()
    )


def _same_relay(given: RelayConfig, job_relays: tuple[RelayConfig, ...]) -> RelayConfig:
    """A --relay URL naming one of the job's relays (the same scheme and TLS, user, host
    and port) is that relay, with its settings (rate and quota, connections, password
    source...); any other is a new relay with the defaults."""

    def identity(relay: RelayConfig) -> tuple[object, ...]:
        return (relay.tls, relay.username, relay.host.lower().rstrip("."), relay.port)

    for relay in job_relays:
        if identity(relay) == identity(given):
            return relay
    return given


def _flag_template(path: Path, flag: str) -> Template:
    resolved = absolute(path)
    if not resolved.is_file():
        raise MissingInputError(f"{flag}: template file not found: {path}")
    return Template(read_text(resolved, str(path)), origin=str(path), path=resolved)


def _flag_relay(url: str, flag: str) -> RelayConfig:
    try:
        return parse_relay_url(url)
    except ConfigError as exc:
        raise ConfigError(f"{flag}: {exc.message}", hint=exc.hint) from None
