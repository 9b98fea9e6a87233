"""The HTML report's four charts as inline SVG: throughput over time, the latency
distribution, outcomes by relay and outcomes by reply code, with their scales and axes.

Each chart is a `<figure>` of one SVG, an HTML legend naming every colour drawn (the colours
never carry the meaning alone) and a caption. Marks carry `<title>` tooltips with their
numbers; every string in them is escaped (`markup.esc`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from txsend.reporting.markup import (
    STATE_COLOURS,
    STATES,
    esc,
    fmt_int,
    fmt_ms,
    fmt_num,
    plural,
    swatch,
    whole,
    whole_counts,
)
from txsend.reporting.schema import Bucket, Percentiles, Relay, ReplyCode, TimelineStep

__all__ = [
    "Reply",
    "Step",
    "latency_bands",
    "latency_chart",
    "relay_chart",
    "replies",
    "reply_chart",
    "throughput_chart",
    "timeline_steps",
]

# Reply-code classes, coloured like the journal state they usually lead to.
_CODE_CLASSES = (
    ("2", "2xx accepted", "sent"),
    ("4", "4xx temporary", "deferred"),
    ("5", "5xx permanent", "bounced"),
    ("", "no reply", "unknown"),
)

CHART_WIDTH = 900
LATENCY_BANDS_PER_DECADE = 10


# Chart scaffolding.


def _c(value: float) -> str:
    """An SVG coordinate: one decimal is plenty and keeps large charts small."""
    text = f"{value:.1f}"
    return text[:-2] if text.endswith(".0") else text


def _legend(entries: Iterable[tuple[str, str]]) -> str:
    """(state for the colour, label) pairs as an HTML legend: the names carry the meaning."""
    items = "".join(f"<li>{swatch(state)}{esc(label)}</li>" for state, label in entries)
    return f'<ul class="legend">{items}</ul>'


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
        f'width="{CHART_WIDTH}" height="{height}" aria-label="{esc(title)}" '
        f'aria-describedby="{chart_id}-desc">'
        f"<title>{esc(title)}</title>"
        f'<desc id="{chart_id}-desc">{esc(desc)}</desc>'
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
            f'text-anchor="end">{esc(label(value))}</text>'
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
            f'text-anchor="middle">{esc(label)}</text>'
        )
    out.append(
        f'<text x="{_c((x.start + x.end) / 2)}" y="{_c(bottom + 32)}" '
        f'text-anchor="middle">{esc(caption)}</text>'
    )
    return out


def _y_caption(text: str, top: float, bottom: float) -> str:
    middle = _c((top + bottom) / 2)
    return (
        f'<text x="14" y="{middle}" text-anchor="middle" '
        f'transform="rotate(-90 14 {middle})">{esc(text)}</text>'
    )


def _figure(svg_parts: Sequence[str], legend: str, caption: str) -> str:
    svg = "\n".join([*svg_parts, "</svg>"])
    return f"<figure>\n{svg}\n{legend}\n<figcaption>{esc(caption)}</figcaption>\n</figure>"


# Chart 1: throughput over time.


@dataclass(frozen=True)
class Step:
    """One bar of the throughput chart: outcomes in `seconds` seconds from `start`."""

    start: float
    seconds: float
    counts: dict[str, int]  # the states that had outcomes, in the page's order

    @property
    def rate(self) -> float:
        """Outcomes per second in this step."""
        return sum(self.counts.values()) / self.seconds


def timeline_steps(timeline: Iterable[TimelineStep]) -> list[Step]:
    """The run's timeline as chart steps, in time order; a step without a start is left out."""
    steps = []
    for point in timeline:
        if point.t is None:
            continue
        seconds = point.seconds
        counts = {s: n for s, n in whole_counts(point.outcomes).items() if n}
        steps.append(Step(point.t, seconds if seconds and seconds > 0 else 1.0, counts))
    return sorted(steps, key=lambda step: step.start)


def throughput_chart(steps: Sequence[Step], average: float | None) -> str:
    """Messages per second per step, stacked by outcome, the run's average dashed."""
    left, right, top, bottom, height = 70.0, CHART_WIDTH - 20.0, 16.0, 270.0, 320
    end = max(step.start + step.seconds for step in steps)
    y_ticks = _nice_ticks(max(max(step.rate for step in steps), average or 0.0))
    x = _Scale(min(0.0, steps[0].start), end, left, right)
    y = _Scale(0.0, y_ticks[-1], bottom, top)
    parts = [
        _svg_open(
            "chart-throughput",
            "Throughput over time",
            f"Messages per second by outcome over {plural(len(steps), 'time step')}, stacked.",
            height,
        ),
        *_y_grid(y, y_ticks, left, right, fmt_num),
        *_x_axis(x, _time_ticks(end), top, bottom, "time from the start of the run"),
        _y_caption("messages per second", top, bottom),
    ]
    bands = _stacked_bands(steps, x, y)
    parts += [
        f'<path fill="{STATE_COLOURS[state]}" shape-rendering="crispEdges" d="{"".join(pieces)}"/>'
        for state, pieces in bands.items()
        if pieces
    ]
    if average:
        parts += _average_line(average, y, left, right)
    parts += [_step_hit(step, x, top, bottom) for step in steps]
    present = [s for s in STATES if bands[s]]
    legend = _legend([(s, s) for s in present] + ([("", "dashed: run average")] if average else []))
    return _figure(
        parts,
        legend,
        "Outcomes per step divided by the step's length, stacked in legend order; "
        "hover a step for its numbers.",
    )


def _stacked_bands(steps: Sequence[Step], x: _Scale, y: _Scale) -> dict[str, list[str]]:
    """Per state, one rectangle per step as path data: one path per state stays compact
    even at 600 steps."""
    bands: dict[str, list[str]] = {state: [] for state in STATES}
    for step in steps:
        x0, x1 = _c(x(step.start)), _c(x(step.start + step.seconds))
        base = 0.0
        for state, n in step.counts.items():
            rate = n / step.seconds
            bands[state].append(f"M{x0} {_c(y(base + rate))}H{x1}V{_c(y(base))}H{x0}Z")
            base += rate
    return bands


def _average_line(average: float, y: _Scale, left: float, right: float) -> list[str]:
    at = _c(y(average))
    return [
        f'<line class="mark" x1="{_c(left)}" y1="{at}" x2="{_c(right)}" y2="{at}"/>',
        f'<text x="{_c(right - 4)}" y="{_c(y(average) - 5)}" text-anchor="end">'
        f"average {esc(fmt_num(average))}/s</text>",
    ]


def _step_hit(step: Step, x: _Scale, top: float, bottom: float) -> str:
    """An invisible rectangle over the whole step whose tooltip gives its numbers."""
    left_px, right_px = x(step.start), x(step.start + step.seconds)
    detail = ", ".join(f"{s} {fmt_num(n / step.seconds)}/s" for s, n in step.counts.items())
    label = (
        f"{fmt_num(step.start)} to {fmt_num(step.start + step.seconds)} s: "
        f"{fmt_num(step.rate)}/s ({detail or 'nothing'})"
    )
    return (
        f'<rect class="hit" x="{_c(left_px)}" y="{_c(top)}" width="{_c(right_px - left_px)}" '
        f'height="{_c(bottom - top)}"><title>{esc(label)}</title></rect>'
    )


# Chart 2: latency distribution.


def latency_bands(histogram: Iterable[Bucket]) -> dict[int, int]:
    """Histogram counts regrouped into log bands: band i holds (10^((i-1)/N), 10^(i/N)] ms."""
    bands: dict[int, int] = {}
    for bucket in histogram:
        le_ms, count = bucket.le_ms, whole(bucket.count)
        if le_ms is None or not math.isfinite(le_ms) or not count:
            continue
        band = math.ceil(LATENCY_BANDS_PER_DECADE * math.log10(max(le_ms, 1e-3)) - 1e-9)
        bands[band] = bands.get(band, 0) + count
    return bands


def latency_chart(bands: Mapping[int, int], percentiles: Percentiles) -> str:
    """Transactions per latency band on a log axis, the percentiles marked."""
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
    parts = [
        _svg_open(
            "chart-latency",
            "Latency distribution",
            f"SMTP transaction times of {total:,} transactions on a logarithmic axis, "
            "with the 50th, 95th and 99th percentiles marked.",
            height,
        ),
        *_y_grid(y, y_ticks, left, right, lambda v: fmt_int(round(v))),
        *_x_axis(x, _log_ticks(lo, hi), top, bottom, "SMTP transaction time (logarithmic)"),
        _y_caption("transactions", top, bottom),
    ]
    parts += [
        _latency_bar(band, count, total, x, y, bottom) for band, count in sorted(bands.items())
    ]
    for row, (key, ms) in enumerate(marks.items()):
        parts += _percentile_mark(row, f"{key} {fmt_ms(ms)}", x(math.log10(ms)), right, bottom)
    legend = _legend([("pending", "transactions"), ("", "dashed: percentile")])
    return _figure(parts, legend, _latency_caption(percentiles))


def _fmt_latency_edge(ms: float) -> str:
    """A latency axis value with 3 significant digits: 0.126 ms, 12.6 ms, 1.26 s."""
    return f"{ms / 1000:.3g} s" if ms >= 1000 else f"{ms:.3g} ms"


def _log_ticks(lo: int, hi: int) -> list[tuple[float, str]]:
    """Ticks at 1, 2 and 5 times each power of ten from 10^lo to 10^hi ms (1 only if wide)."""
    multiples = (1, 2, 5) if hi - lo <= 3 else (1,)
    return [
        (math.log10(m * 10.0**d), _fmt_latency_edge(m * 10.0**d))
        for d in range(lo, hi + 1)
        for m in multiples
        if math.log10(m) + d <= hi
    ]


def _latency_bar(band: int, count: int, total: int, x: _Scale, y: _Scale, bottom: float) -> str:
    n = LATENCY_BANDS_PER_DECADE
    x0, x1 = x((band - 1) / n), x(band / n)
    low, high = _fmt_latency_edge(10 ** ((band - 1) / n)), _fmt_latency_edge(10 ** (band / n))
    label = f"{low} to {high}: {count:,} transactions ({count / total:.1%})"
    return (
        f'<rect fill="{STATE_COLOURS["pending"]}" x="{_c(x0 + 0.5)}" y="{_c(y(count))}" '
        f'width="{_c(max(x1 - x0 - 1, 1))}" height="{_c(bottom - y(count))}">'
        f"<title>{esc(label)}</title></rect>"
    )


def _percentile_mark(row: int, label: str, at: float, right: float, bottom: float) -> list[str]:
    """A dashed line at `at`, labelled on its own row at the top (left of it near the edge)."""
    label_y = 14 + 14 * row
    anchor, dx = ("end", -4) if at > right - 110 else ("start", 4)
    return [
        f'<line class="mark" x1="{_c(at)}" y1="{_c(label_y + 3)}" x2="{_c(at)}" '
        f'y2="{_c(bottom)}"><title>{esc(label)}</title></line>',
        f'<text x="{_c(at + dx)}" y="{label_y}" text-anchor="{anchor}">{esc(label)}</text>',
    ]


def _latency_caption(percentiles: Percentiles) -> str:
    caption = (
        f"Transactions per band of the histogram ({LATENCY_BANDS_PER_DECADE} bands per "
        "decade); dashed lines mark the percentiles of all transaction times."
    )
    missing = [key for key, ms in percentiles.items() if ms is None]
    if missing:
        caption += f" Not available: {', '.join(missing)}."
    return caption


# Chart 3: outcomes by relay.


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def relay_chart(relays: Sequence[tuple[str, Relay]]) -> str:
    """One stacked bar of outcomes per relay, with its total."""
    left, right, top, row_height = 230.0, CHART_WIDTH - 80.0, 10.0, 28.0
    height = round(top * 2 + row_height * len(relays))
    outcomes = [whole_counts(relay.outcomes) for _, relay in relays]
    largest = max((sum(c.values()) for c in outcomes), default=0)
    x = _Scale(0.0, float(largest or 1), left, right)
    parts = [
        _svg_open(
            "chart-relays",
            "Outcomes by relay",
            f"Rows per outcome state for {plural(len(relays), 'relay')}, as stacked bars.",
            height,
        ),
        _bar_axis(left, top, height),
    ]
    for row, ((name, _), counts) in enumerate(zip(relays, outcomes, strict=True)):
        parts += _relay_bar(name, counts, x, top + row * row_height + 5, row_height - 10)
    present = [s for s in STATES if any(c[s] for c in outcomes)]
    return _figure(
        parts,
        _legend((s, s) for s in present),
        "Rows per relay by outcome, stacked in legend order; the number is the relay's total.",
    )


def _bar_axis(left: float, top: float, height: int) -> str:
    """The vertical axis the bars of a bar chart start from."""
    x, y1, y2 = _c(left), _c(top), _c(height - top)
    return f'<line class="axis" x1="{x}" y1="{y1}" x2="{x}" y2="{y2}"/>'


def _relay_bar(
    name: str, counts: Mapping[str, int], x: _Scale, y0: float, bar_height: float
) -> list[str]:
    """The relay's name, its outcomes stacked from the axis, and its total."""
    total = sum(counts.values())
    middle = _c(y0 + bar_height / 2)
    parts = [
        f'<text x="{_c(x.start - 8)}" y="{middle}" dy="0.32em" '
        f'text-anchor="end">{esc(_shorten(name, 34))}<title>{esc(name)}</title></text>'
    ]
    base = 0
    for state, count in counts.items():
        if not count:
            continue
        share = f"{count / total:.1%}"
        parts.append(
            f'<rect fill="{STATE_COLOURS[state]}" x="{_c(x(base))}" y="{_c(y0)}" '
            f'width="{_c(max(x(base + count) - x(base), 1))}" height="{_c(bar_height)}">'
            f"<title>{esc(name)}: {state} {count:,} ({share})</title></rect>"
        )
        base += count
    parts.append(f'<text x="{_c(x(total) + 6)}" y="{middle}" dy="0.32em">{total:,}</text>')
    return parts


# Chart 4: outcomes by reply code.


@dataclass(frozen=True)
class Reply:
    """A reply code as the page shows it: its bar and its table row."""

    code: str
    count: int
    example: str | None

    @property
    def state(self) -> str:
        """The state whose colour the code's class borrows: 2xx sent, 4xx deferred, ..."""
        return next(state for first, _, state in _CODE_CLASSES if self.code.startswith(first))


def replies(codes: Iterable[ReplyCode]) -> list[Reply]:
    """The reply codes the page shows, in the report's order: those that have a code."""
    return [
        Reply(code.code, whole(code.count), code.example) for code in codes if code.code is not None
    ]


def reply_chart(replies: Sequence[Reply]) -> str:
    """One bar per reply code, coloured by its class (2xx, 4xx, 5xx, no reply)."""
    left, right, top, row_height = 150.0, CHART_WIDTH - 80.0, 10.0, 24.0
    height = round(top * 2 + row_height * len(replies))
    largest = max(reply.count for reply in replies)
    x = _Scale(0.0, float(largest or 1), left, right)
    parts = [
        _svg_open(
            "chart-reply-codes",
            "Outcomes by reply code",
            f"Transactions for {plural(len(replies), 'SMTP reply code')}, most frequent first.",
            height,
        ),
        _bar_axis(left, top, height),
    ]
    for row, reply in enumerate(replies):
        parts += _reply_bar(reply, x, top + row * row_height + 4, row_height - 8)
    present = {reply.state for reply in replies}
    legend = _legend((state, label) for _, label, state in _CODE_CLASSES if state in present)
    return _figure(parts, legend, "Replies per code, most frequent first; the table has examples.")


def _reply_bar(reply: Reply, x: _Scale, y0: float, bar_height: float) -> list[str]:
    """The code, its bar from the axis (one pixel at least) and its count."""
    left = x.start
    middle = _c(y0 + bar_height / 2)
    tooltip = f"{reply.code}: {reply.count:,}" + (f" — {reply.example}" if reply.example else "")
    return [
        f'<text x="{_c(left - 8)}" y="{middle}" dy="0.32em" '
        f'text-anchor="end">{esc(_shorten(reply.code, 22))}</text>',
        f'<rect fill="{STATE_COLOURS[reply.state]}" x="{_c(left)}" y="{_c(y0)}" '
        f'width="{_c(max(x(reply.count) - left, 1))}" height="{_c(bar_height)}">'
        f"<title>{esc(tooltip)}</title></rect>",
        f'<text x="{_c(max(x(reply.count), left + 1) + 6)}" y="{middle}" '
        f'dy="0.32em">{reply.count:,}</text>',
    ]
