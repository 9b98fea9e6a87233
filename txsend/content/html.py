"""HTML transformations of a message body: Markdown to HTML, HTML to text, CSS inlining.

Each function wraps one library and adds only the email-specific policy around it:

- `markdown_to_html`: markdown-it-py, CommonMark plus tables and strikethrough. Raw HTML
  in the Markdown is escaped, never passed through: the Markdown is rendered after Jinja
  has put recipient data into it, and data must not be able to inject markup.
- `html_to_text`: inscriptis, for the text/plain alternative of an HTML body. Links are
  written as ``text (url)``, images as their ``[alt text]``; the lines are then wrapped
  at 78 columns (see `html_to_text` for the exact rule).
- `CssInliner`: css-inline, moving ``<style>`` rules into ``style`` attributes. It never
  reads a stylesheet from the network or the disk.

All of them are pure, ``str`` in and ``str`` out, and are called once per message, so
whatever can be built once (parsers, configurations) is built once.
"""

from __future__ import annotations

import copy
import html as html_lib
import re
import textwrap
from urllib.parse import unquote

import css_inline
import lxml.etree  # type: ignore[import-untyped]
import lxml.html  # type: ignore[import-untyped]
from inscriptis.css_profiles import CSS_PROFILES  # type: ignore[import-untyped]
from inscriptis.html_engine import Inscriptis  # type: ignore[import-untyped]
from inscriptis.html_properties import Display, WhiteSpace  # type: ignore[import-untyped]
from inscriptis.model.config import ParserConfig  # type: ignore[import-untyped]
from inscriptis.model.html_element import HtmlElement  # type: ignore[import-untyped]
from markdown_it import MarkdownIt

WRAP_AT = 78  # RFC 5322 section 2.1.1: lines SHOULD be no longer than 78 characters

# --- Markdown ------------------------------------------------------------------------

# "html": False makes html_block / html_inline tokens render as escaped text.
_MARKDOWN = MarkdownIt("commonmark", {"html": False, "typographer": False}).enable(
    ["table", "strikethrough"]
)


def markdown_to_html(markdown: str, *, title: str = "") -> str:
    """A complete small HTML document with the Markdown rendered in its body.

    Raw HTML in the Markdown comes out as escaped text; markdown-it-py also refuses
    ``javascript:``, ``vbscript:``, ``file:`` and most ``data:`` link targets.
    """
    body = _MARKDOWN.render(markdown)
    return (
        "<!DOCTYPE html>\n"
        "<html>\n"
        "<head>\n"
        '<meta charset="utf-8">\n'
        f"<title>{html_lib.escape(title)}</title>\n"
        "</head>\n"
        "<body>\n"
        f"{body}"
        "</body>\n"
        "</html>\n"
    )


# --- HTML to text --------------------------------------------------------------------

# Firefox's defaults ("strict"), not inscriptis' "relaxed" profile: that one indents
# every <div> by two columns, and a newsletter nests layout <div>s deeply. <pre> is
# indented by four so that the wrapping below recognises it and leaves it alone.
_CSS = dict(CSS_PROFILES["strict"])
_CSS["pre"] = HtmlElement(display=Display.block, whitespace=WhiteSpace.pre, padding_inline=4)
_BODY: HtmlElement = _CSS["body"]

# Only targets a reader can use from a text/plain part are shown after the link text;
# cid:, data:, javascript:, #fragments and relative paths are dropped.
_SHOWN_SCHEMES = ("http://", "https://", "mailto:")
_SCHEME_PREFIX = re.compile(r"^(?:https?://|mailto:)", re.IGNORECASE)
_XML_DECLARATION = re.compile(r"^\s*<\?xml[^>]*\?>")
# inscriptis' list bullets: "* ", "+ ", "o ", "- " by nesting depth, "N. " in an <ol>,
# right-aligned in the list's 4-column padding, so indent + bullet is a multiple of 4.
_BULLET = re.compile(r"( *)((?:[*+o-]|\d+\.) )?")
_BLANK_LINES = re.compile(r"\n{3,}")


def html_to_text(html: str) -> str:
    """A readable text/plain alternative of an HTML email.

    Block structure is kept; a link is written as ``text (url)`` unless its text already
    is the URL or address (``mailto:`` links show the bare address); an image is written
    as its ``[alt text]``; nothing from ``<head>``, ``<style>`` or ``<script>`` or an
    element styled ``display: none`` appears.

    Wrapping rule: a line longer than 78 characters is re-wrapped at spaces, never
    inside a word or URL (so a single long URL stays long), when it starts in column 0
    or with a list bullet (continuation lines are indented under the item's text). Lines
    that start with other indentation (``<pre>`` blocks, indented continuation lines)
    or that contain two spaces in a row (table cells side by side) are kept as they
    are. Widths count code points, not display cells.

    The result has ``\\n`` line ends, no trailing blanks, no leading blank lines, at
    most one blank line in a row, and ends with exactly one ``\\n``; it is ``""`` when
    the HTML shows no text at all.
    """
    text = _inscriptis_text(html)
    lines = [_wrap(line.rstrip()) for line in text.split("\n")]
    text = _BLANK_LINES.sub("\n\n", "\n".join(lines)).lstrip("\n").rstrip()
    return text + "\n" if text else ""


def _inscriptis_text(html: str) -> str:
    source = _XML_DECLARATION.sub("", html, count=1)  # lxml refuses it in a str
    if not source.strip():
        return ""
    try:
        tree = lxml.html.document_fromstring(source)
    except lxml.etree.ParserError:  # "Document is empty": only comments, say
        return ""
    for anchor in tree.iter("a"):
        shown = _shown_target(anchor.get("href", ""), anchor.text_content())
        if shown:
            anchor.tail = f" ({shown}){anchor.tail or ''}"
    # inscriptis keeps the text canvas on the profile's <body> element, so each call gets
    # its own copy of it; a shared one would mix the output of concurrent calls.
    css = dict(_CSS)
    css["body"] = copy.copy(_BODY)
    config = ParserConfig(css=css, display_images=True)
    return str(Inscriptis(tree, config).get_text()).replace("\r\n", "\n").replace("\r", "\n")


def _shown_target(href: str, text: str) -> str:
    """What to write after a link's text: its URL or address, or "" for nothing."""
    href = href.strip()
    if not href.lower().startswith(_SHOWN_SCHEMES):
        return ""
    target = href
    if href[:7].lower() == "mailto:":
        target = unquote(href[7:].partition("?")[0])
        if not target:
            return ""
    if _normal(text) in {_normal(href), _normal(unquote(href)), _normal(target)}:
        return ""
    return target


def _normal(target: str) -> str:
    """A link text or target, compared without scheme, trailing slash, case or spacing."""
    return _SCHEME_PREFIX.sub("", " ".join(target.split())).rstrip("/").casefold()


def _wrap(line: str) -> str:
    if len(line) <= WRAP_AT:
        return line
    match = _BULLET.match(line)
    assert match is not None  # every part of the pattern is optional
    indent, bullet = match.group(1), match.group(2) or ""
    if len(indent + bullet) % 4:  # "o ring ..." at column 0 is text, not a bullet
        bullet = ""
    content = line[len(indent + bullet) :]
    if (indent and not bullet) or "  " in content:
        return line
    prefix = indent + bullet
    lines = textwrap.wrap(
        content,
        width=WRAP_AT,
        initial_indent=prefix,
        subsequent_indent=" " * len(prefix),
        break_long_words=False,
        break_on_hyphens=False,
        expand_tabs=False,
    )
    return "\n".join(lines)


# --- CSS inlining --------------------------------------------------------------------


class CssInliner:
    """Inline ``<style>`` rules into ``style`` attributes, offline.

    - ``load_remote_stylesheets=False``: a ``<link rel="stylesheet">`` is never fetched
      (css-inline then reads no local file either), so a run makes no network access
      here whatever the HTML says.
    - ``keep_link_tags=True``: such a ``<link>`` stays in the document untouched. Its
      rules are not inlined, but the clients that honour ``<link>`` still apply them;
      removing it would silently drop the author's styling for those.
    - ``keep_style_tags=False``, ``keep_at_rules=True``: the inlined ``<style>`` blocks
      go, but their at-rules (``@media``, ``@font-face``, ``@import``) are kept in a
      ``<style>`` in ``<head>``, as responsive email needs its media queries. A kept
      ``@import`` is fetched by the recipient's client, if at all, never by txsend.

    css-inline recovers from invalid CSS the way browsers do (bad declarations and
    rules are dropped or copied as written); it does not raise for it.
    """

    def __init__(self) -> None:
        self._inliner = css_inline.CSSInliner(
            inline_style_tags=True,
            keep_style_tags=False,
            keep_link_tags=True,
            keep_at_rules=True,
            load_remote_stylesheets=False,
        )

    def inline(self, html: str) -> str:
        """The HTML with its ``<style>`` rules inlined; ValueError(reason) when css-inline
        fails (for example on a lone surrogate in the text). css-inline writes a full
        document: ``<html>``, ``<head>`` and ``<body>`` are added when missing.
        """
        try:
            return self._inliner.inline(html)
        except ValueError as exc:  # css_inline.InlineError, UnicodeEncodeError
            raise ValueError(f"cannot inline the CSS: {exc}") from None
