"""The job's `alerts:`, `on_finish_command:` and `hook_timeout:` keys, read and checked.

    alerts:
      error_rate: {above: 5%, window: 5m}          # refused or failed transactions
      p95_transaction_time: {above: 2s, window: 5m}
      throughput: {below: 20/s, window: 5m}         # a floor: accepted messages per second
      deferred_share: {above: 20%, window: 15m}
      min_messages: 20                              # no share or p95 judged on fewer
      command: 'curl -fsS -d "$TXSEND_ALERT_TEXT" https://hooks.example/...'
    on_finish_command: './notify.sh'
    hook_timeout: 30s                               # both commands are killed after this

Every value is checked here with the file:line of its key (exit 65); the evaluator is
`txsend.reporting.alerts`, the commands are run by `txsend.app.hooks`.
"""

from __future__ import annotations

from txsend.errors import JobError
from txsend.job.hooks import (
    DEFAULT_HOOK_TIMEOUT,
    DEFAULT_MIN_MESSAGES,
    DEFAULT_WINDOW,
    KINDS,
    MAX_HOOK_TIMEOUT,
    MIN_WINDOW,
    AlertRule,
    Alerts,
    Hooks,
)
from txsend.job.yamlmap import Section
from txsend.units import describe_value, parse_duration, parse_rate, parse_share

__all__ = ["DEFAULT_HOOK_TIMEOUT", "AlertRule", "Alerts", "Hooks", "load_hooks"]

_ALERT_KEYS = frozenset([*KINDS, "min_messages", "command"])
HOOK_KEYS = frozenset({"alerts", "on_finish_command", "hook_timeout"})  # top-level keys


def load_hooks(root: Section) -> Hooks:
    """The top-level `alerts`, `on_finish_command` and `hook_timeout` of a job file."""
    timeout = root.opt_duration("hook_timeout")
    if timeout is not None and timeout > MAX_HOOK_TIMEOUT:
        raise root.error(
            "hook_timeout",
            f"at most 1d, got {timeout:g}s",
            hint="a command's limit is also how long it may hold up the end of the run",
        )
    return Hooks(
        alerts=_alerts(root),
        on_finish_command=_command(root, "on_finish_command"),
        timeout=DEFAULT_HOOK_TIMEOUT if timeout is None else timeout,
    )


def _alerts(root: Section) -> Alerts | None:
    section = root.opt_map("alerts")
    if section is None:
        return None
    section.check_keys(_ALERT_KEYS)
    rules = tuple(rule for name in KINDS if (rule := _rule(section, name)) is not None)
    command = _command(section, "command")
    if not rules:
        raise JobError(
            "alerts: no threshold set",
            file=section.display,
            line=section.line,
            hint="set at least one of "
            + ", ".join(KINDS)
            + ", e.g. error_rate: "
            + KINDS["error_rate"][2],
        )
    min_messages = section.opt_int("min_messages", 1)
    return Alerts(
        rules=rules,
        min_messages=DEFAULT_MIN_MESSAGES if min_messages is None else min_messages,
        command=command,
    )


def _rule(alerts: Section, name: str) -> AlertRule | None:
    direction, unit, example = KINDS[name]
    section = alerts.opt_map(name)
    if section is None:
        return None
    wrong = "below" if direction == "above" else "above"
    if section.value(wrong) is not None:
        raise section.error(
            wrong, f"{name} fires {direction} its threshold", hint=f"e.g. {name}: {example}"
        )
    section.check_keys({direction, "window"})
    if section.value(direction) is None:
        raise section.missing(direction, hint=f"e.g. {name}: {example}")
    threshold = _threshold(section, direction, unit)
    window = section.opt_duration("window")
    if window is not None and window < MIN_WINDOW:
        raise section.error("window", f"must be at least {MIN_WINDOW:g}s, got {window:g}s")
    return AlertRule(
        name=name,
        threshold=threshold,
        window=DEFAULT_WINDOW if window is None else window,
        above=direction == "above",
    )


def _threshold(section: Section, key: str, unit: str) -> float:
    value = section.value(key)
    try:
        if unit == "ratio":
            return parse_share(value)
        if unit == "seconds":
            return parse_duration(value)
        if not isinstance(value, str):
            raise ValueError(f"expected a rate like 20/s or 600/min, got {describe_value(value)}")
        return parse_rate(value).per_second
    except ValueError as exc:
        raise section.error(key, str(exc)) from None


def _command(section: Section, key: str) -> str | None:
    command = section.opt_str(key)
    if command is not None and "\x00" in command:
        raise section.error(key, "a command cannot hold a NUL character")
    return command
