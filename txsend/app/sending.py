"""The use case behind `txsend run`, `resume` and `worker`: from the job to the summary.

`run` checks the secrets, takes the journal's lock (a file journal) or joins the shared
one, ingests, recovers what a dead run left in `sending`, runs the delivery engine under
the signal handlers and writes the report files; the command line only parses and prints.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import ssl
from collections.abc import Callable, Sequence
from typing import Any

from txsend.app import eventloop
from txsend.app.inspection import problems_of, quotas_now
from txsend.app.jobs import fingerprint, load, open_for
from txsend.app.requests import Prepared, RunRequest
from txsend.app.runhooks import RunHooks
from txsend.app.suppressions import add_to_run, open_job_store
from txsend.content.ids import MessageIds, message_id_domain
from txsend.content.renderer import Renderer, Renders
from txsend.delivery.engine import Engine, SendOptions
from txsend.delivery.mx import DNS_ENV, dns_problem
from txsend.delivery.outcomes import HARD_BOUNCE
from txsend.delivery.smtp.connection import tls_context_for
from txsend.errors import (
    ConfigError,
    JobError,
    TxsendError,
    UsageError,
)
from txsend.job.bundle import pack
from txsend.job.credentials import RelaySecret, relay_secret
from txsend.job.rowbatches import RecipientRows
from txsend.job.seeds import SeededRows
from txsend.job.spec import Job
from txsend.job.suppression import load_suppressions
from txsend.journal.api import JournalBackend, SharedJournal
from txsend.journal.lock import journal_lock
from txsend.journal.store import StoreEntry
from txsend.logs import event
from txsend.models import RelayConfig, State
from txsend.reporting.outputs import RunOutputs
from txsend.reporting.stats import RunStats
from txsend.reporting.summary import (
    Summary,
    decide_exit_code,
)


def prepare(job: Job, journal: JournalBackend, request: RunRequest) -> Prepared:
    """Bind, check and ingest the journal; recover rows a dead run left in `sending`."""
    stats = None
    refuse_test_journal(journal)
    if not request.worker:  # a worker's job came from the journal: nothing to bind
        prints = fingerprint(job)
        changes = journal.changes_since(prints)
        if changes and not request.force:
            raise JobError(
                f"the job changed since its journal {journal.location} was made: "
                + "; ".join(changes),
                hint="pass --force to continue with the changed job, or --journal NEW for "
                "a new one",
            )
        spec = {"source": str(job.source.resolve()), "overrides": job.flags.to_stored()}
        journal.bind_job(job.name, prints, spec)
        shared = journal.as_shared()
        if shared is not None and (changes or not shared.has_bundle()):
            # before the ingest: a worker that arrives during it finds the files stored
            # (and one whose first host died between the two steps finds them here)
            _store_bundle(job, shared)
        if changes or not journal.ingest_complete():
            ids = MessageIds(message_id_domain(job.from_addr))
            stats = journal.ingest(job_rows(job), ids, refresh=bool(changes))
    if journal.shared and request.resume:
        _clear_abort(journal)
    recovered = journal.recover()
    counts = journal.counts()
    due = counts[State.PENDING] + counts[State.DEFERRED]
    if resends_unknown(job, journal, request):
        due += counts[State.UNKNOWN]
    if request.limit is not None:
        due = min(due, request.limit)
    return Prepared(job, journal, stats, due, recovered)


def refuse_test_journal(journal: JournalBackend) -> None:
    """A test send's journal (`txsend.app.testsend`) is not sent again as a job: its rows
    are messages to a reviewer, rendered as a test send renders them."""
    spec = journal.job_spec()
    if spec is not None and spec.get("test_send"):
        raise UsageError(
            f"{journal.location} is the journal of a test send",
            hint="send the test again: txsend run JOB --test-to ADDRESS",
        )


def job_rows(job: Job) -> RecipientRows | SeededRows:
    """The rows a job's ingest stores: its recipients, and its seed copies if it has seeds."""
    rows = RecipientRows(job)
    if not job.seeds:
        return rows
    return SeededRows(rows, job.seeds, job.seeds_every)


def resends_unknown(job: Job, journal: JournalBackend, request: RunRequest) -> bool:
    """Whether this run sends `unknown` rows again (delivery.on_unknown: resend).

    On a shared journal only `txsend resume` does: while workers run, a row becomes
    `unknown` when its worker died in DATA, and no other worker may resend it on its own.
    """
    if job.delivery.on_unknown != "resend":
        return False
    return not journal.shared or request.resume


def _store_bundle(job: Job, shared: SharedJournal) -> None:
    """Store the job's files; empty when they cannot be packed, so that a worker stops
    waiting for them and says why it cannot join."""
    bundle, why = pack(job)
    shared.store_bundle(bundle if bundle is not None else b"")
    if why is not None:
        event(
            logging.WARNING,
            "job_not_stored",
            f"{why}: it is not stored in the journal, so `txsend worker` cannot join; "
            f"run `txsend run {job.source.name} --journal URL` on each host instead",
        )


def _clear_abort(journal: JournalBackend) -> None:
    shared = journal.as_shared()
    assert shared is not None  # prepare() clears the abort of a shared journal only
    shared.clear_abort()


def relays_with_passwords(job: Job) -> list[tuple[RelayConfig, RelaySecret]]:
    """Each relay with its secret: a password read once, or an OAuth token source whose
    first token is fetched now; ConfigError (78) before anything is sent."""
    if not job.relays:
        raise ConfigError(
            "no relay to send through",
            hint="add relays: to the job, pass --relay smtp://host:port, or set TXSEND_RELAY",
        )
    for relay in job.relays:
        try:
            tls_context_for(relay)
        except (OSError, ssl.SSLError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise ConfigError(
                f"relay {relay.url}: cannot load ca_file {relay.ca_file}: {reason}",
                hint="ca_file must be a PEM file of CA certificates",
            ) from None
    timeout = job.delivery.timeouts.connect  # bounds each token command
    return [(relay, relay_secret(relay, timeout=timeout)) for relay in job.relays]


def check_resolver(job: Job) -> None:
    """A bad `TXSEND_DNS` is refused (78) before any work, when the job's `domains:` match
    by MX (the only use of a resolver)."""
    if not any(rule.mx for rule in job.domains):
        return
    problem = dns_problem()
    if problem is not None:
        raise ConfigError(problem, hint=f"e.g. {DNS_ENV}=127.0.0.1:5353,[::1]; or unset it")


def send(
    prepared: Prepared,
    request: RunRequest,
    command: str,
    relays: Sequence[tuple[RelayConfig, RelaySecret]],
    on_tick: Callable[[RunStats], None] | None = None,
    renderer: Renders | None = None,
) -> Summary:
    """Send what is due through relays (with their secrets); record the run.

    `renderer`: the job's own `Renderer` unless given (a test send and `txsend send`
    bring their own)."""
    job, journal = prepared.job, prepared.journal
    if renderer is None:
        renderer = Renderer(job, verp_secret=journal.verp_secret())
    outputs = RunOutputs(request.outputs)
    outputs.start()
    run_id = journal.start_run(command)

    hooks = RunHooks(job, run_id, command, request.outputs, dry_run=request.dry_run)

    def during(stats: RunStats) -> Summary:
        return Summary(
            job.name,
            run_id,
            journal.counts(),
            stats,
            None,
            -1,
            request.dry_run,
            command=command,
            alerts=hooks.report(),
        )

    def tick(stats: RunStats) -> None:
        hooks.tick()  # the alerts first: the metrics show what they decided
        outputs.tick(lambda: during(stats).to_json())  # built only when the metrics are due
        if on_tick is not None:
            on_tick(stats)

    engine = _engine(prepared, request, renderer, relays, run_id, tick)
    hooks.watch(engine.stats)
    _run_start_event(prepared, request, command, run_id, relays)
    exit_code = 70  # what the run is recorded with if it ends in an exception
    recorded = False
    failure: BaseException | None = None
    try:
        stats = eventloop.run(_run_with_signals(engine))
        summary = _verdict(prepared, request, command, run_id, stats, renderer, hooks.report())
        exit_code = summary.exit_code
        journal.finish_run(run_id, exit_code)
        recorded = True
        outputs.finish(summary.to_json())
    except BaseException as exc:  # e.g. the template fails the run's first rows: 65
        if isinstance(exc, TxsendError):
            exit_code = exc.exit_code
        failure = exc
        raise
    finally:
        if not recorded:
            journal.finish_run(run_id, exit_code)
        outputs.close()
        if failure is not None:  # on_finish_command after an error too (runhooks)
            hooks.finish(exit_code, journal, error=failure)
    _share_hard_bounces(job, journal)
    _run_end_event(summary, stats)
    hooks.finish(exit_code, journal, summary)
    return summary


def _share_hard_bounces(job: Job, journal: JournalBackend) -> None:
    """The run's hard bounces (bad mailboxes) go to the job's suppression store, if any."""
    store = open_job_store(job)
    if store is None:
        return
    try:
        store.add(
            StoreEntry(address, "bounce", f"{reason} ({job.name})", job.name)
            for address, reason in journal.suppressed()
            if reason == HARD_BOUNCE
        )
    finally:
        store.close()


def _engine(
    prepared: Prepared,
    request: RunRequest,
    renderer: Renders,
    relays: Sequence[tuple[RelayConfig, RelaySecret]],
    run_id: int,
    tick: Callable[[RunStats], None],
) -> Engine:
    """The delivery engine for this run, with the job's and the journal's suppressions."""
    job, journal = prepared.job, prepared.journal
    options = SendOptions(
        run_id=run_id,
        concurrency=request.concurrency,
        limit=request.limit,
        dry_run=request.dry_run,
        resend_unknown=resends_unknown(job, journal, request),
        grace=request.grace,
    )
    suppressions = load_suppressions(job.suppress)
    for address, reason in journal.suppressed():
        suppressions.add(address, reason)
    store = add_to_run(job, suppressions)
    if store is not None:
        store.close()
    engine = Engine(job, journal, renderer, relays, options, tick, suppressions, request.wall)
    engine.stats.unknown_recovered = prepared.recovered
    return engine


def _verdict(
    prepared: Prepared,
    request: RunRequest,
    command: str,
    run_id: int,
    stats: RunStats,
    renderer: Renders,
    alerts: tuple[dict[str, Any], ...] | None = None,
) -> Summary:
    """The run's summary, with its exit code as the journal's counts decide it."""
    job, journal = prepared.job, prepared.journal
    counts = journal.counts()
    by_error = journal.skipped_by_error()
    resend = job.delivery.on_unknown == "resend"
    if job.schedule is not None and job.schedule.expired(request.wall()):
        resend = False  # past not_after nothing is sent again: unknown rows stay as they are
    # unknown rows left on a shared journal wait for `resume` as they would on SQLite
    exit_code = decide_exit_code(
        counts,
        stats,
        resend_unknown=resend,
        skipped_by_error=by_error,
        pending_ok=request.dry_run or request.limit is not None,
    )
    return Summary(
        job.name,
        run_id,
        counts,
        stats,
        journal.next_attempt_at(),
        exit_code,
        request.dry_run,
        tuple(renderer.warnings),
        command=command,
        problems=problems_of(journal, request.target),
        skipped_by_error=by_error,
        resend_unknown=resend,
        alerts=alerts,
        seeds=journal.seed_counts(),
        quotas=quotas_now(job, journal),
    )


def _run_start_event(
    prepared: Prepared,
    request: RunRequest,
    command: str,
    run_id: int,
    relays: Sequence[tuple[RelayConfig, RelaySecret]],
) -> None:
    name = prepared.job.name
    event(
        logging.INFO,
        "run_start",
        f"{command} {name}: {prepared.due} messages due, run {run_id}",
        job=name,
        run_id=run_id,
        command=command,
        due=prepared.due,
        relays=[relay.name for relay, _ in relays],
        dry_run=request.dry_run,
    )


def _run_end_event(summary: Summary, stats: RunStats) -> None:
    event(
        logging.INFO,
        "run_end",
        f"{summary.command} {summary.job}: exit {summary.exit_code}",
        job=summary.job,
        run_id=summary.run_id,
        exit_code=summary.exit_code,
        counts={s.value: n for s, n in summary.counts.items() if n},
        seconds=round(stats.elapsed, 3),
        messages_per_second=round(stats.rate, 1),
        stop_reason=stats.stop_reason,
    )


async def _run_with_signals(engine: Engine) -> RunStats:
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, engine.request_stop, signum)
    try:
        return await engine.run()
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


def run(
    request: RunRequest,
    command: str,
    on_prepared: Callable[[Prepared], None] | None = None,
    on_tick: Callable[[RunStats], None] | None = None,
    job: Job | None = None,
) -> Summary:
    """`txsend run` / `resume` / `worker`: everything from the job to the summary."""
    if job is None:
        job = load(request.target, request.overrides)
    if request.resume and not job.journal.exists():
        raise UsageError(
            f"no journal at {job.journal} to resume", hint=f"start it: txsend run {request.target}"
        )
    # a missing secret is reported before any work: a password is read once, an OAuth
    # token fetched once now (and again for each connection)
    check_resolver(job)  # a bad TXSEND_DNS
    relays = [] if request.dry_run else relays_with_passwords(job)
    eventloop.loop_factory()  # a bad TXSEND_LOOP too
    if job.journal.path is None:  # shared: other processes work the job beside this one
        return _run_on(
            job,
            open_for(job, create=True, lease=request.lease),
            request,
            command,
            relays,
            on_prepared,
            on_tick,
        )
    with journal_lock(job.journal.path):
        return _run_on(
            job, open_for(job, create=True), request, command, relays, on_prepared, on_tick
        )


def _run_on(
    job: Job,
    journal: JournalBackend,
    request: RunRequest,
    command: str,
    relays: Sequence[tuple[RelayConfig, RelaySecret]],
    on_prepared: Callable[[Prepared], None] | None,
    on_tick: Callable[[RunStats], None] | None,
) -> Summary:
    try:
        prepared = prepare(job, journal, request)
        if on_prepared is not None:
            on_prepared(prepared)
        return send(prepared, request, command, relays, on_tick)
    finally:
        journal.close()
