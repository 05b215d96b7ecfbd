"""The body of a one-to-one email as it goes out: HTML made from text when only text
is given, the sender's default font (R10) applied, and a plain-text part always.

Pure functions of strings: ``crm/sending.py`` calls them, tracking is added by
``crm/tracking.py`` afterwards."""

from __future__ import annotations

import html
import re

from inboxes.mime.html import sanitise_html
from inboxes.mime.text import html_to_text

# The families the settings page offers, each with fallbacks that every mail client has.
SAFE_FONTS: dict[str, str] = {
    "Arial": "Arial, Helvetica, sans-serif",
    "Helvetica": "Helvetica, Arial, sans-serif",
    "Verdana": "Verdana, Geneva, sans-serif",
    "Tahoma": "Tahoma, Verdana, sans-serif",
    "Trebuchet MS": "'Trebuchet MS', Helvetica, sans-serif",
    "Georgia": "Georgia, 'Times New Roman', serif",
    "Times New Roman": "'Times New Roman', Times, serif",
    "Garamond": "Garamond, Georgia, serif",
    "Courier New": "'Courier New', Courier, monospace",
}
FONT_SIZE_MIN = 8
FONT_SIZE_MAX = 32

_URL = re.compile(r"https?://[^\s<>\"']+", re.IGNORECASE)
# Punctuation that ends a sentence, not the URL before it.
_URL_TRAILING = ".,;:!?)]}'\""
_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n+")
_BODY_OPEN = re.compile(r"<body\b[^>]*>", re.IGNORECASE)
_BODY_CLOSE = re.compile(r"</body\s*>", re.IGNORECASE)
# On nh3's output, whose attribute values are double-quoted with '"', '<' and '>'
# escaped, so neither a value nor the label can end the match early.
_SANITISED_LINK = re.compile(r"<a\b[^>]*\shref=\"([^\"]*)\"[^>]*>(.*?)</a>", re.S | re.I)


def attribute_value(value: str) -> str:
    """``value`` safe inside a double-quoted HTML attribute (single quotes stay, for CSS)."""
    return (
        value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
    )


def css_string(value: str) -> str:
    """``value`` as a single-quoted CSS string: backslashes and quotes escaped, control
    characters dropped (a font name has none), so it can never end the declaration."""
    kept = "".join(char for char in value if char.isprintable())
    return "'" + kept.replace("\\", "\\\\").replace("'", "\\'") + "'"


def font_stack(family: str) -> str:
    """The CSS ``font-family`` value for a family: a safe family's own fallbacks, any
    other name as an escaped CSS string with a generic fallback."""
    return SAFE_FONTS.get(family) or f"{css_string(family)}, sans-serif"


def font_style(family: str, size: int) -> str:
    size = min(max(int(size), FONT_SIZE_MIN), FONT_SIZE_MAX)
    return f"font-family: {font_stack(family)}; font-size: {size}px"


def with_font(markup: str, *, family: str, size: int) -> str:
    """``markup`` inside an element styled with the font (inside ``<body>`` when it is a
    whole document), so every mail client shows the sender's default font."""
    opening = f'<div style="{attribute_value(font_style(family, size))}">'
    body_open = _BODY_OPEN.search(markup)
    body_close = _BODY_CLOSE.search(markup)
    if body_open and body_close and body_close.start() >= body_open.end():
        return (
            markup[: body_open.end()]
            + opening
            + markup[body_open.end() : body_close.start()]
            + "</div>"
            + markup[body_close.start() :]
        )
    return f"{opening}{markup}</div>"


def _linkified(line: str) -> str:
    """One line of plain text as HTML: escaped, with its http(s) URLs made links."""
    out: list[str] = []
    position = 0
    for match in _URL.finditer(line):
        url = match.group(0).rstrip(_URL_TRAILING)
        out.append(html.escape(line[position : match.start()]))
        out.append(f'<a href="{attribute_value(url)}">{html.escape(url)}</a>')
        position = match.start() + len(url)
    out.append(html.escape(line[position:]))
    return "".join(out)


def text_to_html(text: str) -> str:
    """Paragraphs at blank lines, line breaks kept, URLs made links (so a click on them
    can be tracked like one in an HTML email)."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").strip("\n")
    paragraphs = [p for p in _PARAGRAPH_BREAK.split(text) if p.strip()]
    return "".join(
        '<p style="margin: 0 0 1em 0">'
        + "<br>\n".join(_linkified(line) for line in paragraph.split("\n"))
        + "</p>\n"
        for paragraph in paragraphs
    )


def _link_as_text(match: re.Match[str]) -> str:
    url, label = match.group(1), match.group(2)
    if html.unescape(_strip_tags(label)).strip() == html.unescape(url):
        return label
    return f"{label} ({url})"


def _strip_tags(markup: str) -> str:
    return re.sub(r"<[^>]*>", "", markup)


def html_to_text_part(markup: str) -> str:
    """The plain-text part for an HTML-only email: its text, each link's address after
    its label (a reader of the text part can still follow it)."""
    clean = _SANITISED_LINK.sub(_link_as_text, sanitise_html(markup))
    return html_to_text(clean) + "\n"


def email_body(*, text: str, html: str, font_family: str, font_size: int) -> tuple[str, str]:
    """The text and HTML parts of an email written as ``text`` and/or ``html``: the HTML
    with the default font (made from the text when only text is given), and a text
    part always (derived from the HTML when only HTML is given)."""
    markup = html if html.strip() else text_to_html(text)
    plain = text if text.strip() else html_to_text_part(html)
    return plain, with_font(markup, family=font_family, size=font_size)
