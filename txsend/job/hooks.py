"""What a job asks a run to watch and to run (`alerts:`, `on_finish_command:`,
`hook_timeout:`), as values: light, so that `txsend.job.spec` can hold them without
loading the job file reader. `txsend.job.alerts` reads and checks the keys.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DEFAULT_HOOK_TIMEOUT", "KINDS", "AlertRule", "Alerts", "Hooks"]

DEFAULT_WINDOW = 300.0
DEFAULT_MIN_MESSAGES = 20
DEFAULT_HOOK_TIMEOUT = 30.0
MAX_HOOK_TIMEOUT = 86400.0  # the end of a run waits this long at most for a command
MIN_WINDOW = 1.0

# name -> (the direction it fires in, the unit of its threshold, an example)
KINDS: dict[str, tuple[str, str, str]] = {
    "error_rate": ("above", "ratio", "{above: 5%, window: 5m}"),
    "p95_transaction_time": ("above", "seconds", "{above: 2s, window: 5m}"),
    "throughput": ("below", "per_second", "{below: 20/s, window: 5m}"),
    "deferred_share": ("above", "ratio", "{above: 20%, window: 15m}"),
}


@dataclass(frozen=True)
class AlertRule:
    """One threshold: `name` fires when its value over `window` seconds crosses it."""

    name: str  # one of KINDS
    threshold: float  # a ratio (0-1), seconds, or messages per second (see `unit`)
    window: float  # seconds
    above: bool = True  # False: a floor (fires below the threshold)

    @property
    def unit(self) -> str:
        """ "ratio", "seconds" or "per_second"."""
        return KINDS[self.name][1]

    @property
    def condition(self) -> str:
        """ "above" or "below"."""
        return "above" if self.above else "below"

    def crossed(self, value: float) -> bool:
        """True when `value` is on the wrong side of the threshold."""
        return value > self.threshold if self.above else value < self.threshold


@dataclass(frozen=True)
class Alerts:
    """The job's `alerts:` section."""

    rules: tuple[AlertRule, ...] = ()
    min_messages: int = DEFAULT_MIN_MESSAGES
    command: str | None = None


@dataclass(frozen=True)
class Hooks:
    """What a run watches and the commands it runs: alerts, and one at the end."""

    alerts: Alerts | None = None
    on_finish_command: str | None = None
    timeout: float = DEFAULT_HOOK_TIMEOUT  # seconds either command may run

    @property
    def any(self) -> bool:
        return self.alerts is not None or self.on_finish_command is not None
