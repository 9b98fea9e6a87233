"""The job file's `domains:`: a pace and a connection cap per recipient domain.

```yaml
domains:
  gmail.com: {rate: 20/s, connections: 4}     # a domain: that domain exactly
  google:                                     # a name without a dot: a group
    match: [gmail.com, .googlemail.com]       # exact domains, or ".x" = any subdomain of x
    mx: [google.com]                          # optional: domains whose MX host is google.com
                                              # or ends in .google.com (".google.com" too)
    rate: 40/s
    connections: 8
```

A recipient's domain is matched in this order (`txsend.delivery.domains.DomainMatcher`):
a domain key, then a group's exact `match:` entry, then a group's `.suffix` entry (the
longest wins), then a group's `mx:` suffix. A domain listed in two groups, or two groups
sharing a suffix, is an error. Domains are compared as lower-case A-labels (IDNA).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from txsend.addresses import a_label
from txsend.job.yamlmap import Section
from txsend.units import Rate, describe_value, parse_rate

__all__ = ["DomainRule", "job_domains", "normal_domain"]

_DOMAIN_KEYS = frozenset(["rate", "connections"])
_HOST = re.compile(r"[a-z0-9_-]+(\.[a-z0-9_-]+)*")  # A-labels (an underscore is tolerated)
_GROUP_KEYS = frozenset(["rate", "connections", "match", "mx"])
MAX_CONNECTIONS = 1000
PACE_EXPECTED = "expected a pace like 20/s or 600/min (messages a second or a minute)"


@dataclass(frozen=True)
class DomainRule:
    """One entry of `domains:`: what it matches and the pace it sets."""

    name: str  # the key: a domain (A-label) or a group's name
    exact: tuple[str, ...] = ()  # recipient domains matched exactly
    suffixes: tuple[str, ...] = ()  # ".example.com": any subdomain of example.com
    mx: tuple[str, ...] = ()  # ".google.com": MX host google.com or *.google.com
    rate: Rate | None = None  # a pace (/s or /min)
    connections: int | None = None  # transactions in flight at once, all relays together

    @property
    def is_group(self) -> bool:
        return "." not in self.name


def normal_domain(domain: str) -> str:
    """A domain as it is compared: lower case, A-labels, no trailing dot."""
    domain = domain.strip().rstrip(".").lower()
    if domain.isascii():
        return domain
    return a_label(domain)


def job_domains(root: Section) -> tuple[DomainRule, ...]:
    """The job file's `domains:` (empty without one)."""
    section = root.opt_map("domains")
    if section is None:
        return ()
    rules: list[DomainRule] = []
    owners: dict[str, str] = {}  # an exact domain or a suffix: the group that lists it
    keys: dict[str, str] = {}  # a domain (A-label) or a group name in lower case: its key
    for key, value in section.data.items():
        if not isinstance(key, str) or not key.strip():
            raise section.error(str(key), "expected a domain or a group name")
        entry = section.opt_map(key)
        if entry is None:
            raise section.error(
                key,
                f"expected a mapping with rate: and/or connections:, got {describe_value(value)}",
                hint="e.g. gmail.com: {rate: 20/s, connections: 4}",
            )
        rule = _rule(section, key, entry)
        _check_unique(section, keys, key, rule)
        for pattern in (*rule.exact, *rule.suffixes) if rule.is_group else ():
            other = owners.setdefault(pattern, key)
            if other != key:
                raise entry.error(
                    "match",
                    f"{pattern} is listed by group {other!r} too",
                    hint="a recipient domain belongs to one group",
                )
        rules.append(rule)
    return tuple(rules)


def _check_unique(section: Section, keys: dict[str, str], key: str, rule: DomainRule) -> None:
    """Two keys for one domain (gmail.com and GMAIL.COM; bücher.example and its A-label
    xn--bcher-kva.example), or one group name twice in another case: which would win?"""
    same = rule.name.lower()
    first = keys.setdefault(same, key)
    if first == key:
        return
    what = "group" if rule.is_group else "domain"
    spelled = "" if rule.is_group or same in (key, first) else f" ({same})"
    raise section.error(
        key,
        f"the same {what}{spelled} as {first!r} on line {section.line_of(first)}",
        hint=f"keep one entry: {key!r} and {first!r} would overwrite each other",
    )


def _rule(section: Section, key: str, entry: Section) -> DomainRule:
    group = "." not in key
    entry.check_keys(_GROUP_KEYS if group else _DOMAIN_KEYS)
    rate = _rate(entry)
    connections = entry.opt_int("connections", 1)
    if connections is not None and connections > MAX_CONNECTIONS:
        raise entry.error("connections", f"must be at most {MAX_CONNECTIONS}, got {connections}")
    if rate is None and connections is None:
        raise entry.error(
            "rate", "sets neither rate: nor connections:", hint="e.g. {rate: 20/s, connections: 4}"
        )
    if not group:
        name = _domain(section, key, key)
        return DomainRule(name, exact=(name,), rate=rate, connections=connections)
    exact: list[str] = []
    suffixes: list[str] = []
    for pattern in _strings(entry, "match"):
        if pattern.startswith("."):
            suffixes.append("." + _domain(entry, "match", pattern[1:]))
        else:
            exact.append(_domain(entry, "match", pattern))
    mx = [_mx_suffix(entry, p) for p in _strings(entry, "mx")]
    if not exact and not suffixes and not mx:
        listed = "mx" if entry.value("mx") is not None and entry.value("match") is None else None
        raise entry.error(
            listed or "match",
            "a group needs match: (recipient domains) or mx: (MX host suffixes)",
            hint="e.g. match: [gmail.com, googlemail.com]; a key with a dot is a domain",
        )
    return DomainRule(
        key,
        exact=tuple(exact),
        suffixes=tuple(suffixes),
        mx=tuple(mx),
        rate=rate,
        connections=connections,
    )


def _rate(entry: Section) -> Rate | None:
    text = entry.value("rate")
    if text is None:
        return None
    try:
        rate = parse_rate(text)
    except ValueError as exc:
        # (the relay's forms, quotas among them, would be refused here: only a pace is named)
        if "must be positive" in str(exc):  # (it names the value)
            raise entry.error("rate", str(exc)) from None
        raise entry.error("rate", f"{PACE_EXPECTED}; got {describe_value(text)}") from None
    if rate.is_quota:
        # A domain's rate is a pace. An hourly figure spread evenly is rarely what was meant
        # (the relay's rate: reads /h as a quota), so it is refused rather than guessed.
        per_minute = rate.per_second * 60
        raise entry.error(
            "rate",
            f"a domain's rate is a pace: write it per second or per minute "
            f"(e.g. {per_minute:.3g}/min), not {text}",
            hint="hourly and daily quotas belong to a relay's rate:",
        )
    return rate


def _strings(entry: Section, key: str) -> list[str]:
    value = entry.value(key)
    if value is None:
        return []
    items = [value] if isinstance(value, str) else None
    if items is None:
        items = []
        for item, _line in entry.opt_list(key):
            if not isinstance(item, str) or not item.strip():
                raise entry.error(key, f"expected domains, got {describe_value(item)}")
            items.append(item)
    return items


def _mx_suffix(entry: Section, text: str) -> str:
    """An `mx:` entry as it is compared: ".google.com" for google.com and .google.com
    alike (the host google.com itself, or any host name ending in .google.com)."""
    if not text.strip(". "):
        raise entry.error(
            "mx",
            f"{text!r} is not an MX host suffix",
            hint="e.g. mx: [google.com] matches aspmx.l.google.com and google.com",
        )
    domain = _domain(entry, "mx", text[1:] if text.startswith(".") else text)
    if "." not in domain:
        raise entry.error(
            "mx",
            f"{text!r}: an MX suffix needs a dot: {domain}.com, not a single label",
            hint="e.g. mx: [google.com] matches aspmx.l.google.com and google.com",
        )
    return "." + domain


def _domain(section: Section, key: str, text: str) -> str:
    try:
        domain = normal_domain(text)
    except ValueError as exc:
        raise section.error(key, f"{text!r}: {exc}") from None
    labels = domain.split(".")
    if not domain or any(not label or len(label) > 63 for label in labels) or " " in domain:
        raise section.error(key, f"{text!r} is not a domain name")
    if not _HOST.fullmatch(domain):
        hint = None
        if "@" in domain:
            hint = f"write the domain alone: {domain.rpartition('@')[2] or 'gmail.com'}"
        raise section.error(
            key, f"{text!r} is not a domain name (letters, digits, - and . only)", hint=hint
        )
    return domain
