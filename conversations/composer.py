"""What an agent writes in the reply composer, made ready to send: the formatted body
(sanitised HTML and its text part) and the extra Cc and Bcc addresses.

Pure checks and transformations; conversations/handling.py ``conversation_reply``
queues the result.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import nh3
from django.conf import settings

from core.errors import Invalid
from crm.compose import html_to_text_part
from inboxes.addresses import canonical_address
from inboxes.outbox import Attachment

MAX_EXTRA_RECIPIENTS = 50

# What the composer's toolbar makes (bold, italic, links, lists) and the paragraphs
# and line breaks a browser's editor writes: everything else is dropped, its text kept.
_TAGS = {"p", "div", "br", "b", "strong", "i", "em", "a", "ul", "ol", "li"}
_ATTRIBUTES = {"a": {"href"}}
_URL_SCHEMES = {"http", "https", "mailto"}
_EMPTY = re.compile(r"^(?:\s|<br\s*/?>|<(p|div)>\s*(?:<br\s*/?>)?\s*</\1>)*$", re.I)


def formatted_body(text: str, html: str) -> tuple[str, str]:
    """The reply's text part and sanitised HTML part (``""`` when written as plain
    text). The text part is the one given, or made from the HTML without one."""
    html = (html or "").strip()
    if html:
        html = nh3.clean(
            html,
            tags=_TAGS,
            attributes=_ATTRIBUTES,
            url_schemes=_URL_SCHEMES,
            url_relative="deny",
            strip_comments=True,
            link_rel="noopener noreferrer",
        )
        if _EMPTY.match(html):
            html = ""
    if html and not (text or "").strip():
        text = html_to_text_part(html)
    return text or "", html


def address_list(value: str | Sequence[str]) -> list[str]:
    """ "a@x.com, b@y.com; c@z.com" (or a list of them) -> the addresses, in order."""
    values = [value] if isinstance(value, str) else list(value)
    return [
        part.strip()
        for item in values
        for part in item.replace(";", ",").split(",")
        if part.strip()
    ]


def extra_recipients(
    values: str | Sequence[str], *, field: str, label: str, team_address: str
) -> list[str]:
    """The Cc or Bcc addresses an agent typed: checked, each once, in order."""
    found: dict[str, str] = {}
    for typed in address_list(values):
        try:
            canonical = canonical_address(typed)
        except Invalid as exc:
            detail = f"{label}: {exc.detail}"
            raise Invalid(detail, errors={field: [exc.detail]}) from None
        if canonical == team_address:
            raise Invalid(
                f"{typed} is this inbox's own address: remove it from {label}.",
                errors={field: ["The inbox's own address."]},
            )
        found.setdefault(canonical, typed)
    if len(found) > MAX_EXTRA_RECIPIENTS:
        raise Invalid(
            f"At most {MAX_EXTRA_RECIPIENTS} addresses in {label}.",
            errors={field: [f"At most {MAX_EXTRA_RECIPIENTS} addresses."]},
        )
    return list(found.values())


MAX_ATTACHMENTS = 20
_MB = 1024 * 1024


def _megabytes(size: int, *, beside: int) -> str:
    """Whole megabytes, with a decimal where whole ones would read as the limit."""
    whole = f"{size / _MB:.0f}"
    return whole if whole != f"{beside / _MB:.0f}" or size == beside else f"{size / _MB:.1f}"


def check_attachments(attachments: Sequence[Attachment]) -> None:
    """At most MAX_ATTACHMENTS files of at most ATTACHMENT_MAX_BYTES together."""
    if len(attachments) > MAX_ATTACHMENTS:
        raise Invalid(
            f"Attach at most {MAX_ATTACHMENTS} files, or share a link instead.",
            errors={"attachments": [f"At most {MAX_ATTACHMENTS} files."]},
        )
    total = sum(len(a.data) for a in attachments)
    check_attachment_size(total)


def check_attachment_size(total: int) -> None:
    limit: int = settings.ATTACHMENT_MAX_BYTES
    if total > limit:
        detail = (
            f"The attachments are {_megabytes(total, beside=limit)} MB; the limit is "
            f"{_megabytes(limit, beside=limit)} MB. Remove some or share a link instead."
        )
        raise Invalid(detail, errors={"attachments": [detail]})
