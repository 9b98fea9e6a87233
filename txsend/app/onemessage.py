"""The message of `txsend send`, read and checked before any journal is opened.

`check_request` refuses flags that do not go together (64); `build` reads every input
(bodies, attachments, a ready message on stdin) and checks it (65 for bad data, 66 for a
missing file), and returns a `OneMessage`: the job the message becomes (its content sent
as written: literal templates; the job's delivery defaults with --timeout, --give-up and
--retry-backoff; the relays of --relay or TXSEND_RELAY), one `Recipient` per envelope
address, the fingerprint an idempotency key is bound to, and how to make its renderer.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from email.utils import formatdate
from pathlib import Path
from typing import IO

from txsend.app.jobs import SEND_JOB, SEND_SOURCE
from txsend.app.requests import SendRequest
from txsend.content.ids import message_id_domain, new_message_id
from txsend.content.oneshot import ReadyRenderer, SameMessage
from txsend.content.ready import ReadyMessage, address_list, parse_ready
from txsend.content.renderer import Renderer, Renders
from txsend.errors import JobError, MissingInputError, RowError, UsageError
from txsend.job.location import JournalLocation
from txsend.job.overrides import apply
from txsend.job.paths import absolute
from txsend.job.spec import Job, JobOverrides
from txsend.models import (
    Addressees,
    AttachmentSpec,
    Content,
    Delivery,
    RecipientsSpec,
    RetryPolicy,
    Row,
    Template,
    Timeouts,
)

__all__ = ["JOB_NAME", "SOURCE", "OneMessage", "Recipient", "build", "check_request"]

JOB_NAME = SEND_JOB
SOURCE = SEND_SOURCE  # what the job is called in messages (and status/report know it by)
MAX_KEY = 255  # characters in an idempotency key, as payment APIs allow
STDIN = Path("-")


@dataclass(frozen=True)
class Recipient:
    """One envelope recipient: its row's key is the address; `field` says where it came from."""

    address: str
    field: str  # to, cc or bcc


@dataclass
class OneMessage:
    """The message of a `txsend send`, checked, before a journal is opened."""

    job: Job
    recipients: list[Recipient]
    fingerprint: dict[str, str]
    message_id: str  # used when the journal has none yet
    make_renderer: Callable[[str], Renders]  # the date -> the renderer
    ready: ReadyMessage | None = None

    def rows(self) -> list[Row]:
        """The journal's rows: one per recipient, in the order given (the data: what
        `report --failed-csv` writes of each)."""
        return [
            Row(number, r.address, r.address, {"address": r.address, "field": r.field})
            for number, r in enumerate(self.recipients, 1)
        ]


def check_request(request: SendRequest) -> None:
    """The flags that go together (64 for those that do not)."""
    bodies = [
        flag
        for flag, value in (
            ("--text", request.text),
            ("--html", request.html),
            ("--markdown", request.markdown),
        )
        if value is not None
    ]
    if request.ready:
        given = bodies + [
            flag
            for flag, value in (
                ("--subject", request.subject),
                ("--reply-to", request.reply_to),
                ("--attach", request.attachments),
            )
            if value
        ]
        if given:
            raise UsageError(
                f"--stdin reads a complete message; {given[0]} cannot change it",
                hint="put the subject and the body in the message, or drop --stdin and "
                "give --to, --subject and --text",
            )
    else:
        if not bodies:
            raise UsageError(
                "send needs a body: --text FILE, --html FILE or --markdown FILE "
                "('-' reads stdin), or --stdin for a complete message"
            )
        if request.markdown is not None and len(bodies) > 1:
            raise UsageError("--markdown makes both the text and the HTML part: give it alone")
        if sum(1 for b in (request.text, request.html, request.markdown) if b == STDIN) > 1:
            raise UsageError("only one body can be read from stdin ('-')")
        if not (request.to or request.cc or request.bcc):
            raise UsageError("send needs a recipient: --to, --cc or --bcc")
        if not request.from_addr:
            raise UsageError("send needs --from ADDRESS")
        if request.subject is None:
            raise UsageError("send needs --subject TEXT")
    key = request.idempotency_key
    if key is not None:
        if not key.strip():
            raise UsageError("--idempotency-key must not be empty")
        if len(key) > MAX_KEY or not key.isprintable():
            raise UsageError(
                f"--idempotency-key must be at most {MAX_KEY} printable characters",
                hint='e.g. --idempotency-key "deploy-$CI_PIPELINE_ID"',
            )
    if request.on_unknown not in ("resend", "skip"):
        raise UsageError(f"--on-unknown must be resend or skip, not {request.on_unknown!r}")


def build(request: SendRequest, stdin: IO[bytes], env: Mapping[str, str]) -> OneMessage:
    """The message, its recipients and its job, every input read and checked (65, 66)."""
    delivery = _delivery(request)
    if request.ready:
        message = _build_ready(request, stdin, delivery)
    else:
        message = _build_composed(request, stdin, delivery)
    # --relay, else TXSEND_RELAY, as `run` takes them
    message.job = apply(message.job, JobOverrides(relays=request.relays), env)
    return message


def _delivery(request: SendRequest) -> Delivery:
    """The job's delivery defaults, with --timeout, --give-up and --retry-backoff."""
    default = Delivery()
    timeouts = default.timeouts
    if request.timeout is not None:
        timeouts = Timeouts(
            connect=request.timeout, command=request.timeout, data_end=request.timeout
        )
    retry = default.retry
    if request.retry_backoff is not None:
        backoff = request.retry_backoff
        retry = RetryPolicy(backoff=backoff, max_backoff=max(retry.max_backoff, backoff))
    give_up = request.give_up if request.give_up is not None else default.give_up_unreachable
    return replace(
        default,
        on_unknown=request.on_unknown,
        timeouts=timeouts,
        retry=retry,
        give_up_unreachable=give_up,
    )


def _recipients(request: SendRequest) -> tuple[list[Recipient], dict[str, list[tuple[str, str]]]]:
    """The envelope recipients of --to, --cc and --bcc (each address once, the first
    field it is given in), and the mailboxes of each field for the header."""
    boxes: dict[str, list[tuple[str, str]]] = {"to": [], "cc": [], "bcc": []}
    seen: dict[str, Recipient] = {}
    for field, values in (("to", request.to), ("cc", request.cc), ("bcc", request.bcc)):
        for value in values:
            for name, addr in address_list(value, f"--{field}"):
                boxes[field].append((name, addr))
                seen.setdefault(addr.lower(), Recipient(addr, field))
    if not seen:
        raise JobError("no recipient: --to, --cc and --bcc name no address")
    return list(seen.values()), boxes


def _build_composed(request: SendRequest, stdin: IO[bytes], delivery: Delivery) -> OneMessage:
    """--to/--from/--subject and a body: the job's renderer makes the message."""
    assert request.from_addr is not None and request.subject is not None  # check_request
    recipients, boxes = _recipients(request)
    sender = address_list(request.from_addr, "--from")
    if len(sender) != 1:
        raise JobError(f"--from: expected one address, got {request.from_addr!r}")
    reply_to = None
    if request.reply_to is not None:
        reply_to = ", ".join(_mailbox(*box) for box in address_list(request.reply_to, "--reply-to"))
    text = _body(request.text, "--text", stdin, request.max_size)
    html = _body(request.html, "--html", stdin, request.max_size)
    markdown = _body(request.markdown, "--markdown", stdin, request.max_size)
    attachments, attached = _attachments(request.attachments)
    html_file = request.html or request.markdown
    base = absolute(html_file).parent if html_file not in (None, STDIN) else absolute(Path.cwd())
    from_addr = _mailbox(*sender[0])
    job = Job(
        name=JOB_NAME,
        source=SOURCE,
        base_dir=base,
        from_addr=from_addr,
        subject=Template(request.subject, origin="--subject", literal=True),
        recipients=RecipientsSpec(file=SOURCE),
        journal=JournalLocation(path=SOURCE),  # replaced by the key's journal
        text=text,
        html=html,
        reply_to=reply_to,
        delivery=delivery,
        max_message_size=request.max_size,
        content=Content(
            markdown=markdown,
            attachments=attachments,
            addressees=Addressees(to=tuple(boxes["to"]), cc=tuple(boxes["cc"])),
        ),
    )
    renderer = Renderer(job)
    message_id = new_message_id(message_id_domain(from_addr))
    _check_render(renderer, recipients[0], message_id, request.max_size)
    prints = {
        "from": _digest(from_addr),
        "reply_to": _digest(reply_to or ""),
        "subject": _digest(request.subject),
        "recipients": _digest(repr([(r.address, r.field) for r in recipients])),
        "header recipients": _digest(repr((boxes["to"], boxes["cc"]))),
        "attachments": _digest(repr(attached)),
    }
    for label, body in (("text", text), ("html", html), ("markdown", markdown)):
        if body is not None:
            prints[label] = _digest(body.source)
    return OneMessage(
        job,
        recipients,
        prints,
        message_id,
        lambda date: SameMessage(renderer, date),
    )


def _build_ready(request: SendRequest, stdin: IO[bytes], delivery: Delivery) -> OneMessage:
    """--stdin: a complete message; the recipients from the flags, else its header."""
    if stdin.isatty():
        raise UsageError(
            "--stdin reads the message from a pipe or a file, and stdin is a terminal",
            hint="e.g. txsend send --stdin < message.eml",
        )
    data = stdin.read(request.max_size + 1)
    if len(data) > request.max_size:
        raise JobError(
            f"stdin: the message is over the size limit ({request.max_size} bytes)",
            hint="raise it with --max-size, if the relay takes messages that large",
        )
    ready = parse_ready(data)
    if request.to or request.cc or request.bcc:
        # the flags name the envelope; the message's own fields are left as written
        recipients, _ = _recipients(request)
    else:
        recipients = [Recipient(address, field) for address, field in ready.recipients]
        if not recipients:
            raise JobError(
                "stdin: the message names no recipient (no To, Cc or Bcc field)",
                hint="add a To: field, or give the recipients with --to",
            )
    if request.from_addr is not None:
        sender = address_list(request.from_addr, "--from")
        if len(sender) != 1:
            raise JobError(f"--from: expected one address, got {request.from_addr!r}")
        mail_from = sender[0][1]
    elif ready.sender is not None:
        mail_from = ready.sender
    else:
        raise JobError(
            "stdin: the message has no From field",
            hint="add a From: field, or give the envelope sender with --from",
        )
    job = Job(
        name=JOB_NAME,
        source=SOURCE,
        base_dir=absolute(Path.cwd()),
        from_addr=mail_from,
        subject=Template("", origin="stdin", literal=True),
        recipients=RecipientsSpec(file=SOURCE),
        journal=JournalLocation(path=SOURCE),
        delivery=delivery,
        max_message_size=request.max_size,
    )
    message_id = ready.message_id or new_message_id(message_id_domain(mail_from))
    prints = {
        "message": ready.digest,
        "recipients": _digest(repr([(r.address, r.field) for r in recipients])),
        "envelope sender": _digest(mail_from),
    }
    return OneMessage(
        job,
        recipients,
        prints,
        message_id,
        lambda date: ReadyRenderer(ready, mail_from, date),
        ready,
    )


def _body(path: Path | None, flag: str, stdin: IO[bytes], limit: int) -> Template | None:
    """A body file (or stdin, for '-'), as content: read once, UTF-8, never a template."""
    if path is None:
        return None
    shown = "stdin" if path == STDIN else str(path)
    if path == STDIN:
        if stdin.isatty():
            raise UsageError(
                f"{flag} - reads the body from a pipe or a file, and stdin is a terminal",
                hint=f"e.g. echo 'Build passed' | txsend send ... {flag} -",
            )
        data = stdin.read(limit + 1)
    else:
        try:
            with path.open("rb") as file:
                data = file.read(limit + 1)
        except FileNotFoundError:
            raise MissingInputError(f"{flag}: file not found: {path}") from None
        except IsADirectoryError:
            raise MissingInputError(f"{flag}: {path} is a folder, not a file") from None
        except OSError as exc:
            raise MissingInputError(f"{flag}: cannot read {path}: {exc.strerror or exc}") from None
    if len(data) > limit:
        raise JobError(f"{flag} {shown}: over the size limit ({limit} bytes)")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise JobError(
            f"{flag} {shown}: not UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start})",
            hint="convert it first, e.g. iconv -f latin1 -t utf-8",
        ) from None
    return Template(
        text, origin=shown, path=None if path == STDIN else absolute(path), literal=True
    )


def _attachments(paths: Sequence[Path]) -> tuple[tuple[AttachmentSpec, ...], list[tuple[str, str]]]:
    """--attach files: each checked now (66), and (name, SHA-256) of each for the key."""
    specs = []
    hashes = []
    for path in paths:
        if not path.exists():
            raise MissingInputError(f"--attach: file not found: {path}")
        if not path.is_file():
            raise MissingInputError(f"--attach: {path} is not a file")
        sha = hashlib.sha256()
        try:
            with path.open("rb") as file:
                for block in iter(lambda: file.read(1 << 20), b""):
                    sha.update(block)
        except OSError as exc:
            raise MissingInputError(
                f"--attach: cannot read {path}: {exc.strerror or exc}"
            ) from None
        specs.append(AttachmentSpec(path=str(absolute(path)), origin="--attach", literal=True))
        hashes.append((path.name, sha.hexdigest()))
    return tuple(specs), hashes


def _check_render(renderer: Renderer, first: Recipient, message_id: str, limit: int) -> None:
    """Render the message once now: what would fail each row fails the command (65)."""
    try:
        data = renderer.render(
            Row(1, first.address, first.address, {}), message_id, date=formatdate(localtime=True)
        ).data
    except RowError as exc:
        raise JobError(exc.reason) from None
    if len(data) > limit:
        raise JobError(
            f"the message is {len(data)} bytes, over the size limit ({limit} bytes)",
            hint="attach less, or raise the limit with --max-size if the relay takes it",
        )


def _mailbox(name: str, addr: str) -> str:
    """ "Name" <addr> (quoted, as split_mailbox reads it back), or addr."""
    if not name:
        return addr
    escaped = name.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}" <{addr}>'


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
