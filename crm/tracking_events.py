"""What a fetch of a tracking token records: an open or a click, by a person or most
likely by a machine, counted on the email and put on the contact's timeline.

Decisions, each tested in tests/crm/test_tracking.py:
- a token this server did not sign as it is counts nothing (the pixel is still
  answered; a click is a 404);
- the sender's own fetches (signed in as the email's ``sent_by``) count nothing, nor
  do those of anyone signed in to the sender's account (the app showing the email on
  the contact's timeline loads its pixel);
- a replayed token counts again (someone opening the email twice opened it twice),
  except the same token from the same client (IP and user agent) within
  ``DEDUPE_SECONDS``: mail clients and proxies fetch an image twice in a row;
- most likely machines are recorded apart, with the reason, and only bump
  ``machine_opens`` (a machine click bumps nothing): a mail provider's image proxy or
  a scanner by its user agent, a fetch within ``SCANNER_SECONDS`` of the send (link
  scanners fetch at delivery), or one from an address the mailbox's own SMTP host
  resolves to (the sending server's security scanning);
- only a person's opens and clicks go on the timeline, and only for a logged email.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.core.cache import cache
from django.db import transaction
from django.db.models import F

from crm.models import Email, TrackedLink, TrackingEvent, TrackingKind
from crm.timeline import timeline_add
from crm.tracking import CLICK, OPEN, token_read
from inboxes.models import Mailbox, OutboxItem, Provider
from inboxes.netguard import HostNotAllowed, HostNotFound, resolve_checked

log = logging.getLogger(__name__)

DEDUPE_SECONDS = 5
SCANNER_SECONDS = 10
SMTP_ADDRESSES_CACHE_SECONDS = 3600
# Parts of the user agents of image proxies, link scanners and scripts: a person's
# mail client or browser sends none of them.
MACHINE_AGENTS: tuple[tuple[str, str], ...] = (
    ("googleimageproxy", "Gmail's image proxy"),
    ("ggpht.com", "Gmail's image proxy"),
    ("yahoomailproxy", "Yahoo Mail's image proxy"),
    ("yahoo! slurp", "Yahoo's crawler"),
    ("outlookimageproxy", "Outlook's image proxy"),
    ("owa-image-proxy", "Outlook's image proxy"),
    ("microsoft office existence discovery", "Microsoft Office's link check"),
    ("safelinks", "Microsoft Safe Links"),
    ("bingpreview", "Bing's link preview"),
    ("mimecast", "Mimecast's scanner"),
    ("proofpoint", "Proofpoint's scanner"),
    ("barracuda", "Barracuda's scanner"),
    ("headlesschrome", "a headless browser"),
    ("python-requests", "a script"),
    ("go-http-client", "a script"),
    ("curl/", "a script"),
    ("wget/", "a script"),
    ("bot", "a bot"),
    ("spider", "a crawler"),
    ("crawler", "a crawler"),
)


@dataclass(frozen=True)
class Fetch:
    """One request for a token: who asked, from where, when."""

    at: datetime
    ip: str | None
    user_agent: str
    user_id: Any = None  # the signed-in user's id, if any
    account_id: Any = None  # and their account's


def agent_reason(user_agent: str) -> str:
    if not user_agent.strip():
        return "no user agent"
    lowered = user_agent.lower()
    for marker, what in MACHINE_AGENTS:
        if marker in lowered:
            return what
    return ""


def smtp_addresses(mailbox: Mailbox) -> frozenset[str]:
    """The addresses the mailbox's own configured SMTP host resolves to (nothing for a
    Gmail or Microsoft mailbox). Only that host is ever looked up, never a name from
    the request; the answer is cached, so a burst of opens costs one lookup."""
    host = mailbox.smtp_host.strip()
    if mailbox.provider != Provider.IMAP or not host:
        return frozenset()
    key = "crm-smtp-addresses:" + hashlib.sha256(host.lower().encode()).hexdigest()
    try:
        cached = cache.get(key)
    except Exception:  # noqa: BLE001 - no cache: look it up each time
        cached = None
    if cached is not None:
        return frozenset(cached)
    try:
        found = [ip for _family, ip in resolve_checked(host, mailbox.smtp_port or 587)]
    except (HostNotAllowed, HostNotFound, OSError):
        found = []
    try:
        cache.set(key, found, SMTP_ADDRESSES_CACHE_SECONDS)
    except Exception:  # noqa: BLE001
        log.warning("could not cache the SMTP host's addresses of mailbox %s", mailbox.pk)
    return frozenset(_normal_ip(ip) for ip in found)


def _normal_ip(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value.split("%", 1)[0]))
    except ValueError:
        return value


def machine_reason(email: Email, fetch: Fetch, sent_at: datetime | None) -> str:
    """Why this fetch is most likely a machine's, or "" for a person's."""
    reason = agent_reason(fetch.user_agent)
    if reason:
        return reason
    if sent_at is None:
        return "fetched before the email was sent"
    seconds = (fetch.at - sent_at).total_seconds()
    if seconds < SCANNER_SECONDS:
        return f"fetched {max(seconds, 0):.0f} s after the send (a link scanner)"
    if (
        fetch.ip
        and email.mailbox is not None
        and _normal_ip(fetch.ip) in smtp_addresses(email.mailbox)
    ):
        return "from the sending server's network"
    return ""


def _first_fetch(token: str, fetch: Fetch) -> bool:
    """False for the same token from the same client within DEDUPE_SECONDS."""
    client = f"{token}|{fetch.ip or ''}|{fetch.user_agent}"
    key = "crm-track:" + hashlib.sha256(client.encode()).hexdigest()
    try:
        return bool(cache.add(key, 1, DEDUPE_SECONDS))
    except Exception:  # noqa: BLE001 - no cache: count it
        return True


def _sent_at(email: Email) -> datetime | None:
    row = OutboxItem.objects.filter(message_id=email.message_id).values_list("sent_at").first()
    if row is None:
        return email.at  # not from the outbox (logged from a mailbox): it was sent then
    return row[0]


def _record(email: Email, kind: str, fetch: Fetch, link: TrackedLink | None) -> TrackingEvent:
    reason = machine_reason(email, fetch, _sent_at(email))
    with transaction.atomic():
        event = TrackingEvent.objects.create(
            email=email,
            kind=kind,
            link=link,
            machine=bool(reason),
            reason=reason,
            ip=_valid_ip(fetch.ip),
            user_agent=fetch.user_agent[:500],
        )
        # F expressions: simultaneous fetches each add one.
        if kind == TrackingKind.OPEN:
            counter = "machine_opens" if reason else "opens"
            Email.objects.filter(pk=email.pk).update(**{counter: F(counter) + 1})
        elif not reason:
            Email.objects.filter(pk=email.pk).update(clicks=F("clicks") + 1)
        if not reason and email.logged:
            detail: dict[str, Any] = {"machine": False, "reason": ""}
            if link is not None:
                detail["url"] = link.url
            timeline_add(email.contact, kind, at=fetch.at, email=email, detail=detail)
    return event


def _valid_ip(value: str | None) -> str | None:
    if not value:
        return None
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        return None


def _counts(email: Email, token: str, fetch: Fetch) -> bool:
    if fetch.user_id is not None and fetch.user_id == email.sent_by_id:
        return False  # the sender looking at their own email
    if fetch.account_id is not None and fetch.account_id == email.account_id:
        return False  # a teammate reading it on the contact's timeline in the app
    return _first_fetch(token, fetch)


def tracking_open(token: str, fetch: Fetch) -> TrackingEvent | None:
    """Record an open for a valid open token; None when nothing was counted."""
    found = token_read(token)
    if found is None or found.kind != OPEN:
        return None
    email = Email.objects.select_related("contact", "mailbox").filter(pk=found.email_id).first()
    if email is None or not email.track_opens or not _counts(email, token, fetch):
        return None
    return _record(email, TrackingKind.OPEN, fetch, None)


def tracking_click(token: str, fetch: Fetch, *, count: bool = True) -> str | None:
    """The URL a valid click token names (recording the click), or None: the caller
    answers 404, never a redirect anywhere else."""
    found = token_read(token)
    if found is None or found.kind != CLICK or found.position is None:
        return None
    link = (
        TrackedLink.objects.select_related("email__contact", "email__mailbox")
        .filter(email_id=found.email_id, position=found.position)
        .first()
    )
    if link is None:
        return None
    if count and _counts(link.email, token, fetch):
        _record(link.email, TrackingKind.CLICK, fetch, link)
    return link.url
