"""What each content feature costs per message: render alone, then with one feature on.

Usage: python bench/content.py [--json] [--number N]

Builds one job per feature in a temporary folder (the same ~1 KB text / ~3 KB HTML
personalised message as bench/run.py), renders N messages with txsend's renderer and
prints microseconds of CPU per message for each, and the difference to the plain
render. No network: this is the client-side cost a feature adds to every send.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere

from txsend.content.ids import new_message_id
from txsend.content.renderer import Renderer
from txsend.job.loading import load_job
from txsend.job.recipients import iter_rows
from txsend.models import Row

TEXT = (
    "Hello {{ first_name }},\n\nyour {{ plan }} plan is active. "
    + "Here is what you can do next with your account. " * 3
    + "\n"
) * 6
HTML = (
    "<html><head><style>p { color: #333; line-height: 1.5 } .b { font-weight: bold }</style>"
    "</head><body><h1>Welcome, {{ first_name }}</h1>\n"
    + (
        '<p>Your <span class="b">{{ plan }}</span> plan is active. '
        'Read <a href="https://acme.example/start">the guide</a> to start. '
        + "Here is what you can do next with your account. " * 2
        + "</p>\n"
    )
    * 10
    + "</body></html>\n"
)
HTML_CID = HTML.replace("</body>", '<img src="cid:logo.png" alt="Acme"></body>')
MARKDOWN = (
    "# Welcome, {{ first_name }}\n\nYour **{{ plan }}** plan is active. "
    "Read [the guide](https://acme.example/start).\n\n"
    + "- Here is what you can do next with your account.\n"
    * 8
)
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360f8cf500f0003860180aa6ef16b0000000049454e44ae426082"
)

BASE = (
    'from: "Acme <noreply@acme.example>"\n'
    'subject: "Welcome, {{ first_name }}"\n'
    "recipients: {file: people.csv, name: '{{ first_name }}'}\n"
)
CASES: dict[str, str] = {
    "text + html (baseline)": "text: t.txt\nhtml: t.html\n",
    "+ inline_css": "text: t.txt\nhtml: t.html\ninline_css: true\n",
    "+ auto text part (html only)": "html: t.html\n",
    "+ markdown (html and text)": "markdown: m.md\n",
    "+ cid: image and a 100 KB attachment": "text: t.txt\nhtml: t2.html\nattachments: [a.pdf]\n",
    "+ unsubscribe one-click": (
        "text: t.txt\nhtml: t.html\n"
        "unsubscribe: {url: 'https://acme.example/u/{{ first_name }}', one_click: true}\n"
    ),
    "+ DKIM rsa-sha256 (2048 bits)": (
        "text: t.txt\nhtml: t.html\ndkim: {domain: acme.example, selector: s1, key_file: rsa.pem}\n"
    ),
    "+ DKIM ed25519-sha256": (
        "text: t.txt\nhtml: t.html\n"
        "dkim: {domain: acme.example, selector: s1, key_file: ed.pem, algorithm: ed25519-sha256}\n"
    ),
}


def write_folder(folder: Path, rows: int) -> None:
    (folder / "t.txt").write_text(TEXT)
    (folder / "t.html").write_text(HTML)
    (folder / "t2.html").write_text(HTML_CID)
    (folder / "m.md").write_text(MARKDOWN)
    (folder / "logo.png").write_bytes(PNG)
    (folder / "a.pdf").write_bytes(bytes(range(256)) * 400)
    lines = ["email,first_name,plan"]
    lines += [f"user{i}@example.com,User{i},plan{i % 7}" for i in range(rows)]
    (folder / "people.csv").write_text("\n".join(lines) + "\n")
    for name, key in (
        ("rsa.pem", rsa.generate_private_key(65537, 2048)),
        ("ed.pem", ed25519.Ed25519PrivateKey.generate()),
    ):
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        (folder / name).write_bytes(pem)
        (folder / name).chmod(0o600)


def measure(folder: Path, yaml: str, number: int) -> tuple[float, int]:
    """CPU microseconds per rendered message, and the message size."""
    job_file = folder / "job.yaml"
    job_file.write_text(BASE + yaml)
    job = load_job(job_file, env={})
    renderer = Renderer(job)
    rows = [r for r in iter_rows(job) if isinstance(r, Row)]
    mids = [new_message_id("acme.example") for _ in rows]
    render: Callable[[Row, str], object] = renderer.render
    size = len(renderer.render(rows[0], mids[0]).data)
    best = float("inf")
    for _ in range(3):
        started = time.process_time()
        for i in range(number):
            render(rows[i % len(rows)], mids[i % len(rows)])
        best = min(best, time.process_time() - started)
    return best / number * 1e6, size


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=400, help="messages per case (400)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory(prefix="txsend-content-") as tmp:
        folder = Path(tmp)
        write_folder(folder, 1000)
        for label, yaml in CASES.items():
            micros, size = measure(folder, yaml, args.number)
            results.append({"case": label, "us_per_message": round(micros), "bytes": size})
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    base = results[0]["us_per_message"]
    print("Content features: client CPU per rendered message (best of 3 runs)")
    print(f"{'case':<40} {'us/msg':>8} {'added':>8} {'bytes':>8}")
    print("-" * 67)
    for r in results:
        added = "" if r is results[0] else f"{r['us_per_message'] - base:+}"
        print(f"{r['case']:<40} {r['us_per_message']:>8} {added:>8} {r['bytes']:>8}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
