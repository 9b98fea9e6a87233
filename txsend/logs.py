"""Events of a run as log lines on stderr: text for people, one JSON object per line for machines.

Library code calls `event(level, name, message, **fields)`; nothing is written until the
CLI calls `configure`. Events and their levels:

    info     run_start, run_end, relay_up, circuit_closed, metrics_serving
    warning  relay_down, circuit_opened, relay_given_up, rate_spent, interrupted
    error    abort
    debug    message (one per outcome: key, address, state, code, reply, relay)

Fields hold addresses, keys and relay replies, never a password, an AUTH string or a
key: nothing that carries a secret is ever passed to `event`.
"""

from __future__ import annotations

import datetime
import json
import logging
from collections.abc import Callable
from typing import Any

LOGGER = logging.getLogger("txsend")
LEVELS = ("debug", "info", "warning", "error")
FORMATS = ("text", "json")


def event(level: int, name: str, message: str, **fields: Any) -> None:
    """Log one event (cheap when its level is off)."""
    if LOGGER.isEnabledFor(level):
        LOGGER.log(level, message, extra={"event": name, "fields": fields})


class JsonFormatter(logging.Formatter):
    """{"ts": ..., "level": ..., "event": ..., "message": ..., field: value, ...}."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": datetime.datetime.fromtimestamp(record.created, datetime.UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "event": getattr(record, "event", "log"),
            "message": record.getMessage(),
        }
        for key, value in getattr(record, "fields", {}).items():
            data.setdefault(key, value)
        return json.dumps(data, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """`warning: relay smtp.acme.example:587 down: connection refused`."""

    def format(self, record: logging.LogRecord) -> str:
        return f"{record.levelname.lower()}: {record.getMessage()}"


class _LineHandler(logging.Handler):
    def __init__(self, write: Callable[[str], None]) -> None:
        super().__init__()
        self._write = write

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._write(self.format(record))
        except Exception:  # a log line must never stop a run
            self.handleError(record)


def configure(fmt: str, level: str, write: Callable[[str], None]) -> Callable[[], None]:
    """Send txsend's events at `level` and above to `write`, one line each; returns undo."""
    handler = _LineHandler(write)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    previous = (LOGGER.level, LOGGER.propagate)
    LOGGER.addHandler(handler)
    LOGGER.setLevel(level.upper())
    LOGGER.propagate = False

    def undo() -> None:
        LOGGER.removeHandler(handler)
        LOGGER.setLevel(previous[0])
        LOGGER.propagate = previous[1]

    return undo
