"""What the HTML report and its charts write alike: escaping, number formats, state colours.

Every string from a report goes through `esc` where it is written, in SVG text and titles
too; reply texts come from remote servers and are treated as hostile.
"""

from __future__ import annotations

import html
import re

from txsend.reporting.schema import StateCounts

# Journal states in stacking and legend order, each with its one colour on every chart.
STATE_COLOURS: dict[str, str] = {
    "sent": "#2e7d32",
    "bounced": "#d32f2f",
    "failed": "#7f0000",
    "deferred": "#ffa000",
    "unknown": "#7b1fa2",
    "skipped": "#9e9e9e",
    "expired": "#795548",
    "pending": "#1565c0",
    "sending": "#64b5f6",
}
STATES = tuple(STATE_COLOURS)

DASH = "—"  # what the page shows for a value the report does not have

# C0 controls (but tab, LF, CR), DEL and lone surrogates: not valid in an HTML page and
# not encodable as UTF-8; a reply text decoded with surrogateescape may carry them.
_UNPRINTABLE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")


def esc(value: object) -> str:
    """HTML text or attribute value: quotes escaped, unprintable characters replaced."""
    text = value if isinstance(value, str) else str(value)
    return html.escape(_UNPRINTABLE.sub("\ufffd", text), quote=True)


def whole(count: float | None) -> int:
    """A count as the page shows it: a whole number, 0 when missing or negative."""
    return int(count) if count is not None and count > 0 else 0


def whole_counts(counts: StateCounts) -> dict[str, int]:
    """Rows per state as whole numbers, in the page's order (STATES)."""
    return {state: whole(counts[state]) for state in STATES}


def fmt_int(value: int) -> str:
    """A whole number with thousands separated: 19,890."""
    return f"{value:,}"


def fmt_num(value: float) -> str:
    """1 decimal (2 under 10), trailing zeros dropped, thousands separated: 482.8, 1,250."""
    text = f"{value:,.2f}" if abs(value) < 10 else f"{value:,.1f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def fmt_ms(value: float | None) -> str:
    """Milliseconds as "12.1 ms"; a dash when not measured."""
    return DASH if value is None else f"{fmt_num(value)} ms"


def plural(count: int, noun: str) -> str:
    """ "1 relay", "2 relays": the count with thousands separated and the noun agreeing."""
    return f"{count:,} {noun}" + ("" if count == 1 else "s")


def swatch(state: str) -> str:
    """A colour box for a known state; nothing for anything else (the name says it all)."""
    return f'<span class="sw s-{state}"></span>' if state in STATE_COLOURS else ""
