"""Making and renewing the push channels of Gmail and Microsoft mailboxes.

Beat runs ``keep_all_push_channels`` every PUSH_RENEW_SECONDS; a newly connected
mailbox, a lifecycle notification or a lost watch runs ``keep_push_channel`` for
one mailbox at once. Each provider's keeper makes the channel when there is none,
renews it when due and, when it cannot, marks the mailbox polled (``push_lapsed``)
with the reason, to be tried again on the next round.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from uuid import UUID

from django.utils import timezone

from inboxes.models import Mailbox, Provider
from inboxes.providers.base import ProviderError
from inboxes.push import gmail, microsoft
from inboxes.push.state import push_configured, push_lapsed
from inboxes.sync.schedule import mailbox_syncable, mailboxes_syncable

log = logging.getLogger(__name__)

KEEPERS = {
    Provider.GMAIL: gmail.gmail_watch_keep,
    Provider.MICROSOFT: microsoft.graph_subscriptions_keep,
}


# Ending a mailbox's channels before it is disconnected (its tokens are forgotten then).
ENDERS: dict[str, Callable[[Mailbox], object]] = {
    Provider.GMAIL: gmail.gmail_watch_end,
    Provider.MICROSOFT: microsoft.graph_subscriptions_end,
}


def push_channels_end(mailbox: Mailbox) -> None:
    """Best effort, before the mailbox's tokens go: a channel left behind runs out by
    itself, and pushes for a disconnected mailbox change nothing."""
    ender = ENDERS.get(mailbox.provider)
    if ender is None:
        return
    try:
        ender(mailbox)
    except ProviderError as exc:
        log.warning("mailbox %s: push channels not ended (%s)", mailbox.pk, exc)


def keep_push_channel(mailbox_id: UUID | str) -> None:
    """Make or renew the mailbox's channel if its provider pushes and push is set up."""
    mailbox = Mailbox.objects.select_related("owner").filter(pk=mailbox_id).first()
    if mailbox is None or mailbox.provider not in KEEPERS:
        return
    if mailbox_syncable(mailbox):
        return  # not synced now: its channel lapses by itself
    try:
        KEEPERS[Provider(mailbox.provider)](mailbox)
    except ProviderError as exc:
        log.warning("mailbox %s: push could not be kept (%s); polling", mailbox_id, exc)
        push_lapsed(mailbox_id, str(exc))


def keep_all_push_channels() -> int:
    """Every syncable Gmail and Microsoft mailbox; the number looked at."""
    ids = Mailbox.objects.filter(
        pk__in=mailboxes_syncable(), provider__in=list(KEEPERS)
    ).values_list("pk", flat=True)
    count = 0
    for mailbox_id in ids:
        keep_push_channel(mailbox_id)
        count += 1
    return count


def push_missing(mailbox: Mailbox) -> bool:
    """A Gmail or Microsoft mailbox whose push is set up on this server but does not
    hold (never made: say a team mailbox attached to its inbox after connecting; or run
    out). A failed one is left to the next round (PUSH_RENEW_SECONDS), not retried hot."""
    if not push_configured(mailbox.provider) or mailbox.push_error:
        return False
    return mailbox.pushed_until is None or mailbox.pushed_until <= timezone.now()
