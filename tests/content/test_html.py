"""Tests for txsend.content.html: Markdown to HTML, HTML to text, CSS inlining (real libraries)."""

from __future__ import annotations

import re
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest

from txsend.content import html as htmlparts
from txsend.content.html import CssInliner, html_to_text, markdown_to_html

NEWSLETTER = """\
<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Acme Monthly HEADTITLE</title>
<link rel="stylesheet" href="https://unreachable.invalid/x.css">
<style>
body { margin: 0; padding: 0; background: #f4f4f4; font-family: Helvetica, Arial, sans-serif; }
.wrapper { width: 100%; background: #f4f4f4; }
.container { width: 600px; margin: 0 auto; background: #ffffff; }
h1 { font-size: 28px; color: #222222; margin: 0 0 12px 0; }
p { font-size: 16px; line-height: 24px; color: #444444; margin: 0 0 16px 0; }
a { color: #0066cc; text-decoration: underline; }
.button a { display: inline-block; padding: 12px 24px; background: #0066cc; color: #ffffff; }
.footer p { font-size: 12px; color: #999999; }
@media only screen and (max-width: 620px) {
  .container { width: 100% !important; }
  h1 { font-size: 22px !important; }
}
</style>
<script>var tracking = "SCRIPTTEXT";</script>
</head>
<body>
<div style="display:none;max-height:0;overflow:hidden">HIDDENPREHEADER&nbsp;&zwnj;</div>
<table class="wrapper" role="presentation" width="100%" cellpadding="0" cellspacing="0">
  <tr>
    <td align="center">
      <table class="container" role="presentation" width="600" cellpadding="0" cellspacing="0">
        <tr>
          <td class="header" style="padding: 24px;">
            <a href="https://acme.example/"><img src="cid:logo.png" alt="Acme" width="120"></a>
          </td>
        </tr>
        <tr>
          <td class="content" style="padding: 0 24px 24px 24px;">
            <h1>Spring launch: the new Acme Rocket Skates</h1>
            <p>Hello Zoë, we have been working on something special for the past eighteen
            months, and today we are finally ready to share it with you and every other
            member of our community.</p>
            <p>The new skates are lighter, faster and safer than any model before them.
            Café owners in Paris and our friends in 日本語 speaking Tokyo tried them first 🚀.</p>
            <ul>
              <li>Carbon frame, 20% lighter than last year's model and still strong enough
              for a coyote who keeps running off cliffs</li>
              <li>Twice the battery life</li>
            </ul>
            <p class="button"><a href="https://acme.example/skates?utm_source=newsletter&amp;\
utm_medium=email&amp;utm_campaign=spring">Read more</a></p>
            <p>Questions? Write to <a href="mailto:help@acme.example">our support team</a>
            or to <a href="mailto:sales@acme.example">sales@acme.example</a>. The answers to
            most of them are at <a href="https://acme.example/faq">https://acme.example/faq</a>
            already.</p>
          </td>
        </tr>
        <tr>
          <td class="content" style="padding: 0 24px 24px 24px;">
            <h2>Events near you</h2>
            <table role="presentation" width="100%">
              <tr><td>Paris</td><td>12 April</td></tr>
              <tr><td>Tokyo</td><td>3 May</td></tr>
            </table>
          </td>
        </tr>
        <tr>
          <td class="content" style="padding: 0 24px 24px 24px;">
            <h2>From the blog</h2>
            <p>Our engineers explain how the new braking system works, why it took three
            winters of testing in the mountains, and what they learned from the prototypes
            that did not make it. <a href="https://blog.acme.example/2025/brakes">Read the
            story</a> or browse <a href="https://blog.acme.example/">all articles</a>.</p>
          </td>
        </tr>
        <tr>
          <td class="footer" style="padding: 24px; background: #fafafa;">
            <p>You receive this email because you subscribed at acme.example.
            <a href="https://acme.example/unsubscribe?token=0123456789abcdef0123456789abcdef\
0123456789abcdef0123456789abcdef">Unsubscribe</a> · <a href="#top">Back to top</a></p>
            <p>Acme Corp, 1 Desert Road, Mesa AZ 85201, USA</p>
          </td>
        </tr>
      </table>
    </td>
  </tr>
</table>
</body>
</html>
"""

MARKDOWN = """\
# Welcome, *Zoë*

Some **bold**, some _emphasis_ and ~~struck~~ text, with [a link](https://acme.example/a?x=1&y=2).

## Your plan

- first item
- second item

1. one
2. two

| Plan  | Price |
|-------|------:|
| Basic | 5 €   |
| Pro   | 20 €  |

<script>alert(1)</script>

Inline <b onclick="steal()">bold</b> and [bad](javascript:alert(1)).
"""


class _Tags(HTMLParser):
    """Collects start tags and the text of a parsed document."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(html: str) -> _Tags:
    parser = _Tags()
    parser.feed(html)
    parser.close()
    return parser


# --- markdown_to_html ----------------------------------------------------------------


def test_markdown_renders_blocks_and_inlines() -> None:
    out = markdown_to_html(MARKDOWN)
    assert "<h1>Welcome, <em>Zoë</em></h1>" in out
    assert "<h2>Your plan</h2>" in out
    assert "<strong>bold</strong>" in out
    assert "<em>emphasis</em>" in out
    assert "<s>struck</s>" in out
    assert '<a href="https://acme.example/a?x=1&amp;y=2">a link</a>' in out
    assert "<ul>\n<li>first item</li>\n<li>second item</li>\n</ul>" in out
    assert "<ol>\n<li>one</li>\n<li>two</li>\n</ol>" in out
    tags = parse(out).tags
    assert tags.count("table") == 1
    assert tags.count("th") == 2
    assert tags.count("td") == 4
    assert '<td style="text-align:right">20 €</td>' in out


def test_markdown_escapes_raw_html() -> None:
    out = markdown_to_html(MARKDOWN)
    tags = parse(out).tags
    assert "script" not in tags
    assert "b" not in tags
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in out
    assert "onclick=&quot;steal()&quot;" in out
    assert 'onclick="' not in out
    assert "javascript:" not in "".join(re.findall(r'href="[^"]*"', out))


def test_markdown_data_cannot_inject_html() -> None:
    # What a recipient's data, substituted by Jinja before rendering, could contain.
    evil = '</p><img src=x onerror="alert(1)"><iframe src="https://evil.example">'
    out = markdown_to_html(f"Hello {evil}!")
    assert parse(out).tags == ["html", "head", "meta", "title", "body", "p"]


def test_markdown_document_structure() -> None:
    out = markdown_to_html("Hi", title='Tom & Jerry <script>"x"</script>')
    assert out.startswith("<!DOCTYPE html>\n<html>\n<head>\n")
    assert '<meta charset="utf-8">' in out
    assert "<title>Tom &amp; Jerry &lt;script&gt;&quot;x&quot;&lt;/script&gt;</title>" in out
    doc = parse(out)
    assert doc.tags == ["html", "head", "meta", "title", "body", "p"]
    assert out.index("<body>") < out.index("<p>Hi</p>") < out.index("</body>")
    assert out.endswith("</body>\n</html>\n")


def test_markdown_empty_and_default_title() -> None:
    out = markdown_to_html("")
    assert "<title></title>" in out
    assert parse(out).tags == ["html", "head", "meta", "title", "body"]


# --- html_to_text --------------------------------------------------------------------


def _is_single_url(line: str) -> bool:
    token = line.strip()
    return " " not in token and "://" in token


def check_text_shape(text: str) -> None:
    assert text.endswith("\n")
    assert not text.endswith("\n\n")
    assert not text.startswith("\n")
    assert "\n\n\n" not in text
    assert "\r" not in text
    for line in text.split("\n"):
        assert line == line.rstrip(), f"trailing blank in {line!r}"
        assert len(line) <= 78 or _is_single_url(line), f"long line {line!r}"


def test_newsletter_text_content() -> None:
    text = html_to_text(NEWSLETTER)
    check_text_shape(text)
    flat = " ".join(text.split())
    assert "Spring launch: the new Acme Rocket Skates" in text
    assert "Events near you" in text
    assert "we are finally ready to share it with you and every other member of our" in flat
    assert "[Acme] (https://acme.example/)" in text
    assert (
        "Read more (https://acme.example/skates?utm_source=newsletter&utm_medium=email"
        "&utm_campaign=spring)" in flat
    )
    assert "our support team (help@acme.example)" in flat
    assert "Unsubscribe (https://acme.example/unsubscribe?token=0123456789abcdef" in flat
    # The link text already is the address or URL: not repeated.
    assert "or to sales@acme.example. The answers" in flat
    assert "are at https://acme.example/faq already." in flat
    assert "Back to top ·" not in flat and "Back to top" in flat
    assert "#top" not in text
    assert "cid:" not in text
    assert "Paris" in text and "12 April" in text
    assert "Read the story (https://blog.acme.example/2025/brakes)" in flat


def test_newsletter_text_hides_head_style_script() -> None:
    text = html_to_text(NEWSLETTER)
    for hidden in (
        "HEADTITLE",
        "SCRIPTTEXT",
        "HIDDENPREHEADER",
        "font-size",
        "color:",
        "@media",
        "{",
        "x.css",
    ):
        assert hidden not in text


def test_newsletter_text_keeps_non_ascii() -> None:
    text = html_to_text(NEWSLETTER)
    assert "Zoë" in text
    assert "Café" in text
    assert "日本語" in text
    assert "🚀" in text
    assert "·" in text


def test_text_of_inlined_html_is_the_same() -> None:
    assert html_to_text(CssInliner().inline(NEWSLETTER)) == html_to_text(NEWSLETTER)


def test_markdown_round_trip_to_text() -> None:
    text = html_to_text(markdown_to_html(MARKDOWN, title="TITLE"))
    check_text_shape(text)
    assert "TITLE" not in text
    assert text.startswith("Welcome, Zoë\n\nSome bold, some emphasis and struck text")
    assert "a link (https://acme.example/a?x=1&y=2)." in " ".join(text.split())
    assert "  * first item\n  * second item\n" in text
    assert " 1. one\n 2. two\n" in text
    assert re.search(r"^Pro +20 €$", text, re.MULTILINE)
    assert "<script>alert(1)</script>" in text  # it was text in the HTML, so it stays text


def test_wraps_long_paragraph_at_spaces() -> None:
    words = " ".join(f"word{i}" for i in range(60))
    text = html_to_text(f"<p>{words}</p>")
    check_text_shape(text)
    lines = text.rstrip("\n").split("\n")
    assert len(lines) > 3
    assert all(72 <= len(line) <= 78 for line in lines[:-1])
    assert " ".join(lines) == words


def test_never_breaks_a_url_or_a_word() -> None:
    url = "https://acme.example/" + "a" * 100
    hyphenated = "-".join(["well"] * 25)
    text = html_to_text(f'<p>Please <a href="{url}">confirm</a> now. {hyphenated} end</p>')
    lines = text.rstrip("\n").split("\n")
    assert f"({url})" in lines
    assert hyphenated in lines
    assert " ".join(lines) == f"Please confirm ({url}) now. {hyphenated} end"


def test_list_items_wrap_with_hanging_indent() -> None:
    item = " ".join(["lorem"] * 30)
    text = html_to_text(f"<ul><li>{item}</li></ul><ol><li>{item}</li></ol>")
    check_text_shape(text)
    lines = text.rstrip("\n").split("\n")
    assert lines[0].startswith("  * lorem")
    assert lines[1].startswith("    lorem")
    numbered = lines.index(next(line for line in lines if line.startswith(" 1. ")))
    assert lines[numbered + 1].startswith("    lorem")
    assert " ".join(" ".join(lines).split()) == f"* {item} 1. {item}"


def test_bullet_like_text_is_not_a_bullet() -> None:
    words = "o ring " + " ".join(["seal"] * 20) + " - " + " ".join(["gasket"] * 10)
    text = html_to_text(f"<p>{words}</p><ol>{'<li>x</li>' * 9}<li>{words}</li></ol>")
    lines = text.rstrip("\n").split("\n")
    assert lines[0].startswith("o ring seal")
    assert lines[1].startswith("seal")  # no hanging indent after "o "
    tenth = next(i for i, line in enumerate(lines) if line.startswith("10. "))
    assert lines[tenth].startswith("10. o ring seal")
    assert lines[tenth + 1].startswith("    seal")


def test_preformatted_lines_are_not_rewrapped() -> None:
    code = "x = call(" + ", ".join(f"arg{i}" for i in range(20)) + ")"
    text = html_to_text(f"<p>Run:</p><pre>{code}\n  indented</pre><p>done</p>")
    assert f"    {code}\n" in text
    assert "      indented\n" in text
    assert text.endswith("done\n")


def test_link_targets_shown_and_hidden() -> None:
    html = (
        '<p><a href="cid:x">cid</a> <a href="#t">anchor</a> <a href="/relative">rel</a> '
        '<a href="javascript:go()">js</a> <a href="data:text/plain,x">data</a> '
        '<a href=" HTTPS://Acme.example/ ">acme.example</a> '
        '<a href="mailto:ann@acme.example?subject=Hi%20there">Ann</a> '
        '<a href="mailto:bob@acme.example?subject=Hi">bob@acme.example</a> '
        '<a href="http://acme.example/p">page</a> <a>no href</a></p>'
    )
    text = html_to_text(html)
    assert text == (
        "cid anchor rel js data acme.example Ann (ann@acme.example) bob@acme.example\n"
        "page (http://acme.example/p) no href\n"
    )


def test_image_alt_text_and_no_image_urls() -> None:
    html = '<p><img src="cid:logo.png" alt="Acme logo"> <img src="https://x.example/s.gif"></p>'
    assert html_to_text(html) == "[Acme logo]\n"


def test_blank_lines_collapsed_and_trailing_blanks_stripped() -> None:
    html = "<br><br><p>&nbsp;</p><p>x&nbsp;&nbsp;</p>\n\n\n<p>&nbsp;</p><p>&nbsp;</p><br><br>y"
    assert html_to_text(html) == "x\n\ny\n"


@pytest.mark.parametrize("html", ["", "   \n", "<!-- only a comment -->", "<html></html>"])
def test_no_text_gives_empty_string(html: str) -> None:
    assert html_to_text(html) == ""


def test_xml_declaration_and_crlf() -> None:
    html = '<?xml version="1.0" encoding="utf-8"?>\r\n<p>a\r\nb</p><pre>c\r\nd</pre>'
    assert html_to_text(html) == "a b\n\n    c\n    d\n"


def test_shared_inscriptis_profile_is_not_mutated() -> None:
    # inscriptis stores each conversion's canvas on the profile's <body> element; a shared
    # element would let concurrent calls (threads) write into each other's output.
    html_to_text(NEWSLETTER)
    assert htmlparts._BODY.canvas is None


# --- CssInliner ----------------------------------------------------------------------


def test_inline_moves_style_into_attribute() -> None:
    out = CssInliner().inline("<style>p{color:red}</style><p>x</p>")
    assert re.search(r'<p style="color: ?red;?">x</p>', out)
    assert "<style" not in out


def test_inline_keeps_media_queries_in_a_style_tag() -> None:
    html = (
        "<html><head><style>p{color:red} @media (max-width:600px){p{color:blue !important}}"
        "</style></head><body><p>x</p></body></html>"
    )
    out = CssInliner().inline(html)
    head, _, body = out.partition("<body")
    assert re.search(r"<style>\s*@media \(max-width:600px\)\{p\{color:blue !important\}\}", head)
    assert "color: red" in body
    assert "blue" not in body
    assert "p{color:red}" not in out


def test_inline_keeps_import_apart_from_media() -> None:
    # css-inline before 0.21.1 fused "@import ...;" with the next at-rule ("@import@media"),
    # which made clients drop the whole <style>, media queries included.
    html = (
        "<style>@import url(https://fonts.invalid/f.css); p{color:red}"
        "@media (max-width:600px){p{color:blue}}</style><p>x</p>"
    )
    out = CssInliner().inline(html)
    assert re.search(
        r"@import url\(https://fonts.invalid/f.css\);\s*@media \(max-width:600px\)", out
    )


def test_inline_remote_stylesheet_not_fetched() -> None:
    link = '<link rel="stylesheet" href="https://unreachable.invalid/x.css">'
    html = f"<html><head>{link}<style>p{{color:red}}</style></head><body><p>x</p></body></html>"
    inliner = CssInliner()
    start = time.perf_counter()
    out = inliner.inline(html)
    assert time.perf_counter() - start < 1.0
    assert link in out  # kept as written, not fetched, not inlined
    assert "color: red" in out


def test_inline_local_stylesheet_not_read(tmp_path: Path) -> None:
    css = tmp_path / "local.css"
    css.write_text("p { color: green }", encoding="utf-8")
    for href in (str(css), css.as_uri(), "local.css"):
        out = CssInliner().inline(f'<link rel="stylesheet" href="{href}"><p>x</p>')
        assert "green" not in out
        assert "<p>x</p>" in out


def test_inline_keeps_doctype_and_text() -> None:
    out = CssInliner().inline(NEWSLETTER)
    assert out.startswith("<!DOCTYPE html>")
    assert "日本語" in out and "🚀" in out and "Zoë" in out
    assert 'style="font-size: 28px;color: #222222;margin: 0 0 12px 0;"' in out
    assert "<script>" in out  # css-inline leaves scripts alone; it only handles CSS


def test_inline_invalid_css_passes_through() -> None:
    # css-inline recovers like a browser: it does not raise, valid rules still apply.
    html = "<style>p{color:red;;; width:} ### { @media {{ }</style><p>x</p><div>d</div>"
    out = CssInliner().inline(html)
    assert re.search(r'<p style="color: red;[^"]*">x</p>', out)
    out = CssInliner().inline("<style>p[[[ {color:red}</style><p style='color:;;{{'>x</p>")
    assert "<p" in out and ">x</p>" in out


def test_inline_error_becomes_value_error() -> None:
    with pytest.raises(ValueError, match="cannot inline the CSS"):
        CssInliner().inline("<p>lone surrogate \ud800</p>")


def test_inliner_is_reusable() -> None:
    inliner = CssInliner()
    first = inliner.inline(NEWSLETTER)
    assert inliner.inline("<style>b{color:red}</style><b>x</b>").count("color: red") == 1
    assert inliner.inline(NEWSLETTER) == first
