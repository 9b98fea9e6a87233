"""Load a job: a YAML job file, or a CSV/JSONL list alone defined by flags.

Every problem in a job file is reported with ``file:line`` of the offending key (see
`txsend.job.yamlmap`); every problem in a recipients file with its row number. Nothing
here touches the network or prints. The sections with a module of their own: relays
(`txsend.job.relays`), the content keys (`txsend.job.content`) and the flags
(`txsend.job.overrides`).
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from txsend.addresses import mailbox_problem
from txsend.errors import ConfigError, JobError, MissingInputError, UsageError
from txsend.job.alerts import HOOK_KEYS, load_hooks
from txsend.job.content import CONTENT_KEYS, job_headers, load_content
from txsend.job.domains import job_domains
from txsend.job.location import JournalLocation, default_journal
from txsend.job.overrides import apply
from txsend.job.paths import absolute
from txsend.job.problems import JobProblems
from txsend.job.recipients import JSONL_SUFFIXES, MissingColumn, check_header, is_jsonl
from txsend.job.relays import job_relays
from txsend.job.scheduling import check_column_zone, job_schedule
from txsend.job.seeds import job_seeds
from txsend.job.spec import Job, JobOverrides
from txsend.job.warmup import Warmup, job_warmup, sender_domain
from txsend.job.yamlmap import Section, load_yaml, read_text
from txsend.models import (
    AbortPolicy,
    Delivery,
    RecipientsSpec,
    RetryPolicy,
    Template,
    Timeouts,
)
from txsend.units import describe_value, parse_size

__all__ = ["LIST_SUFFIXES", "load_job"]

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
        "domains",
        "delivery",
        "max_message_size",
        "suppress",
        "journal",
        "seeds",
        "seeds_every",
        "warmup",
        "schedule",
    ]
)
_RECIPIENTS_KEYS = frozenset({"file", "to", "name", "key", "timezone"})
_DELIVERY_KEYS = frozenset({"on_unknown", "timeouts", "retry", "abort_on", "give_up_unreachable"})
_RETRY_KEYS = ("attempts", "backoff", "max_backoff", "max_age")
_ABORT_KEYS = ("error_rate", "min_messages")
_TIMEOUT_KEYS = ("connect", "command", "data_end")
_ON_UNKNOWN = ("resend", "skip")
_SUPPRESS_KEYS = frozenset({"store", "files"})
DEFAULT_STORE = "default"  # suppress.store: true

# Catches two addresses in one cell, or "Name <addr>" where a bare address belongs.


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
    source = absolute(path)
    base = source.parent
    root = _job_root(source, display)
    # each part is read on its own: the first problem of every one is reported together
    problems = JobProblems()
    problems.take(lambda: root.check_keys(_TOP_KEYS | CONTENT_KEYS | HOOK_KEYS))
    name = problems.take(lambda: _job_name(root))
    from_addr = problems.take(lambda: _job_from(root, overrides))
    reply_to = problems.take(lambda: _job_reply_to(root))
    subject = problems.take(lambda: _job_subject(root, overrides))
    body = JobProblems()
    text = body.take(lambda: _job_template(root, "text", base))
    html = body.take(lambda: _job_template(root, "html", base))
    content = body.take(
        lambda: load_content(root, base, has_body=text is not None or html is not None)
    )
    if not body.failed:
        bodies = (text, html, content.markdown, overrides.text, overrides.html)
        if all(part is None for part in bodies):
            body.errors.append(
                JobError(
                    "a job needs a body: text, text_inline, html, html_inline or markdown",
                    file=display,
                    hint="e.g. text: templates/message.txt (relative to the job file)",
                )
            )
    problems.errors.extend(body.errors)
    recipients = problems.take(lambda: _job_recipients(root, base))
    headers = problems.take(lambda: job_headers(root))
    relays = problems.take(lambda: job_relays(root, base))
    domains = problems.take(lambda: job_domains(root))
    delivery = problems.take(lambda: _job_delivery(root))
    suppress, suppress_store = problems.take(lambda: _job_suppress(root, base)) or ((), None)
    max_size = problems.take(lambda: _job_max_size(root))
    journal = problems.take(lambda: _job_journal(root, base)) or JournalLocation(
        path=default_journal(source)
    )
    hooks = problems.take(lambda: load_hooks(root))
    seeds, seeds_every = problems.take(lambda: job_seeds(root)) or ((), None)
    warmup = problems.take(lambda: _job_warmup(root, from_addr))
    schedule = problems.take(lambda: job_schedule(root))
    problems.check()
    job = Job(
        name=name or source.stem,
        source=source,
        base_dir=base,
        # from and subject are required unless a flag gives them; `apply` puts those in
        from_addr=from_addr or overrides.from_addr or "",
        subject=subject or Template(overrides.subject or "", origin="--subject"),
        recipients=recipients,
        journal=journal,
        text=text,
        html=html,
        reply_to=reply_to,
        headers=headers,
        relays=relays,
        domains=domains,
        delivery=delivery,
        max_message_size=max_size,
        suppress=suppress,
        suppress_store=suppress_store,
        content=content,
        hooks=hooks,
        seeds=seeds,
        seeds_every=seeds_every,
        warmup=warmup,
        schedule=schedule,
    )
    return apply(job, overrides, env)


def _job_root(source: Path, display: str) -> Section:
    """The job file's top-level mapping, its keys checked."""
    data = load_yaml(source, display)
    if data is None:
        raise JobError("the job file is empty", file=display, hint="see: txsend init DIR")
    if not isinstance(data, dict):
        raise JobError(
            f"expected a mapping of keys (from:, subject:, ...), got {describe_value(data)}",
            file=display,
            line=1,
        )
    return Section(display, data)


def _job_from(root: Section, overrides: JobOverrides) -> str | None:
    """from: one address; required unless --from gives it."""
    from_addr = root.opt_str("from")
    if from_addr is not None:
        _check_address(root, "from", from_addr, single=True)
    elif overrides.from_addr is None:
        raise root.missing("from", hint='e.g. from: "Acme <noreply@acme.example>", or pass --from')
    return from_addr


def _job_reply_to(root: Section) -> str | None:
    """reply_to: one address or more."""
    reply_to = root.opt_str("reply_to")
    if reply_to is not None:
        _check_address(root, "reply_to", reply_to, single=False)
    return reply_to


def _job_warmup(root: Section, from_addr: str | None) -> Warmup | None:
    """warmup:, which counts by the From address's domain."""
    warmup = job_warmup(root)
    if warmup is not None and from_addr is not None and sender_domain(from_addr) is None:
        raise root.error("warmup", "a warm-up needs a From address with a domain to count by")
    return warmup


def _job_subject(root: Section, overrides: JobOverrides) -> Template | None:
    """subject: a template; required unless --subject gives it."""
    source = root.opt_str("subject")
    if source is not None:
        return Template(source, origin=f"{root.display}:{root.line_of('subject')}")
    if overrides.subject is None:
        raise root.missing("subject", hint='e.g. subject: "Welcome, {{ first_name }}!"')
    return None


def _job_max_size(root: Section) -> int:
    """max_message_size: a size like 10MB (the default)."""
    if root.value("max_message_size") is None:
        return 10 * 1024 * 1024
    try:
        return parse_size(root.value("max_message_size"))
    except ValueError as exc:
        raise root.error("max_message_size", str(exc)) from None


def _job_journal(root: Section, base: Path) -> JournalLocation | None:
    """journal: a file (relative to the job's folder) or a postgresql:// URL."""
    value = root.opt_str("journal")
    if value is None:
        return None
    location = JournalLocation.parse(value, base)
    if location.url is not None and urlsplit(location.url).password is not None:
        raise ConfigError(
            f"{root.where('journal')}: a password in the journal URL would be stored "
            "in the job file",
            hint="put it in TXSEND_PG_PASSWORD or a PGPASSFILE",
        )
    return location


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
    source = absolute(path)
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
    assert overrides.from_addr is not None and overrides.subject is not None  # checked above
    job = Job(
        name=source.stem,
        source=source,
        base_dir=source.parent,
        from_addr=overrides.from_addr,
        subject=Template(overrides.subject, origin="--subject"),
        recipients=recipients,
        journal=JournalLocation(path=default_journal(source)),
    )
    return apply(job, overrides, env)


def _job_name(root: Section) -> str | None:
    value = root.value("name")
    # `name: 2026` or `name: 2026-11-01` are numbers/dates to YAML; they are fine as names.
    if isinstance(value, (int, datetime.date)) and not isinstance(value, bool):
        return str(value)
    name = root.opt_str("name")
    return name.strip() if name is not None else None


def _job_template(root: Section, key: str, base: Path) -> Template | None:
    inline_key = f"{key}_inline"
    if root.value(key) is not None and root.value(inline_key) is not None:
        raise root.error(inline_key, f"set either {key} or {inline_key}, not both")
    inline = root.opt_str(inline_key)
    if inline is not None:
        return Template(inline, origin=f"{root.display}:{root.line_of(inline_key)}")
    relative = root.opt_str(key)
    if relative is None:
        return None
    resolved = absolute(base / relative)
    if not resolved.exists():
        raise MissingInputError(
            f"{root.where(key)}: template file not found: {relative}",
            hint=f"looked for {resolved}; paths are relative to the job file's folder",
        )
    if not resolved.is_file():
        raise root.error(key, f"{relative} is not a file")
    return Template(read_text(resolved, relative), origin=relative, path=resolved)


def _job_recipients(root: Section, base: Path) -> RecipientsSpec:
    hint = "e.g. recipients: {file: recipients.csv, to: email}"
    value = root.value("recipients")
    if isinstance(value, str):  # shorthand: `recipients: list.csv`
        section = Section(root.display, {"file": value}, "recipients", root.line_of("recipients"))
    else:
        maybe = root.opt_map("recipients")
        if maybe is None:
            raise root.missing("recipients", hint=hint)
        section = maybe
        section.check_keys(_RECIPIENTS_KEYS)
    relative = section.req_str("file", hint=hint)
    resolved = absolute(base / relative)
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
        timezone=check_column_zone(section),
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


def _job_delivery(root: Section) -> Delivery:
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


def _job_retry(delivery: Section) -> RetryPolicy:
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


def _job_abort_on(delivery: Section) -> AbortPolicy | None:
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


def _job_suppress(root: Section, base: Path) -> tuple[tuple[Path, ...], str | None]:
    """suppress: files of addresses never to send to, and the shared store to consult.

    One file, a list of files, or a mapping ``{store: PATH, files: [...]}`` whose
    `store` is a SQLite file (relative to the job's folder), a postgresql:// URL, or
    ``true`` for the default (the PostgreSQL journal's database, else a file in the
    user's state directory)."""
    section = root.opt_map("suppress") if isinstance(root.value("suppress"), dict) else None
    if section is not None:
        section.check_keys(_SUPPRESS_KEYS)
        return _suppress_files(section, "files", base), _suppress_store(section, base)
    return _suppress_files(root, "suppress", base), None


def _suppress_store(section: Section, base: Path) -> str | None:
    value = section.value("store")
    if value is None or value is False:
        return None
    if value is True or (isinstance(value, str) and value.strip() == DEFAULT_STORE):
        return DEFAULT_STORE
    if not isinstance(value, str) or not value.strip():
        raise section.error(
            "store",
            f"expected true, a file path or a postgresql:// URL, got {describe_value(value)}",
        )
    text = value.strip()
    if "://" in text:
        if not text.startswith(("postgresql://", "postgres://")):
            raise section.error("store", "a store URL is postgresql://host/db")
        return text
    return str(absolute(base / Path(text).expanduser()))


def _suppress_files(root: Section, key: str, base: Path) -> tuple[Path, ...]:
    value = root.value(key)
    if isinstance(value, str):
        items: list[tuple[Any, int | None]] = [(value, root.line_of(key))]
        names = [root.name(key)]
    else:
        items = root.opt_list(key)
        names = [f"{root.name(key)}[{index}]" for index in range(len(items))]
    files: list[Path] = []
    for (item, line), name in zip(items, names, strict=True):
        if isinstance(item, bool) or not isinstance(item, str) or not item.strip():
            raise JobError(
                f"{name}: expected a file path, got {describe_value(item)}",
                file=root.display,
                line=line,
                hint="e.g. suppress: [suppressed.csv]",
            )
        resolved = absolute(base / item.strip())
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


def _check_address(section: Section, key: str, value: str, *, single: bool) -> None:
    problem = mailbox_problem(value, single=single)
    if problem:
        raise section.error(key, problem)
