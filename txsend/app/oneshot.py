"""The use case behind `txsend send`: one message from a pipeline, through the real pipeline.

The message becomes a job of its own: one journal row per envelope recipient (To, Cc and
Bcc, each address once), every row the same message (`txsend.content.oneshot`), so that
each recipient's outcome is classified, retried and recorded as `run` records a row's,
and the verdict and exit code are `run`'s (`txsend.app.sending.send`).

The journal: with `--idempotency-key K`, a SQLite file per key in the user's state
directory ($TXSEND_STATE_DIR, else $XDG_STATE_HOME/txsend, else ~/.local/state/txsend),
under send/, named by the key's SHA-256 (a key never becomes a path). Without a key, a
journal in a temporary folder, removed afterwards. With a key:

- a call whose rows are all settled (sent, bounced, failed, skipped) reports that
  outcome again, marked as a replay, with the same exit code, and connects nowhere;
- a call that finds rows still due (pending, deferred, `unknown`) sends those, as
  `resume` would: a deferred recipient is retried once its retry time comes, an
  `unknown` one (a call died after DATA began) is sent again (`--on-unknown resend`,
  the default) or left (`skip`);
- a call while another holds the key's journal ends at once with 75 (in progress);
- the key given with another message (recipients, sender, subject, body, attachments)
  is refused with 65: the flags are well formed, the data contradicts the key's.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from email.utils import formatdate
from pathlib import Path
from typing import IO, Any

from txsend.app import eventloop, sending
from txsend.app.onemessage import JOB_NAME, SOURCE, OneMessage, build, check_request
from txsend.app.requests import Prepared, RunRequest, SendRequest
from txsend.content.renderer import Renders
from txsend.errors import ConfigError, JobError, TemporaryError
from txsend.job.location import JournalLocation
from txsend.journal.api import JournalBackend
from txsend.journal.lock import journal_lock
from txsend.journal.opening import open_journal
from txsend.models import State
from txsend.reporting.stats import RunStats
from txsend.reporting.summary import Summary, decide_exit_code, state_counts

__all__ = ["SendOutcome", "journal_path", "send", "state_dir"]


@dataclass(frozen=True)
class SendOutcome:
    """What a `txsend send` did, or (replayed) what an earlier call with its key did."""

    message_id: str
    key: str | None
    replayed: bool
    exit_code: int
    recipients: list[dict[str, Any]]  # address, field, state, code, reply, attempts, relay
    counts: dict[State, int]
    resent_unknown: int  # rows sent again though an earlier call may have delivered them
    on_unknown: str
    journal: str | None  # the key's journal; None for a temporary one
    summary: Summary | None  # this call's run; None for a replay
    next_attempt_at: float | None = None

    @property
    def stop_reason(self) -> str | None:
        stats = self.summary.stats if self.summary is not None else None
        return stats.stop_reason if stats is not None else None

    @property
    def unreachable(self) -> bool:
        stats = self.summary.stats if self.summary is not None else None
        return bool(stats is not None and stats.unreachable)

    def to_json(self) -> dict[str, Any]:
        """The one JSON object of `txsend send --json`."""
        report = self.summary.to_json() if self.summary is not None else None
        if report is not None and self.journal is None and report.get("problems"):
            report["problems"]["export"] = ""  # a temporary journal, removed by now (as no problem)
        return {
            "message_id": self.message_id,
            "idempotency_key": self.key,
            "replayed": self.replayed,
            "exit_code": self.exit_code,
            "recipients": self.recipients,
            "counts": state_counts(self.counts),
            "resent_unknown": self.resent_unknown,
            "next_attempt_at": self.next_attempt_at,
            "stop_reason": self.stop_reason,
            "journal": self.journal,
            "report": report,
        }


# --------------------------------------------------------------------------- the use case


def send(
    request: SendRequest, stdin: IO[bytes], env: Mapping[str, str] = os.environ
) -> SendOutcome:
    """`txsend send`: check the message, open the key's journal, send or replay."""
    check_request(request)
    message = build(request, stdin, env)
    with _journal_location(request.idempotency_key, env) as path, _holding(path, request):
        journal = open_journal(JournalLocation(path=path), create=True)
        try:
            return _send_on(message, journal, request)
        finally:
            journal.close()


# --------------------------------------------------------------------------- the journal


def state_dir(env: Mapping[str, str] = os.environ) -> Path:
    """$TXSEND_STATE_DIR, else $XDG_STATE_HOME/txsend, else ~/.local/state/txsend."""
    own = env.get("TXSEND_STATE_DIR", "").strip()
    if own:
        return Path(own).expanduser()
    state = env.get("XDG_STATE_HOME", "")
    if not os.path.isabs(state):  # the XDG spec: a relative value is to be ignored
        home = env.get("HOME") or str(Path.home())
        state = os.path.join(home, ".local", "state")
    return Path(state) / "txsend"


def journal_path(key: str, env: Mapping[str, str] = os.environ) -> Path:
    """The journal of an idempotency key: named by the key's hash, never by the key."""
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:40]
    return state_dir(env) / "send" / f"{digest}.db"


@contextmanager
def _journal_location(key: str | None, env: Mapping[str, str]) -> Iterator[Path]:
    """The key's journal, or a temporary one removed afterwards."""
    if key is not None:
        path = journal_path(key, env)
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(  # where the state goes is the environment's configuration
                f"cannot make the state directory {path.parent}: {exc.strerror or exc}",
                hint="set TXSEND_STATE_DIR to a folder this user may write",
            ) from None
        yield path
        return
    folder = Path(tempfile.mkdtemp(prefix="txsend-send-"))
    try:
        yield folder / "send.journal.db"
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def _holding(path: Path, request: SendRequest) -> Iterator[None]:
    """The journal's lock; 75 at once when another call holds it (never two sends)."""
    with ExitStack() as stack:
        try:
            stack.enter_context(journal_lock(path))
        except TemporaryError as exc:
            raise TemporaryError(
                f"a send with idempotency key {request.idempotency_key!r} is in progress "
                f"in another process: {exc.message}",
                hint="wait for it to end, then run the same command again for its outcome",
            ) from None
        yield


def _send_on(message: OneMessage, journal: JournalBackend, request: SendRequest) -> SendOutcome:
    job = replace(message.job, journal=JournalLocation(path=Path(journal.location)))
    changes = journal.changes_since(message.fingerprint)  # none for a new key
    if changes:
        raise JobError(
            f"idempotency key {request.idempotency_key!r} was used for another message: "
            + "; ".join(changes),
            hint="a key names one message: give a new message a new key",
        )
    stored = journal.job_spec()
    recovered = journal.recover() if journal.ingest_complete() else 0
    if journal.ingest_complete() and _settled(journal.counts(), request.on_unknown):
        return _outcome(message, journal, request, replayed=True, summary=None, resent=0)
    relays = sending.relays_with_passwords(job)  # 78 before anything is journalled
    eventloop.loop_factory()
    if stored is None or "date" not in stored:
        stored = {"source": str(SOURCE), "date": formatdate(localtime=True)}
        journal.bind_job(JOB_NAME, message.fingerprint, stored)
    if not journal.ingest_complete():
        journal.ingest(message.rows(), lambda: message.message_id)
    recovered += journal.recover()
    counts = journal.counts()
    resend = request.on_unknown == "resend"
    resent = counts[State.UNKNOWN] if resend else 0
    due = counts[State.PENDING] + counts[State.DEFERRED] + resent
    renderer: Renders = message.make_renderer(stored["date"])
    run_request = RunRequest(target=Path(journal.location), concurrency=1, grace=request.grace)
    summary = sending.send(
        Prepared(job, journal, None, due, recovered),
        run_request,
        JOB_NAME,
        relays,
        renderer=renderer,
    )
    return _outcome(message, journal, request, replayed=False, summary=summary, resent=resent)


def _settled(counts: dict[State, int], on_unknown: str) -> bool:
    """No row left to send: every one sent, bounced, failed or skipped (or unknown, with
    --on-unknown skip)."""
    left = counts[State.PENDING] + counts[State.DEFERRED] + counts[State.SENDING]
    if on_unknown == "resend":
        left += counts[State.UNKNOWN]
    return sum(counts.values()) > 0 and left == 0


def _outcome(
    message: OneMessage,
    journal: JournalBackend,
    request: SendRequest,
    *,
    replayed: bool,
    summary: Summary | None,
    resent: int,
) -> SendOutcome:
    rows = journal.outcomes()
    fields = {r.address.lower(): r.field for r in message.recipients}
    recipients = [
        {
            "address": row["address"],
            "field": fields.get(str(row["address"]).lower(), "to"),
            "state": row["state"],
            "code": row["code"],
            "reply": row["reply"],
            "attempts": row["attempts"],
            "relay": row["relay"],
        }
        for row in rows
    ]
    first = journal.find(rows[0]["key"]) if rows else None
    counts = journal.counts()
    if summary is not None:
        exit_code = summary.exit_code
    else:
        exit_code = decide_exit_code(
            counts,
            RunStats(),
            resend_unknown=request.on_unknown == "resend",
            skipped_by_error=journal.skipped_by_error(),
        )
    return SendOutcome(
        message_id=first.message_id if first is not None else message.message_id,
        key=request.idempotency_key,
        replayed=replayed,
        exit_code=exit_code,
        recipients=recipients,
        counts=counts,
        resent_unknown=resent,
        on_unknown=request.on_unknown,
        journal=journal.location if request.idempotency_key is not None else None,
        summary=summary,
        next_attempt_at=journal.next_attempt_at(),
    )
