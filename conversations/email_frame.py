"""Email bodies in the inbox: shown in ``<iframe sandbox srcdoc>`` (no allow-scripts,
no allow-same-origin).

A srcdoc document inherits the page's Content-Security-Policy, so the email's
inline ``style`` attributes would be refused there; they are moved into a
per-message stylesheet served from this origin (``frame_css`` in
conversations/downloads.py). Requests from the sandboxed (opaque-origin) frame
carry no session cookie, so the stylesheet and ``cid:`` images are fetched with a
short-lived signed token bound to the viewer, whose visibility is checked again on
every request.
"""

from __future__ import annotations

import math
import re
import time
import uuid
from html import escape
from html.parser import HTMLParser
from urllib.parse import unquote, urlencode

from django.core import signing
from django.urls import reverse
from django.utils.crypto import constant_time_compare
from django.utils.html import escape as escape_html
from django.utils.html import urlizer
from django.utils.safestring import SafeString, mark_safe

from accounts.models import User
from inboxes.mime import sanitise_html
from inboxes.models import Message

# ------------------------------------------------------------------------------------

_FRAME_SIGNER = signing.Signer(salt="conversations.inbox_views.frame")
_TOKEN_WINDOW = 12 * 3600  # a token lives 12 to 24 hours
_NAME = re.compile(r"^[a-z][a-z0-9-]*$")
_CSS_DECLARATION = re.compile(r"^\s*[a-z-]+\s*:\s*[^{}<>\\;]+$", re.IGNORECASE)
_CSS_FORBIDDEN = ("/*", "*/", "@", "url", "expression", "&")
FRAME_CSS = """html{font:14px/1.5 system-ui,-apple-system,"Segoe UI",sans-serif;color:#1d2330;background:#fff}
body{margin:0;padding:0 2px;overflow-wrap:anywhere}
img{max-width:100%;height:auto}
img:not([src]){display:inline-block;padding:1px 6px;border:1px dashed #c8cfdb;border-radius:4px;color:#5b6475;font-size:12px}
table{max-width:100%}
pre{white-space:pre-wrap}
a{color:#2f5fd0}
blockquote{margin:.4em 0 .4em .4em;padding-left:.8em;border-left:3px solid #dde2ea;color:#5b6475}
"""


def token_window() -> int:
    return int(time.time() // _TOKEN_WINDOW)


def frame_token(kind: str, object_id, user_id, window: int | None = None) -> str:
    window = token_window() if window is None else window
    signature = _FRAME_SIGNER.signature(f"{kind}:{object_id}:{user_id}:{window}")
    return f"{user_id}.{window}.{signature}"


def _token_user(token: str, kind: str, object_id) -> User | None:
    try:
        user_id, window, signature = token.split(".", 2)
        window_number = int(window)
        uuid.UUID(user_id)
    except ValueError:
        return None
    if window_number not in (token_window(), token_window() - 1):
        return None
    expected = _FRAME_SIGNER.signature(f"{kind}:{object_id}:{user_id}:{window_number}")
    if not constant_time_compare(signature, expected):
        return None
    return User.objects.filter(pk=user_id, is_active=True).first()


def frame_viewer(request, kind: str, object_id) -> User | None:
    """The logged-in user, or the one a valid frame token names."""
    if request.user.is_authenticated:
        return request.user
    token = request.GET.get("t", "")
    return _token_user(token, kind, object_id) if token else None


def _clean_style(value: str) -> str:
    kept = []
    for declaration in value.split(";"):
        lowered = declaration.lower()
        if not declaration.strip() or any(bad in lowered for bad in _CSS_FORBIDDEN):
            continue
        if _CSS_DECLARATION.match(declaration):
            kept.append(" ".join(declaration.split()))
    return "; ".join(kept)


class _EmailRewriter(HTMLParser):
    """Re-serialises sanitised HTML for the sandboxed frame: ``style`` attributes
    become numbered rules of the message's stylesheet, ``cid:`` images point at
    their attachment, remote images are dropped unless the viewer asked for them."""

    def __init__(self, *, images: dict[str, str], remote: bool) -> None:
        super().__init__(convert_charrefs=True)
        self.images = images
        self.remote = remote
        self.out: list[str] = []
        self.styles: dict[str, int] = {}
        self.blocked = 0
        self.shown_images = 0

    def handle_starttag(self, tag, attrs) -> None:
        self._tag(tag, attrs, "")

    def handle_startendtag(self, tag, attrs) -> None:
        self._tag(tag, attrs, " /")

    def handle_endtag(self, tag) -> None:
        if _NAME.match(tag):
            self.out.append(f"</{tag}>")

    def handle_data(self, data) -> None:
        self.out.append(escape(data, quote=False))

    def _tag(self, tag: str, attrs, end: str) -> None:
        if not _NAME.match(tag):
            return
        parts = [tag]
        for name, value in attrs:
            value = value or ""
            if not _NAME.match(name) or name.startswith("on"):
                continue
            if name == "style":
                declarations = _clean_style(value)
                if declarations:
                    number = self.styles.setdefault(declarations, len(self.styles) + 1)
                    parts.append(f'data-pk-style="{number}"')
                continue
            if tag == "img" and name == "src":
                value = self._image(value)
                if value is None:
                    continue
            elif name in ("href", "src") and not re.match(
                r"^(https?:|mailto:|tel:)", value, re.IGNORECASE
            ):
                continue
            parts.append(f'{name}="{escape(value, quote=True)}"')
        self.out.append(f"<{' '.join(parts)}{end}>")

    def _image(self, src: str) -> str | None:
        lowered = src.strip().lower()
        if lowered.startswith("cid:"):
            url = self.images.get(unquote(src.strip()[4:]).strip("<>").lower())
            if url:
                self.shown_images += 1
            return url
        if lowered.startswith(("https:", "http:")):
            if self.remote:
                self.shown_images += 1
                return src
            self.blocked += 1
        return None

    def css(self) -> str:
        return "".join(
            f'[data-pk-style="{number}"]{{{declarations}}}\n'
            for declarations, number in self.styles.items()
        )


def rewrite_email(message: Message, *, images: dict[str, str], remote: bool) -> _EmailRewriter:
    rewriter = _EmailRewriter(images=images, remote=remote)
    # Sanitised at ingestion already; again here so a row stored before a rule
    # tightened (or written by anything else) is held to today's rules.
    rewriter.feed(sanitise_html(message.html))
    rewriter.close()
    return rewriter


def _frame_height(message: Message, rewriter: _EmailRewriter) -> int:
    """A guess at the email's height: the frame cannot be measured from here
    (no script runs in it and it has no access to this page)."""
    lines = sum(max(1, math.ceil(len(line) / 85)) for line in (message.text or "").splitlines())
    return max(60, min(24 + 22 * lines + 180 * rewriter.shown_images, 720))


def email_frame(message: Message, *, user, remote: bool) -> dict:
    window = token_window()
    images = {}
    for attachment in message.attachments.all():
        if attachment.content_id:
            url = reverse("inbox-attachment", args=[attachment.pk])
            token = frame_token("attachment", attachment.pk, user.pk, window)
            images[attachment.content_id.lower()] = f"{url}?{urlencode({'t': token})}"
    rewriter = rewrite_email(message, images=images, remote=remote)
    css_url = reverse("inbox-frame-css", args=[message.pk])
    css_url += "?" + urlencode({"t": frame_token("css", message.pk, user.pk, window)})
    img_src = "'self' data:" + (" https: http:" if remote else "")
    policy = f"default-src 'none'; style-src 'self'; img-src {img_src}; font-src 'self'"
    srcdoc = (
        '<!doctype html><html><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{escape(policy)}">'
        '<meta name="referrer" content="no-referrer">'
        '<base target="_blank">'
        f'<link rel="stylesheet" href="{escape(css_url)}">'
        f"</head><body>{''.join(rewriter.out)}</body></html>"
    )
    return {
        "srcdoc": srcdoc,  # escaped by the template into the attribute
        "height": _frame_height(message, rewriter),
        "blocked": rewriter.blocked,
    }


# --- Plain-text bodies ------------------------------------------------------------------

# Django's |urlize splits the text into words at whitespace, <, >, " and ' and looks
# at every word (0.4 ms for a 2 KB email). Only a word holding one of these can
# become a link (an http(s):// or www. URL, a bare domain in one of the seven
# original gTLDs, or an address), so one compiled search finds them and the rest is
# escaped in bulk.
_MAY_LINK = re.compile(
    # A character class first lets the regex engine skip to candidates quickly; the
    # lookbehinds then check what follows (case-insensitive, as urlize is).
    r"[@:.wW](?:(?<=@)|(?<=:)//|(?<=[wW])[wW]{2}\.|(?<=\.)(?:[cC][oO][mM]|[eE][dD][uU]"
    r"|[gG][oO][vV]|[iI][nN][tT]|[mM][iI][lL]|[nN][eE][tT]|[oO][rR][gG]))"
)
_WORD_END = re.compile(r"""[\s<>"']""")


def linkify(text: str) -> SafeString:
    """``text|urlize`` (links with rel="nofollow", everything else escaped), with the
    same output, about ten times faster: each candidate word goes through the same
    Urlizer.handle_word as the filter, the text between them through escape()."""
    text = str(text or "")
    out: list[str] = []
    done = 0
    for marker in _MAY_LINK.finditer(text):
        if marker.start() < done:
            continue  # a later marker in a word already handled
        start = marker.start()
        while start > done and not _WORD_END.match(text[start - 1]):
            start -= 1
        end_match = _WORD_END.search(text, marker.end())
        end = end_match.start() if end_match else len(text)
        out.append(escape_html(text[done:start]))
        out.append(
            urlizer.handle_word(text[start:end], safe_input=False, nofollow=True, autoescape=True)
        )
        done = end
    out.append(escape_html(text[done:]))
    return mark_safe("".join(out))  # noqa: S308 - every piece is escaped above
