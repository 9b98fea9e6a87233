"""The sink's chaos model: what `txsend sink` does wrong on purpose.

`FaultRule` is one --fail rule (parsed from COMMAND:CODE[...]) and `Faults` the whole
configuration, checked before anything is bound. `Chaos` is their run-time state:
which rule answers which command, the message that gets its connection dropped, and
greylisting. It only decides; the SMTP side (`txsend.sink.server`) sends the replies.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Iterable
from dataclasses import dataclass

from txsend.errors import ConfigError
from txsend.sink.capture import SinkStats
from txsend.units import parse_duration

__all__ = ["FAULT_COMMANDS", "RULE_SYNTAX", "Chaos", "FaultRule", "Faults"]

FAULT_COMMANDS = ("connect", "ehlo", "mail", "rcpt", "data", "dot")
"""Where a --fail rule answers: the greeting, EHLO/HELO, MAIL, RCPT, DATA (instead of
354) or the final dot (instead of the 250 that accepts the message)."""

RULE_SYNTAX = (
    "COMMAND:CODE[:PROBABILITY | :every=N][:match=TEXT][:REPLY TEXT], where COMMAND is "
    "one of connect, ehlo, mail, rcpt, data, dot and CODE a 4xx or 5xx reply code; "
    "e.g. rcpt:451:0.3, dot:554:every=10, mail:421, rcpt:550:match=@bounce."
)

_FAULT_MARK = " (txsend sink fault)"
_DEFAULT_TEXTS = {
    421: "4.3.2 service not available, closing connection",
    450: "4.2.0 mailbox busy, try again later",
    451: "4.3.0 try again later",
    452: "4.3.1 insufficient system storage",
    454: "4.7.0 temporary authentication failure",
    550: "5.1.1 no such user",
    551: "5.1.6 user not local",
    552: "5.3.4 message too big",
    553: "5.1.3 mailbox name not allowed",
    554: "5.7.1 transaction failed",
}
_DEFAULT_TEXTS_BY_COMMAND = {
    ("connect", 554): "5.7.1 no SMTP service here",
    ("mail", 550): "5.7.1 sender rejected",
    ("mail", 553): "5.1.7 bad sender address syntax",
}


def _default_text(command: str, code: int) -> str:
    text = _DEFAULT_TEXTS_BY_COMMAND.get((command, code)) or _DEFAULT_TEXTS.get(code)
    if text is None:
        text = f"{code // 100}.0.0 {'temporary' if code < 500 else 'permanent'} failure"
    return text + _FAULT_MARK


def _bad_rule(spec: str, reason: str) -> ConfigError:
    return ConfigError(
        f"bad --fail rule {spec!r}: {reason}",
        hint=f"expected {RULE_SYNTAX}",
    )


@dataclass(frozen=True)
class FaultRule:
    """One --fail rule: answer `command` with `code` when the rule fires.

    It fires every `every`th time it is checked when `every` is set, else with
    `probability`. `match` (MAIL and RCPT only) restricts it to envelope addresses
    containing that text (case-insensitive); other addresses neither fire it nor count
    toward `every`. `text` follows the code in the reply; empty: a default with an
    enhanced status code, e.g. "451 4.3.0 try again later (txsend sink fault)".
    """

    command: str
    code: int
    probability: float = 1.0
    every: int = 0
    match: str = ""
    text: str = ""

    def __post_init__(self) -> None:
        spec = self.spec
        if self.command not in FAULT_COMMANDS:
            raise _bad_rule(spec, f"unknown command {self.command!r}")
        if isinstance(self.code, bool) or not 400 <= self.code <= 599:
            raise _bad_rule(spec, f"the code must be a 4xx or 5xx reply code, got {self.code}")
        if not (0 < self.probability <= 1):
            raise _bad_rule(spec, f"the probability must be in (0, 1], got {self.probability}")
        if self.every < 0 or (self.every and self.probability != 1):
            raise _bad_rule(spec, "give either a probability or every=N (N >= 1), not both")
        if self.match and self.command not in ("mail", "rcpt"):
            raise _bad_rule(spec, "match= applies to mail and rcpt rules only")
        if any(c in self.text for c in "\r\n\0"):
            raise _bad_rule(spec, "the reply text must be one line")

    @property
    def spec(self) -> str:
        """The rule in --fail syntax."""
        parts = [self.command, str(self.code)]
        if self.every:
            parts.append(f"every={self.every}")
        elif self.probability != 1:
            parts.append(f"{self.probability:g}")
        if self.match:
            parts.append(f"match={self.match}")
        if self.text:
            parts.append(self.text)
        return ":".join(parts)

    @property
    def label(self) -> str:
        """How the stats name it: "rcpt 451"."""
        return f"{self.command} {self.code}"

    @property
    def reply(self) -> str:
        return f"{self.code} {self.text or _default_text(self.command, self.code)}"

    @classmethod
    def parse(cls, spec: str) -> FaultRule:
        """Parse COMMAND:CODE[:PROBABILITY | :every=N][:match=TEXT][:REPLY TEXT].

        The fields after CODE may come in any order; the first one that is neither a
        number, every=N nor match=TEXT starts the reply text (which may contain colons).
        """
        fields = spec.strip().split(":")
        if len(fields) < 2:
            raise _bad_rule(spec, "missing the reply code")
        command = fields[0].strip().lower()
        if command not in FAULT_COMMANDS:
            raise _bad_rule(spec, f"unknown command {fields[0]!r}")
        code_text = fields[1].strip()
        if not (len(code_text) == 3 and code_text.isdigit()):
            raise _bad_rule(spec, f"{code_text!r} is not a 3-digit reply code")
        probability, every, match, rest = _parse_options(spec, fields[2:])
        return cls(
            command=command,
            code=int(code_text),
            probability=1.0 if probability is None else probability,
            every=every,
            match=match,
            text=":".join(rest).strip(),
        )


def _parse_options(spec: str, fields: list[str]) -> tuple[float | None, int, str, list[str]]:
    """The optional fields after CODE: (probability, every, match, the reply text's fields)."""
    probability: float | None = None
    every = 0
    match = ""
    rest = fields
    while rest:
        field_ = rest[0].strip()
        key, sep, value = field_.partition("=")
        if sep and key.lower() == "every":
            if every or probability is not None:
                raise _bad_rule(spec, "give one probability or one every=N")
            if not value.isdigit() or int(value) < 1:
                raise _bad_rule(spec, f"every= needs a whole number >= 1, got {value!r}")
            every = int(value)
        elif sep and key.lower() == "match":
            if match or not value:
                raise _bad_rule(spec, "give one non-empty match=TEXT")
            match = value
        elif _is_number(field_):
            if every or probability is not None:
                raise _bad_rule(spec, "give one probability or one every=N")
            probability = float(field_)
            if not (0 < probability <= 1):
                raise _bad_rule(spec, f"the probability must be in (0, 1], got {field_}")
        else:
            break
        rest = rest[1:]
    return probability, every, match, rest


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _seconds(option: str, value: str | float) -> float:
    """A duration for `option` (50ms, 1s, 0.2); 0 is allowed and means none."""
    try:
        if float(value) == 0:
            return 0.0
    except (TypeError, ValueError):
        pass
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise ConfigError(f"{option}: {exc}", hint="write e.g. 50ms, 1s, 0.2 or 2m") from None
    if not math.isfinite(seconds):
        raise ConfigError(f"{option}: {value!r} is not a finite duration")
    return seconds


@dataclass(frozen=True)
class Faults:
    """What the sink does wrong on purpose (all off by default).

    rules: --fail rules, checked in order for each command; the first that fires
        answers, and the rules after it do not see that command.
    seed: seeds the one random.Random that probability rules draw from (None: random);
        a rule with probability 1 draws nothing.
    disconnect_after: the Nth message overall (counted across connections, in the
        order their final dots arrive) is not answered: the connection is dropped
        right after its final dot and the message is not stored. Once per run.
    delay: seconds to wait before every reply to a final dot (accepted or fault).
    delay_command: seconds to wait before every other reply (greeting, EHLO, MAIL,
        RCPT, DATA's 354, RSET, NOOP, QUIT, ...).
    greylist: None, or seconds: the first RCPT of a (sender, recipient) pair gets
        "450 4.2.0 Greylisted"; a later RCPT of that pair passes once this much time
        has passed since the first (0: any later one), and from then on always.
    """

    rules: tuple[FaultRule, ...] = ()
    seed: int | None = None
    disconnect_after: int | None = None
    delay: float = 0.0
    delay_command: float = 0.0
    greylist: float | None = None

    def __post_init__(self) -> None:
        if self.disconnect_after is not None and self.disconnect_after < 1:
            raise ConfigError(f"--disconnect-after must be at least 1, got {self.disconnect_after}")
        for name, value in (
            ("--delay", self.delay),
            ("--delay-command", self.delay_command),
            ("--greylist", self.greylist),
        ):
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"{name} must be a duration >= 0, got {value!r}")

    @property
    def active(self) -> bool:
        return bool(
            self.rules
            or self.disconnect_after is not None
            or self.delay
            or self.delay_command
            or self.greylist is not None
        )

    @classmethod
    def from_options(
        cls,
        fail: Iterable[str] = (),
        *,
        seed: int | None = None,
        disconnect_after: int | None = None,
        delay: str | float | None = None,
        delay_command: str | float | None = None,
        greylist: str | float | None = None,
    ) -> Faults:
        """Build from command-line values; anything invalid raises ConfigError."""
        return cls(
            rules=tuple(FaultRule.parse(spec) for spec in fail),
            seed=seed,
            disconnect_after=disconnect_after,
            delay=_seconds("--delay", delay) if delay is not None else 0.0,
            delay_command=(
                _seconds("--delay-command", delay_command) if delay_command is not None else 0.0
            ),
            greylist=_seconds("--greylist", greylist) if greylist is not None else None,
        )


class Chaos:
    """The run-time state of fault injection (one per server; used on its loop only)."""

    def __init__(self, faults: Faults, stats: SinkStats) -> None:
        self.faults = faults
        self.stats = stats
        self.rng = random.Random(faults.seed)
        self.seen = [0] * len(faults.rules)
        self.by_command: dict[str, list[int]] = {}
        for i, rule in enumerate(faults.rules):
            self.by_command.setdefault(rule.command, []).append(i)
        self.messages = 0  # final dots seen, for disconnect_after
        self.first_try: dict[tuple[str, str], float] = {}  # greylisting
        self.counts: dict[str, int] | None = None
        if faults.rules or faults.disconnect_after is not None:
            self.counts = dict.fromkeys((rule.label for rule in faults.rules), 0)
            if faults.disconnect_after is not None:
                self.counts["disconnect"] = 0
        stats.faults = self.counts
        stats.greylisted = 0 if faults.greylist is not None else None

    def _count(self, label: str) -> None:
        assert self.counts is not None
        self.counts[label] += 1

    def fault(self, command: str, address: str | None = None) -> FaultRule | None:
        """The rule that answers this command, if one fires."""
        for i in self.by_command.get(command, ()):
            rule = self.faults.rules[i]
            if rule.match and (address is None or rule.match.lower() not in address.lower()):
                continue
            self.seen[i] += 1
            if rule.every:
                fires = self.seen[i] % rule.every == 0
            else:
                fires = rule.probability >= 1 or self.rng.random() < rule.probability
            if fires:
                self._count(rule.label)
                return rule
        return None

    def drop(self) -> bool:
        """Count a final dot; True if this message's connection is to be dropped."""
        self.messages += 1
        if self.messages == self.faults.disconnect_after:
            self._count("disconnect")
            return True
        return False

    def greylist(self, sender: str, recipient: str) -> str | None:
        """The 450 reply if greylisting holds this RCPT back, else None."""
        seconds = self.faults.greylist
        if seconds is None:
            return None
        key = (sender.lower(), recipient.lower())
        now = time.monotonic()
        first = self.first_try.get(key)
        if first is None:
            self.first_try[key] = now
        elif now - first >= seconds:
            return None
        assert self.stats.greylisted is not None
        self.stats.greylisted += 1
        if seconds:
            wait = f"{seconds:g} second" + ("" if seconds == 1 else "s")
            return f"450 4.2.0 Greylisted, try again in {wait}"
        return "450 4.2.0 Greylisted, try again later"
