"""One self-contained HTML page for a run's report (`txsend run --report-html FILE`).

`render_html_report` turns the schema-1 report object (what `--json` prints) into an HTML5
document: the run's header, summary cards, four charts drawn here as inline SVG (throughput
over time, latency distribution, outcomes by relay, outcomes by reply code), the relay,
reply-code and problem tables, and print CSS. The page loads nothing: no script, stylesheet,
font or image from anywhere, and its Content-Security-Policy forbids them in case of a bug.

Every string taken from the report is escaped where it is written, in SVG text and titles
too; reply texts come from remote servers and are treated as hostile. The report is read
defensively: a missing or mistyped field shows as "—" and never raises, so the output of
`txsend report` (no "run"; "runs", "relays" and "reply_codes" at the top) renders as well.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from txsend.errors import ExitCode

# Journal states in stacking and legend order, each with its one colour on every chart.
STATE_COLOURS: dict[str, str] = {
    "sent": "#2e7d32",
    "bounced": "#d32f2f",
    "failed": "#7f0000",
    "deferred": "#ffa000",
    "unknown": "#7b1fa2",
    "skipped": "#9e9e9e",
    "pending": "#1565c0",
    "sending": "#64b5f6",
}
STATES = tuple(STATE_COLOURS)
CARD_STATES = ("sent", "bounced", "failed", "deferred", "unknown", "skipped")

EXIT_MEANINGS: dict[int, str] = {
    ExitCode.OK: "all sent",
    ExitCode.SOME_FAILED: "some bounced or failed",
    ExitCode.USAGE: "command-line usage error",
    ExitCode.DATA: "bad job file, template or data",
    ExitCode.NO_INPUT: "an input file does not exist",
    ExitCode.UNAVAILABLE: "no relay reachable",
    ExitCode.SOFTWARE: "internal error",
    ExitCode.TEMPFAIL: "temporary: deferred rows remain or the run was aborted",
    ExitCode.CONFIG: "configuration error",
    ExitCode.SIGINT: "interrupted (SIGINT)",
    ExitCode.SIGTERM: "interrupted (SIGTERM)",
}

# Reply-code classes, coloured like the journal state they usually lead to.
_CODE_CLASSES = (
    ("2", "2xx accepted", "sent"),
    ("4", "4xx temporary", "deferred"),
    ("5", "5xx permanent", "bounced"),
    ("", "no reply", "unknown"),
)

CHART_WIDTH = 900
LATENCY_BANDS_PER_DECADE = 10
DASH = "—"

# C0 controls (but tab, LF, CR), DEL and lone surrogates: not valid in an HTML page and
# not encodable as UTF-8; a reply text decoded with surrogateescape may carry them.
_UNPRINTABLE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")

_CSP = "default-src 'none'; style-src 'unsafe-inline'"

_CSS = """\
:root { --ink: #1d1d1f; --muted: #5f6368; --rule: #d9d9de; --panel: #f6f6f8; }
* { box-sizing: border-box; -webkit-print-color-adjust: exact; print-color-adjust: exact; }
body { margin: 0 auto; max-width: 1160px; padding: 24px; color: var(--ink);
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; }
h1 { font-size: 24px; margin: 0 0 4px; overflow-wrap: anywhere; }
h2 { font-size: 18px; margin: 28px 0 8px; border-bottom: 1px solid var(--rule); }
.subtitle { color: var(--muted); margin: 0 0 12px; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 2px 16px; margin: 0; }
dl.facts dt { color: var(--muted); }
dl.facts dd { margin: 0; overflow-wrap: anywhere; }
.warnings { background: #fff8e1; border-left: 4px solid #ffa000; padding: 8px 12px 8px 28px; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(130px, 1fr)); gap: 8px; }
.card { background: var(--panel); border-radius: 6px; padding: 8px 10px; }
.card .label { color: var(--muted); font-size: 12px; }
.card .value { font-size: 22px; font-weight: 600; font-variant-numeric: tabular-nums; }
.sw { display: inline-block; width: 10px; height: 10px; margin-right: 4px;
  border: 1px solid rgba(0, 0, 0, .25); vertical-align: baseline; }
.note { color: var(--muted); font-style: italic; }
figure { margin: 0; }
figcaption { color: var(--muted); font-size: 12px; }
ul.legend { list-style: none; padding: 0; margin: 4px 0; display: flex; flex-wrap: wrap;
  gap: 4px 14px; }
svg.chart { display: block; width: 100%; max-width: 900px; height: auto; }
svg.chart text { font-size: 11px; fill: var(--ink); }
svg.chart .tick { fill: var(--muted); }
svg.chart .grid { stroke: #e6e6ea; stroke-width: 1; }
svg.chart .axis { stroke: #888; stroke-width: 1; }
svg.chart .mark { stroke: var(--ink); stroke-width: 1.2; stroke-dasharray: 4 3; }
svg.chart .hit { fill: #000; fill-opacity: 0; }
svg.chart .hit:hover { fill-opacity: .07; }
table { border-collapse: collapse; width: 100%; margin: 8px 0; font-size: 13px; }
th, td { border-bottom: 1px solid var(--rule); padding: 3px 6px; text-align: left;
  vertical-align: top; overflow-wrap: anywhere; }
th { background: var(--panel); }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td ul { margin: 0; padding-left: 16px; }
code { background: var(--panel); padding: 1px 4px; border-radius: 3px; overflow-wrap: anywhere; }
footer { margin-top: 32px; color: var(--muted); font-size: 12px; }
@page { margin: 12mm; }
@media print {
  body { max-width: none; padding: 0; font-size: 11px; }
  section, figure, .card, tr { break-inside: avoid; }
  h2 { break-after: avoid; }
  svg.chart { max-width: 100%; }
}
"""


def render_html_report(report: Mapping[str, Any]) -> str:
    """A complete HTML5 document for one run's report."""
    run: Mapping[str, Any] | None = (
        report["run"] if isinstance(report.get("run"), Mapping) else None
    )
    # `txsend report` puts relays and reply codes over all runs at the top level.
    source = run if run is not None else report
    relays = _map(source.get("relays"))
    reply_codes = _seq(source.get("reply_codes"))
    state_css = "\n".join(
        f".s-{state} {{ background: {c}; }}" for state, c in STATE_COLOURS.items()
    )
    body = [
        _header(report, run),
        _summary(report, run),
        _runs_section(report),
        _throughput_section(run),
        _latency_section(run),
        _relays_section(relays),
        _reply_codes_section(reply_codes),
        _problems_section(_map(report.get("problems"))),
    ]
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en">',
            "<head>",
            '<meta charset="utf-8">',
            f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{_esc(_page_title(report))}</title>",
            f"<style>\n{_CSS}{state_css}\n</style>",
            "</head>",
            "<body>",
            *body,
            "<footer>Written by txsend from its schema-1 run report; this page loads nothing "
            "from the network.</footer>",
            "</body>",
            "</html>",
            "",
        ]
    )


# Reading the report: a wrong type counts as missing.


def _map(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _seq(value: object) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else []


def _num(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _count(value: object) -> int:
    number = _num(value)
    return int(number) if number is not None and number > 0 else 0


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _counts(value: object) -> dict[str, int]:
    """A state_counts object as {state: count}, known states only, in STATES order."""
    data = _map(value)
    return {state: _count(data.get(state)) for state in STATES}


# Writing: escaping and number formats.


def _esc(value: object) -> str:
    """HTML text or attribute value: quotes escaped, unprintable characters replaced."""
    text = value if isinstance(value, str) else str(value)
    return html.escape(_UNPRINTABLE.sub("\ufffd", text), quote=True)


def _fmt_int(value: int) -> str:
    return f"{value:,}"


def _fmt_num(value: float) -> str:
    """1 decimal (2 under 10), trailing zeros dropped, thousands separated: 482.8, 1,250."""
    text = f"{value:,.2f}" if abs(value) < 10 else f"{value:,.1f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def _plural(count: int, noun: str) -> str:
    return f"{count:,} {noun}" + ("" if count == 1 else "s")


def _fmt_ms(value: float | None) -> str:
    return DASH if value is None else f"{_fmt_num(value)} ms"


def _fmt_latency_edge(ms: float) -> str:
    """A latency axis value with 3 significant digits: 0.126 ms, 12.6 ms, 1.26 s."""
    return f"{ms / 1000:.3g} s" if ms >= 1000 else f"{ms:.3g} ms"


def _fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return DASH
    if seconds < 60:
        return f"{_fmt_num(seconds)} s"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours} h {minutes:02d} min {secs:02d} s" if hours else f"{minutes} min {secs:02d} s"


def _fmt_percent(fraction: float | None) -> str:
    return DASH if fraction is None else f"{fraction:.2%}"


def _fmt_exit(code: int | None) -> str:
    if code is None:
        return f"{DASH} (unfinished)"
    return f"{code} ({EXIT_MEANINGS.get(code, 'unexpected exit code')})"


def _c(value: float) -> str:
    """An SVG coordinate: one decimal is plenty and keeps large charts small."""
    text = f"{value:.1f}"
    return text[:-2] if text.endswith(".0") else text


def _percentiles(value: object) -> dict[str, float | None]:
    data = _map(value)
    return {key: _num(data.get(key)) for key in ("p50", "p95", "p99")}


def _parse_time(value: object) -> datetime | None:
    text = _text(value)
    if not text:
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


def _duration(started: object, ended: object) -> float | None:
    start, end = _parse_time(started), _parse_time(ended)
    if start is None or end is None or (start.tzinfo is None) != (end.tzinfo is None):
        return None
    return max((end - start).total_seconds(), 0.0)


def _unix_time(value: object) -> str:
    stamp = _num(value)
    if stamp is None:
        return DASH
    try:
        return datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, OSError, ValueError):
        return DASH


def _swatch(state: str) -> str:
    """A colour box for a known state; nothing for anything else (the name says it all)."""
    return f'<span class="sw s-{state}"></span>' if state in STATE_COLOURS else ""


def _legend(entries: Iterable[tuple[str, str]]) -> str:
    """(state for the colour, label) pairs as an HTML legend: the names carry the meaning."""
    items = "".join(f"<li>{_swatch(state)}{_esc(label)}</li>" for state, label in entries)
    return f'<ul class="legend">{items}</ul>'


def _table(headers: Sequence[str], rows: Iterable[Sequence[str]], numeric: set[int]) -> str:
    """A table; cells are HTML already escaped by the caller, numeric columns right-aligned."""

    def cell(tag: str, index: int, content: str) -> str:
        css = ' class="num"' if index in numeric else ""
        return f"<{tag}{css}>{content}</{tag}>"

    head = "".join(cell("th", i, _esc(h)) for i, h in enumerate(headers))
    body = "\n".join(
        "<tr>" + "".join(cell("td", i, c) for i, c in enumerate(row)) + "</tr>" for row in rows
    )
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table>"


def _section(section_id: str, heading: str, *parts: str) -> str:
    inner = "\n".join(part for part in parts if part)
    return f'<section id="{section_id}">\n<h2>{_esc(heading)}</h2>\n{inner}\n</section>'


def _note(text: str) -> str:
    return f'<p class="note">{_esc(text)}</p>'


# Header and summary.


def _page_title(report: Mapping[str, Any]) -> str:
    job = _text(report.get("job")) or "(unnamed job)"
    run_id = _num(report.get("run_id"))
    which = f"run {int(run_id)}" if run_id is not None else "all runs"
    return f"txsend {_text(report.get('command')) or 'report'}: {job}, {which}"


def _header(report: Mapping[str, Any], run: Mapping[str, Any] | None) -> str:
    run_id = _num(report.get("run_id"))
    seconds = _num(run.get("seconds")) if run is not None else None
    if seconds is None:
        seconds = _duration(report.get("started_at"), report.get("ended_at"))
    exit_code = _num(report.get("exit_code"))
    facts: list[tuple[str, str]] = [
        ("Run", str(int(run_id)) if run_id is not None else "all runs"),
        ("Command", _text(report.get("command")) or DASH),
        ("Started", _text(report.get("started_at")) or DASH),
        ("Ended", _text(report.get("ended_at")) or DASH),
        ("Duration", _fmt_duration(seconds)),
        ("Exit code", _fmt_exit(int(exit_code) if exit_code is not None else None)),
        ("Dry run", "yes (nothing was sent)" if report.get("dry_run") is True else "no"),
    ]
    if report.get("next_attempt_at") is not None:
        facts.append(("Next retry", _unix_time(report.get("next_attempt_at"))))
    if run is not None and _text(run.get("stop_reason")):
        facts.append(("Stopped", str(run.get("stop_reason"))))
    warnings = [str(w) for w in _seq(report.get("warnings"))]
    facts.append(("Warnings", str(len(warnings)) if warnings else "none"))
    rows = "\n".join(f"<dt>{_esc(k)}</dt><dd>{_esc(v)}</dd>" for k, v in facts)
    warning_list = ""
    if warnings:
        items = "\n".join(f"<li>{_esc(w)}</li>" for w in warnings)
        warning_list = f'<ul class="warnings">\n{items}\n</ul>'
    job = _text(report.get("job")) or "(unnamed job)"
    return (
        f"<header>\n<h1>{_esc(job)}</h1>\n"
        f'<p class="subtitle">{_esc(_page_title(report))}</p>\n'
        f'<dl class="facts">\n{rows}\n</dl>\n{warning_list}\n</header>'
    )


def _card(label: str, value: str, state: str | None = None) -> str:
    swatch = _swatch(state) if state else ""
    return (
        f'<div class="card"><div class="label">{swatch}{_esc(label)}</div>'
        f'<div class="value">{_esc(value)}</div></div>'
    )


def _summary(report: Mapping[str, Any], run: Mapping[str, Any] | None) -> str:
    counts = _counts(report.get("counts"))
    shown = [s for s in STATES if s in CARD_STATES or counts[s]]
    cards = [_card(state, _fmt_int(counts[state]), state) for state in shown]
    parts = [f'<div class="cards">\n{"".join(cards)}\n</div>']
    parts.append('<p class="note">Journal totals after the run.</p>')
    if run is not None:
        rate = _num(run.get("messages_per_second"))
        latency = _percentiles(run.get("latency_ms"))
        run_cards = [_card("messages/s", _fmt_num(rate) if rate is not None else DASH)]
        run_cards += [_card(f"{key} latency", _fmt_ms(v)) for key, v in latency.items()]
        parts.append(f'<div class="cards">\n{"".join(run_cards)}\n</div>')
        parts.append(_run_facts(run))
    return _section("summary", "Summary", *parts)


def _run_facts(run: Mapping[str, Any]) -> str:
    outcomes = _counts(run.get("outcomes"))
    done = ", ".join(f"{s} {_fmt_int(n)}" for s, n in outcomes.items() if n) or "none"
    errors = _map(run.get("errors"))
    error_text = ", ".join(
        f"{key} {_fmt_int(_count(errors.get(key)))}"
        for key in ("transient", "permanent", "unknown")
    )
    facts = [
        ("This run's outcomes", done),
        ("Rendered", _fmt_int(_count(run.get("rendered")))),
        ("Not sent", _fmt_int(_count(run.get("not_sent")))),
        ("Unknown from the previous run", _fmt_int(_count(run.get("unknown_from_previous_run")))),
        ("Retries", _fmt_int(_count(run.get("retries")))),
        ("Errors", error_text),
        ("Error rate", _fmt_percent(_num(run.get("error_rate")))),
        ("Queue depth at the end", _fmt_int(_count(run.get("queue_depth")))),
    ]
    rows = "\n".join(f"<dt>{_esc(k)}</dt><dd>{_esc(v)}</dd>" for k, v in facts)
    return f'<dl class="facts">\n{rows}\n</dl>'


def _runs_section(report: Mapping[str, Any]) -> str:
    if "runs" not in report:
        return ""
    rows = []
    for item in _seq(report.get("runs")):
        entry = _map(item)
        run_id, exit_code = _num(entry.get("run_id")), _num(entry.get("exit_code"))
        started, ended = entry.get("started_at"), entry.get("ended_at")
        rows.append(
            [
                _esc(int(run_id)) if run_id is not None else DASH,
                _esc(_text(entry.get("command")) or DASH),
                _esc(_text(started) or DASH),
                _esc(_text(ended) or DASH),
                _esc(_fmt_duration(_duration(started, ended))),
                _esc(_fmt_exit(int(exit_code) if exit_code is not None else None)),
            ]
        )
    if not rows:
        return _section("runs", "Runs", _note("No runs recorded in this journal."))
    headers = ["Run", "Command", "Started", "Ended", "Duration", "Exit code"]
    return _section("runs", "Runs", _table(headers, rows, {0, 4}))


# Chart scaffolding.


@dataclass(frozen=True)
class _Scale:
    """A linear map from the data interval [lo, hi] onto the pixel interval [start, end]."""

    lo: float
    hi: float
    start: float
    end: float

    def __call__(self, value: float) -> float:
        if self.hi == self.lo:
            return self.start
        return self.start + (value - self.lo) / (self.hi - self.lo) * (self.end - self.start)


def _nice_ticks(top: float, count: int = 5) -> list[float]:
    """0, step, 2 step, ... up to the first multiple of a 1-2-2.5-5 step at or above top."""
    if top <= 0:
        return [0.0, 1.0]
    raw = top / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw * (1 - 1e-9))
    steps = math.ceil(top / step - 1e-9)
    return [i * step for i in range(steps + 1)]


def _time_ticks(end: float) -> list[tuple[float, str]]:
    """Ticks for seconds from the start, labelled in s, min or h to suit the run's length."""
    unit, name = (3600.0, "h") if end > 3 * 3600 else (60.0, "min") if end > 300 else (1.0, "s")
    return [(v * unit, f"{v:g} {name}") for v in _nice_ticks(end / unit, 8)]


def _svg_open(chart_id: str, title: str, desc: str, height: int) -> str:
    return (
        f'<svg class="chart" id="{chart_id}" role="img" viewBox="0 0 {CHART_WIDTH} {height}" '
        f'width="{CHART_WIDTH}" height="{height}" aria-label="{_esc(title)}" '
        f'aria-describedby="{chart_id}-desc">'
        f"<title>{_esc(title)}</title>"
        f'<desc id="{chart_id}-desc">{_esc(desc)}</desc>'
    )


def _y_grid(
    y: _Scale, ticks: Iterable[float], left: float, right: float, label: Callable[[float], str]
) -> list[str]:
    out = []
    for value in ticks:
        at = _c(y(value))
        out.append(f'<line class="grid" x1="{_c(left)}" y1="{at}" x2="{_c(right)}" y2="{at}"/>')
        out.append(
            f'<text class="tick" x="{_c(left - 6)}" y="{at}" dy="0.32em" '
            f'text-anchor="end">{_esc(label(value))}</text>'
        )
    return out


def _x_axis(
    x: _Scale, ticks: Iterable[tuple[float, str]], top: float, bottom: float, caption: str
) -> list[str]:
    axis = f'x1="{_c(x.start)}" y1="{_c(bottom)}" x2="{_c(x.end)}" y2="{_c(bottom)}"'
    out = [f'<line class="axis" {axis}/>']
    for value, label in ticks:
        at = _c(x(value))
        out.append(f'<line class="grid" x1="{at}" y1="{_c(top)}" x2="{at}" y2="{_c(bottom)}"/>')
        out.append(
            f'<text class="tick" x="{at}" y="{_c(bottom + 14)}" '
            f'text-anchor="middle">{_esc(label)}</text>'
        )
    out.append(
        f'<text x="{_c((x.start + x.end) / 2)}" y="{_c(bottom + 32)}" '
        f'text-anchor="middle">{_esc(caption)}</text>'
    )
    return out


def _y_caption(text: str, top: float, bottom: float) -> str:
    middle = _c((top + bottom) / 2)
    return (
        f'<text x="14" y="{middle}" text-anchor="middle" '
        f'transform="rotate(-90 14 {middle})">{_esc(text)}</text>'
    )


def _figure(svg_parts: Sequence[str], legend: str, caption: str) -> str:
    svg = "\n".join([*svg_parts, "</svg>"])
    return f"<figure>\n{svg}\n{legend}\n<figcaption>{_esc(caption)}</figcaption>\n</figure>"


# Chart 1: throughput over time.


@dataclass(frozen=True)
class _Step:
    start: float
    seconds: float
    counts: dict[str, int]

    @property
    def rate(self) -> float:
        return sum(self.counts.values()) / self.seconds


def _timeline_steps(run: Mapping[str, Any]) -> list[_Step]:
    steps = []
    for item in _seq(run.get("timeline")):
        point = _map(item)
        start = _num(point.get("t"))
        if start is None:
            continue
        seconds = _num(point.get("seconds"))
        counts = {s: n for s, n in _counts(point.get("outcomes")).items() if n}
        steps.append(_Step(start, seconds if seconds and seconds > 0 else 1.0, counts))
    return sorted(steps, key=lambda step: step.start)


def _throughput_section(run: Mapping[str, Any] | None) -> str:
    heading = "Throughput over time"
    if run is None:
        return _section("throughput", heading, _note("Only in the report of a single run."))
    steps = _timeline_steps(run)
    if not steps:
        return _section("throughput", heading, _note("No timeline: this run recorded no outcomes."))
    return _section(
        "throughput", heading, _throughput_chart(steps, _num(run.get("messages_per_second")))
    )


def _throughput_chart(steps: Sequence[_Step], average: float | None) -> str:
    left, right, top, bottom, height = 70.0, CHART_WIDTH - 20.0, 16.0, 270.0, 320
    end = max(step.start + step.seconds for step in steps)
    begin = min(0.0, steps[0].start)
    y_ticks = _nice_ticks(max(max(step.rate for step in steps), average or 0.0))
    x = _Scale(begin, end, left, right)
    y = _Scale(0.0, y_ticks[-1], bottom, top)
    parts = [
        _svg_open(
            "chart-throughput",
            "Throughput over time",
            f"Messages per second by outcome over {_plural(len(steps), 'time step')}, stacked.",
            height,
        ),
        *_y_grid(y, y_ticks, left, right, _fmt_num),
        *_x_axis(x, _time_ticks(end), top, bottom, "time from the start of the run"),
        _y_caption("messages per second", top, bottom),
    ]
    # One path per state, one rectangle per step: compact even at 600 steps.
    bands: dict[str, list[str]] = {state: [] for state in STATES}
    hits = []
    for step in steps:
        left_px, right_px = x(step.start), x(step.start + step.seconds)
        x0, x1 = _c(left_px), _c(right_px)
        base = 0.0
        for state, n in step.counts.items():
            rate = n / step.seconds
            bands[state].append(f"M{x0} {_c(y(base + rate))}H{x1}V{_c(y(base))}H{x0}Z")
            base += rate
        detail = ", ".join(f"{s} {_fmt_num(n / step.seconds)}/s" for s, n in step.counts.items())
        label = (
            f"{_fmt_num(step.start)} to {_fmt_num(step.start + step.seconds)} s: "
            f"{_fmt_num(step.rate)}/s ({detail or 'nothing'})"
        )
        hits.append(
            f'<rect class="hit" x="{x0}" y="{_c(top)}" width="{_c(right_px - left_px)}" '
            f'height="{_c(bottom - top)}"><title>{_esc(label)}</title></rect>'
        )
    for state, pieces in bands.items():
        if pieces:
            parts.append(
                f'<path fill="{STATE_COLOURS[state]}" shape-rendering="crispEdges" '
                f'd="{"".join(pieces)}"/>'
            )
    if average:
        at = _c(y(average))
        parts.append(f'<line class="mark" x1="{_c(left)}" y1="{at}" x2="{_c(right)}" y2="{at}"/>')
        parts.append(
            f'<text x="{_c(right - 4)}" y="{_c(y(average) - 5)}" text-anchor="end">'
            f"average {_esc(_fmt_num(average))}/s</text>"
        )
    parts.extend(hits)
    present = [s for s in STATES if bands[s]]
    legend = _legend([(s, s) for s in present] + ([("", "dashed: run average")] if average else []))
    return _figure(
        parts,
        legend,
        "Outcomes per step divided by the step's length, stacked in legend order; "
        "hover a step for its numbers.",
    )


# Chart 2: latency distribution.


def _latency_bands(run: Mapping[str, Any]) -> dict[int, int]:
    """Histogram counts regrouped into log bands: band i holds (10^((i-1)/N), 10^(i/N)] ms."""
    bands: dict[int, int] = {}
    for item in _seq(run.get("latency_histogram")):
        bucket = _map(item)
        le_ms, count = _num(bucket.get("le_ms")), _count(bucket.get("count"))
        if le_ms is None or not count:
            continue
        band = math.ceil(LATENCY_BANDS_PER_DECADE * math.log10(max(le_ms, 1e-3)) - 1e-9)
        bands[band] = bands.get(band, 0) + count
    return bands


def _latency_section(run: Mapping[str, Any] | None) -> str:
    heading = "Latency distribution"
    if run is None:
        return _section("latency", heading, _note("Only in the report of a single run."))
    bands = _latency_bands(run)
    percentiles = _percentiles(run.get("latency_ms"))
    if not bands:
        return _section("latency", heading, _note("No SMTP transactions were timed in this run."))
    return _section("latency", heading, _latency_chart(bands, percentiles))


def _latency_chart(bands: Mapping[int, int], percentiles: Mapping[str, float | None]) -> str:
    left, right, top, bottom, height = 70.0, CHART_WIDTH - 20.0, 54.0, 270.0, 320
    n = LATENCY_BANDS_PER_DECADE
    marks = {key: ms for key, ms in percentiles.items() if ms is not None and ms > 0}
    exponents = [(min(bands) - 1) / n, max(bands) / n, *(math.log10(ms) for ms in marks.values())]
    lo, hi = math.floor(min(exponents)), math.ceil(max(exponents))
    hi = max(hi, lo + 1)
    x = _Scale(float(lo), float(hi), left, right)
    y_ticks = _nice_ticks(max(bands.values()))
    y = _Scale(0.0, y_ticks[-1], bottom, top)
    total = sum(bands.values())
    multiples = (1, 2, 5) if hi - lo <= 3 else (1,)
    x_ticks = [
        (math.log10(m * 10.0**d), _fmt_latency_edge(m * 10.0**d))
        for d in range(lo, hi + 1)
        for m in multiples
        if math.log10(m) + d <= hi
    ]
    parts = [
        _svg_open(
            "chart-latency",
            "Latency distribution",
            f"SMTP transaction times of {total:,} transactions on a logarithmic axis, "
            "with the 50th, 95th and 99th percentiles marked.",
            height,
        ),
        *_y_grid(y, y_ticks, left, right, lambda v: _fmt_int(round(v))),
        *_x_axis(x, x_ticks, top, bottom, "SMTP transaction time (logarithmic)"),
        _y_caption("transactions", top, bottom),
    ]
    for band, count in sorted(bands.items()):
        x0, x1 = x((band - 1) / n), x(band / n)
        low, high = _fmt_latency_edge(10 ** ((band - 1) / n)), _fmt_latency_edge(10 ** (band / n))
        label = f"{low} to {high}: {count:,} transactions ({count / total:.1%})"
        parts.append(
            f'<rect fill="{STATE_COLOURS["pending"]}" x="{_c(x0 + 0.5)}" y="{_c(y(count))}" '
            f'width="{_c(max(x1 - x0 - 1, 1))}" height="{_c(bottom - y(count))}">'
            f"<title>{_esc(label)}</title></rect>"
        )
    for row, (key, ms) in enumerate(marks.items()):
        at = x(math.log10(ms))
        label_y = 14 + 14 * row
        anchor, dx = ("end", -4) if at > right - 110 else ("start", 4)
        parts.append(
            f'<line class="mark" x1="{_c(at)}" y1="{_c(label_y + 3)}" x2="{_c(at)}" '
            f'y2="{_c(bottom)}"><title>{_esc(key)} {_esc(_fmt_ms(ms))}</title></line>'
        )
        parts.append(
            f'<text x="{_c(at + dx)}" y="{label_y}" text-anchor="{anchor}">'
            f"{_esc(key)} {_esc(_fmt_ms(ms))}</text>"
        )
    missing = [key for key, ms in percentiles.items() if ms is None]
    caption = (
        f"Transactions per band of the histogram ({n} bands per decade); dashed lines mark "
        "the percentiles of all transaction times."
    )
    if missing:
        caption += f" Not available: {', '.join(missing)}."
    return _figure(
        parts, _legend([("pending", "transactions"), ("", "dashed: percentile")]), caption
    )


# Chart 3: outcomes by relay.


def _relays_section(relays: Mapping[str, Any]) -> str:
    heading = "Outcomes by relay"
    if not relays:
        return _section("relays", heading, _note("No relay was used."))
    named = [(str(name), _map(data)) for name, data in relays.items()]
    return _section("relays", heading, _relay_chart(named), _relay_table(named))


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _relay_chart(relays: Sequence[tuple[str, Mapping[str, Any]]]) -> str:
    left, right, top, row_height = 230.0, CHART_WIDTH - 80.0, 10.0, 28.0
    height = round(top * 2 + row_height * len(relays))
    outcomes = [_counts(data.get("outcomes")) for _, data in relays]
    largest = max((sum(c.values()) for c in outcomes), default=0)
    x = _Scale(0.0, float(largest or 1), left, right)
    parts = [
        _svg_open(
            "chart-relays",
            "Outcomes by relay",
            f"Rows per outcome state for {_plural(len(relays), 'relay')}, as stacked bars.",
            height,
        ),
        f'<line class="axis" x1="{_c(left)}" y1="{_c(top)}" x2="{_c(left)}" '
        f'y2="{_c(height - top)}"/>',
    ]
    for row, ((name, _), counts) in enumerate(zip(relays, outcomes, strict=True)):
        y0 = top + row * row_height + 5
        bar_height = row_height - 10
        total = sum(counts.values())
        parts.append(
            f'<text x="{_c(left - 8)}" y="{_c(y0 + bar_height / 2)}" dy="0.32em" '
            f'text-anchor="end">{_esc(_shorten(name, 34))}<title>{_esc(name)}</title></text>'
        )
        base = 0
        for state, count in counts.items():
            if not count:
                continue
            share = f"{count / total:.1%}"
            parts.append(
                f'<rect fill="{STATE_COLOURS[state]}" x="{_c(x(base))}" y="{_c(y0)}" '
                f'width="{_c(max(x(base + count) - x(base), 1))}" height="{_c(bar_height)}">'
                f"<title>{_esc(name)}: {state} {count:,} ({share})</title></rect>"
            )
            base += count
        parts.append(
            f'<text x="{_c(x(total) + 6)}" y="{_c(y0 + bar_height / 2)}" dy="0.32em">'
            f"{total:,}</text>"
        )
    present = [s for s in STATES if any(c[s] for c in outcomes)]
    return _figure(
        parts,
        _legend((s, s) for s in present),
        "Rows per relay by outcome, stacked in legend order; the number is the relay's total.",
    )


def _relay_table(relays: Sequence[tuple[str, Mapping[str, Any]]]) -> str:
    outcomes = [_counts(data.get("outcomes")) for _, data in relays]
    states = [s for s in STATES if any(c[s] for c in outcomes)] or ["sent"]
    headers = ["Relay", *states, "Attempts", "Connections", "Connect failures"]
    headers += ["p50 latency", "p95 latency", "Messages/s", "Error rate", "Circuit"]
    headers += ["Last error", "Events"]
    rows = []
    for (name, data), counts in zip(relays, outcomes, strict=True):
        latency = _percentiles(data.get("latency_ms"))
        rate = _num(data.get("messages_per_second"))
        attempts = data.get("attempts")
        events = "".join(f"<li>{_esc(e)}</li>" for e in _seq(data.get("events")))
        rows.append(
            [
                _esc(name),
                *(_esc(_fmt_int(counts[s])) for s in states),
                _esc(_fmt_int(_count(attempts))) if _num(attempts) is not None else DASH,
                _esc(_fmt_int(_count(data.get("connections")))),
                _esc(_fmt_int(_count(data.get("connect_failures")))),
                _esc(_fmt_ms(latency["p50"])),
                _esc(_fmt_ms(latency["p95"])),
                _esc(_fmt_num(rate)) if rate is not None else DASH,
                _esc(_fmt_percent(_num(data.get("error_rate")))),
                _esc(_text(data.get("circuit")) or DASH),
                _esc(_text(data.get("last_error")) or DASH),
                f"<ul>{events}</ul>" if events else DASH,
            ]
        )
    return _table(headers, rows, set(range(1, len(states) + 8)))


# Chart 4: outcomes by reply code.


@dataclass(frozen=True)
class _Reply:
    code: str
    count: int
    example: str | None

    @property
    def state(self) -> str:
        """The state whose colour the code's class borrows: 2xx sent, 4xx deferred, ..."""
        return next(state for first, _, state in _CODE_CLASSES if self.code.startswith(first))


def _replies(items: Iterable[object]) -> list[_Reply]:
    replies = []
    for item in items:
        data = _map(item)
        code = data.get("code")
        if code is None:
            continue
        replies.append(_Reply(str(code), _count(data.get("count")), _text(data.get("example"))))
    return replies


def _reply_codes_section(items: Sequence[object]) -> str:
    heading = "Outcomes by reply code"
    replies = _replies(items)
    if not replies:
        return _section("reply-codes", heading, _note("No SMTP replies were recorded."))
    return _section("reply-codes", heading, _reply_chart(replies), _reply_table(replies))


def _reply_chart(replies: Sequence[_Reply]) -> str:
    left, right, top, row_height = 150.0, CHART_WIDTH - 80.0, 10.0, 24.0
    height = round(top * 2 + row_height * len(replies))
    largest = max(reply.count for reply in replies)
    x = _Scale(0.0, float(largest or 1), left, right)
    parts = [
        _svg_open(
            "chart-reply-codes",
            "Outcomes by reply code",
            f"Transactions for {_plural(len(replies), 'SMTP reply code')}, most frequent first.",
            height,
        ),
        f'<line class="axis" x1="{_c(left)}" y1="{_c(top)}" x2="{_c(left)}" '
        f'y2="{_c(height - top)}"/>',
    ]
    for row, reply in enumerate(replies):
        y0 = top + row * row_height + 4
        bar_height = row_height - 8
        tooltip = f"{reply.code}: {reply.count:,}" + (
            f" — {reply.example}" if reply.example else ""
        )
        parts.append(
            f'<text x="{_c(left - 8)}" y="{_c(y0 + bar_height / 2)}" dy="0.32em" '
            f'text-anchor="end">{_esc(_shorten(reply.code, 22))}</text>'
        )
        parts.append(
            f'<rect fill="{STATE_COLOURS[reply.state]}" x="{_c(left)}" y="{_c(y0)}" '
            f'width="{_c(max(x(reply.count) - left, 1))}" height="{_c(bar_height)}">'
            f"<title>{_esc(tooltip)}</title></rect>"
        )
        parts.append(
            f'<text x="{_c(max(x(reply.count), left + 1) + 6)}" y="{_c(y0 + bar_height / 2)}" '
            f'dy="0.32em">{reply.count:,}</text>'
        )
    present = {reply.state for reply in replies}
    legend = _legend((state, label) for _, label, state in _CODE_CLASSES if state in present)
    return _figure(parts, legend, "Replies per code, most frequent first; the table has examples.")


def _reply_table(replies: Sequence[_Reply]) -> str:
    total = sum(reply.count for reply in replies) or 1
    rows = [
        [
            _esc(reply.code),
            _esc(_fmt_int(reply.count)),
            _esc(f"{reply.count / total:.1%}"),
            _esc(reply.example) if reply.example is not None else DASH,
        ]
        for reply in replies
    ]
    return _table(["Code", "Count", "Share", "Example reply"], rows, {1, 2})


# Problems.


def _problems_section(problems: Mapping[str, Any]) -> str:
    heading = "Problems"
    count = _count(problems.get("count"))
    rows = []
    for item in _seq(problems.get("rows")):
        row = _map(item)
        state = _text(row.get("state")) or DASH
        code = _num(row.get("code"))
        rows.append(
            [
                _esc(_text(row.get("key")) or DASH),
                _esc(_text(row.get("address")) or DASH),
                _swatch(state) + _esc(state),
                _esc(int(code)) if code is not None else DASH,
                _esc(_text(row.get("reply")) or DASH),
            ]
        )
    parts = [f"<p>Rows failed, bounced or in an unknown state: {_esc(_fmt_int(count))}.</p>"]
    if rows:
        parts.append(_table(["Key", "Address", "State", "Code", "Reply"], rows, {3}))
    if problems.get("truncated") is True or len(rows) < count:
        parts.append(_note(f"Only the first {len(rows):,} of {count:,} are listed here."))
    export = _text(problems.get("export"))
    if export and count:
        parts.append(f"<p>All of them as CSV: <code>{_esc(export)}</code></p>")
    return _section("problems", heading, *parts)
