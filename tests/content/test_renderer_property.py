"""Property test: for every sample job, the fast path and EmailMessage build the same mail.

Names and subjects are drawn by hypothesis from several scripts (Latin with accents,
Cyrillic, Greek, CJK, Arabic, Devanagari, emoji) mixed with the characters that need
quoting or encoding in headers.
"""

from __future__ import annotations

from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from txsend.app.scaffold import write_sample
from txsend.content.renderer import Renderer
from txsend.job.loading import load_job
from txsend.job.recipients import iter_rows
from txsend.models import Row

REPO = Path(__file__).resolve().parents[2]
MID = "<0123456789abcdef0123456789abcdef@acme.example>"
DATE = "Sat, 28 Nov 2026 09:48:00 +0000"

SCRIPTS = (
    "abcxyzABCXYZ éüñçøß ÀÉÎÕÜ",
    "Привет мир Ёлка",
    "Καλημέρα κόσμε",
    "日本語の件名 中文标题 한국어",
    "مرحبا بالعالم",
    "नमस्ते दुनिया",
    "🎉🚀✨👍🏽",
    " \"'(),.:;<>@[]\\=?_-",
)
TEXT = st.text(alphabet=st.sampled_from("".join(SCRIPTS)), min_size=0, max_size=60)


def sample_jobs(tmp: Path) -> dict[str, Path]:
    write_sample(tmp / "init")
    jobs = {p.name: p for p in sorted((REPO / "sample_jobs").glob("*.yaml"))}
    jobs["init"] = next((tmp / "init").glob("*.yaml"))
    return jobs


@pytest.fixture(scope="module")
def renderers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Renderer, Row]]:
    out = {}
    for name, path in sample_jobs(tmp_path_factory.mktemp("jobs")).items():
        job = load_job(path, env={})
        first = next(r for r in iter_rows(job) if isinstance(r, Row))
        out[name] = (Renderer(job), first)
    assert {"welcome.yaml", "monthly-newsletter.yaml", "init"} <= set(out)
    return out


def parse(data: bytes) -> EmailMessage:
    msg = BytesParser(policy=default_policy).parsebytes(data)
    assert isinstance(msg, EmailMessage)
    return msg


def structure(msg: EmailMessage) -> list[tuple[Any, ...]]:
    """Content types in order, with each leaf's decoded content, filename and Content-ID."""
    out: list[tuple[Any, ...]] = []
    for part in msg.walk():
        assert isinstance(part, EmailMessage)
        if part.is_multipart():
            out.append((part.get_content_type(),))
        else:
            out.append(
                (
                    part.get_content_type(),
                    part.get_content(),
                    part.get_filename(),
                    part["Content-ID"],
                    part.get_content_disposition(),
                )
            )
    return out


def headers(msg: EmailMessage) -> list[tuple[str, str]]:
    skip = {"DKIM-Signature", "Content-Type", "Content-Transfer-Encoding", "To"}
    # stripped: EmailMessage may fold a long List-Unsubscribe before its first entry
    return [(k, str(v).strip()) for k, v in msg.items() if k not in skip]


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(first=TEXT, last=TEXT, extra=TEXT)
@example(first="::ÀÀÀÀÀÀÀतततत À", last="", extra="")  # EmailMessage loses this space
@pytest.mark.parametrize("job", ["welcome.yaml", "monthly-newsletter.yaml", "init"])
def test_fast_and_slow_paths_agree(
    renderers: dict[str, tuple[Renderer, Row]], job: str, first: str, last: str, extra: str
) -> None:
    renderer, template_row = renderers[job]
    data = dict(template_row.data)
    for column, value in data.items():
        if isinstance(value, str) and column != renderer.job.recipients.to:
            data[column] = extra
    data.update(first_name=first, last_name=last)
    row = Row(template_row.number, template_row.key, template_row.address, data)
    fast = renderer.render(row, MID, date=DATE).data
    slow = renderer.render_slow(row, MID, date=DATE)
    assert all(len(line) <= 998 for line in fast.split(b"\r\n"))
    assert b"\n" not in fast.replace(b"\r\n", b"")
    a, b = parse(fast), parse(slow)
    assert not a.defects
    # what the recipient reads is what the template rendered
    assert str(a["Subject"]) == renderer.render_part(row, "subject")
    # The Subject is held to the rendered text, not to EmailMessage's: CPython's folder
    # can put a space between two encoded words, where a reader drops it (RFC 2047 6.2),
    # e.g. "तततत À" read back as "ततततÀ".
    assert _without(headers(a), "Subject") == _without(headers(b), "Subject")
    assert a["To"].addresses[0].addr_spec == b["To"].addresses[0].addr_spec
    assert structure(a) == structure(b)


def _without(items: list[tuple[str, str]], name: str) -> list[tuple[str, str]]:
    return [(k, v) for k, v in items if k != name]
