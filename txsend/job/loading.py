"""Load a job (a YAML job file, or a CSV/JSONL list alone) and stream its recipient rows.

Every problem in a job file is reported with ``file:line`` of the offending key; every
problem in a recipients file with its row number. Nothing here touches the network or
prints.
"""

from __future__ import annotations

import datetime
import difflib
import ipaddress
import math
import os
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace
from email.utils import getaddresses
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import yaml

from txsend.errors import ConfigError, JobError, MissingInputError, UsageError
from txsend.job.recipients import JSONL_SUFFIXES, MissingColumn, check_header, is_jsonl
from txsend.journal.api import is_postgres
from txsend.models import (
    AbortPolicy,
    Content,
    Delivery,
    Job,
    RecipientsSpec,
    RelayConfig,
    RetryPolicy,
    Template,
    Timeouts,
    TlsMode,
)
from txsend.units import describe_value, parse_duration, parse_rate, parse_size

__all__ = [
    "JobOverrides",
    "default_journal",
    "load_job",
    "parse_relay_url",
]


@dataclass(frozen=True)
class JobOverrides:
    """Command-line flags that fill in or override what the job file says."""

    from_addr: str | None = None
    subject: str | None = None
    text: Path | None = None
    html: Path | None = None
    relays: tuple[str, ...] = ()  # --relay URLs; replace the job's relays
    journal: Path | None = None
    name: str | None = None
    abort_on_error_rate: float | None = None  # --abort-on-error-rate; replaces abort_on.error_rate
    journal_url: str | None = None  # --journal postgresql://...: a shared journal


_NO_OVERRIDES = JobOverrides()

_YAML_SUFFIXES = frozenset({".yaml", ".yml"})
LIST_SUFFIXES = frozenset({".csv", ".tsv"}) | JSONL_SUFFIXES

_TOP_KEYS = frozenset(
    [
        "name",
        "from",
        "reply_to",
        "subject",
        "text",
        "text_inline",
        "html",
        "html_inline",
        "recipients",
        "headers",
        "relays",
        "delivery",
        "max_message_size",
        "suppress",
        "journal",
    ]
)
_RECIPIENTS_KEYS = frozenset({"file", "to", "name", "key"})
_DELIVERY_KEYS = frozenset({"on_unknown", "timeouts", "retry", "abort_on", "give_up_unreachable"})
_RETRY_KEYS = ("attempts", "backoff", "max_backoff", "max_age")
_ABORT_KEYS = ("error_rate", "min_messages")
_TIMEOUT_KEYS = ("connect", "command", "data_end")
_ON_UNKNOWN = ("resend", "skip")

_RELAY_OPTIONS = frozenset(
    [
        "password_env",
        "password_file",
        "password_cmd",
        "allow_insecure_auth",
        "ca_file",
        "connections",
        "messages_per_connection",
        "max_recipients",
        "rate",
        "priority",
        "weight",
    ]
)
_RELAY_INT_LIMITS: dict[str, tuple[int | None, int | None]] = {
    "connections": (1, 1000),
    "messages_per_connection": (1, None),
    "max_recipients": (1, None),
    "priority": (None, None),
    "weight": (1, None),
}

# RFC 5322 section 3.6.8: field-name = 1*ftext, printable US-ASCII except ":".
_FIELD_NAME = re.compile(r"[\x21-\x39\x3b-\x7e]+\Z")
_RESERVED_HEADERS: dict[str, str] = {
    "from": "use from: in the job",
    "to": "the recipient comes from the recipients file (recipients.to)",
    "subject": "use subject: in the job",
    "reply-to": "use reply_to: in the job",
    "date": "txsend sets it",
    "message-id": "txsend sets it (fixed per row, reused on retries)",
    "mime-version": "txsend sets it",
}

# Catches two addresses in one cell, or "Name <addr>" where a bare address belongs.


# --------------------------------------------------------------------------- relay URLs


def parse_relay_url(url: str, **options: Any) -> RelayConfig:
    """A RelayConfig from an smtp:// or smtps:// URL plus the relay's other keys."""
    shown = _redact(url)
    unknown = sorted(set(options) - _RELAY_OPTIONS)
    if unknown:
        raise ConfigError(f"relay {shown}: unknown option {unknown[0]!r}")
    # Checked before parsing: a password with "/" or "#" in it confuses urlsplit.
    if shown != url:
        raise ConfigError(
            f"{shown}: passwords do not belong in relay URLs; use password_env or password_file"
        )
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"bad relay URL {shown}: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("smtp", "smtps"):
        raise ConfigError(
            f"bad relay URL {shown}: unsupported scheme {scheme + '://' if scheme else '(none)'}",
            hint="write smtp://host:587 (STARTTLS) or smtps://host:465 (implicit TLS)",
        )
    host = parts.hostname
    if not host:
        raise ConfigError(f"bad relay URL {shown}: no host name")
    if parts.path not in ("", "/") or parts.fragment:
        raise ConfigError(f"bad relay URL {shown}: unexpected path {parts.path!r}")
    if port == 0:
        raise ConfigError(f"bad relay URL {shown}: port 0 is not a port")

    tls: TlsMode | None = TlsMode.IMPLICIT if scheme == "smtps" else None
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name != "tls" or scheme == "smtps":
            raise ConfigError(
                f"bad relay URL {shown}: unknown query parameter {name!r}",
                hint="the only query parameter is ?tls=starttls|none on smtp:// URLs",
            )
        if tls is not None:
            raise ConfigError(f"bad relay URL {shown}: tls is given twice")
        if value.lower() not in (TlsMode.STARTTLS, TlsMode.NONE):
            raise ConfigError(
                f"bad relay URL {shown}: tls must be starttls or none, got {value!r}",
                hint="for implicit TLS write smtps://host:465",
            )
        tls = TlsMode(value.lower())
    if tls is None:
        # A local sink or test relay rarely speaks TLS; anything else must opt out explicitly.
        tls = TlsMode.NONE if _is_loopback(host) else TlsMode.STARTTLS
    if port is None:
        port = {TlsMode.IMPLICIT: 465, TlsMode.STARTTLS: 587, TlsMode.NONE: 25}[tls]
    username = unquote(parts.username) if parts.username else None

    checked: dict[str, Any] = {}
    for name, value in options.items():
        try:
            checked[name] = _relay_option(name, value)
        except ValueError as exc:
            raise ConfigError(f"relay {shown}: {name}: {exc}") from None
    secrets = [
        name for name in ("password_env", "password_file", "password_cmd") if name in checked
    ]
    if len(secrets) > 1:
        raise ConfigError(f"relay {shown}: set only one of {', '.join(secrets)}")
    if secrets and username is None:
        raise ConfigError(
            f"relay {shown}: {secrets[0]} is set but the URL has no user name",
            hint="write the user into the URL: smtp://USER@host:587",
        )
    if secrets and tls is TlsMode.NONE and not checked.get("allow_insecure_auth", False):
        raise ConfigError(
            f"relay {shown}: authenticating without TLS would send the password in clear",
            hint="use tls=starttls or smtps://, "
            "or set allow_insecure_auth: true (test relays only)",
        )
    return RelayConfig(url=url.strip(), host=host, port=port, tls=tls, username=username, **checked)


def _relay_option(name: str, value: Any) -> Any:
    """One relay option, type- and range-checked; ValueError says what is wrong."""
    if name in _RELAY_INT_LIMITS:
        low, high = _RELAY_INT_LIMITS[name]
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"expected a whole number, got {describe_value(value)}")
        if (low is not None and value < low) or (high is not None and value > high):
            if high is None:
                raise ValueError(f"must be at least {low}, got {value}")
            raise ValueError(f"must be between {low} and {high}, got {value}")
        return value
    if name == "allow_insecure_auth":
        if not isinstance(value, bool):
            raise ValueError(f"expected true or false, got {describe_value(value)}")
        return value
    if name in ("password_file", "ca_file"):
        if not isinstance(value, (str, Path)) or not str(value).strip():
            raise ValueError(f"expected a file path, got {describe_value(value)}")
        return Path(value)
    if name == "rate":
        if not isinstance(value, str):
            raise ValueError(
                "expected a rate like 50/s, 600/min, 1000/h or 10000/day, "
                f"got {describe_value(value)}"
            )
        parse_rate(value)  # ValueError says what is wrong
        return value.strip()
    # password_env, password_cmd
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"expected a non-empty string, got {describe_value(value)}")
    return value


def _redact(url: str) -> str:
    """The URL with any password replaced by ***, for messages."""
    match = re.search(r"(?<=//)(.*)@", url)
    if match is None or ":" not in match.group(1):
        return url
    user = match.group(1).split(":", 1)[0]
    return url[: match.start()] + f"{user}:***@" + url[match.end() :]


def _is_loopback(host: str) -> bool:
    name = host.lower().rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


# --------------------------------------------------------------------------- YAML with lines


class _LineDict(dict[str, Any]):
    """A YAML mapping that remembers the line of each of its keys."""

    def __init__(self, line: int) -> None:
        super().__init__()
        self.line = line
        self.key_lines: dict[str, int] = {}


class _LineList(list[Any]):
    """A YAML sequence that remembers the line of each item."""

    def __init__(self, items: list[Any], lines: list[int]) -> None:
        super().__init__(items)
        self.lines = lines


class _LineLoader(yaml.SafeLoader):
    """SafeLoader building _LineDict / _LineList so validation can cite file:line."""

    display = "job"


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> _LineDict:
    loader.flatten_mapping(node)  # resolve "<<:" merge keys first
    mapping = _LineDict(node.start_mark.line + 1)
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        if not isinstance(key, str):
            raw = key_node.value if isinstance(key_node, yaml.ScalarNode) else key
            raise JobError(
                f"key {raw!r} is not text",
                file=loader.display,
                line=line,
                hint=f'quote it: "{raw}":',
            )
        if key in mapping:
            raise JobError(
                f"{key}: duplicate key (first set on line {mapping.key_lines[key]})",
                file=loader.display,
                line=line,
            )
        mapping[key] = loader.construct_object(value_node, deep=True)
        mapping.key_lines[key] = line
    return mapping


def _construct_sequence(loader: _LineLoader, node: yaml.SequenceNode) -> _LineList:
    items = [loader.construct_object(child, deep=True) for child in node.value]
    return _LineList(items, [child.start_mark.line + 1 for child in node.value])


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_sequence)


def _load_yaml(path: Path, display: str) -> Any:
    text = _read_text(path, display)
    loader = _LineLoader(text)
    loader.display = display
    try:
        return loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        problem = exc.problem or exc.context or "not valid YAML"
        hint = None
        if exc.context and exc.context_mark is not None and exc.problem:
            hint = f"{exc.context} on line {exc.context_mark.line + 1}"
        raise JobError(f"invalid YAML: {problem}", file=display, line=line, hint=hint) from None
    except yaml.YAMLError as exc:
        raise JobError(f"invalid YAML: {exc}", file=display) from None
    finally:
        loader.dispose()


def _read_text(path: Path, display: str) -> str:
    """A text file decoded as UTF-8 (BOM stripped); JobError names the first bad byte's line."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise MissingInputError(f"file not found: {display}") from None
    except OSError as exc:
        raise MissingInputError(f"cannot read {display}: {exc.strerror}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise JobError(
            f"not valid UTF-8 (byte 0x{data[exc.start]:02x})",
            file=display,
            line=line,
            hint="save the file as UTF-8",
        ) from None


class _Map:
    """Typed, line-aware access to one mapping of the job file."""

    def __init__(
        self, display: str, data: dict[str, Any], path: str = "", line: int | None = None
    ) -> None:
        self.display = display
        self.data = data
        self.path = path  # dotted name, e.g. "relays[0]"; "" at the top level
        self.line = line  # line of the key holding this mapping; None at the top level
        self.key_lines = data.key_lines if isinstance(data, _LineDict) else {}

    def name(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def line_of(self, key: str) -> int | None:
        return self.key_lines.get(key, self.line)

    def error(self, key: str, message: str, hint: str | None = None) -> JobError:
        return JobError(
            f"{self.name(key)}: {message}", file=self.display, line=self.line_of(key), hint=hint
        )

    def where(self, key: str) -> str:
        """'file:line: key' for messages raised as other error types."""
        line = self.line_of(key)
        return (
            f"{self.display}:{line}: {self.name(key)}"
            if line
            else f"{self.display}: {self.name(key)}"
        )

    def check_keys(self, known: Collection[str]) -> None:
        for key in self.data:
            if key in known:
                continue
            close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
            if close:
                raise self.error(key, f"unknown key (did you mean {close[0]!r}?)")
            raise self.error(key, "unknown key", hint=f"known keys: {', '.join(sorted(known))}")

    def value(self, key: str) -> Any:
        """The value, or None when the key is absent or empty (`key:` with nothing after)."""
        return self.data.get(key)

    def missing(self, key: str, hint: str | None = None) -> JobError:
        if key in self.data:
            return self.error(key, "is empty", hint=hint)
        return JobError(
            f"missing required key {self.name(key)!r}", file=self.display, line=self.line, hint=hint
        )

    def opt_str(self, key: str) -> str | None:
        value = self.value(key)
        if value is None:
            return None
        if not isinstance(value, str):
            raise self.error(key, f"expected a string, got {describe_value(value)}")
        if not value.strip():
            raise self.error(key, "is empty")
        return value

    def req_str(self, key: str, hint: str | None = None) -> str:
        value = self.opt_str(key)
        if value is None:
            raise self.missing(key, hint)
        return value

    def opt_map(self, key: str) -> _Map | None:
        value = self.value(key)
        if value is None:
            return None
        if not isinstance(value, dict):
            raise self.error(key, f"expected a mapping, got {describe_value(value)}")
        return _Map(self.display, value, self.name(key), self.line_of(key))

    def opt_list(self, key: str) -> list[tuple[Any, int | None]]:
        value = self.value(key)
        if value is None:
            return []
        if not isinstance(value, list):
            raise self.error(key, f"expected a list, got {describe_value(value)}")
        lines: list[int | None] = (
            list(value.lines) if isinstance(value, _LineList) else [self.line_of(key)] * len(value)
        )
        return list(zip(value, lines, strict=True))

    def opt_duration(self, key: str) -> float | None:
        value = self.value(key)
        if value is None:
            return None
        try:
            return parse_duration(value)
        except ValueError as exc:
            raise self.error(key, str(exc)) from None

    def opt_int(self, key: str, minimum: int) -> int | None:
        value = self.value(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(key, f"expected a whole number, got {describe_value(value)}")
        if value < minimum:
            raise self.error(key, f"must be at least {minimum}, got {value}")
        return value

    def opt_fraction(self, key: str) -> float | None:
        """A number with 0 < value <= 1 (a rate or share)."""
        value = self.value(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.error(
                key, f"expected a number between 0 and 1 (e.g. 0.2), got {describe_value(value)}"
            )
        problem = _fraction_problem(float(value))
        if problem:
            raise self.error(key, problem)
        return float(value)


def _fraction_problem(value: float) -> str | None:
    if math.isfinite(value) and 0 < value <= 1:
        return None
    if math.isfinite(value) and 1 < value <= 100:
        return (
            f"must be above 0 and at most 1, got {value:g} (for {value:g}% write {value / 100:g})"
        )
    return f"must be above 0 and at most 1, got {value:g}"


# --------------------------------------------------------------------------- load_job


def load_job(
    path: Path,
    overrides: JobOverrides = _NO_OVERRIDES,
    *,
    env: Mapping[str, str] = os.environ,
) -> Job:
    """Load and validate a YAML job file or a CSV/JSONL-alone job, applying the overrides."""
    display = str(path)
    if not path.exists():
        raise MissingInputError(
            f"job file not found: {display}",
            hint="check the path, or write a sample job with: txsend init DIR",
        )
    if path.is_dir():
        raise UsageError(f"{display} is a folder; pass the job file (.yaml) or a recipient list")
    suffix = path.suffix.lower()
    if suffix in _YAML_SUFFIXES:
        return _load_yaml_job(path, display, overrides, env)
    if suffix in LIST_SUFFIXES:
        return _load_list_job(path, display, overrides, env)
    raise UsageError(
        f"cannot tell what kind of job {display} is",
        hint="pass a job file (.yaml, .yml) or a recipient list (.csv, .jsonl)",
    )


def _load_yaml_job(
    path: Path, display: str, overrides: JobOverrides, env: Mapping[str, str]
) -> Job:
    source = _absolute(path)
    base = source.parent
    data = _load_yaml(source, display)
    if data is None:
        raise JobError("the job file is empty", file=display, hint="see: txsend init DIR")
    if not isinstance(data, dict):
        raise JobError(
            f"expected a mapping of keys (from:, subject:, ...), got {describe_value(data)}",
            file=display,
            line=1,
        )
    root = _Map(display, data)
    # Imported here: jobcontent builds on this module's helpers.
    from txsend.job.content import CONTENT_KEYS, load_content

    root.check_keys(_TOP_KEYS | CONTENT_KEYS)

    name = _job_name(root)
    from_addr = root.opt_str("from")
    if from_addr is not None:
        _check_address(root, "from", from_addr, single=True)
    elif overrides.from_addr is None:
        raise root.missing("from", hint='e.g. from: "Acme <noreply@acme.example>", or pass --from')
    reply_to = root.opt_str("reply_to")
    if reply_to is not None:
        _check_address(root, "reply_to", reply_to, single=False)

    subject_src = root.opt_str("subject")
    subject = (
        Template(subject_src, origin=f"{display}:{root.line_of('subject')}")
        if subject_src is not None
        else None
    )
    if subject is None and overrides.subject is None:
        raise root.missing("subject", hint='e.g. subject: "Welcome, {{ first_name }}!"')
    text = _job_template(root, "text", base)
    html = _job_template(root, "html", base)
    content = load_content(root, base, has_body=text is not None or html is not None)
    if (
        text is None
        and html is None
        and content.markdown is None
        and overrides.text is None
        and overrides.html is None
    ):
        raise JobError(
            "a job needs a body: text, text_inline, html, html_inline or markdown",
            file=display,
            hint="e.g. text: templates/message.txt (relative to the job file)",
        )

    recipients = _job_recipients(root, base)
    headers = _job_headers(root)
    relays = _job_relays(root, base)
    delivery = _job_delivery(root)
    suppress = _job_suppress(root, base)
    max_size = 10 * 1024 * 1024
    if root.value("max_message_size") is not None:
        try:
            max_size = parse_size(root.value("max_message_size"))
        except ValueError as exc:
            raise root.error("max_message_size", str(exc)) from None
    journal_value = root.opt_str("journal")
    journal = None
    journal_url = None
    if journal_value is not None:
        if is_postgres(journal_value):
            journal_url = journal_value.strip()
            if urlsplit(journal_url).password is not None:
                raise ConfigError(
                    f"{root.where('journal')}: a password in the journal URL would be stored "
                    "in the job file",
                    hint="put it in TXSEND_PG_PASSWORD or a PGPASSFILE",
                )
        else:
            journal = _absolute(base / journal_value)

    return _finish(
        name=name or source.stem,
        source=source,
        from_addr=from_addr,
        subject=subject,
        recipients=recipients,
        journal=journal,
        text=text,
        html=html,
        reply_to=reply_to,
        headers=headers,
        relays=relays,
        delivery=delivery,
        max_message_size=max_size,
        suppress=suppress,
        overrides=overrides,
        env=env,
        content=content,
        journal_url=journal_url,
    )


def _load_list_job(
    path: Path, display: str, overrides: JobOverrides, env: Mapping[str, str]
) -> Job:
    missing = []
    if not overrides.from_addr:
        missing.append("--from")
    if not overrides.subject:
        missing.append("--subject")
    if overrides.text is None and overrides.html is None:
        missing.append("--text or --html")
    if missing:
        flags = missing[0] if len(missing) == 1 else ", ".join(missing[:-1]) + " and " + missing[-1]
        raise UsageError(
            f"a CSV-alone job needs {flags}",
            hint=f"e.g. txsend run {display} --from 'Acme <noreply@acme.example>' "
            "--subject 'Hello {{ first_name }}' --text message.txt",
        )
    source = _absolute(path)
    recipients = RecipientsSpec(file=source)
    if not is_jsonl(source):
        try:
            check_header(source, recipients)  # the address column must exist before sending
        except MissingColumn as exc:
            exc.hint = (
                "a CSV-alone job reads the addresses from the 'email' column; "
                "to use another column, write a job file with recipients.to"
            )
            raise
    return _finish(
        name=source.stem,
        source=source,
        from_addr=None,
        subject=None,
        recipients=recipients,
        journal=None,
        text=None,
        html=None,
        reply_to=None,
        headers={},
        relays=(),
        delivery=Delivery(),
        max_message_size=10 * 1024 * 1024,
        suppress=(),
        overrides=overrides,
        env=env,
    )


def default_journal(source: Path) -> Path:
    """Where a job's journal lives unless the job or --journal says otherwise."""
    return source.parent / f"{source.stem}.journal.db"


def _finish(
    *,
    name: str,
    source: Path,
    from_addr: str | None,
    subject: Template | None,
    recipients: RecipientsSpec,
    journal: Path | None,
    text: Template | None,
    html: Template | None,
    reply_to: str | None,
    headers: dict[str, str],
    relays: tuple[RelayConfig, ...],
    delivery: Delivery,
    max_message_size: int,
    suppress: tuple[Path, ...],
    overrides: JobOverrides,
    env: Mapping[str, str],
    content: Content | None = None,
    journal_url: str | None = None,
) -> Job:
    """Apply the command-line overrides and defaults that both kinds of job share."""
    recorded: dict[str, str] = {}
    if overrides.name is not None:
        if not overrides.name.strip():
            raise UsageError("--name must not be empty")
        name = recorded["name"] = overrides.name
    if overrides.from_addr is not None:
        problem = _address_problem(overrides.from_addr, single=True)
        if problem:
            raise UsageError(f"--from: {problem}")
        from_addr = recorded["from"] = overrides.from_addr
    if overrides.subject is not None:
        if not overrides.subject.strip():
            raise UsageError("--subject must not be empty")
        subject = Template(overrides.subject, origin="--subject")
        recorded["subject"] = overrides.subject
    if overrides.text is not None:
        text = _flag_template(overrides.text, "--text")
        recorded["text"] = str(text.path)
    if overrides.html is not None:
        html = _flag_template(overrides.html, "--html")
        recorded["html"] = str(html.path)
    if overrides.relays:
        relays = tuple(
            _flag_relay(url.strip(), "--relay")
            for given in overrides.relays
            for url in given.split(",")
            if url.strip()
        )
        recorded["relay"] = ",".join(overrides.relays)
    elif not relays and env.get("TXSEND_RELAY", "").strip():
        relays = tuple(
            _flag_relay(url.strip(), "TXSEND_RELAY")
            for url in env["TXSEND_RELAY"].split(",")
            if url.strip()
        )
    if overrides.abort_on_error_rate is not None:
        rate = float(overrides.abort_on_error_rate)
        problem = _fraction_problem(rate)
        if problem:
            raise UsageError(f"--abort-on-error-rate {problem}", hint="e.g. 0.2 for 20%")
        min_messages = delivery.abort_on.min_messages if delivery.abort_on is not None else 100
        delivery = replace(delivery, abort_on=AbortPolicy(rate, min_messages))
        recorded["abort_on_error_rate"] = repr(rate)
    if overrides.journal_url is not None:
        journal_url = overrides.journal_url
    elif overrides.journal is not None:
        journal = _absolute(overrides.journal)
        journal_url = None
    if journal is None:
        journal = default_journal(source)
    # Both are guaranteed by the callers' required-key checks; this narrows the types.
    assert from_addr is not None and subject is not None
    return Job(
        name=name,
        source=source,
        base_dir=source.parent,
        from_addr=from_addr,
        subject=subject,
        recipients=recipients,
        journal=journal,
        text=text,
        html=html,
        reply_to=reply_to,
        headers=headers,
        relays=relays,
        delivery=delivery,
        max_message_size=max_message_size,
        suppress=suppress,
        overrides=recorded,
        content=content or Content(),
        journal_url=journal_url,
    )


def _flag_template(path: Path, flag: str) -> Template:
    resolved = _absolute(path)
    if not resolved.is_file():
        raise MissingInputError(f"{flag}: template file not found: {path}")
    return Template(_read_text(resolved, str(path)), origin=str(path), path=resolved)


def _flag_relay(url: str, flag: str) -> RelayConfig:
    try:
        return parse_relay_url(url)
    except ConfigError as exc:
        raise ConfigError(f"{flag}: {exc.message}", hint=exc.hint) from None


def _job_name(root: _Map) -> str | None:
    value = root.value("name")
    # `name: 2026` or `name: 2026-11-01` are numbers/dates to YAML; they are fine as names.
    if isinstance(value, (int, datetime.date)) and not isinstance(value, bool):
        return str(value)
    name = root.opt_str("name")
    return name.strip() if name is not None else None


def _check_address(section: _Map, key: str, value: str, *, single: bool) -> None:
    problem = _address_problem(value, single=single)
    if problem:
        raise section.error(key, problem)


def _address_problem(value: str, *, single: bool) -> str | None:
    if "{{" in value or "{%" in value:
        return "must be a fixed address, not a template"
    pairs = getaddresses([value])
    if not pairs or any("@" not in addr for _, addr in pairs):
        return f"not an email address: {value!r} (write e.g. 'Acme <noreply@acme.example>')"
    if single and len(pairs) != 1:
        return f"expected one address, got {len(pairs)}"
    return None


def _job_template(root: _Map, key: str, base: Path) -> Template | None:
    inline_key = f"{key}_inline"
    if root.value(key) is not None and root.value(inline_key) is not None:
        raise root.error(inline_key, f"set either {key} or {inline_key}, not both")
    inline = root.opt_str(inline_key)
    if inline is not None:
        return Template(inline, origin=f"{root.display}:{root.line_of(inline_key)}")
    relative = root.opt_str(key)
    if relative is None:
        return None
    resolved = _absolute(base / relative)
    if not resolved.exists():
        raise MissingInputError(
            f"{root.where(key)}: template file not found: {relative}",
            hint=f"looked for {resolved}; paths are relative to the job file's folder",
        )
    if not resolved.is_file():
        raise root.error(key, f"{relative} is not a file")
    return Template(_read_text(resolved, relative), origin=relative, path=resolved)


def _job_recipients(root: _Map, base: Path) -> RecipientsSpec:
    hint = "e.g. recipients: {file: recipients.csv, to: email}"
    value = root.value("recipients")
    if isinstance(value, str):  # shorthand: `recipients: list.csv`
        section = _Map(root.display, {"file": value}, "recipients", root.line_of("recipients"))
    else:
        maybe = root.opt_map("recipients")
        if maybe is None:
            raise root.missing("recipients", hint=hint)
        section = maybe
        section.check_keys(_RECIPIENTS_KEYS)
    relative = section.req_str("file", hint=hint)
    resolved = _absolute(base / relative)
    if not resolved.exists():
        raise MissingInputError(
            f"{section.where('file')}: recipients file not found: {relative}",
            hint=f"looked for {resolved}; paths are relative to the job file's folder",
        )
    if not resolved.is_file():
        raise section.error("file", f"{relative} is not a file")
    spec = RecipientsSpec(
        file=resolved,
        to=(section.opt_str("to") or "email").strip(),
        name=section.opt_str("name"),
        key=(key.strip() if (key := section.opt_str("key")) is not None else None),
    )
    if not is_jsonl(resolved):
        # A missing address column is a job problem: find it now, not halfway through a run.
        try:
            check_header(resolved, spec)
        except MissingColumn as exc:
            line = section.line_of(exc.role)
            exc.hint = f"set recipients.{exc.role} to one of the columns ({root.display}:{line})"
            raise
    return spec


def _job_headers(root: _Map) -> dict[str, str]:
    section = root.opt_map("headers")
    if section is None:
        return {}
    headers: dict[str, str] = {}
    seen: dict[str, str] = {}
    for key, value in section.data.items():
        if not _FIELD_NAME.match(key):
            raise section.error(
                key, "not a valid header name (printable ASCII, no spaces or colons)"
            )
        lower = key.lower()
        if lower in _RESERVED_HEADERS:
            raise section.error(key, "cannot be set here", hint=_RESERVED_HEADERS[lower])
        if lower.startswith("content-"):
            raise section.error(key, "cannot be set here", hint="txsend builds the MIME parts")
        if lower in seen:
            raise section.error(key, f"given twice (also as {seen[lower]})")
        seen[lower] = key
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise section.error(key, f"expected a string, got {describe_value(value)}")
        text = str(value)
        if "\r" in text or "\n" in text:
            raise section.error(key, "a header value must be one line")
        headers[key] = text
    return headers


def _job_relays(root: _Map, base: Path) -> tuple[RelayConfig, ...]:
    relays = []
    for index, (item, line) in enumerate(root.opt_list("relays")):
        where = f"relays[{index}]"
        if isinstance(item, str):  # shorthand: `- smtp://host:587`
            item = {"url": item}
        if not isinstance(item, dict):
            raise JobError(
                f"{where}: expected a mapping with url:, got {describe_value(item)}",
                file=root.display,
                line=line,
            )
        section = _Map(root.display, item, where, line)
        section.check_keys(_RELAY_OPTIONS | {"url"})
        url = section.req_str("url", hint="e.g. url: smtp://user@smtp.example.com:587")
        options: dict[str, Any] = {}
        for key in sorted(_RELAY_OPTIONS):
            value = section.value(key)
            if value is None:
                continue
            try:
                options[key] = _relay_option(key, value)
            except ValueError as exc:
                raise section.error(key, str(exc)) from None
            if key in ("password_file", "ca_file"):
                options[key] = _absolute(base / options[key])
        try:
            relays.append(parse_relay_url(url, **options))
        except ConfigError as exc:
            raise ConfigError(f"{section.where('url')}: {exc.message}", hint=exc.hint) from None
    return tuple(relays)


def _job_delivery(root: _Map) -> Delivery:
    section = root.opt_map("delivery")
    if section is None:
        return Delivery()
    section.check_keys(_DELIVERY_KEYS)
    on_unknown = section.opt_str("on_unknown") or "resend"
    if on_unknown not in _ON_UNKNOWN:
        raise section.error("on_unknown", f"expected resend or skip, got {on_unknown!r}")
    timeouts = Timeouts()
    section_t = section.opt_map("timeouts")
    if section_t is not None:
        section_t.check_keys(_TIMEOUT_KEYS)
        values = {key: section_t.opt_duration(key) for key in _TIMEOUT_KEYS}
        timeouts = Timeouts(**{key: value for key, value in values.items() if value is not None})
    give_up = section.opt_duration("give_up_unreachable")
    return Delivery(
        on_unknown=on_unknown,
        timeouts=timeouts,
        retry=_job_retry(section),
        abort_on=_job_abort_on(section),
        give_up_unreachable=give_up if give_up is not None else Delivery.give_up_unreachable,
    )


def _job_retry(delivery: _Map) -> RetryPolicy:
    """delivery.retry; keys left out keep RetryPolicy's defaults."""
    section = delivery.opt_map("retry")
    if section is None:
        return RetryPolicy()
    section.check_keys(_RETRY_KEYS)
    default = RetryPolicy()
    attempts = section.opt_int("attempts", 1)
    backoff = section.opt_duration("backoff")
    max_backoff = section.opt_duration("max_backoff")
    max_age = section.opt_duration("max_age")
    backoff = default.backoff if backoff is None else backoff
    if max_backoff is None:
        # A long backoff alone raises the ceiling rather than being cut down by the default.
        max_backoff = max(default.max_backoff, backoff)
    elif max_backoff < backoff:
        raise section.error(
            "max_backoff",
            f"must be at least backoff ({_seconds(backoff)}), got {_seconds(max_backoff)}",
        )
    return RetryPolicy(
        attempts=default.attempts if attempts is None else attempts,
        backoff=backoff,
        max_backoff=max_backoff,
        max_age=default.max_age if max_age is None else max_age,
    )


def _job_abort_on(delivery: _Map) -> AbortPolicy | None:
    """delivery.abort_on; None (never abort) when absent."""
    section = delivery.opt_map("abort_on")
    if section is None:
        return None
    section.check_keys(_ABORT_KEYS)
    error_rate = section.opt_fraction("error_rate")
    if error_rate is None:
        raise section.missing(
            "error_rate", hint="e.g. abort_on: {error_rate: 0.2, min_messages: 100}"
        )
    min_messages = section.opt_int("min_messages", 1)
    if min_messages is None:
        return AbortPolicy(error_rate=error_rate)
    return AbortPolicy(error_rate=error_rate, min_messages=min_messages)


def _seconds(value: float) -> str:
    return f"{value:g}s"


def _job_suppress(root: _Map, base: Path) -> tuple[Path, ...]:
    """suppress: one file or a list of files of addresses never to send to."""
    value = root.value("suppress")
    if isinstance(value, str):
        items: list[tuple[Any, int | None]] = [(value, root.line_of("suppress"))]
        names = ["suppress"]
    else:
        items = root.opt_list("suppress")
        names = [f"suppress[{index}]" for index in range(len(items))]
    files: list[Path] = []
    for (item, line), name in zip(items, names, strict=True):
        if isinstance(item, bool) or not isinstance(item, str) or not item.strip():
            raise JobError(
                f"{name}: expected a file path, got {describe_value(item)}",
                file=root.display,
                line=line,
                hint="e.g. suppress: [suppressed.csv]",
            )
        resolved = _absolute(base / item.strip())
        where = f"{root.display}:{line}: {name}" if line else f"{root.display}: {name}"
        if not resolved.exists():
            raise MissingInputError(
                f"{where}: suppression file not found: {item.strip()}",
                hint=f"looked for {resolved}; paths are relative to the job file's folder",
            )
        if not resolved.is_file():
            raise JobError(f"{name}: {item.strip()} is not a file", file=root.display, line=line)
        if resolved not in files:
            files.append(resolved)
    return tuple(files)


def _absolute(path: Path) -> Path:
    # abspath, not resolve(): a symlinked job folder keeps its own relative paths.
    return Path(os.path.abspath(path))
