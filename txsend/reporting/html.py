"""One self-contained HTML page for a run's report (`txsend run --report-html FILE`).

`render_html_report` turns the schema-1 report object (what `--json` prints) into an HTML5
document: the run's header, summary cards, four charts drawn as inline SVG (throughput over
time, latency distribution, outcomes by relay, outcomes by reply code: `charts`), the relay,
reply-code and problem tables, and print CSS. The page loads nothing: no script, stylesheet,
font or image from anywhere, and its Content-Security-Policy forbids them in case of a bug.

Every string taken from the report is escaped where it is written (`markup.esc`); reply texts
come from remote servers and are treated as hostile. The report is read once, defensively
(`schema.read_report`): a missing or mistyped field shows as "—" and never raises, so the
output of `txsend report` (no "run"; "runs", "relays" and "reply_codes" at the top) renders
as well.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from txsend.errors import ExitCode
from txsend.reporting.charts import (
    Reply,
    latency_bands,
    latency_chart,
    relay_chart,
    replies,
    reply_chart,
    throughput_chart,
    timeline_steps,
)
from txsend.reporting.markup import (
    DASH,
    STATE_COLOURS,
    STATES,
    esc,
    fmt_int,
    fmt_ms,
    fmt_num,
    swatch,
    whole,
    whole_counts,
)
from txsend.reporting.schema import (
    Alert,
    Domain,
    ErrorCounts,
    ProblemReport,
    ProblemRow,
    Quota,
    Relay,
    ReplyCode,
    Report,
    Run,
    RunRecord,
    read_report,
)

__all__ = ["STATE_COLOURS", "render_html_report"]

CARD_STATES = ("sent", "bounced", "failed", "deferred", "unknown", "skipped")

EXIT_MEANINGS: dict[int, str] = {
    ExitCode.OK: "all sent",
    ExitCode.SOME_FAILED: "some bounced, failed or expired",
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
    return _page(read_report(report))


def _page(report: Report) -> str:
    state_css = "\n".join(
        f".s-{state} {{ background: {c}; }}" for state, c in STATE_COLOURS.items()
    )
    domains = _domains_section(report.run)  # "" for a report without per-domain figures
    body = [
        _header(report),
        _summary(report),
        _runs_section(report.runs),
        _throughput_section(report.run),
        _latency_section(report.run),
        _relays_section(report.reported_relays),
        *([domains] if domains else []),
        _reply_codes_section(report.reported_reply_codes),
        _problems_section(report.problems),
    ]
    if report.alerts:  # a job with `alerts:` only
        body.append(_alerts_section(report.alerts))
    if report.quotas:  # a job with a quota or a warm-up only
        body.append(_quotas_section(report.quotas))
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en">',
            "<head>",
            '<meta charset="utf-8">',
            f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{esc(_page_title(report))}</title>",
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


# Formats only the page uses.


def _fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return DASH
    if seconds < 60:
        return f"{fmt_num(seconds)} s"
    whole_seconds = round(seconds)
    hours, rest = divmod(whole_seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours} h {minutes:02d} min {secs:02d} s" if hours else f"{minutes} min {secs:02d} s"


def _fmt_percent(fraction: float | None) -> str:
    return DASH if fraction is None else f"{fraction:.2%}"


def _fmt_exit(code: float | None) -> str:
    if code is None:
        return f"{DASH} (unfinished)"
    number = int(code)
    return f"{number} ({EXIT_MEANINGS.get(number, 'unexpected exit code')})"


def _parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


def _duration(started: str | None, ended: str | None) -> float | None:
    start, end = _parse_time(started), _parse_time(ended)
    if start is None or end is None or (start.tzinfo is None) != (end.tzinfo is None):
        return None
    return max((end - start).total_seconds(), 0.0)


def _unix_time(stamp: float | None) -> str:
    if stamp is None:
        return DASH
    try:
        return datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, OSError, ValueError):
        return DASH


# Page structure.


def _table(headers: Sequence[str], rows: Iterable[Sequence[str]], numeric: set[int]) -> str:
    """A table; cells are HTML already escaped by the caller, numeric columns right-aligned."""

    def cell(tag: str, index: int, content: str) -> str:
        css = ' class="num"' if index in numeric else ""
        return f"<{tag}{css}>{content}</{tag}>"

    head = "".join(cell("th", i, esc(h)) for i, h in enumerate(headers))
    body = "\n".join(
        "<tr>" + "".join(cell("td", i, c) for i, c in enumerate(row)) + "</tr>" for row in rows
    )
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table>"


def _section(section_id: str, heading: str, *parts: str) -> str:
    inner = "\n".join(part for part in parts if part)
    return f'<section id="{section_id}">\n<h2>{esc(heading)}</h2>\n{inner}\n</section>'


def _note(text: str) -> str:
    return f'<p class="note">{esc(text)}</p>'


def _facts(facts: Iterable[tuple[str, str]]) -> str:
    rows = "\n".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in facts)
    return f'<dl class="facts">\n{rows}\n</dl>'


# Header and summary.


def _job(report: Report) -> str:
    return report.job or "(unnamed job)"


def _page_title(report: Report) -> str:
    which = f"run {int(report.run_id)}" if report.run_id is not None else "all runs"
    return f"txsend {report.command or 'report'}: {_job(report)}, {which}"


def _header(report: Report) -> str:
    warning_list = ""
    if report.warnings:
        items = "\n".join(f"<li>{esc(w)}</li>" for w in report.warnings)
        warning_list = f'<ul class="warnings">\n{items}\n</ul>'
    return (
        f"<header>\n<h1>{esc(_job(report))}</h1>\n"
        f'<p class="subtitle">{esc(_page_title(report))}</p>\n'
        f"{_facts(_header_facts(report))}\n{warning_list}\n</header>"
    )


def _header_facts(report: Report) -> list[tuple[str, str]]:
    run = report.run
    seconds = run.seconds if run is not None else None
    if seconds is None:
        seconds = _duration(report.started_at, report.ended_at)
    facts = [
        ("Run", str(int(report.run_id)) if report.run_id is not None else "all runs"),
        ("Command", report.command or DASH),
        ("Started", report.started_at or DASH),
        ("Ended", report.ended_at or DASH),
        ("Duration", _fmt_duration(seconds)),
        ("Exit code", _fmt_exit(report.exit_code)),
        ("Dry run", "yes (nothing was sent)" if report.dry_run else "no"),
    ]
    if report.next_attempt_at is not None:
        facts.append(("Next retry", _unix_time(report.next_attempt_at)))
    if run is not None and run.stop_reason:
        facts.append(("Stopped", run.stop_reason))
    facts.append(("Warnings", str(len(report.warnings)) if report.warnings else "none"))
    return facts


_FEEDBACK_CARDS = (
    ("late_bounced", "accepted, then bounced"),
    ("complaints", "complaints"),
    ("delayed", "delays"),
    ("unmatched", "unmatched reports"),
)


def _card(label: str, value: str, state: str | None = None) -> str:
    mark = swatch(state) if state else ""
    return (
        f'<div class="card"><div class="label">{mark}{esc(label)}</div>'
        f'<div class="value">{esc(value)}</div></div>'
    )


def _summary(report: Report) -> str:
    counts = whole_counts(report.counts)
    shown = [s for s in STATES if s in CARD_STATES or counts[s]]
    cards = [_card(state, fmt_int(counts[state]), state) for state in shown]
    parts = [f'<div class="cards">\n{"".join(cards)}\n</div>']
    parts.append('<p class="note">Journal totals after the run.</p>')
    if report.feedback:
        late = [
            _card(label, fmt_int(round(report.feedback.get(key) or 0)))
            for key, label in _FEEDBACK_CARDS
        ]
        parts.append(f'<div class="cards">\n{"".join(late)}\n</div>')
        parts.append(
            '<p class="note">After the relay accepted: reports read by txsend bounces. '
            "Rows accepted, then bounced are counted in bounced too.</p>"
        )
    run = report.run
    if run is not None:
        rate = run.messages_per_second
        run_cards = [_card("messages/s", fmt_num(rate) if rate is not None else DASH)]
        run_cards += [_card(f"{key} latency", fmt_ms(v)) for key, v in run.latency_ms.items()]
        parts.append(f'<div class="cards">\n{"".join(run_cards)}\n</div>')
        parts.append(_run_facts(run))
    return _section("summary", "Summary", *parts)


def _run_facts(run: Run) -> str:
    outcomes = whole_counts(run.outcomes)
    done = ", ".join(f"{s} {fmt_int(n)}" for s, n in outcomes.items() if n) or "none"
    errors = run.errors or ErrorCounts()
    error_text = ", ".join(f"{key} {fmt_int(whole(n))}" for key, n in errors.items())
    return _facts(
        [
            ("This run's outcomes", done),
            ("Rendered", fmt_int(whole(run.rendered))),
            ("Not sent", fmt_int(whole(run.not_sent))),
            ("Unknown from the previous run", fmt_int(whole(run.unknown_from_previous_run))),
            ("Retries", fmt_int(whole(run.retries))),
            ("Errors", error_text),
            ("Error rate", _fmt_percent(run.error_rate)),
            ("Queue depth at the end", fmt_int(whole(run.queue_depth))),
        ]
    )


def _runs_section(runs: Sequence[RunRecord] | None) -> str:
    if runs is None:
        return ""
    if not runs:
        return _section("runs", "Runs", _note("No runs recorded in this journal."))
    headers = ["Run", "Command", "Started", "Ended", "Duration", "Exit code"]
    return _section("runs", "Runs", _table(headers, [_run_row(r) for r in runs], {0, 4}))


def _run_row(entry: RunRecord) -> list[str]:
    return [
        esc(int(entry.run_id)) if entry.run_id is not None else DASH,
        esc(entry.command or DASH),
        esc(entry.started_at or DASH),
        esc(entry.ended_at or DASH),
        esc(_fmt_duration(_duration(entry.started_at, entry.ended_at))),
        esc(_fmt_exit(entry.exit_code)),
    ]


# The charts' sections.


def _throughput_section(run: Run | None) -> str:
    heading = "Throughput over time"
    if run is None:
        return _section("throughput", heading, _note("Only in the report of a single run."))
    steps = timeline_steps(run.timeline)
    if not steps:
        return _section("throughput", heading, _note("No timeline: this run recorded no outcomes."))
    return _section("throughput", heading, throughput_chart(steps, run.messages_per_second))


def _latency_section(run: Run | None) -> str:
    heading = "Latency distribution"
    if run is None:
        return _section("latency", heading, _note("Only in the report of a single run."))
    bands = latency_bands(run.latency_histogram or ())
    if not bands:
        return _section("latency", heading, _note("No SMTP transactions were timed in this run."))
    return _section("latency", heading, latency_chart(bands, run.latency_ms))


def _relays_section(relays: Mapping[str, Relay]) -> str:
    heading = "Outcomes by relay"
    if not relays:
        return _section("relays", heading, _note("No relay was used."))
    named = list(relays.items())
    return _section("relays", heading, relay_chart(named), _relay_table(named))


def _relay_table(relays: Sequence[tuple[str, Relay]]) -> str:
    outcomes = [whole_counts(relay.outcomes) for _, relay in relays]
    states = [s for s in STATES if any(c[s] for c in outcomes)] or ["sent"]
    headers = ["Relay", *states, "Attempts", "Connections", "Connect failures"]
    headers += ["p50 latency", "p95 latency", "Messages/s", "Error rate", "Circuit"]
    headers += ["Last error", "Events"]
    rows = [
        _relay_row(name, relay, [counts[s] for s in states])
        for (name, relay), counts in zip(relays, outcomes, strict=True)
    ]
    return _table(headers, rows, set(range(1, len(states) + 8)))


def _domains_section(run: Run | None) -> str:
    """Per recipient domain: the job's `domains:` entries and the busiest others."""
    if run is None or not run.domains:
        return ""
    named = list(run.domains.items())
    outcomes = [whole_counts(domain.outcomes) for _, domain in named]
    states = [s for s in STATES if any(c[s] for c in outcomes)] or ["sent"]
    headers = ["Domain", "Configured", *states, "Attempts", "Throttles", "Pace", "Waiting"]
    rows = [
        _domain_row(name, domain, [counts[s] for s in states])
        for (name, domain), counts in zip(named, outcomes, strict=True)
    ]
    table = _table(headers, rows, set(range(2, len(states) + 6)))
    return _section("domains", "Outcomes by recipient domain", table)


def _domain_row(name: str, domain: Domain, counts: Sequence[int]) -> list[str]:
    pace = DASH if domain.pace is None else f"{fmt_num(domain.pace)}/s"
    if domain.slowed:
        pace += " (slowed down)"
    return [
        esc(name),
        "yes" if domain.configured else "no",
        *(esc(fmt_int(count)) for count in counts),
        esc(fmt_int(whole(domain.attempts))) if domain.attempts is not None else DASH,
        esc(fmt_int(whole(domain.throttles))) if domain.throttles is not None else DASH,
        esc(pace),
        esc(fmt_int(whole(domain.waiting))) if domain.waiting is not None else DASH,
    ]


def _relay_row(name: str, relay: Relay, counts: Sequence[int]) -> list[str]:
    rate, attempts = relay.messages_per_second, relay.attempts
    events = "".join(f"<li>{esc(e)}</li>" for e in relay.events)
    return [
        esc(name),
        *(esc(fmt_int(count)) for count in counts),
        esc(fmt_int(whole(attempts))) if attempts is not None else DASH,
        esc(fmt_int(whole(relay.connections))),
        esc(fmt_int(whole(relay.connect_failures))),
        esc(fmt_ms(relay.latency_ms.p50)),
        esc(fmt_ms(relay.latency_ms.p95)),
        esc(fmt_num(rate)) if rate is not None else DASH,
        esc(_fmt_percent(relay.error_rate)),
        esc(relay.circuit or DASH),
        esc(relay.last_error or DASH),
        f"<ul>{events}</ul>" if events else DASH,
    ]


def _reply_codes_section(codes: Sequence[ReplyCode]) -> str:
    heading = "Outcomes by reply code"
    shown = replies(codes)
    if not shown:
        return _section("reply-codes", heading, _note("No SMTP replies were recorded."))
    return _section("reply-codes", heading, reply_chart(shown), _reply_table(shown))


def _reply_table(shown: Sequence[Reply]) -> str:
    total = sum(reply.count for reply in shown) or 1
    rows = [
        [
            esc(reply.code),
            esc(fmt_int(reply.count)),
            esc(f"{reply.count / total:.1%}"),
            esc(reply.example) if reply.example is not None else DASH,
        ]
        for reply in shown
    ]
    return _table(["Code", "Count", "Share", "Example reply"], rows, {1, 2})


# Problems.


def _problems_section(problems: ProblemReport) -> str:
    count = whole(problems.count)
    rows = [_problem_row(row) for row in problems.rows]
    parts = [f"<p>Rows failed, bounced or in an unknown state: {esc(fmt_int(count))}.</p>"]
    if rows:
        parts.append(_table(["Key", "Address", "State", "Code", "Reply"], rows, {3}))
    if problems.truncated or len(rows) < count:
        parts.append(_note(f"Only the first {len(rows):,} of {count:,} are listed here."))
    if problems.export and count:
        parts.append(f"<p>All of them as CSV: <code>{esc(problems.export)}</code></p>")
    return _section("problems", "Problems", *parts)


def _problem_row(row: ProblemRow) -> list[str]:
    state = row.state or DASH
    return [
        esc(row.key or DASH),
        esc(row.address or DASH),
        swatch(state) + esc(state),
        esc(int(row.code)) if row.code is not None else DASH,
        esc(row.reply or DASH),
    ]


# Alerts (only for a job with `alerts:`).


def _quotas_section(quotas: Sequence[Quota]) -> str:
    rows = [
        [
            esc(
                f"relay {q.relay}"
                if q.kind != "warmup"
                else f"warm-up {(q.account or DASH).removeprefix('warmup:')}"
            ),
            esc(q.rate or DASH),
            esc(q.window or DASH),
            esc(fmt_int(whole(q.used))),
            esc(fmt_int(whole(q.held))),
            esc(fmt_int(whole(q.limit))) if q.limit is not None else DASH,
            esc(q.frees_at or DASH),
            esc(_warmup_cell(q.warmup)),
        ]
        for q in quotas
    ]
    table = _table(
        ["Quota", "Rate", "Window", "Used", "Held", "Limit", "Next slot frees", "Warm-up"],
        rows,
        {3, 4, 5},
    )
    return _section("quotas", "Quotas (accepted recipients)", table)


def _warmup_cell(warmup: Mapping[str, Any]) -> str:
    """Where a warm-up stands: its day, tomorrow's cap, when it is full."""
    if not warmup:
        return DASH
    if warmup.get("started") is not True:
        return "not started: day 1 begins with the first accepted recipient"
    return (
        f"day {warmup.get('day')}, tomorrow {warmup.get('tomorrow')}, "
        f"full {warmup.get('full')} on day {warmup.get('full_day')}"
    )


def _alerts_section(alerts: Sequence[Alert]) -> str:
    rows = [_alert_row(alert) for alert in alerts]
    table = _table(
        ["Alert", "Threshold", "Window", "Fired", "At the end", "Last value", "Changes"],
        rows,
        {3},
    )
    return _section("alerts", "Alerts", table)


def _alert_row(alert: Alert) -> list[str]:
    changes = "; ".join(
        f"{event.state or DASH} {event.at or DASH} ({_alert_value(event.value, alert.unit)})"
        for event in alert.events
    )
    return [
        esc(alert.name or DASH),
        esc(f"{alert.condition or DASH} {_alert_value(alert.threshold, alert.unit)}"),
        esc(_fmt_duration(alert.window_seconds)),
        esc(fmt_int(whole(alert.fired))),
        "firing" if alert.active else "ok",
        esc(_alert_value(alert.value, alert.unit)),
        esc(changes or DASH),
    ]


def _alert_value(value: float | None, unit: str | None) -> str:
    if value is None:
        return DASH
    if unit == "ratio":
        return _fmt_percent(value)
    if unit == "seconds":
        return fmt_ms(value * 1000)
    if unit == "per_second":
        return f"{fmt_num(value)}/s"
    return fmt_num(value)
