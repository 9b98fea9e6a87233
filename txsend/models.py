"""Plain data shared by every stage: job configuration, rows, states, outcomes. No I/O."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any


class State(StrEnum):
    """Journal state of one recipient row (SPEC.md, "Journal states")."""

    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    BOUNCED = "bounced"
    DEFERRED = "deferred"
    FAILED = "failed"
    SKIPPED = "skipped"
    UNKNOWN = "unknown"
    EXPIRED = "expired"  # not sent before the job's schedule.not_after


TERMINAL_STATES = frozenset({State.SENT, State.BOUNCED, State.FAILED, State.SKIPPED, State.EXPIRED})


class TlsMode(StrEnum):
    STARTTLS = "starttls"
    IMPLICIT = "implicit"
    NONE = "none"


class RelayAuth(StrEnum):
    """How a relay's secret is used in AUTH: a password (CRAM-MD5, PLAIN or LOGIN), or an
    OAuth 2.0 access token (XOAUTH2 as Google and Microsoft define it; OAUTHBEARER, RFC 7628)."""

    PASSWORD = "password"
    XOAUTH2 = "xoauth2"
    OAUTHBEARER = "oauthbearer"

    @property
    def oauth(self) -> bool:
        """True when the secret is an access token (fetched again for each connection)."""
        return self is not RelayAuth.PASSWORD


@dataclass(frozen=True)
class RelayConfig:
    """One SMTP relay from the job's `relays:` list (or --relay / TXSEND_RELAY)."""

    url: str  # as written, without any password; safe to print
    host: str
    port: int
    tls: TlsMode
    username: str | None = None
    password_env: str | None = None
    password_file: Path | None = None
    password_cmd: str | None = None
    allow_insecure_auth: bool = False
    auth: RelayAuth = RelayAuth.PASSWORD
    ca_file: Path | None = None
    connections: int = 4
    messages_per_connection: int = 100
    # RCPTs per transaction the relay allows; txsend sends one personalised message per
    # recipient, so every transaction has one RCPT and any limit >= 1 is met.
    max_recipients: int = 100
    rate: str | None = None
    priority: int = 0
    weight: int = 1

    @property
    def name(self) -> str:
        """Short label for reports and logs: host:port."""
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class RecipientsSpec:
    file: Path
    to: str = "email"  # column holding the address
    name: str | None = None  # display-name template
    key: str | None = None  # column holding the unique key; None = the address
    timezone: str | None = None  # column holding each row's IANA zone (`schedule:` windows)


@dataclass(frozen=True)
class Timeouts:
    connect: float = 30.0
    command: float = 60.0
    data_end: float = 600.0  # RFC 5321 section 4.5.3.2


@dataclass(frozen=True)
class RetryPolicy:
    """delivery.retry: exponential backoff with jitter between attempts of one row."""

    attempts: int = 5  # attempts in all, the first included
    backoff: float = 30.0  # seconds before the second attempt
    max_backoff: float = 1800.0
    max_age: float = 2 * 86400.0  # seconds since the row's first attempt


@dataclass(frozen=True)
class AbortPolicy:
    """delivery.abort_on: stop taking work when the rolling failure rate exceeds error_rate."""

    error_rate: float  # 0 < rate <= 1
    min_messages: int = 100  # the rolling window, and the least outcomes before judging


@dataclass(frozen=True)
class Delivery:
    on_unknown: str = "resend"  # or "skip"
    timeouts: Timeouts = field(default_factory=Timeouts)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    abort_on: AbortPolicy | None = None
    give_up_unreachable: float = 120.0  # seconds with no relay reachable before stopping


@dataclass(frozen=True)
class Template:
    """A template source and where it came from, for error messages."""

    source: str
    origin: str  # file path, or "job.yaml:12" for inline templates
    path: Path | None = None  # set when the template is a file (fingerprinted)
    # content, not a template (`txsend send`): sent as written, `{{` included
    literal: bool = False


@dataclass(frozen=True)
class AttachmentSpec:
    """One entry of `attachments:`; `path` may be a template (per-recipient files)."""

    path: str  # relative to the job's folder, which it may not leave
    origin: str  # "job.yaml:12", for error messages
    content_type: str | None = None  # None: guessed from the file name
    filename: str | None = None  # name shown to the reader; None: the file's own name
    compress: str | None = None  # "zip": send the file inside a .zip archive
    compress_over: int = 0  # only zip files larger than this many bytes
    # a file named on the command line (`txsend send --attach`): its path as given, neither
    # a template nor confined to the job's folder
    literal: bool = False


@dataclass(frozen=True)
class Unsubscribe:
    """`unsubscribe:` → List-Unsubscribe (RFC 2369) and List-Unsubscribe-Post (RFC 8058)."""

    url: str | None  # template; https required for one_click
    mailto: str | None  # template; address, optionally ?subject=...
    one_click: bool = False
    origin: str = ""


@dataclass(frozen=True)
class DkimSpec:
    """`dkim:`: sign every message with this key (DKIM, RFC 6376)."""

    domain: str
    selector: str
    key_file: Path
    algorithm: str = "rsa-sha256"
    headers: tuple[str, ...] | None = None  # None: the default signed header list


@dataclass(frozen=True)
class Envelope:
    """`return_path:` and `verp:`: the envelope sender (MAIL FROM), where bounces go.

    `return_path` None: the From address. With `verp`, each row has its own envelope
    sender: `verp_pattern` with ``{token}`` replaced (`txsend.verp`), or, without a pattern,
    the return path's local part + ``+{token}`` at its domain.
    """

    return_path: str | None = None  # bare address
    verp: bool = False
    verp_pattern: str | None = None


@dataclass(frozen=True)
class Addressees:
    """One message to several people (`txsend send`): the To and Cc every copy shows,
    whichever envelope recipient (a journal row) it goes to. Bcc is never shown."""

    to: tuple[tuple[str, str], ...]  # (display name, address); empty: undisclosed
    cc: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Content:
    """Everything about a message's content beyond from/subject/text/html."""

    markdown: Template | None = None  # produces both the html and the text part
    auto_text: bool = True  # an html-only job gets a text part made from the html
    inline_css: bool = False
    transactional: bool = False
    auto_submitted: bool | None = None  # None: on for transactional jobs
    precedence: str | None = None  # "bulk" or "list" when asked
    feedback_id: str | None = None  # template
    attachments: tuple[AttachmentSpec, ...] = ()
    unsubscribe: Unsubscribe | None = None
    dkim: DkimSpec | None = None
    envelope: Envelope = field(default_factory=Envelope)
    addressees: Addressees | None = None  # None: each message is addressed to its row


@dataclass(frozen=True, slots=True)
class Row:
    """One recipient row as read from the data file."""

    number: int  # 1-based data row number (CSV: excluding the header; JSONL: line number)
    key: str
    address: str
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class RenderedMessage:
    """What the transport needs for one transaction."""

    key: str
    mail_from: str  # envelope sender (bare address)
    rcpt_to: str  # envelope recipient (bare address)
    data: bytes  # RFC 5322 message, CRLF line endings, not dot-stuffed
    smtputf8: bool = False  # a non-ASCII address or header field: needs SMTPUTF8
    eight_bit: bool = False  # bytes over 127 in the data: sent with BODY=8BITMIME (RFC 6152)
    envid: str | None = None  # the DSN's ENVID (RFC 3461): the row's VERP token


@dataclass(frozen=True)
class RunInfo:
    """One run of a job as its journal recorded it (the reports list them)."""

    id: int
    command: str
    started_at: float
    ended_at: float | None
    exit_code: int | None
    counts: dict[str, int]  # rows per state when the run ended
