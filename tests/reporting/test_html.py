"""Tests for txsend.reporting.html: a well-formed, self-contained, escaped page with four charts."""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from tests.reports import EXAMPLE_REPORT
from txsend.reporting.html import STATE_COLOURS, render_html_report

EXAMPLE: dict[str, Any] = EXAMPLE_REPORT

HOSTILE = ("<script>alert(1)</script>", '"><img src=x onerror=alert(1)>')

VOID = frozenset(
    "area base br col embed hr img input link meta source track wbr".split()  # noqa: SIM905
)
# Elements that fetch, embed or run something.
FORBIDDEN_TAGS = frozenset(
    "script link iframe frame object embed img image use base audio video source form".split()  # noqa: SIM905
)
URL_ATTRIBUTES = frozenset(
    "src href xlink:href srcset action formaction poster background data ping".split()  # noqa: SIM905
)
NETWORK = re.compile(r"(?i)(https?:)?//")


# A tiny DOM over HTMLParser events, strict about nesting.


@dataclass
class Element:
    tag: str
    attrs: dict[str, str | None]
    children: list[Element | str] = field(default_factory=list)

    def iter(self) -> Iterator[Element]:
        yield self
        for child in self.children:
            if isinstance(child, Element):
                yield from child.iter()

    def find_all(self, tag: str) -> list[Element]:
        return [el for el in self.iter() if el.tag == tag]

    def elements(self) -> list[Element]:
        return [child for child in self.children if isinstance(child, Element)]

    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text() for c in self.children)


class TreeBuilder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Element("#document", {})
        self.stack = [self.root]
        self.doctype: str | None = None
        self.errors: list[str] = []

    def _element(self, tag: str, attrs: list[tuple[str, str | None]]) -> Element:
        names = [name for name, _ in attrs]
        if len(names) != len(set(names)):
            self.errors.append(f"<{tag}> repeats an attribute: {names}")
        element = Element(tag, dict(attrs))
        self.stack[-1].children.append(element)
        return element

    def handle_decl(self, decl: str) -> None:
        self.doctype = decl

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element = self._element(tag, attrs)
        if tag not in VOID:
            self.stack.append(element)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._element(tag, attrs)

    def handle_endtag(self, tag: str) -> None:
        if len(self.stack) == 1 or self.stack[-1].tag != tag:
            self.errors.append(f"</{tag}> closes <{self.stack[-1].tag}>")
        else:
            self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.stack[-1].children.append(data)

    def handle_pi(self, data: str) -> None:
        self.errors.append(f"processing instruction {data!r}")

    def unknown_decl(self, data: str) -> None:
        self.errors.append(f"unknown declaration {data!r}")

    def close(self) -> None:
        super().close()
        if len(self.stack) > 1:
            self.errors.append(f"unclosed: {[el.tag for el in self.stack[1:]]}")


def parse(page: str) -> Element:
    """The page's tree, after checking it is a complete, well-nested HTML5 document."""
    builder = TreeBuilder()
    builder.feed(page)
    builder.close()
    assert builder.errors == []
    assert builder.doctype is not None and builder.doctype.lower() == "doctype html"
    (html,) = builder.root.elements()
    assert html.tag == "html"
    assert [el.tag for el in html.elements()] == ["head", "body"]
    head = html.elements()[0]
    assert any(meta.attrs.get("charset") == "utf-8" for meta in head.find_all("meta"))
    (title,) = head.find_all("title")
    assert title.text().strip()
    return builder.root


@pytest.mark.parametrize(
    "broken",
    [
        "<html><head><title>t</title></head><body><div><span></div></span></body></html>",
        "<!DOCTYPE html><html><head><title>t</title></head><body><p>open</body></html>",
        "<!DOCTYPE html><html><head><title>t</title></head><body></body></html>",  # no charset
        '<!DOCTYPE html><html><head><meta charset="utf-8"><title> </title></head><body>',
        '<!DOCTYPE html><html><head><meta charset="utf-8"><title>t</title></head></html>',
    ],
)
def test_the_checker_rejects_broken_documents(broken: str) -> None:
    with pytest.raises(AssertionError):
        parse(broken)


def assert_self_contained(root: Element) -> None:
    """Nothing that fetches or runs anything: no such element, attribute or CSS."""
    for el in root.iter():
        assert el.tag not in FORBIDDEN_TAGS, el
        for name, value in el.attrs.items():
            # In-page links (href="#id") are fine; any other URL fetches something.
            assert name not in URL_ATTRIBUTES or (value or "").startswith("#"), el
            assert not name.startswith("on"), el
            assert not NETWORK.search(value or ""), el
            if name == "style":
                assert "url(" not in (value or "").lower(), el
    for style in root.find_all("style"):
        css = style.text().lower()
        assert "@import" not in css
        assert "url(" not in css
        assert "@font-face" not in css


@pytest.mark.parametrize(
    "fetching",
    [
        '<link rel="stylesheet" href="x.css">',
        '<script src="x.js"></script>',
        "<script>fetch(1)</script>",
        '<svg><image href="https://cdn.example/x.png"/></svg>',
        '<div style="background: url(https://cdn.example/x.png)"></div>',
        '<div data-x="//cdn.example/x"></div>',
        "<style>@import 'x.css';</style>",
        "<style>@font-face { font-family: x; src: local(x); }</style>",
        '<a href="other.html">other</a>',
        '<div onclick="x()"></div>',
    ],
)
def test_the_checker_rejects_fetching_markup(fetching: str) -> None:
    page = (
        '<!DOCTYPE html><html><head><meta charset="utf-8"><title>t</title></head>'
        f"<body>{fetching}</body></html>"
    )
    with pytest.raises(AssertionError):
        assert_self_contained(parse(page))


def charts(root: Element) -> list[Element]:
    return root.find_all("svg")


def render(report: dict[str, Any]) -> tuple[str, Element]:
    page = render_html_report(report)
    root = parse(page)
    assert_self_contained(root)
    return page, root


def example() -> dict[str, Any]:
    return copy.deepcopy(EXAMPLE)


# The example report.


def test_example_is_a_complete_self_contained_document() -> None:
    page, root = render(example())
    assert page.startswith("<!DOCTYPE html>")
    (title,) = root.find_all("title")[:1]
    assert "welcome-2026-11" in title.text() and "run 3" in title.text()
    (csp,) = [m for m in root.find_all("meta") if m.attrs.get("http-equiv")]
    assert "default-src 'none'" in (csp.attrs["content"] or "")
    assert root.find_all("style"), "the CSS is inline"
    assert "@media print" in root.find_all("style")[0].text()


def test_example_has_four_labelled_charts() -> None:
    _, root = render(example())
    svgs = charts(root)
    assert [svg.attrs["id"] for svg in svgs] == [
        "chart-throughput",
        "chart-latency",
        "chart-relays",
        "chart-reply-codes",
    ]
    for svg in svgs:
        first = svg.elements()[0]
        assert first.tag == "title" and first.text().strip()
        assert svg.attrs.get("aria-label") == first.text()
        assert svg.attrs.get("role") == "img"


def test_example_numbers_are_shown() -> None:
    _, root = render(example())
    text = root.find_all("body")[0].text()
    assert "19,890" in text  # sent (journal)
    assert "482.8" in text  # messages per second
    assert "40.3 ms" in text  # p95
    assert "12.1 ms" in text and "95 ms" in text
    for relay in EXAMPLE["run"]["relays"]:
        assert relay in text
    for reply in EXAMPLE["run"]["reply_codes"]:
        assert reply["code"] in text
        assert reply["example"] in text
    assert "1 (some bounced, failed or expired)" in text
    assert "41.2 s" in text
    assert "txsend report welcome.yaml --failed-csv failed.csv" in text
    assert "circuit opened at 12:00:05 (connection refused)" in text


def svg_titles(root: Element, chart_id: str) -> list[str]:
    (svg,) = [svg for svg in charts(root) if svg.attrs.get("id") == chart_id]
    return [title.text() for title in svg.find_all("title")]


def test_throughput_chart_is_messages_per_second_per_step() -> None:
    _, root = render(example())
    titles = svg_titles(root, "chart-throughput")
    assert "0 to 1 s: 300/s (sent 300/s)" in titles
    assert "1 to 2 s: 522/s (sent 520/s, bounced 2/s)" in titles
    # Halving the steps' length doubles the rate.
    report = example()
    for point in report["run"]["timeline"]:
        point["t"] /= 2
        point["seconds"] = 0.5
    _, root = render(report)
    assert "0.5 to 1 s: 1,044/s (sent 1,040/s, bounced 4/s)" in svg_titles(root, "chart-throughput")
    (svg,) = [svg for svg in charts(root) if svg.attrs.get("id") == "chart-throughput"]
    fills = {path.attrs.get("fill") for path in svg.find_all("path")}
    assert fills == {STATE_COLOURS[s] for s in ("sent", "bounced", "failed")}


def test_latency_chart_marks_the_percentiles() -> None:
    _, root = render(example())
    (svg,) = [svg for svg in charts(root) if svg.attrs.get("id") == "chart-latency"]
    labels = [text.text() for text in svg.find_all("text")]
    for mark in ("p50 12.1 ms", "p95 40.3 ms", "p99 95 ms"):
        assert mark in labels
    bars = [t for t in svg_titles(root, "chart-latency") if "transactions (" in t]
    # 10.5 and 11 ms share the band up to 12.6 ms; 42 and 100 ms have one each.
    assert bars == [
        "10 ms to 12.6 ms: 14,000 transactions (70.0%)",
        "39.8 ms to 50.1 ms: 5,000 transactions (25.0%)",
        "79.4 ms to 100 ms: 990 transactions (5.0%)",
    ]
    assert "10 ms" in labels and "100 ms" in labels


def test_relay_and_reply_charts_use_the_state_colours() -> None:
    _, root = render(example())
    relay_titles = svg_titles(root, "chart-relays")
    assert "smtp.acme.example:587: sent 15,000 (99.5%)" in relay_titles
    assert "backup.acme.example:465: failed 5 (0.1%)" in relay_titles
    reply_titles = svg_titles(root, "chart-reply-codes")
    assert "550 5.1.1: 80 — 550 5.1.1 User unknown" in reply_titles
    by_chart = {svg.attrs["id"]: svg for svg in charts(root)}
    relay_fills = {r.attrs.get("fill") for r in by_chart["chart-relays"].find_all("rect")}
    assert relay_fills == {STATE_COLOURS[s] for s in ("sent", "bounced", "failed")}
    reply_fills = [r.attrs.get("fill") for r in by_chart["chart-reply-codes"].find_all("rect")]
    assert reply_fills == [STATE_COLOURS[s] for s in ("sent", "deferred", "bounced", "unknown")]
    # Without colour: every state drawn is named in a legend.
    legends = " ".join(ul.text() for ul in root.find_all("ul") if ul.attrs.get("class") == "legend")
    for state in ("sent", "bounced", "failed", "2xx accepted", "5xx permanent", "no reply"):
        assert state in legends


@pytest.mark.parametrize(
    ("code", "meaning"),
    [
        (0, "all sent"),
        (1, "some bounced, failed or expired"),
        (75, "deferred rows remain or the run was aborted"),
        (69, "no relay reachable"),
        (130, "interrupted (SIGINT)"),
        (143, "interrupted (SIGTERM)"),
        (99, "unexpected exit code"),
    ],
)
def test_exit_code_meaning(code: int, meaning: str) -> None:
    report = example()
    report["exit_code"] = code
    _, root = render(report)
    assert meaning in root.find_all("header")[0].text()


def test_header_shows_dry_run_warnings_and_next_retry() -> None:
    report = example()
    report.update(
        dry_run=True,
        warnings=["DKIM key is readable by others", "second warning"],
        next_attempt_at=1795867200 + 300,
        exit_code=75,
    )
    report["run"]["stop_reason"] = "deadline reached"
    _, root = render(report)
    header = root.find_all("header")[0].text()
    assert "yes (nothing was sent)" in header
    assert "DKIM key is readable by others" in header and "second warning" in header
    assert "2026-11-28T12:05:00Z" in header
    assert "deadline reached" in header


# Hostile strings.


def hostile_report(payload: str) -> dict[str, Any]:
    report = example()
    run = report["run"]
    report["job"] = payload
    report["command"] = payload
    report["started_at"] = payload
    report["warnings"] = [payload]
    relay = run["relays"].pop("backup.acme.example:465")
    relay["last_error"] = payload
    relay["circuit"] = payload
    relay["events"] = [payload]
    run["relays"][payload] = relay
    run["reply_codes"][2] = {"code": payload, "count": 80, "example": payload}
    run["stop_reason"] = payload
    report["problems"]["rows"][0].update(key=payload, address=payload, reply=payload, state=payload)
    report["problems"]["export"] = payload
    return report


@pytest.mark.parametrize("payload", HOSTILE)
def test_report_strings_are_escaped(payload: str) -> None:
    page, root = render(hostile_report(payload))
    for el in root.iter():
        assert el.tag not in ("script", "img"), el
        assert not any(name.startswith("on") for name in el.attrs), el
    # Shown as text, in the page and in the SVG tooltips alike.
    assert root.find_all("h1")[0].text() == payload
    assert payload in root.find_all("title")[0].text()
    assert f"{payload}: sent 4,890 (99.5%)" in svg_titles(root, "chart-relays")
    assert f"{payload}: 80 — {payload}" in svg_titles(root, "chart-reply-codes")
    cells = [td.text() for td in root.find_all("td")]
    assert cells.count(payload) >= 6  # relay, circuit, last error, key, address, reply, ...
    assert payload not in page  # never verbatim: < and " are always escaped


def test_quotes_cannot_break_out_of_attributes() -> None:
    report = example()
    report["run"]["relays"] = {"x' onmouseover='alert(1)": {"outcomes": {"sent": 1}}}
    page, root = render(report)
    assert "onmouseover='" not in page
    assert not any(name.startswith("on") for el in root.iter() for name in el.attrs)


def test_unprintable_characters_and_lone_surrogates_are_replaced() -> None:
    report = example()
    report["problems"]["rows"][0]["reply"] = "550 bad\x00\x1b[31m\udcff end"
    page, root = render(report)
    page.encode("utf-8")  # a lone surrogate would raise here
    assert "550 bad\ufffd\ufffd[31m\ufffd end" in [td.text() for td in root.find_all("td")]


# Other shapes of report.


def no_run() -> dict[str, Any]:
    """What `txsend report JOB --json` prints: no "run"; runs, relays and codes at the top."""
    report = example()
    run = report.pop("run")
    report.update(run_id=None, command="report", started_at=None, ended_at=None)
    report["runs"] = [
        {
            "run_id": 1,
            "command": "run",
            "started_at": "2026-11-27T09:00:00Z",
            "ended_at": "2026-11-27T09:02:05Z",
            "exit_code": 75,
        },
        {"run_id": 2, "command": "resume", "started_at": None, "ended_at": None, "exit_code": None},
    ]
    report["relays"] = run["relays"]
    report["reply_codes"] = run["reply_codes"]
    return report


def empty_timeline() -> dict[str, Any]:
    report = example()
    report["run"]["timeline"] = []
    return report


def one_point() -> dict[str, Any]:
    report = example()
    report["run"]["timeline"] = [{"t": 0, "seconds": 0.25, "outcomes": {"deferred": 3}}]
    return report


def zero() -> dict[str, Any]:
    report = example()
    report["counts"] = dict.fromkeys(report["counts"], 0)
    report.update(exit_code=0, ended_at=report["started_at"])
    report["run"] = {
        "outcomes": {},
        "seconds": 0,
        "messages_per_second": 0,
        "latency_ms": {"p50": None, "p95": None, "p99": None},
        "latency_histogram": [],
        "errors": {"transient": 0, "permanent": 0, "unknown": 0},
        "reply_codes": [],
        "relays": {},
        "timeline": [],
    }
    report["problems"] = {"count": 0, "rows": [], "truncated": False, "export": "x"}
    return report


def null_percentiles() -> dict[str, Any]:
    report = example()
    report["run"]["latency_ms"] = {"p50": None, "p95": None, "p99": None}
    for relay in report["run"]["relays"].values():
        relay["latency_ms"] = {"p50": None, "p95": None, "p99": None}
    return report


def bare_relay() -> dict[str, Any]:
    report = example()
    report["run"]["relays"] = {
        "bare:25": {"outcomes": {}, "connections": 0, "connect_failures": 3},
        "sent-only:25": {"outcomes": {"sent": 5}, "connections": 1, "connect_failures": 0},
    }
    return report


def required_only() -> dict[str, Any]:
    keys = ("schema", "job", "run_id", "exit_code", "dry_run", "counts", "next_attempt_at")
    report = {key: EXAMPLE[key] for key in keys}
    report.update(warnings=[], problems={"count": 0, "rows": [], "truncated": False, "export": ""})
    return report


def wrong_types() -> dict[str, Any]:
    """Not schema 1, but rendering still must not raise."""
    report = example()
    report.update(run_id="3", exit_code=None, counts=[1, 2], warnings="oops", next_attempt_at=1e300)
    run = report["run"]
    run.update(seconds="41", messages_per_second=float("nan"), latency_ms=None, relays=[])
    run["timeline"] = [
        {"t": "x", "seconds": 1, "outcomes": {}},
        {"t": 1, "seconds": 0, "outcomes": {"sent": -4, "bogus": 3, "bounced": True}},
        None,
    ]
    run["latency_histogram"] = [{"le_ms": 0, "count": 5}, {"le_ms": float("inf"), "count": 1}]
    run["reply_codes"] = [{"code": 250, "count": "many"}, "nope"]
    report["problems"] = {"count": "100", "rows": [{"key": 5, "code": "550"}], "export": None}
    return report


EDGE_CASES: dict[str, Callable[[], dict[str, Any]]] = {
    "no-run": no_run,
    "empty-timeline": empty_timeline,
    "one-point": one_point,
    "zero": zero,
    "null-percentiles": null_percentiles,
    "bare-relay": bare_relay,
    "required-only": required_only,
    "wrong-types": wrong_types,
}


@pytest.mark.parametrize("case", EDGE_CASES)
def test_edge_cases_render(case: str) -> None:
    page, root = render(EDGE_CASES[case]())
    for svg in charts(root):
        assert svg.elements()[0].tag == "title"
    assert not re.search(r"(?i)\b(nan|inf|infinity)\b", page)


def test_report_of_all_runs() -> None:
    _, root = render(no_run())
    assert [svg.attrs["id"] for svg in charts(root)] == ["chart-relays", "chart-reply-codes"]
    text = root.find_all("body")[0].text()
    assert "all runs" in text
    assert "Only in the report of a single run." in text
    (runs,) = [s for s in root.find_all("section") if s.attrs.get("id") == "runs"]
    rows = [[td.text() for td in tr.find_all("td")] for tr in runs.find_all("tr")[1:]]
    assert rows == [
        [
            "1",
            "run",
            "2026-11-27T09:00:00Z",
            "2026-11-27T09:02:05Z",
            "2 min 05 s",
            "75 (temporary: deferred rows remain or the run was aborted)",
        ],
        ["2", "resume", "—", "—", "—", "— (unfinished)"],
    ]
    for name in ("smtp.acme.example:587", "backup.acme.example:465", "451 4.7.1", "none"):
        assert name in text
    # Journal counts only: no run cards.
    assert "messages/s" not in text


def test_one_point_and_empty_timeline() -> None:
    _, root = render(one_point())
    assert "0 to 0.25 s: 12/s (deferred 12/s)" in svg_titles(root, "chart-throughput")
    _, root = render(empty_timeline())
    assert "chart-throughput" not in [svg.attrs["id"] for svg in charts(root)]
    assert "No timeline" in root.find_all("body")[0].text()


def test_zero_messages() -> None:
    _, root = render(zero())
    assert charts(root) == []
    text = root.find_all("body")[0].text()
    assert "Rows failed, bounced or in an unknown state: 0." in text
    assert "0 (all sent)" in text


def test_null_percentiles_show_a_dash() -> None:
    _, root = render(null_percentiles())
    (svg,) = [svg for svg in charts(root) if svg.attrs.get("id") == "chart-latency"]
    assert not any(t.text().startswith("p50") for t in svg.find_all("text"))
    cards = {
        card.elements()[0].text(): card.elements()[1].text()
        for card in root.iter()
        if card.attrs.get("class") == "card"
    }
    assert cards["p95 latency"] == "—"
    assert "Not available: p50, p95, p99." in root.find_all("body")[0].text()


def test_bare_relay_has_dashes_in_the_table() -> None:
    _, root = render(bare_relay())
    (relays,) = [s for s in root.find_all("section") if s.attrs.get("id") == "relays"]
    rows = [[td.text() for td in tr.find_all("td")] for tr in relays.find_all("tr")[1:]]
    assert rows[0][:2] == ["bare:25", "0"]
    assert rows[0][4] == "3"  # connect failures
    assert rows[0][2] == "—" and rows[0][-1] == "—"


def test_json_round_trip_and_deterministic() -> None:
    report = json.loads(json.dumps(EXAMPLE))
    assert render_html_report(report) == render_html_report(example())


# Size.


def big_report() -> dict[str, Any]:
    report = example()
    run = report["run"]
    states = list(STATE_COLOURS)
    run["timeline"] = [
        {
            "t": i * 2,
            "seconds": 2,
            "outcomes": {s: 50 + (i * 7 + j) % 40 for j, s in enumerate(states)},
        }
        for i in range(600)
    ]
    run["latency_histogram"] = [{"le_ms": 0.1 * 1.05**i, "count": 1 + i % 50} for i in range(290)]
    run["reply_codes"] = [
        {"code": f"{400 + i} 4.{i}.1", "count": 1000 - i, "example": "x" * 200} for i in range(20)
    ]
    run["relays"] = {
        f"relay{i}.example:587": {
            **EXAMPLE["run"]["relays"]["backup.acme.example:465"],
            "events": [f"event {n}" for n in range(20)],
        }
        for i in range(10)
    }
    report["problems"] = {
        "count": 250_000,
        "rows": [
            {
                "key": f"user{i}@example.com",
                "address": f"user{i}@example.com",
                "state": ("bounced", "failed", "unknown")[i % 3],
                "code": 550,
                "reply": "550 5.1.1 <user@example.com>: Recipient address rejected: " + "y" * 140,
            }
            for i in range(1000)
        ],
        "truncated": True,
        "export": "txsend report big.yaml --failed-csv failed.csv",
    }
    return report


def test_large_report_stays_small() -> None:
    page, root = render(big_report())
    size = len(page.encode("utf-8"))
    assert size < 1_000_000, size
    assert len(charts(root)) == 4
    assert "Only the first 1,000 of 250,000 are listed here." in root.find_all("body")[0].text()


# A real browser, when there is one.


def chromium() -> str | None:
    found = shutil.which("chromium")
    if found:
        return found
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None


def test_chromium_renders_the_page(tmp_path: Path) -> None:
    browser = chromium()
    if browser is None:
        pytest.skip("Chromium not installed; the page structure is checked by the other tests")
    page = tmp_path / "report.html"
    page.write_text(render_html_report(hostile_report(HOSTILE[1])), encoding="utf-8")
    shot = tmp_path / "shot.png"
    subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={tmp_path / 'profile'}",
            f"--screenshot={shot}",
            "--window-size=1200,2000",
            page.as_uri(),
        ],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert shot.exists()
    data = shot.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(data) > 20_000


def test_reports_read_after_sending_are_shown_apart() -> None:
    data = example()
    data["feedback"] = {
        "late_bounced": 1234,
        "complaints": 5,
        "delayed": 7,
        "unmatched": 2,
        "events": 1248,
    }
    _, root = render(data)
    text = root.find_all("body")[0].text()
    assert "accepted, then bounced" in text and "1,234" in text
    assert "complaints" in text and "unmatched reports" in text
    # a report without the member shows no such cards
    _, plain = render(example())
    assert "accepted, then bounced" not in plain.find_all("body")[0].text()
