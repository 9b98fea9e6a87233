"""Reference client for the benchmark: the fastest plain aiosmtplib loop we know.

It pre-renders ``--count`` messages with the standard library's email package (not
timed), then sends them over ``--connections`` asyncio tasks, each holding one
aiosmtplib connection that it reuses for all its messages. It prints one JSON line:

    {"sent": n, "failed": n, "seconds": s, "cpu": s, "render_seconds": s, ...}

where ``seconds`` and ``cpu`` cover the send phase only (connect to quit). With
``--loops asyncio,uvloop`` the same messages are sent once per event loop, one JSON
line each (uvloop is skipped, with a line saying so, when it is not installed).

The templates below are also what ``bench/run.py`` writes into the txsend job, so both
clients send messages of the same shape: multipart/alternative, in two sizes (``--size``):
``5k`` (~1 KB text, ~3 KB HTML: ~4.9 KB on the wire) and ``2k`` (two paragraphs, a
compact HTML part: ~1.9 KB), where per-message costs weigh more than per-byte ones.
"""

from __future__ import annotations

import argparse
import asyncio
import email.policy
import json
import resource
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime, formataddr, make_msgid

import aiosmtplib

FROM_NAME = "Acme"
FROM_ADDR = "noreply@acme.example"
REPLY_TO = "support@acme.example"
CAMPAIGN = "bench"
SUBJECT_TEMPLATE = "Welcome, {{ first_name }}!"
NAME_TEMPLATE = "{{ first_name }} {{ last_name }}"

FIRST_NAMES = ["Ada", "Grace", "Linus", "Margaret", "Dennis", "Barbara", "Ken", "Frances"]
LAST_NAMES = ["Lovelace", "Hopper", "Torvalds", "Hamilton", "Ritchie", "Liskov", "Thompson"]

_PARAGRAPH = (
    "Your account is ready. You can sign in at any time with the address this message "
    "was sent to; your plan is {{ plan }} and renews on the first of each month."
)


def text_template(paragraphs: int) -> str:
    """The text part, with `paragraphs` copies of the body paragraph."""
    return (
        "Hello {{ first_name }},\n\n"
        "Welcome to Acme, and thank you for signing up.\n\n"
        + "\n\n".join([_PARAGRAPH] * paragraphs)
        + _TEXT_END
    )


_TEXT_END = (
    "\n\nIf you have any question, reply to this message or write to "
    "support@acme.example; a person reads every message.\n\n"
    "See you soon,\n"
    "The Acme team\n\n"
    "--\n"
    "Acme Inc., 1 Example Street, Springfield\n"
    "You receive this message because {{ email }} signed up at acme.example.\n"
)

_HTML_ROW = (
    '    <tr><td style="padding:8px 24px;font-family:Helvetica,Arial,sans-serif;'
    'font-size:15px;line-height:22px;color:#333333;">' + _PARAGRAPH + "</td></tr>\n"
)


def html_template(rows: int) -> str:
    """The HTML part, with `rows` copies of the body paragraph's table row."""
    return _HTML_START + _HTML_ROW * rows + _HTML_END


_HTML_START = (
    "<!DOCTYPE html>\n"
    '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
    '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
    "<title>Welcome to Acme</title>\n</head>\n"
    '<body style="margin:0;padding:0;background:#f4f4f7;">\n'
    '<table role="presentation" width="100%" cellpadding="0" cellspacing="0" '
    'style="background:#f4f4f7;">\n<tr><td align="center">\n'
    '  <table role="presentation" width="600" cellpadding="0" cellspacing="0" '
    'style="background:#ffffff;border-radius:6px;">\n'
    '    <tr><td style="padding:24px;font-family:Helvetica,Arial,sans-serif;'
    'font-size:22px;font-weight:bold;color:#111111;">Hello {{ first_name }},</td></tr>\n'
    '    <tr><td style="padding:8px 24px;font-family:Helvetica,Arial,sans-serif;'
    'font-size:15px;line-height:22px;color:#333333;">Welcome to Acme, and thank you '
    "for signing up.</td></tr>\n"
)
_HTML_END = (
    '    <tr><td align="center" style="padding:24px;">'
    '<a href="https://acme.example/start?u={{ token }}" style="display:inline-block;'
    "padding:12px 28px;background:#2b6cb0;color:#ffffff;text-decoration:none;"
    'border-radius:4px;font-family:Helvetica,Arial,sans-serif;">Get started</a>'
    "</td></tr>\n"
    '    <tr><td style="padding:16px 24px;font-family:Helvetica,Arial,sans-serif;'
    'font-size:12px;color:#888888;">Acme Inc., 1 Example Street, Springfield<br>'
    "You receive this message because {{ email }} signed up at acme.example.</td></tr>\n"
    "  </table>\n</td></tr>\n</table>\n</body>\n</html>\n"
)

# the small workload's HTML: the same personalised content without the layout tables
COMPACT_HTML_TEMPLATE = (
    '<!DOCTYPE html>\n<html lang="en">\n<head><meta charset="utf-8">'
    "<title>Welcome to Acme</title></head>\n<body>\n"
    "<p>Hello {{ first_name }},</p>\n"
    + ("<p>" + _PARAGRAPH + "</p>\n")
    * 2
    + '<p><a href="https://acme.example/start?u={{ token }}">Get started</a></p>\n'
    "</body>\n</html>\n"
)

# the workloads by message size on the wire: 2k (two paragraphs, compact HTML) and 5k
SIZES = ("2k", "5k")
DEFAULT_SIZE = "5k"


def templates(size: str = DEFAULT_SIZE) -> tuple[str, str]:
    """(text template, HTML template) of a workload size."""
    if size == "2k":
        return text_template(2), COMPACT_HTML_TEMPLATE
    return text_template(4), html_template(6)


TEXT_TEMPLATE, HTML_TEMPLATE = templates(DEFAULT_SIZE)


def row(i: int) -> dict[str, str]:
    """The i-th recipient row; bench/run.py writes the same rows to the CSV."""
    return {
        "email": f"user{i:07d}@example.com",
        "first_name": FIRST_NAMES[i % len(FIRST_NAMES)],
        "last_name": LAST_NAMES[i % len(LAST_NAMES)],
        "plan": ("free", "team", "business")[i % 3],
        "token": f"{i * 7919 % 1000003:07d}{i:07d}",
    }


def fill(template: str, values: dict[str, str]) -> str:
    """Substitute ``{{ name }}`` placeholders (all the templates here use)."""
    out = template
    for key, value in values.items():
        out = out.replace("{{ " + key + " }}", value)
    return out


def render(i: int, size: str = DEFAULT_SIZE) -> tuple[str, bytes]:
    """One message for row i: (envelope recipient, wire bytes with CRLF line endings)."""
    text, html = templates(size)
    values = row(i)
    msg = EmailMessage()
    msg["From"] = formataddr((FROM_NAME, FROM_ADDR))
    msg["To"] = formataddr((fill(NAME_TEMPLATE, values), values["email"]))
    msg["Reply-To"] = REPLY_TO
    msg["Subject"] = fill(SUBJECT_TEMPLATE, values)
    msg["Date"] = format_datetime(datetime.now().astimezone())
    msg["Message-ID"] = make_msgid(domain="acme.example")
    msg["X-Campaign"] = CAMPAIGN
    msg.set_content(fill(text, values))
    msg.add_alternative(fill(html, values), subtype="html")
    return values["email"], msg.as_bytes(policy=email.policy.SMTP)


async def _worker(
    host: str, port: int, items: Iterator[tuple[str, bytes]], counts: dict[str, int]
) -> None:
    smtp = aiosmtplib.SMTP(hostname=host, port=port, use_tls=False, start_tls=False, timeout=60)
    await smtp.connect()
    try:
        for rcpt, data in items:
            try:
                await smtp.sendmail(FROM_ADDR, [rcpt], data)
                counts["sent"] += 1
                counts["bytes"] += len(data)
            except aiosmtplib.SMTPServerDisconnected:
                counts["failed"] += 1
                await smtp.connect()
            except aiosmtplib.SMTPException:
                counts["failed"] += 1
    finally:
        if smtp.is_connected:
            try:
                await smtp.quit()
            except aiosmtplib.SMTPException:
                smtp.close()


async def send_all(
    host: str, port: int, messages: list[tuple[str, bytes]], connections: int
) -> dict[str, int]:
    """Send every message over `connections` reused connections; return the counts."""
    counts = {"sent": 0, "failed": 0, "bytes": 0}
    items = iter(messages)  # shared: each task takes the next message when it is free
    workers = min(connections, max(1, len(messages)))
    await asyncio.gather(*(_worker(host, port, items, counts) for _ in range(workers)))
    return counts


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main(argv: list[str] | None = None) -> int:
    """Pre-render, send, print one JSON line; exit 1 if any message failed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--count", type=int, default=20000)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--loops", default="asyncio", help="comma-separated: asyncio,uvloop")
    parser.add_argument("--size", choices=SIZES, default=DEFAULT_SIZE)
    args = parser.parse_args(argv)

    started = time.perf_counter()
    messages = [render(i, args.size) for i in range(args.count)]
    render_seconds = time.perf_counter() - started

    ok = True
    for loop in args.loops.split(","):
        factory = None
        if loop == "uvloop":
            try:
                import uvloop
            except ImportError:
                print(json.dumps({"loop": loop, "skipped": "uvloop is not installed"}))
                continue
            factory = uvloop.new_event_loop
        cpu0, t0 = _cpu(), time.perf_counter()
        with asyncio.Runner(loop_factory=factory) as runner:
            counts = runner.run(send_all(args.host, args.port, messages, args.connections))
        seconds, cpu = time.perf_counter() - t0, _cpu() - cpu0
        result = {
            "loop": loop,
            "sent": counts["sent"],
            "failed": counts["failed"],
            "bytes": counts["bytes"],
            "seconds": round(seconds, 4),
            "cpu": round(cpu, 4),
            "render_seconds": round(render_seconds, 4),
            "connections": args.connections,
            "maxrss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        }
        print(json.dumps(result), flush=True)
        ok = ok and counts["failed"] == 0 and counts["sent"] == args.count
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
