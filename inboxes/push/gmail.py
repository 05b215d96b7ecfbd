"""Gmail push: ``users.watch`` on INBOX and SENT with the operator's Pub/Sub topic, and
what a push from that topic does.

One ``PushChannel(provider=gmail, folder_role="")`` per mailbox (one watch covers
both labels); its ``external_id`` holds the topic the watch publishes to, so a
changed ``GMAIL_PUBSUB_TOPIC`` makes the watch again. Watches lapse after 7 days:
each is made again once a day (``RENEW_AFTER``), by the renewal round
(inboxes/push/renewal.py). While one holds, ``Mailbox.pushed_until`` is its
expiration and the poll leaves the mailbox to the pushes (plus the safety poll);
when it cannot be made, the channel is failed, the ProviderError goes up and the
renewal marks the mailbox polled with the reason.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from uuid import UUID

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from core.errors import Invalid
from inboxes.addresses import canonical_address
from inboxes.models import Mailbox, MailboxStatus, Provider, PushChannel, PushStatus
from inboxes.providers.base import ProviderError
from inboxes.providers.gmail.watch import gmail_watch, gmail_watch_stop
from inboxes.push.state import GMAIL_NOT_SET_UP, push_holds, push_lapsed, push_received

log = logging.getLogger(__name__)

RENEW_AFTER = timedelta(days=1)
# A watch that ends sooner than this is made again whatever its age.
EXPIRY_MARGIN = timedelta(days=1)
NOT_SET_UP = GMAIL_NOT_SET_UP


def _channel(mailbox: Mailbox) -> PushChannel:
    channel, _ = PushChannel.objects.get_or_create(
        mailbox=mailbox, provider=Provider.GMAIL, folder_role=""
    )
    return channel


def _watch_due(channel: PushChannel, topic: str, now: datetime) -> bool:
    return (
        channel.status != PushStatus.ACTIVE
        or channel.external_id != topic
        or channel.renewed_at is None
        or channel.renewed_at <= now - RENEW_AFTER
        or channel.expires_at is None
        or channel.expires_at <= now + EXPIRY_MARGIN
    )


def gmail_watch_keep(mailbox: Mailbox) -> None:
    """Start the mailbox's watch when it has none, renew it daily (it lapses after
    7 days); without GMAIL_PUBSUB_TOPIC, nothing (the mailbox is polled)."""
    topic = settings.GMAIL_PUBSUB_TOPIC
    if not topic:
        # Polled, and the mailbox page says why push is off. A watch made under an
        # earlier topic publishes to nobody now and runs out by itself.
        PushChannel.objects.filter(mailbox=mailbox, provider=Provider.GMAIL).exclude(
            status=PushStatus.STOPPED
        ).update(status=PushStatus.STOPPED, last_error=NOT_SET_UP, updated_at=timezone.now())
        if mailbox.pushed_until is not None or mailbox.push_error != NOT_SET_UP:
            push_lapsed(mailbox.pk, NOT_SET_UP)
        return
    now = timezone.now()
    channel = _channel(mailbox)
    if not _watch_due(channel, topic, now):
        if mailbox.pushed_until != channel.expires_at and channel.expires_at is not None:
            push_holds(mailbox.pk, channel.expires_at)
        return
    # The network call happens outside any transaction; the row is written after.
    try:
        watch = gmail_watch(mailbox, topic=topic)
    except ProviderError as exc:
        PushChannel.objects.filter(pk=channel.pk).update(
            status=PushStatus.FAILED, last_error=str(exc), updated_at=timezone.now()
        )
        raise  # the renewal marks the mailbox polled, with the reason
    PushChannel.objects.filter(pk=channel.pk).update(
        status=PushStatus.ACTIVE,
        external_id=topic,
        expires_at=watch.expires_at,
        renewed_at=timezone.now(),
        last_error="",
        updated_at=timezone.now(),
    )
    push_holds(mailbox.pk, watch.expires_at)
    log.info("mailbox %s: gmail watch until %s", mailbox.pk, watch.expires_at.isoformat())


def gmail_watch_end(mailbox: Mailbox) -> None:
    """Stop the mailbox's watch (before its tokens are forgotten on disconnect). Best
    effort: a watch that cannot be stopped runs out within 7 days, and pushes for a
    disconnected mailbox are ignored."""
    active = PushChannel.objects.filter(
        mailbox=mailbox, provider=Provider.GMAIL, status=PushStatus.ACTIVE
    )
    if not active.exists():
        return
    try:
        gmail_watch_stop(mailbox)
    except ProviderError as exc:
        log.warning("mailbox %s: gmail watch not stopped (%s); it runs out", mailbox.pk, exc)
    active.update(status=PushStatus.STOPPED, updated_at=timezone.now())
    Mailbox.objects.filter(pk=mailbox.pk).update(pushed_until=None)


def gmail_push_mailboxes(address: str) -> list[UUID]:
    """The connected Gmail mailboxes (of any account) that a push for ``address`` is
    about: by the profile address Google gave on connect, or the canonical address."""
    try:
        canonical = canonical_address(address)
    except Invalid:
        return []
    return list(
        Mailbox.objects.filter(provider=Provider.GMAIL)
        .exclude(status__in=[MailboxStatus.DISCONNECTED, MailboxStatus.NEEDS_REAUTH])
        .filter(Q(provider_user_id__iexact=address) | Q(canonical_address=canonical))
        .values_list("pk", flat=True)
    )


def gmail_push_receive(address: str) -> int:
    """A verified push said ``address`` changed: its mailboxes sync (the sync finds
    out what changed from its own cursor). The number of mailboxes told."""
    mailbox_ids = gmail_push_mailboxes(address)
    if not mailbox_ids:
        log.info("gmail push for %s: no connected mailbox", address)
        return 0
    PushChannel.objects.filter(
        mailbox_id__in=mailbox_ids, provider=Provider.GMAIL, folder_role=""
    ).update(last_push_at=timezone.now())
    for mailbox_id in mailbox_ids:
        push_received(mailbox_id)
    return len(mailbox_ids)
