"""Tracking an email's opens and clicks: the signed tokens, and the HTML with its links
rewritten and the pixel added. What a fetch of a token records is in
``crm/tracking_events.py``.

A token names one email (and, for a click, the position of one of its links) and is
signed with the server's secret under a salt of its own, so it cannot be guessed,
forged or altered to name another email or another link: the click redirect only
ever goes to the ``TrackedLink`` row the token names (never to a URL in the request).
Tokens are compact and URL-safe: ``o<email>.<signature>`` for an open,
``c<email><position>.<signature>`` for a click, ``<email>`` being the UUID's 16 bytes
in unpadded base64url (22 characters).
"""

from __future__ import annotations

import base64
import html
import re
import uuid
from dataclasses import dataclass
from html.parser import HTMLParser

from django.conf import settings
from django.core import signing

from crm.compose import attribute_value

SALT = "crm.tracking"
OPEN = "o"
CLICK = "c"
_UUID_CHARS = 22
MAX_LINKS = 500


def _signer() -> signing.Signer:
    # "." is outside base64url, so it separates the value from its signature.
    return signing.Signer(salt=SALT, sep=".")


def _encode_uuid(value: uuid.UUID) -> str:
    return base64.urlsafe_b64encode(value.bytes).rstrip(b"=").decode("ascii")


def _decode_uuid(text: str) -> uuid.UUID | None:
    if len(text) != _UUID_CHARS:
        return None
    try:
        return uuid.UUID(bytes=base64.urlsafe_b64decode(text + "=="))
    except (ValueError, TypeError):
        return None


def open_token(email_id: uuid.UUID) -> str:
    return _signer().sign(OPEN + _encode_uuid(email_id))


def click_token(email_id: uuid.UUID, position: int) -> str:
    return _signer().sign(f"{CLICK}{_encode_uuid(email_id)}{position}")


@dataclass(frozen=True)
class Token:
    kind: str
    email_id: uuid.UUID
    position: int | None = None


def token_read(token: str) -> Token | None:
    """What a token names, or None for anything this server did not sign as it is."""
    if len(token) > 200:
        return None
    try:
        value = _signer().unsign(token)
    except signing.BadSignature:
        return None
    kind, rest = value[:1], value[1:]
    email_id = _decode_uuid(rest[:_UUID_CHARS])
    if email_id is None:
        return None
    tail = rest[_UUID_CHARS:]
    if kind == OPEN and not tail:
        return Token(OPEN, email_id)
    if kind == CLICK and tail.isdigit() and tail.isascii():
        return Token(CLICK, email_id, int(tail))
    return None


def open_url(email_id: uuid.UUID) -> str:
    return f"{settings.PUBLIC_URL}/t/o/{open_token(email_id)}"


def click_url(email_id: uuid.UUID, position: int) -> str:
    return f"{settings.PUBLIC_URL}/t/c/{click_token(email_id, position)}"


# --- The email's HTML ---------------------------------------------------------------------------


class _LinkFinder(HTMLParser):
    """The ``<a href="http(s)://...">`` start tags of a document, where they are."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[tuple[tuple[int, int], str, list[tuple[str, str | None]]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag != "a":
            return
        href = next((value for name, value in attrs if name == "href"), None)
        if href and href.strip().lower().startswith(("http://", "https://")):
            text = self.get_starttag_text() or ""
            self.found.append((self.getpos(), text, attrs))


def _offsets(markup: str) -> list[int]:
    """Where each line starts (HTMLParser reports positions as line and column)."""
    starts = [0]
    for index, char in enumerate(markup):
        if char == "\n":
            starts.append(index + 1)
    return starts


def _tag_with_href(attrs: list[tuple[str, str | None]], href: str) -> str:
    parts = ["<a"]
    for name, value in attrs:
        if name == "href":
            value = href
        parts.append(f' {name}="{attribute_value(value)}"' if value is not None else f" {name}")
    return "".join(parts) + ">"


def rewrite_links(markup: str, email_id: uuid.UUID) -> tuple[str, list[str]]:
    """``markup`` with each http(s) link pointing at its click redirect, and the links
    as they were, by position (the n-th link is position n)."""
    finder = _LinkFinder()
    finder.feed(markup)
    finder.close()
    line_starts = _offsets(markup)
    out: list[str] = []
    links: list[str] = []
    cursor = 0
    for (line, column), text, attrs in finder.found[:MAX_LINKS]:
        start = line_starts[line - 1] + column
        if markup[start : start + len(text)] != text or start < cursor:
            continue  # not where the parser says: leave this link as it is
        href = next(value for name, value in attrs if name == "href") or ""
        position = len(links)
        links.append(href.strip())
        out.append(markup[cursor:start])
        out.append(_tag_with_href(attrs, click_url(email_id, position)))
        cursor = start + len(text)
    out.append(markup[cursor:])
    return "".join(out), links


def pixel(email_id: uuid.UUID) -> str:
    src = html.escape(open_url(email_id), quote=True)
    return (
        f'<img src="{src}" width="1" height="1" alt="" '
        'style="display: block; width: 1px; height: 1px; border: 0">'
    )


def with_tracking(
    markup: str, email_id: uuid.UUID, *, opens: bool, clicks: bool
) -> tuple[str, list[str]]:
    """The HTML as it goes out with tracking on: links rewritten (``clicks``), the pixel
    at its end (``opens``); and the original links by position."""
    links: list[str] = []
    if clicks:
        markup, links = rewrite_links(markup, email_id)
    if opens:
        closing = markup.rfind("</div>")
        tag = pixel(email_id)
        # Inside the font wrapper when there is one: some clients drop what follows it.
        markup = markup[:closing] + tag + markup[closing:] if closing >= 0 else markup + tag
    return markup, links


def without_pixel(markup: str) -> str:
    """The HTML as stored (sanitised) without its open pixel: for showing an email in the
    app or to an API client, whose loading it would count an open that never was."""
    if "/t/o/" not in markup:
        return markup
    pixel_tag = re.compile(
        r"<img\b[^>]*\ssrc=\"" + re.escape(settings.PUBLIC_URL) + r"/t/o/[^\"]*\"[^>]*>"
    )
    return pixel_tag.sub("", markup)
