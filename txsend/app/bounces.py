"""`txsend bounces`: what came back after the relay said yes, matched to rows and recorded.

Reports are read from a Maildir, an mbox, an IMAP folder or a provider's event file
(`txsend.feedback`), matched to the job's rows and written to its journal:

* a permanent failure turns a `sent` (or `unknown`) row `bounced`, with the report's
  status, diagnostic and reporting MTA: "accepted, then bounced";
* a delay is noted (and proves that an `unknown` row was accepted: it becomes `sent`);
* a complaint adds the address to the suppressions, with its reason;
* a bad-mailbox failure (5.1.x, 5.2.1, a provider's hard bounce) suppresses it too.

Matching, in this order: the VERP token in the address the report was sent to, the
ENVID, the original Message-ID, the final recipient (when exactly one row of the job
was sent to it). A token made for another job, or one whose HMAC does not verify against
the journal's secret, matches nothing and stops the search: a forged report changes no row.

Crash safety: a batch of reports goes to the suppression store first (adding is
idempotent), then to the journal in one transaction that records each report's id with
its effect, and only then are the messages marked handled at their source. Killed at any
point, the next run reads the unmarked messages again and the journal counts each once.
A message that cannot be parsed is reported and left unmarked.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from txsend.addresses import address_forms
from txsend.app.jobs import load, open_for
from txsend.app.suppressions import open_job_store
from txsend.errors import UsageError
from txsend.feedback.events import Feedback, Item, Kind, MailSource, Unparsed
from txsend.feedback.providers import read_events
from txsend.feedback.reports import parse_message
from txsend.feedback.sources import MaildirSource, MboxSource
from txsend.job.spec import Job, JobOverrides
from txsend.journal.api import JournalBackend
from txsend.journal.records import FeedbackEntry
from txsend.journal.store import StoreEntry, SuppressionStore
from txsend.models import State
from txsend.verp import TokenCheck, find_token, token_message_hex, verify_token

__all__ = ["BounceRequest", "BounceResult", "read_bounces"]

BATCH = 100  # reports per journal transaction
LISTED = 50  # unmatched and unreadable reports listed by source in the result
_TXSEND_MID = re.compile(r"<([0-9a-f]{32})@[^<>@\s]+>", re.IGNORECASE)
_SUPPRESSING_STATUS = re.compile(r"5\.1\.\d{1,3}\Z|5\.2\.1\Z")
_PROVIDERS = frozenset({"ses", "postmark", "sendgrid", "mailgun"})


@dataclass(frozen=True)
class BounceRequest:
    """What `txsend bounces` was asked to read."""

    target: Path  # the job file (or its journal)
    overrides: JobOverrides = field(default_factory=JobOverrides)
    maildir: Path | None = None
    mbox: Path | None = None
    imap: str | None = None
    events: Path | None = None
    provider: str | None = None  # for --events; None: recognised per event
    password: Callable[[], str] | None = None  # IMAP's, asked for only when connecting
    ca_file: Path | None = None
    move_to: str | None = None
    delete: bool = False
    timeout: float = 60.0


@dataclass
class BounceResult:
    """What one `txsend bounces` read and did, for the printed summary and --json."""

    job: str
    read: int = 0  # reports (a message with several recipients counts for each)
    messages: int = 0  # messages or events read from the sources
    recorded: int = 0  # reports new to the journal
    duplicates: int = 0  # reports the journal had already recorded
    by_kind: dict[str, int] = field(default_factory=dict)  # new reports per kind
    matched_by: dict[str, int] = field(default_factory=dict)  # new reports per key
    late_bounced: int = 0  # rows that became bounced in this run
    accepted: int = 0  # unknown rows a report proved accepted (now sent)
    suppressed: int = 0  # addresses new reports suppressed (each counted once)
    unmatched: list[tuple[str, str]] = field(default_factory=list)  # (source, why)
    unmatched_count: int = 0
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (source, why)
    unreadable_count: int = 0
    totals: dict[str, int] = field(default_factory=dict)  # the journal's, after this run
    store: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "job": self.job,
            "messages": self.messages,
            "reports": self.read,
            "recorded": self.recorded,
            "duplicates": self.duplicates,
            "by_kind": dict(sorted(self.by_kind.items())),
            "matched_by": dict(sorted(self.matched_by.items())),
            "late_bounced": self.late_bounced,
            "accepted": self.accepted,
            "suppressed": self.suppressed,
            "unmatched": {
                "count": self.unmatched_count,
                "listed": [{"source": s, "reason": r} for s, r in self.unmatched],
            },
            "unreadable": {
                "count": self.unreadable_count,
                "listed": [{"source": s, "reason": r} for s, r in self.unreadable],
            },
            "journal": self.totals,
            "suppression_store": self.store,
        }


def read_bounces(request: BounceRequest) -> BounceResult:
    """Read every source of the request into the job's journal; see the module docstring."""
    sources = [
        name
        for name, given in (
            ("--maildir", request.maildir),
            ("--mbox", request.mbox),
            ("--imap", request.imap),
            ("--events", request.events),
        )
        if given is not None
    ]
    if not sources:
        raise UsageError(
            "nothing to read", hint="pass --maildir DIR, --mbox FILE, --imap URL or --events FILE"
        )
    job = load(request.target, request.overrides)
    journal = open_for(job)
    store = open_job_store(job)
    mail: list[MailSource] = []
    try:
        journal.prepare_feedback()
        matcher = Matcher(job, journal)
        result = BounceResult(job.name, store=store.location if store else None)
        recorder = _Recorder(journal, store, result)
        events = None if request.events is None else read_events(request.events, request.provider)
        # every input is checked (missing, not a mailbox, a bad URL) before any is read
        for source in _mail_sources(request):
            mail.append(source)
        if events is not None:
            recorder.feed_events(events, matcher)
        for source in mail:
            recorder.feed_mail(source, matcher)
        result.totals = journal.feedback_counts()
        return result
    finally:
        for source in mail:
            source.close()
        if store is not None:
            store.close()
        journal.close()


def _mail_sources(request: BounceRequest) -> Iterator[MailSource]:
    if request.maildir is not None:
        yield MaildirSource(request.maildir, delete=request.delete, move_to=request.move_to)
    if request.mbox is not None:
        yield MboxSource(request.mbox)
    if request.imap is not None:
        from txsend.feedback.imap import ImapSource  # imaplib and ssl: only for --imap

        password = request.password() if request.password is not None else ""
        yield ImapSource(
            request.imap,
            password,
            ca_file=request.ca_file,
            move_to=request.move_to,
            delete=request.delete,
            timeout=request.timeout,
        )


@dataclass(frozen=True, slots=True)
class Match:
    """The row a report is about (key and address, and by what), or why there is none."""

    key: str | None = None
    address: str | None = None
    by: str | None = None
    why: str | None = None


class Matcher:
    """Finds the row a report is about (VERP token, ENVID, Message-ID, final recipient)."""

    def __init__(self, job: Job, journal: JournalBackend) -> None:
        self._job = job.name
        self._journal = journal
        self._secret = journal.verp_secret()

    def match(self, report: Feedback) -> Match:
        """The row a report is about, or why there is none."""
        envid_token = find_token(report.envid) if report.envid else None
        tokens = [(t, "verp") for t in report.tokens]
        if envid_token is not None and envid_token not in report.tokens:
            tokens.append((envid_token, "envid"))
        for token, how in tokens:
            check = verify_token(token, self._secret, self._job)
            if check is TokenCheck.OTHER_JOB:
                return Match(why="a report for another job (its token names another job)")
            if check is TokenCheck.FORGED:
                return Match(why="forged token (its HMAC does not match this journal's secret)")
            if check is TokenCheck.OK:
                rows = self._journal.feedback_rows(message_hex=token_message_hex(token))
                if rows:
                    return Match(rows[0].key, rows[0].address, how)
        if report.message_id:
            found = _TXSEND_MID.fullmatch(report.message_id.strip())
            if found is not None:
                wanted = report.message_id.strip().lower()
                rows = self._journal.feedback_rows(message_hex=found.group(1).lower())
                for row in rows:
                    if row.message_id.lower() == wanted:
                        return Match(row.key, row.address, "message-id")
        if report.recipient:
            # a report names an internationalised domain as it went out (A-labels); the
            # row may hold it as the data wrote it (U-labels), or the other way round
            by_key = {
                row.key: row
                for form in address_forms(report.recipient)
                for row in self._journal.feedback_rows(address=form, limit=50)
            }
            went_out = (State.SENT, State.UNKNOWN, State.BOUNCED)
            sent = [r for r in by_key.values() if r.state in went_out]
            if len(sent) == 1:
                return Match(sent[0].key, sent[0].address, "recipient")
            if len(sent) > 1:
                return Match(why=f"{len(sent)} rows were sent to {report.recipient}")
            return Match(why=f"no row of this job was sent to {report.recipient}")
        return Match(why="no token, Message-ID or recipient of this job in it")


class _Recorder:
    """Batches reports into the store, then the journal, then marks their messages handled."""

    def __init__(
        self, journal: JournalBackend, store: SuppressionStore | None, result: BounceResult
    ) -> None:
        self._journal = journal
        self._store = store
        self._result = result
        self._suppressed: set[str] = set()  # the addresses new reports suppressed

    def feed_events(self, events: Iterable[Feedback | Unparsed], matcher: Matcher) -> None:
        batch: list[Feedback] = []
        for event in events:
            self._result.messages += 1
            if isinstance(event, Unparsed):
                self._unreadable(event)
                continue
            batch.append(event)
            if len(batch) >= BATCH:
                self._commit(batch, matcher)
                batch = []
        self._commit(batch, matcher)

    def feed_mail(self, source: MailSource, matcher: Matcher) -> None:
        items: list[Item] = []
        reports: list[Feedback] = []
        for item in source:
            self._result.messages += 1
            if item.unreadable is not None:
                self._unreadable(Unparsed(item.source, item.unreadable))
                continue
            parsed = parse_message(item.raw, item.source)
            if isinstance(parsed, Unparsed):
                self._unreadable(parsed)  # left unmarked: a newer txsend may read it
                continue
            items.append(item)
            reports.extend(parsed)
            if len(reports) >= BATCH:
                self._commit(reports, matcher)
                for done in items:
                    source.handled(done)
                items, reports = [], []
        self._commit(reports, matcher)
        for done in items:
            source.handled(done)

    def _unreadable(self, unparsed: Unparsed) -> None:
        self._result.unreadable_count += 1
        if len(self._result.unreadable) < LISTED:
            self._result.unreadable.append((unparsed.source, unparsed.reason))

    def _commit(self, reports: list[Feedback], matcher: Matcher) -> None:
        if not reports:
            return
        matches = [matcher.match(report) for report in reports]
        entries = [_entry(r, m) for r, m in zip(reports, matches, strict=True)]
        if self._store is not None:
            # a report the journal holds already was put in the store when it was new: put
            # again, it would undo a `txsend suppress remove` made since
            known = self._journal.recorded_feedback([e.event_id for e in entries])
            self._store.add(
                StoreEntry(m.address, _store_kind(e.kind), e.suppress, e.source)
                for e, m in zip(entries, matches, strict=True)
                if e.suppress and m.address and e.event_id not in known
            )
        outcomes = self._journal.record_feedback(entries)
        result = self._result
        result.read += len(entries)
        for entry, match, outcome in zip(entries, matches, outcomes, strict=True):
            if outcome == "duplicate":
                result.duplicates += 1
                continue
            result.recorded += 1
            result.by_kind[entry.kind] = result.by_kind.get(entry.kind, 0) + 1
            if entry.key is None:
                result.unmatched_count += 1
                if len(result.unmatched) < LISTED:
                    why = entry.unmatched_reason or "unmatched"
                    result.unmatched.append((entry.source or "?", why))
                continue
            assert entry.matched_by is not None
            result.matched_by[entry.matched_by] = result.matched_by.get(entry.matched_by, 0) + 1
            if entry.suppress and match.address:
                self._suppressed.add(match.address.lower())
                result.suppressed = len(self._suppressed)
            if outcome == "applied":
                if entry.kind == Kind.FAILED:
                    result.late_bounced += 1
                elif entry.kind == Kind.DELAYED:
                    result.accepted += 1


def _entry(report: Feedback, match: Match) -> FeedbackEntry:
    return FeedbackEntry(
        event_id=report.event_id,
        kind=str(report.kind),
        key=match.key,
        matched_by=match.by,
        recipient=report.recipient,
        status=report.status,
        code=report.code,
        diagnostic=report.diagnostic,
        reporting_mta=report.reporting_mta,
        source=report.source,
        detector=report.detector,
        occurred_at=report.occurred_at,
        suppress=_suppression(report) if match.key is not None else None,
        unmatched_reason=match.why,
    )


def _suppression(report: Feedback) -> str | None:
    """Why the report's address is suppressed from now on, or None."""
    when = time.strftime("%Y-%m-%d", time.gmtime(report.occurred_at or time.time()))
    if report.kind == Kind.COMPLAINT:
        kind = report.complaint_type or "abuse"
        return f"complaint ({kind}) reported by {report.detector} on {when}"
    if report.kind != Kind.FAILED:
        return None
    bad_mailbox = report.status is not None and _SUPPRESSING_STATUS.match(report.status)
    if bad_mailbox or report.detector in _PROVIDERS or report.detector == "flufl.bounce":
        where = f" by {report.reporting_mta}" if report.reporting_mta else ""
        status = report.status or "permanent failure"
        return f"bounced after acceptance ({status}) reported{where} on {when}"
    return None


def _store_kind(kind: str) -> str:
    return "complaint" if kind == Kind.COMPLAINT else "bounce"
