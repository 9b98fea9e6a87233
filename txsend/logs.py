"""Events of a run as log lines on stderr: text for people, one JSON object per line for machines.

Library code calls `event(level, name, message, **fields)`; nothing is written until the
CLI calls `configure`. Events and their levels:

    info     run_start, run_end, relay_up, circuit_closed, metrics_serving, command_output,
             command_done
    warning  relay_down, circuit_opened, relay_given_up, rate_spent, interrupted, alert,
             command_failed
    error    abort
    debug    message (one per outcome: key, address, state, code, reply, relay)

With `--log-format json` the CLI writes everything else it has to say on stderr as events
too (`output_event`, whatever the level): ingest, recovered, warning, summary, verdict
and error. The format chosen is kept in a small module state (`use_format`, `json_mode`)
that outlives `configure`'s undo, so that the error a command ends with is JSON as well.

Fields hold addresses, keys and relay replies, never a password, an AUTH string or a
key: nothing that carries a secret is ever passed to `event`.
"""

from __future__ import annotations

import datetime
import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

LOGGER = logging.getLogger("txsend")
LEVELS = ("debug", "info", "warning", "error")
FORMATS = ("text", "json")


_state = {"json": False}


def use_format(fmt: str) -> None:
    """Remember the command's --log-format (set before anything can fail)."""
    _state["json"] = fmt == "json"


def json_mode() -> bool:
    """True when the current command writes JSON lines on stderr."""
    return _state["json"]


def reset() -> None:
    """Back to text (the start and end of each CLI invocation)."""
    _state["json"] = False


def json_line(
    level: str, name: str, message: str, fields: Mapping[str, Any], created: float | None = None
) -> str:
    """One event as one JSON object on one line (newlines in values are escaped)."""
    when = datetime.datetime.fromtimestamp(
        time.time() if created is None else created, datetime.UTC
    )
    data: dict[str, Any] = {
        "ts": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "level": level,
        "event": name,
        "message": message,
    }
    for key, value in fields.items():
        data.setdefault(key, value)
    return json.dumps(data, ensure_ascii=False, default=str)


def output_event(
    write: Callable[[str], None], level: str, name: str, message: str, /, **fields: Any
) -> None:
    """Write one JSON event whatever --log-level says: what the text mode always prints."""
    write(json_line(level, name, message, fields))


def event(level: int, name: str, message: str, /, **fields: Any) -> None:
    """Log one event (cheap when its level is off)."""
    if LOGGER.isEnabledFor(level):
        LOGGER.log(level, message, extra={"event": name, "fields": fields})


class JsonFormatter(logging.Formatter):
    """{"ts": ..., "level": ..., "event": ..., "message": ..., field: value, ...}."""

    def format(self, record: logging.LogRecord) -> str:
        fields = dict(getattr(record, "fields", {}))
        if not hasattr(record, "event"):  # another library's record (asyncio, ...)
            fields.setdefault("logger", record.name)
        if record.exc_info:
            fields.setdefault("traceback", self.formatException(record.exc_info))
        return json_line(
            record.levelname.lower(),
            getattr(record, "event", "log"),
            record.getMessage(),
            fields,
            record.created,
        )


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
    """Send txsend's events at `level` and above to `write`, one line each; returns undo.

    JSON also takes the warnings other libraries would log (asyncio's "Task exception was
    never retrieved", Python warnings), which would otherwise reach stderr as plain text.
    The undo leaves `json_mode()` as it is: the CLI still needs it for a final error.
    """
    use_format(fmt)
    handler = _LineHandler(write)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    previous = (LOGGER.level, LOGGER.propagate)
    LOGGER.addHandler(handler)
    LOGGER.setLevel(level.upper())
    LOGGER.propagate = False
    foreign: _LineHandler | None = None
    if fmt == "json":
        foreign = _LineHandler(write)
        foreign.setFormatter(JsonFormatter())
        foreign.setLevel(logging.WARNING)
        logging.getLogger().addHandler(foreign)
    # Python warnings through logging too, unless someone (a test runner) already does
    capture = fmt == "json" and getattr(logging, "_warnings_showwarning", None) is None
    if capture:
        logging.captureWarnings(True)

    def undo() -> None:
        LOGGER.removeHandler(handler)
        LOGGER.setLevel(previous[0])
        LOGGER.propagate = previous[1]
        if foreign is not None:
            logging.getLogger().removeHandler(foreign)
        if capture:
            logging.captureWarnings(False)

    return undo
