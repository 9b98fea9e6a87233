"""A loaded job, and the command-line flags that shaped it.

`Job` is everything needed to render and send, nothing opened yet. `JobOverrides` is the
one type for the flags (`--from`, `--subject`, `--text`, `--html`, `--relay`, `--journal`,
`--name`, `--abort-on-error-rate`) from the command line to the journal and back: the
loader applies them (`txsend.job.overrides.apply`), the journal keeps `to_stored()` so that
`resume` and `txsend worker` rebuild the same job with `from_stored()`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from txsend.job.hooks import Hooks
from txsend.job.location import JournalLocation
from txsend.models import Content, Delivery, RecipientsSpec, RelayConfig, Template

if TYPE_CHECKING:
    # only named in annotations: `txsend run --help` and the other commands' start-up do not
    # pay for the YAML reader, zoneinfo and the address helpers these modules bring
    from txsend.job.domains import DomainRule
    from txsend.job.schedule import Schedule
    from txsend.job.warmup import Warmup

__all__ = ["Job", "JobOverrides"]


@dataclass(frozen=True)
class JobOverrides:
    """Command-line flags that fill in or override what the job file says."""

    from_addr: str | None = None
    subject: str | None = None
    text: Path | None = None
    html: Path | None = None
    relays: tuple[str, ...] = ()  # --relay URLs (each may list several, comma-separated)
    journal: JournalLocation | None = None
    name: str | None = None
    abort_on_error_rate: float | None = None  # replaces delivery.abort_on.error_rate

    @property
    def defines_message(self) -> bool:
        """True when the flags give the message itself (a CSV-alone job run afresh)."""
        return any((self.from_addr, self.subject, self.text, self.html))

    def to_stored(self) -> dict[str, str]:
        """The flags that define the job, as the journal keeps them (not the journal itself).

        The form is the journal's since the first release: a string per flag given, the
        relays comma-joined, so journals written by any version read back the same.
        """
        stored: dict[str, str] = {}
        if self.name is not None:
            stored["name"] = self.name
        if self.from_addr is not None:
            stored["from"] = self.from_addr
        if self.subject is not None:
            stored["subject"] = self.subject
        if self.text is not None:
            stored["text"] = str(self.text)
        if self.html is not None:
            stored["html"] = str(self.html)
        if self.relays:
            stored["relay"] = ",".join(self.relays)
        if self.abort_on_error_rate is not None:
            stored["abort_on_error_rate"] = repr(float(self.abort_on_error_rate))
        return stored

    @classmethod
    def from_stored(cls, stored: Mapping[str, Any]) -> JobOverrides:
        """The flags `to_stored` wrote."""
        rate = stored.get("abort_on_error_rate")
        text, html = stored.get("text"), stored.get("html")
        return cls(
            from_addr=stored.get("from"),
            subject=stored.get("subject"),
            text=Path(text) if text is not None else None,
            html=Path(html) if html is not None else None,
            relays=tuple(url for url in str(stored.get("relay", "")).split(",") if url),
            name=stored.get("name"),
            abort_on_error_rate=float(rate) if rate is not None else None,
        )

    def over(self, stored: JobOverrides) -> JobOverrides:
        """These flags, falling back to the stored ones for every flag not given now."""
        return replace(
            self,
            from_addr=self.from_addr or stored.from_addr,
            subject=self.subject or stored.subject,
            text=self.text or stored.text,
            html=self.html or stored.html,
            relays=self.relays or stored.relays,
            name=self.name or stored.name,
            abort_on_error_rate=self.abort_on_error_rate
            if self.abort_on_error_rate is not None
            else stored.abort_on_error_rate,
        )


@dataclass(frozen=True)
class Job:
    """A fully loaded job: everything needed to render and send, nothing opened yet."""

    name: str
    source: Path  # the YAML job file, or the CSV for a CSV-alone job
    base_dir: Path  # folder relative paths are resolved against
    from_addr: str  # "Name <addr>" as written (may be a template-free string)
    subject: Template
    recipients: RecipientsSpec
    journal: JournalLocation
    text: Template | None = None
    html: Template | None = None
    reply_to: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    relays: tuple[RelayConfig, ...] = ()
    domains: tuple[DomainRule, ...] = ()  # per recipient domain: pace, connections
    delivery: Delivery = field(default_factory=Delivery)
    max_message_size: int = 10 * 1024 * 1024
    suppress: tuple[Path, ...] = ()  # files of addresses never to send to
    # the suppression store shared by jobs: a SQLite path, a postgresql:// URL, "default"
    suppress_store: str | None = None
    content: Content = field(default_factory=Content)
    # the flags applied (paths resolved); stored in the journal so `resume` rebuilds the job
    flags: JobOverrides = field(default_factory=JobOverrides)
    # alerts, on_finish_command, hook_timeout (txsend.job.alerts)
    hooks: Hooks = field(default_factory=Hooks)
    # inbox-monitoring addresses that get a copy of the first message (`txsend.job.seeds`)
    seeds: tuple[str, ...] = ()
    seeds_every: int | None = None  # and of every Nth message after it
    # a new sender's daily cap, growing day by day (`txsend.job.warmup`)
    warmup: Warmup | None = None
    # when it may send: not_before, not_after, weekly windows (`txsend.job.schedule`)
    schedule: Schedule | None = None

    def input_files(self) -> list[Path]:
        """Every file whose content defines what is sent (for the journal fingerprint)."""
        files = [self.source]
        for tpl in (self.subject, self.text, self.html):
            if tpl is not None and tpl.path is not None:
                files.append(tpl.path)
        if self.recipients.file != self.source:
            files.append(self.recipients.file)
        return files
