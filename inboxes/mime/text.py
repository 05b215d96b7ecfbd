"""Text: the text parts' bodies (charset, format=flowed) and text derived from HTML."""

from __future__ import annotations

import html
import re

from inboxes.mime.charsets import decode_bytes

_BLOCK_TAG = re.compile(
    r"<(?:br|hr|/?(?:p|div|tr|li|h[1-6]|blockquote|pre|table|ul|ol|dl|dt|dd|center|caption"
    r"|thead|tbody|tfoot))\b[^>]*>",
    re.IGNORECASE,
)
_CELL_END = re.compile(r"</t[dh]>", re.IGNORECASE)
# Safe on nh3 output, which escapes "<" and ">" inside attribute values.
_ANY_TAG = re.compile(r"<[^>]*>")


def html_to_text(clean_html: str) -> str:
    """Searchable text from sanitised HTML: no tags, entities decoded, whitespace collapsed."""
    text = _BLOCK_TAG.sub("\n", clean_html)
    text = _CELL_END.sub(" ", text)
    text = html.unescape(_ANY_TAG.sub("", text))
    lines: list[str] = []
    for line in text.split("\n"):
        line = " ".join(line.split())
        if line or (lines and lines[-1]):
            lines.append(line)
    return "\n".join(lines).strip()


# --- Plain text ---------------------------------------------------------------------


def _normalise_newlines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _unflow(text: str, delsp: bool) -> str:
    """Undo RFC 3676 format=flowed soft line breaks."""
    out: list[str] = []
    paragraph: list[str] = []
    paragraph_depth = 0

    def finish() -> None:
        if paragraph:
            prefix = ">" * paragraph_depth + (" " if paragraph_depth else "")
            out.append(prefix + "".join(paragraph))
            paragraph.clear()

    for line in text.split("\n"):
        depth = len(line) - len(line.lstrip(">"))
        content = line[depth:]
        if content.startswith(" "):
            content = content[1:]  # space-stuffing
        if paragraph and depth != paragraph_depth:
            finish()
        paragraph_depth = depth
        flowed = content.endswith(" ") and content != "-- "
        if flowed and delsp:
            content = content[:-1]
        paragraph.append(content)
        if not flowed:
            finish()
    finish()
    return "\n".join(out)


_META_CHARSET = re.compile(rb"""<meta[^>]{0,200}?charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)""", re.I)


def _body_text(data: bytes, params: dict[str, str], subtype: str) -> str:
    charset = params.get("charset")
    if subtype == "html" and not charset:
        match = _META_CHARSET.search(data[:4096])
        if match:
            charset = match.group(1).decode("ascii", "replace")
    text = _normalise_newlines(decode_bytes(data, charset, detect=True))
    if subtype == "plain" and params.get("format", "").lower() == "flowed":
        text = _unflow(text, params.get("delsp", "").lower() == "yes")
    return text
