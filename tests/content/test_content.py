"""Message content end to end: what the SMTP server received, parsed back with `email`.

Attachments, inline images, Markdown, the auto text part, CSS inlining, List-Unsubscribe,
DKIM and international addresses, each sent through the real CLI to a real aiosmtpd
server on 127.0.0.1 and checked on the bytes that arrived.
"""

from __future__ import annotations

import base64
import csv
import os
import sqlite3
from email.message import EmailMessage
from pathlib import Path

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from tests.jobs import cli
from tests.smtpd import ScriptedServer

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)
PDF = b"%PDF-1.4\n" + bytes(range(256)) * 40 + b"\n%%EOF\n"


def journal_rows(path: Path) -> dict[str, tuple[str, str | None]]:
    with sqlite3.connect(path) as db:
        return {
            key: (state, reply)
            for key, state, reply in db.execute("SELECT key, state, reply FROM messages")
        }


def write_folder(
    folder: Path,
    job_yaml: str,
    records: list[dict[str, str]] | None = None,
    files: dict[str, bytes] | None = None,
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    records = records or [
        {"email": f"user{i}@example.com", "first_name": f"User{i}", "id": str(i)} for i in range(3)
    ]
    with (folder / "people.csv").open("w", newline="", encoding="utf-8") as out:
        writer = csv.DictWriter(out, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows(records)
    for name, data in (files or {}).items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    job = folder / "job.yaml"
    job.write_text(
        'from: "Acme <noreply@acme.example>"\n'
        'subject: "Hello {{ first_name }}"\n'
        "recipients: {file: people.csv}\n"
        "delivery: {give_up_unreachable: 1s}\n" + job_yaml,
        encoding="utf-8",
    )
    return job


def by_rcpt(server: ScriptedServer) -> dict[str, EmailMessage]:
    return {r.rcpt_tos[0]: r.message for r in server.received}


def shape(msg: EmailMessage) -> list[tuple[int, str]]:
    """The MIME tree as (depth, content type) in order."""
    out: list[tuple[int, str]] = []

    def walk(part: EmailMessage, depth: int) -> None:
        out.append((depth, part.get_content_type()))
        if part.is_multipart():
            for sub in part.iter_parts():
                assert isinstance(sub, EmailMessage)
                walk(sub, depth + 1)

    walk(msg, 0)
    return out


# --------------------------------------------------------------------------- structures


def test_full_structure_mixed_alternative_related(
    tmp_path: Path, smtp_server: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    html = (
        "<html><head><style>p { color: #123456; }</style></head><body>"
        '<img src="cid:images/logo.png" alt="Acme"><p>Hi {{ first_name }}</p>'
        '<a href="https://acme.example/x">Read more</a></body></html>\n'
    )
    job = write_folder(
        tmp_path,
        "html: t.html\ntext: t.txt\ninline_css: true\n"
        "attachments:\n  - path: files/terms.pdf\n"
        "  - {path: 'invoices/{{ id }}.pdf', filename: 'invoice-{{ id }}.pdf'}\n",
        files={
            "t.html": html.encode(),
            "t.txt": b"Hi {{ first_name }}\n",
            "images/logo.png": PNG,
            "files/terms.pdf": PDF,
            **{f"invoices/{i}.pdf": PDF + str(i).encode() for i in range(3)},
        },
    )
    result = cli(capsys, "run", job, "--relay", smtp_server.url)
    assert result.code == 0, result.err
    messages = by_rcpt(smtp_server)
    assert len(messages) == 3
    for i in range(3):
        msg = messages[f"user{i}@example.com"]
        assert not msg.defects
        assert shape(msg) == [
            (0, "multipart/mixed"),
            (1, "multipart/alternative"),
            (2, "text/plain"),
            (2, "multipart/related"),
            (3, "text/html"),
            (3, "image/png"),
            (1, "application/pdf"),
            (1, "application/pdf"),
        ]
        alternative, terms, invoice = msg.iter_parts()
        text, related = alternative.iter_parts()  # type: ignore[attr-defined]
        html_part, image = related.iter_parts()
        assert text.get_content() == f"Hi User{i}\r\n"
        body = html_part.get_content()
        assert 'style="color: #123456' in body and "<style>" not in body  # inlined
        assert image["Content-ID"] == "<images/logo.png>"
        assert image.get_content_disposition() == "inline"
        assert image.get_content() == PNG
        assert related.get_param("type") == "text/html"
        assert terms.get_filename() == "terms.pdf"
        assert terms.get_content_disposition() == "attachment"
        assert terms.get_content() == PDF
        assert terms["Content-Transfer-Encoding"] == "base64"
        assert invoice.get_filename() == f"invoice-{i}.pdf"
        assert invoice.get_content() == PDF + str(i).encode()
    assert all(len(line) <= 998 for r in smtp_server.received for line in r.data.split(b"\r\n"))


def test_html_only_gets_a_text_part(
    tmp_path: Path, smtp_server: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    html = (
        "<html><head><title>Secret title</title><style>.x{color:red}</style></head><body>"
        "<h1>Big news, {{ first_name }}</h1><p>Our café opens. Read "
        '<a href="https://acme.example/news">the story</a>.</p></body></html>'
    )
    job = write_folder(tmp_path, "html_inline: '" + html.replace("'", "''") + "'\n")
    assert cli(capsys, "run", job, "--relay", smtp_server.url).code == 0
    msg = by_rcpt(smtp_server)["user1@example.com"]
    assert shape(msg) == [(0, "multipart/alternative"), (1, "text/plain"), (1, "text/html")]
    text = msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "Big news, User1" in text
    assert "café" in text
    assert "https://acme.example/news" in text
    assert "color:red" not in text and "Secret title" not in text


def test_auto_text_off(
    tmp_path: Path, smtp_server: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    job = write_folder(tmp_path, "html_inline: '<p>Hi</p>'\nauto_text: false\n")
    assert cli(capsys, "run", job, "--relay", smtp_server.url).code == 0
    assert shape(smtp_server.received[0].message) == [(0, "text/html")]


def test_markdown_makes_html_and_text(
    tmp_path: Path, smtp_server: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    markdown = (
        "# Hello {{ first_name }}\n\nThis is **important**.\n\n"
        "- one\n- two\n\n[Docs](https://acme.example/docs)\n"
    )
    records = [{"email": "a@example.com", "first_name": "<script>x</script>", "id": "1"}]
    job = write_folder(tmp_path, "markdown: news.md\n", records, {"news.md": markdown.encode()})
    assert cli(capsys, "run", job, "--relay", smtp_server.url).code == 0
    msg = smtp_server.received[0].message
    assert shape(msg) == [(0, "multipart/alternative"), (1, "text/plain"), (1, "text/html")]
    text = msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    html = msg.get_body(("html",)).get_content()  # type: ignore[union-attr]
    assert text.startswith("# Hello <script>x</script>\r\n")  # the Markdown is the text part
    assert "<h1>Hello &lt;script&gt;x&lt;/script&gt;</h1>" in html  # data cannot inject HTML
    assert "<strong>important</strong>" in html
    assert '<a href="https://acme.example/docs">Docs</a>' in html


def test_attachment_compressed_when_asked(
    tmp_path: Path, smtp_server: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    big = b"line of a large report\n" * 20000
    job = write_folder(
        tmp_path,
        "text_inline: hi\nattachments:\n"
        "  - {path: big.csv, compress: zip, compress_over: 100KB}\n"
        "  - {path: small.csv, compress: zip, compress_over: 100KB}\n",
        files={"big.csv": big, "small.csv": b"a,b\n"},
    )
    assert cli(capsys, "run", job, "--relay", smtp_server.url).code == 0
    msg = smtp_server.received[0].message
    _text, zipped, small = msg.iter_parts()
    assert zipped.get_filename() == "big.csv.zip"
    assert zipped.get_content_type() == "application/zip"
    import io
    import zipfile

    with zipfile.ZipFile(io.BytesIO(zipped.get_content())) as archive:
        assert archive.namelist() == ["big.csv"]
        assert archive.read("big.csv") == big
    assert small.get_filename() == "small.csv"
    assert small.get_payload(decode=True) == b"a,b\n"
    assert len(smtp_server.received[0].data) < len(big) // 4


def test_non_ascii_attachment_name(
    tmp_path: Path, smtp_server: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    name = "Rechnung für Jürgen — 請求書 2026年11月の分です.pdf"
    job = write_folder(
        tmp_path,
        f"text_inline: hi\nattachments: [{{path: r.pdf, filename: '{name}'}}]\n",
        files={"r.pdf": PDF},
    )
    assert cli(capsys, "run", job, "--relay", smtp_server.url).code == 0
    _text, part = smtp_server.received[0].message.iter_parts()
    assert part.get_filename() == name
    assert all(len(line) <= 78 for line in smtp_server.received[0].data.split(b"\r\n")[:40])


def test_message_over_max_size_fails_before_sending(
    tmp_path: Path, smtp_server: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    job = write_folder(
        tmp_path,
        "text_inline: hi\nmax_message_size: 100KB\nattachments: ['{{ id }}.bin']\n",
        files={"0.bin": b"x" * 1000, "1.bin": os.urandom(200_000), "2.bin": b"y"},
    )
    result = cli(capsys, "run", job, "--relay", smtp_server.url)
    assert result.code == 1
    assert sorted(by_rcpt(smtp_server)) == ["user0@example.com", "user2@example.com"]
    state, reply = journal_rows(tmp_path / "job.journal.db")["user1@example.com"]
    assert state == "failed" and reply is not None and "over max_message_size" in reply


# --------------------------------------------------------------------------- confinement


def test_paths_outside_the_job_folder_fail_the_row(
    tmp_path: Path, smtp_server: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    outside = tmp_path / "secret.txt"
    outside.write_text("TOP SECRET")
    folder = tmp_path / "job"
    records = [
        {"email": "ok@example.com", "first_name": "x", "file": "files/fine.txt"},
        {"email": "dots@example.com", "first_name": "x", "file": "../secret.txt"},
        {"email": "abs@example.com", "first_name": "x", "file": str(outside)},
        {"email": "link@example.com", "first_name": "x", "file": "files/link.txt"},
        {"email": "missing@example.com", "first_name": "x", "file": "files/none.txt"},
        {"email": "sneaky@example.com", "first_name": "x", "file": "files/../../secret.txt"},
    ]
    job = write_folder(
        folder,
        "text_inline: hi\nattachments: ['{{ file }}']\n",
        records,
        {"files/fine.txt": b"fine"},
    )
    (folder / "files" / "link.txt").symlink_to(outside)
    result = cli(capsys, "run", job, "--relay", smtp_server.url)
    assert result.code == 1
    assert [r.rcpt_tos for r in smtp_server.received] == [["ok@example.com"]]
    assert all(b"TOP SECRET" not in r.data for r in smtp_server.received)
    assert b"VE9QIFNFQ1JFVA" not in smtp_server.received[0].data  # nor its base64
    rows = journal_rows(folder / "job.journal.db")
    for key in ("dots", "abs", "link", "sneaky"):
        state, reply = rows[f"{key}@example.com"]
        assert state == "failed", key
        assert reply is not None
        assert "outside the job's folder" in reply or "absolute path" in reply, reply
    assert rows["missing@example.com"][0] == "failed"
    assert "No such file" in (rows["missing@example.com"][1] or "")


def test_fixed_attachment_outside_folder_is_a_job_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "secret.txt").write_text("x")
    job = write_folder(tmp_path / "job", "text_inline: hi\nattachments: [../secret.txt]\n")
    result = cli(capsys, "validate", job)
    assert result.code == 65
    assert "job.yaml:6: attachments[0].path: ../secret.txt: leads outside" in result.err


def test_missing_inline_image_fails_row(
    tmp_path: Path, smtp_server: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    records = [
        {"email": "a@example.com", "img": "logo.png", "first_name": "x"},
        {"email": "b@example.com", "img": "nope.png", "first_name": "x"},
        {"email": "c@example.com", "img": "../x.png", "first_name": "x"},
    ]
    job = write_folder(
        tmp_path / "j",
        "html_inline: '<img src=\"cid:{{ img }}\">'\n",
        records,
        {"logo.png": PNG},
    )
    (tmp_path / "x.png").write_bytes(PNG)
    assert cli(capsys, "run", job, "--relay", smtp_server.url).code == 1
    assert [r.rcpt_tos[0] for r in smtp_server.received] == ["a@example.com"]
    rows = journal_rows(tmp_path / "j" / "job.journal.db")
    assert rows["b@example.com"][0] == "failed" and "cid:nope.png" in (
        rows["b@example.com"][1] or ""
    )
    assert rows["c@example.com"][0] == "failed"


# --------------------------------------------------------------------------- headers


def test_list_unsubscribe_one_click_and_feedback_id(
    tmp_path: Path, smtp_server: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    job = write_folder(
        tmp_path,
        "text_inline: hi\n"
        "unsubscribe:\n"
        "  url: 'https://acme.example/unsubscribe/{{ id }}"
        "?list=newsletter-2026-november&src=email'\n"
        "  mailto: 'unsub+{{ id }}@acme.example'\n"
        "  one_click: true\n"
        "feedback_id: 'nov:acme:newsletter:acme'\n"
        "precedence: bulk\n",
    )
    assert cli(capsys, "run", job, "--relay", smtp_server.url).code == 0
    received = {r.rcpt_tos[0]: r for r in smtp_server.received}
    r = received["user2@example.com"]
    msg = r.message
    assert msg["List-Unsubscribe"] == (
        "<https://acme.example/unsubscribe/2?list=newsletter-2026-november&src=email>, "
        "<mailto:unsub+2@acme.example>"
    )
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert msg["Feedback-ID"] == "nov:acme:newsletter:acme"
    assert msg["Precedence"] == "bulk"
    assert msg["Auto-Submitted"] is None  # not transactional
    # folded only between the two entries, never inside a URL
    raw = r.data.split(b"\r\n\r\n", 1)[0].decode()
    header = raw[raw.index("List-Unsubscribe:") :].split("\r\nList-Unsubscribe-Post")[0]
    assert header.split("\r\n ")[0].endswith(">,")


def test_transactional_adds_auto_submitted(
    tmp_path: Path, smtp_server: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    job = write_folder(tmp_path, "text_inline: hi\ntransactional: true\n")
    assert cli(capsys, "run", job, "--relay", smtp_server.url).code == 0
    msg = smtp_server.received[0].message
    assert msg["Auto-Submitted"] == "auto-generated"
    assert msg["Precedence"] is None


def test_unsafe_unsubscribe_value_skips_row(
    tmp_path: Path, smtp_server: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    records = [
        {"email": "a@example.com", "first_name": "x", "token": "abc"},
        {"email": "b@example.com", "first_name": "x", "token": "x> <https://evil.example"},
    ]
    job = write_folder(
        tmp_path, "text_inline: hi\nunsubscribe: 'https://acme.example/u/{{ token }}'\n", records
    )
    assert cli(capsys, "run", job, "--relay", smtp_server.url).code == 1
    assert [r.rcpt_tos[0] for r in smtp_server.received] == ["a@example.com"]
    state, reply = journal_rows(tmp_path / "job.journal.db")["b@example.com"]
    assert state == "skipped" and "unsubscribe" in (reply or "")


def test_non_ascii_unsubscribe_mailto_skips_row(
    tmp_path: Path, smtp_server: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    # A name from the data inside a mailto: the header holds URLs, which are ASCII; the
    # row is skipped with the reason instead of the run stopping with a traceback.
    records = [
        {"email": "a@example.com", "first_name": "Ann"},
        {"email": "b@example.com", "first_name": "Zo\u00eb"},
    ]
    job = write_folder(
        tmp_path,
        "text_inline: hi\nunsubscribe: {mailto: 'u+{{ first_name }}@acme.example'}\n",
        records,
    )
    result = cli(capsys, "run", job, "--relay", smtp_server.url)
    assert result.code == 1 and "Traceback" not in result.err
    assert [r.rcpt_tos[0] for r in smtp_server.received] == ["a@example.com"]
    state, reply = journal_rows(tmp_path / "job.journal.db")["b@example.com"]
    assert state == "skipped" and "not ASCII" in (reply or "")


@pytest.mark.parametrize(
    ("yaml", "message"),
    [
        ("unsubscribe: {mailto: u@acme.example, one_click: true}", "one_click: needs url"),
        ("unsubscribe: {url: 'http://acme.example/u', one_click: true}", "needs an https"),
        ("unsubscribe: {url: 'ftp://acme.example/u'}", "must be an https"),
        ("unsubscribe: {}", "needs a url, a mailto"),
        ("precedence: junk", "expected one of bulk, list"),
        ("markdown: m.md\ntext_inline: x", "set either markdown or text/html"),
        ("attachments: [{path: a.pdf, compress: gzip}]", "the only compression is zip"),
        (
            "dkim: {domain: acme.example, selector: s1, key_file: k.pem, algorithm: md5}",
            "expected one of rsa-sha256, ed25519-sha256",
        ),
        (
            "headers: {List-Unsubscribe: '<https://x.example>'}\nunsubscribe: https://y.example/u",
            "also set by unsubscribe",
        ),
        ("unsubscribe: {mailto: nobody}", "not an email address"),
        ("attachments: [42]", "expected a mapping or a path"),
        ("attachments: [{path: a.pdf, compress_over: 1MB}]", "set compress: zip as well"),
        ("attachments: [{path: a.pdf, filename: 'x/y.pdf'}]", "must be a plain file name"),
        ("attachments: [{path: a.pdf, content_type: pdf}]", "not a MIME type"),
        ("attachments: [{path: nope.pdf}]", "attachment not found"),
        ("dkim: {domain: 'not a domain', selector: s1, key_file: k.pem}", "not a domain name"),
        ("dkim: {domain: acme.example, selector: 's 1', key_file: k.pem}", "not a DKIM selector"),
        ("dkim: {domain: acme.example, selector: s1, key_file: none.pem}", "key file not found"),
        (
            "dkim: {domain: acme.example, selector: s1, key_file: k.pem, headers: [1]}",
            "not a header name",
        ),
        ("transactional: yes please", "expected true or false"),
    ],
)
def test_content_key_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], yaml: str, message: str
) -> None:
    body = "" if "markdown" in yaml else "text_inline: hi\n"
    job = write_folder(
        tmp_path, body + yaml + "\n", files={"m.md": b"# x", "a.pdf": b"x", "k.pem": b"x"}
    )
    result = cli(capsys, "validate", job)
    assert result.code in (65, 66), result.err
    assert message in result.err
    assert "Traceback" not in result.err


# --------------------------------------------------------------------------- DKIM


def _keys(folder: Path, algorithm: str) -> str:
    """Write a private key as PKCS#8 PEM to folder/dkim.pem; return the DNS TXT record."""
    if algorithm == "rsa-sha256":
        key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey = rsa.generate_private_key(65537, 2048)
        public = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        record = f"v=DKIM1; k=rsa; p={base64.b64encode(public).decode()}"
    else:
        key = ed25519.Ed25519PrivateKey.generate()
        public = key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        record = f"v=DKIM1; k=ed25519; p={base64.b64encode(public).decode()}"
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    (folder / "dkim.pem").write_bytes(pem)
    (folder / "dkim.pem").chmod(0o600)
    return record


def _verify(data: bytes, record: str) -> bool:
    def dnsfunc(name: bytes, timeout: int = 5) -> bytes:
        assert name == b"s1._domainkey.acme.example."
        return record.encode()

    return bool(dkim.verify(data, dnsfunc=dnsfunc))


@pytest.mark.parametrize("algorithm", ["rsa-sha256", "ed25519-sha256"])
def test_dkim_signature_verifies_on_received_bytes(
    tmp_path: Path,
    smtp_server: ScriptedServer,
    capsys: pytest.CaptureFixture[str],
    algorithm: str,
) -> None:
    tmp_path.mkdir(exist_ok=True)
    record = _keys(tmp_path, algorithm)
    job = write_folder(
        tmp_path,
        "html_inline: '<p>Hi {{ first_name }} <img src=\"cid:logo.png\"></p>'\n"
        "attachments: [files/terms.pdf]\n"
        "unsubscribe: {url: 'https://acme.example/u/{{ id }}', one_click: true}\n"
        "feedback_id: 'a:b:c'\n"
        "dkim: {domain: acme.example, selector: s1, key_file: dkim.pem, "
        f"algorithm: {algorithm}}}\n",
        files={"logo.png": PNG, "files/terms.pdf": PDF},
    )
    assert cli(capsys, "run", job, "--relay", smtp_server.url).code == 0
    assert len(smtp_server.received) == 3
    for r in smtp_server.received:
        assert r.data.startswith(b"DKIM-Signature:")
        assert _verify(r.data, record)
        signature = r.message["DKIM-Signature"]
        tags = dict(
            t.strip().split("=", 1)
            for t in str(signature).replace("\r\n", "").split(";")
            if "=" in t
        )
        assert tags["a"] == algorithm and tags["d"] == "acme.example" and tags["s"] == "s1"
        signed = tags["h"].replace(" ", "").lower().split(":")
        for name in (
            "from",
            "to",
            "subject",
            "list-unsubscribe",
            "list-unsubscribe-post",
            "feedback-id",
        ):
            assert name in signed, name
    data = smtp_server.received[0].data
    altered_subject = data.replace(b"Subject: Hello User", b"Subject: Hello Xser", 1)
    assert altered_subject != data and not _verify(altered_subject, record)
    altered_unsub = data.replace(b"https://acme.example/u/", b"https://evil.example/u/", 1)
    assert altered_unsub != data and not _verify(altered_unsub, record)
    assert _verify(
        b"Received: from relay by mx; Sat, 28 Nov 2026 10:00:00 +0000\r\n" + data, record
    )


def test_dkim_key_problems_are_clear(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _keys(tmp_path, "ed25519-sha256")
    job = write_folder(
        tmp_path,
        "text_inline: hi\n"
        "dkim: {domain: acme.example, selector: s1, key_file: dkim.pem, algorithm: rsa-sha256}\n",
    )
    result = cli(capsys, "validate", job)
    assert result.code == 65
    assert "dkim.pem" in result.err and "Traceback" not in result.err
    pem = (tmp_path / "dkim.pem").read_text()
    assert pem.splitlines()[1] not in result.err


# --------------------------------------------------------------------------- international


def test_idn_domain_sent_as_a_label(
    tmp_path: Path, smtp_server: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    records = [{"email": "user@bücher.example", "first_name": "Jürgen Müller", "id": "1"}]
    job = write_folder(tmp_path, "text_inline: hi\n", records)
    job.write_text(
        job.read_text().replace(
            "recipients: {file: people.csv}",
            "recipients: {file: people.csv, name: '{{ first_name }}'}",
        )
    )
    assert cli(capsys, "run", job, "--relay", smtp_server.url).code == 0
    r = smtp_server.received[0]
    assert r.rcpt_tos == ["user@xn--bcher-kva.example"]
    assert "SMTPUTF8" not in r.mail_options
    assert r.data.split(b"\r\n\r\n")[0].isascii()
    assert r.message["To"].addresses[0].display_name == "Jürgen Müller"
    assert r.message["To"].addresses[0].addr_spec == "user@xn--bcher-kva.example"
    assert b"=?utf-8?" in r.data  # the display name is RFC 2047-encoded


def test_non_ascii_local_part_needs_smtputf8(
    tmp_path: Path, smtp_server: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    records = [
        {"email": "jürgen@example.com", "first_name": "J", "id": "1"},
        {"email": "plain@example.com", "first_name": "P", "id": "2"},
    ]
    job = write_folder(tmp_path, "text_inline: hi\n", records)
    assert cli(capsys, "run", job, "--relay", smtp_server.url).code == 0
    received = {r.rcpt_tos[0]: r for r in smtp_server.received}
    utf8 = received["jürgen@example.com"]
    assert "SMTPUTF8" in utf8.mail_options
    assert "To: jürgen@example.com".encode() in utf8.data
    assert "SMTPUTF8" not in received["plain@example.com"].mail_options


def test_non_ascii_local_part_fails_only_that_row_without_smtputf8(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    records = [
        {"email": "jürgen@example.com", "first_name": "J", "id": "1"},
        {"email": "plain@example.com", "first_name": "P", "id": "2"},
    ]
    job = write_folder(tmp_path, "text_inline: hi\n", records)
    server = ScriptedServer()
    server.smtputf8 = False
    with server:
        result = cli(capsys, "run", job, "--relay", server.url)
    assert result.code == 1
    assert [r.rcpt_tos[0] for r in server.received] == ["plain@example.com"]
    state, reply = journal_rows(tmp_path / "job.journal.db")["jürgen@example.com"]
    assert state == "failed"
    assert reply is not None and "SMTPUTF8" in reply


# --------------------------------------------------------------------------- preview, validate


def test_preview_html_part_is_what_is_sent(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job = write_folder(
        tmp_path,
        "markdown: m.md\ninline_css: true\n",
        files={"m.md": b"Hello **{{ first_name }}**\n"},
    )
    result = cli(capsys, "preview", job, "--part", "html")
    assert result.code == 0, result.err
    assert "<strong>User0</strong>" in result.out and "<html" in result.out
    text = cli(capsys, "preview", job, "--part", "text", "--row", "2")
    assert text.out.startswith("Hello **User1**")


def test_validate_reports_sizes_and_encoding(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    records = [{"email": f"u{i}@example.com", "first_name": "x", "n": str(i)} for i in range(3)]
    job = write_folder(
        tmp_path,
        "text_inline: 'hi {{ n }}'\nattachments: [big.bin, '{{ n }}.txt']\n",
        records,
        {"big.bin": os.urandom(900_000), "0.txt": b"a", "1.txt": b"b" * 5000, "2.txt": b"c"},
    )
    (tmp_path / "2.txt").write_text("x" * 1200)
    job.write_text(job.read_text().replace("text_inline: 'hi {{ n }}'", "text: 2.txt"))
    result = cli(capsys, "validate", job)
    assert result.code == 0, result.err
    err = result.err
    assert "3 rows" in err
    assert "big.bin: 879 KB" in err  # a fixed attachment's size
    assert "largest per-recipient attachment 5 KB" in err
    assert "3 messages over 1 MB" in err  # base64 makes 900 KB into 1.2 MB
    assert "3 messages have lines over 998 characters" in err


def test_validate_warns_about_bulk_without_unsubscribe(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    records = [{"email": f"u{i}@example.com", "first_name": "x"} for i in range(5001)]
    job = write_folder(tmp_path, "html_inline: '<p>hi</p>'\nauto_text: false\n", records)
    err = cli(capsys, "validate", job).err
    assert "5001 rows" in err
    assert "no text part" in err
    assert "no unsubscribe" in err  # bulk, not transactional, over 5000 recipients
    job.write_text(job.read_text() + "transactional: true\n")
    assert "no unsubscribe" not in cli(capsys, "validate", job).err


def test_changed_content_settings_need_force(
    tmp_path: Path, smtp_server: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    job = write_folder(tmp_path, "text_inline: hi\n")
    assert cli(capsys, "run", job, "--relay", smtp_server.url, "--limit", "1").code == 0
    job.write_text(job.read_text() + "unsubscribe: https://acme.example/u\n")
    result = cli(capsys, "run", job, "--relay", smtp_server.url)
    assert result.code == 65
    assert "content settings" in result.err
    assert len(smtp_server.received) == 1
