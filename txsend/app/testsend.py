"""The use case behind `txsend run JOB --test-to ADDR [--rows N]`: a test send.

The job's first N rows that render (rows that do not are reported, as `validate` does)
are rendered as their recipients would get them and sent to each test address only
(`txsend.content.testsend`). A test send has a journal of its own, a new file each time
(`test_journal_path`), and never opens the job's journal: not to read it, lock it,
ingest into it or change it. A later `txsend run JOB` sends every row as if no test
had been sent.

Suppressions: a test address that the job's suppression files or store list is refused
(a test send must not mail an address the job may not mail); an intended recipient who
is suppressed does not stop the reviewer seeing the message, and is named in a warning.
The job's journal's own suppressions (its hard bounces) are not read: that would open it.
"""

from __future__ import annotations

import dataclasses
import datetime
import secrets
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from txsend.app import eventloop
from txsend.app.jobs import JOURNAL_SUFFIXES, fingerprint
from txsend.app.requests import Prepared, RunRequest, TestSend
from txsend.app.sending import relays_with_passwords, send
from txsend.app.suppressions import open_job_store
from txsend.content.ids import MessageIds, message_id_domain
from txsend.content.testsend import TestSendRenderer, reviewer_key
from txsend.errors import JobError, RowError, UsageError
from txsend.job.credentials import RelaySecret
from txsend.job.hooks import Hooks
from txsend.job.loading import load_job
from txsend.job.location import JournalLocation
from txsend.job.rowbatches import RecipientRows
from txsend.job.spec import Job
from txsend.job.suppression import SuppressionList, load_suppressions
from txsend.journal.opening import open_journal
from txsend.models import RelayConfig, Row, State
from txsend.reporting.stats import RunStats
from txsend.reporting.summary import Summary
from txsend.units import parse_rate

__all__ = ["TestSendResult", "pick_rows", "run", "test_journal_path"]

# Rows that fail to render, at most, before a test send stops looking for N that do.
MAX_PROBLEMS = 1000
STORE_MARK = " (suppression store)"  # ends the reason of an address the store lists


@dataclass(frozen=True)
class TestSendResult:
    """The run's summary, the test journal, and the rows the messages show."""

    __test__ = False

    summary: Summary
    journal: Path
    rows: tuple[Row, ...]  # the job's rows sent to each test address, in data order
    problems: tuple[str, ...]  # rows that do not render, as `validate` lists them


def test_journal_path(job: Job, now: datetime.datetime | None = None) -> Path:
    """A new journal file for a test send: `<job>.tests/<UTC time>-<random>.journal.db`
    in the job file's folder (beside the job's default journal)."""
    moment = now or datetime.datetime.now(datetime.UTC)
    stamp = moment.strftime("%Y%m%dT%H%M%SZ")
    folder = job.source.parent / f"{job.source.stem}.tests"
    return folder / f"{stamp}-{secrets.token_hex(3)}.journal.db"


def run(
    request: RunRequest,
    test: TestSend,
    on_prepared: Callable[[Prepared], None] | None = None,
    on_tick: Callable[[RunStats], None] | None = None,
) -> TestSendResult:
    """`txsend run JOB --test-to ADDR`: from the job to the summary of the test send."""
    if request.target.suffix.lower() in JOURNAL_SUFFIXES:
        raise UsageError(
            f"a test send renders a job's rows: {request.target} is a journal",
            hint="pass the job file: txsend run JOB --test-to ADDRESS",
        )
    if request.limit is not None:
        raise UsageError("--limit does not apply to a test send", hint="use --rows N")
    # the job file itself: never the flags a CSV-alone job's journal keeps (that opens it)
    job = load_job(request.target, request.overrides)
    # a test send is neither held nor counted by the job's quotas (its journal is its
    # own): a relay's pace still applies, its /h, /day or rolling quota does not
    relays = [] if request.dry_run else _without_quotas(relays_with_passwords(job))
    eventloop.loop_factory()  # a bad TXSEND_LOOP too
    suppressions = _suppressions(job)
    _refuse_suppressed(test.to, suppressions)
    # the test job: its own journal, no seeds, no store to add its hard bounces to, and
    # neither alerts nor on_finish_command (they are about the job's real run)
    path = test_journal_path(job)
    test_job = dataclasses.replace(
        job,
        journal=JournalLocation(path=path),
        seeds=(),
        seeds_every=None,
        suppress_store=None,
        hooks=Hooks(),
        schedule=None,  # a test send goes now, whatever the job's schedule says
        warmup=None,  # and is not part of the warm-up (a few messages to reviewers)
        domains=(),  # nor does it wait for the job's per-domain pace (nor look up MX)
    )
    picked, problems = pick_rows(test_job, test)
    warnings = tuple(_intended_suppressed(picked, suppressions))
    # a new file no other run knows of: no lock to take
    summary = _send(test_job, request, test, picked, problems, relays, on_prepared, on_tick)
    summary = dataclasses.replace(summary, warnings=summary.warnings + warnings)
    return TestSendResult(summary, path, tuple(picked), tuple(str(p) for p in problems))


def pick_rows(job: Job, test: TestSend) -> tuple[list[Row], list[RowError]]:
    """The job's first `test.rows` rows that render, and the rows before them that do not.

    JobError (65) when no row renders: the template or the data is broken for all."""
    originals: dict[str, Row] = {}
    checker = TestSendRenderer(job, originals)
    picked: list[Row] = []
    problems: list[RowError] = []
    for item in RecipientRows(job):
        if isinstance(item, RowError):
            problems.append(item)
        elif (problem := _render_problem(checker, originals, item, test.to[0])) is not None:
            problems.append(problem)
        else:
            picked.append(item)
        if len(picked) == test.rows or len(problems) >= MAX_PROBLEMS:
            break
    if not picked:
        listed = "; ".join(str(p) for p in problems[:3]) or "the recipients file has no rows"
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise JobError(
            f"no row of {job.recipients.file.name} renders, so there is nothing to test: "
            f"{listed}{more}",
            hint=f"see every problem with: txsend validate {job.source}",
        )
    return picked, problems


def _render_problem(
    checker: TestSendRenderer, originals: dict[str, Row], row: Row, address: str
) -> RowError | None:
    """Why the row's test message cannot be made (as the run would find it), or None."""
    test_row = Row(row.number, reviewer_key(address, row.key), address, row.data)
    originals[test_row.key] = row
    try:
        message = checker.render(test_row, "<check@txsend.invalid>")
    except RowError as exc:
        return exc
    finally:
        del originals[test_row.key]
    limit = checker.job.max_message_size
    if len(message.data) > limit:
        reason = f"message is {len(message.data)} bytes, over max_message_size ({limit})"
        return RowError(reason, row=row.number, key=row.key)
    return None


def _test_rows(picked: Sequence[Row], to: Sequence[str]) -> Iterator[Row]:
    for row in picked:
        for address in to:
            yield Row(row.number, reviewer_key(address, row.key), address, row.data)


def _without_quotas(
    relays: Sequence[tuple[RelayConfig, RelaySecret]],
) -> list[tuple[RelayConfig, RelaySecret]]:
    """The relays without their quota rates (paces kept)."""
    return [
        (
            dataclasses.replace(config, rate=None)
            if config.rate is not None and parse_rate(config.rate).is_quota
            else config,
            secret,
        )
        for config, secret in relays
    ]


def _send(
    job: Job,
    request: RunRequest,
    test: TestSend,
    picked: list[Row],
    problems: list[RowError],
    relays: Sequence[tuple[RelayConfig, RelaySecret]],
    on_prepared: Callable[[Prepared], None] | None,
    on_tick: Callable[[RunStats], None] | None,
) -> Summary:
    """Ingest the test rows into the new journal and send them as a test send renders."""
    assert job.journal.path is not None
    journal = open_journal(job.journal, create=True, job_name=job.name)
    try:
        spec = {
            "source": str(job.source.resolve()),
            "overrides": job.flags.to_stored(),
            "test_send": {"to": list(test.to), "rows": [row.key for row in picked]},
        }
        journal.bind_job(job.name, fingerprint(job), spec)
        ids = MessageIds(message_id_domain(job.from_addr))
        stats = journal.ingest([*_test_rows(picked, test.to), *problems], ids)
        counts = journal.counts()
        prepared = Prepared(job, journal, stats, counts[State.PENDING], 0)
        if on_prepared is not None:
            on_prepared(prepared)
        originals = {reviewer_key(address, row.key): row for row in picked for address in test.to}
        renderer = TestSendRenderer(job, originals, verp_secret=journal.verp_secret())
        request = dataclasses.replace(request, target=job.journal.path)
        return send(prepared, request, "run", relays, on_tick, renderer=renderer)
    finally:
        journal.close()


def _suppressions(job: Job) -> SuppressionList:
    """The job's suppression files and store (not its journal's own: it stays closed)."""
    suppressions = load_suppressions(job.suppress)
    store = open_job_store(job)
    if store is not None:
        try:
            for entry in store.entries():
                suppressions.add(entry.address, f"{entry.reason}{STORE_MARK}")
        finally:
            store.close()
    return suppressions


def _refuse_suppressed(to: Sequence[str], suppressions: SuppressionList) -> None:
    for address in to:
        reason = suppressions.reason(address)
        if reason is not None:
            fix = (
                f"txsend suppress remove {address}"
                if reason.endswith(STORE_MARK)
                else "take it out of the file the job's suppress: lists"
            )
            raise UsageError(
                f"--test-to {address} is suppressed for this job ({reason})",
                hint=f"send the test to another address, or {fix}",
            )


def _intended_suppressed(picked: Sequence[Row], suppressions: SuppressionList) -> Iterator[str]:
    for row in picked:
        reason = suppressions.reason(row.address)
        if reason is not None:
            yield (
                f"row {row.number} ({row.key}): its recipient {row.address} is suppressed "
                f"({reason}); the test shows its message, the run will skip it"
            )
