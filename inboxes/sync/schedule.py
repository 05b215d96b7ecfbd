"""Which mailboxes sync, and asking for a sync."""

from __future__ import annotations

from datetime import datetime, timedelta
from uuid import UUID

from django.conf import settings
from django.core.cache import cache
from django.db.models import Q
from django.utils import timezone

from inboxes.models import Inbox, Mailbox, MailboxKind, MailboxStatus, Provider, SyncState


def mailbox_syncable(mailbox: Mailbox) -> str:
    """Why a mailbox is not synced now ("" when it is)."""
    if mailbox.status in (MailboxStatus.DISCONNECTED, MailboxStatus.NEEDS_REAUTH):
        return f"mailbox is {mailbox.status}"
    if mailbox.status == MailboxStatus.ERROR and mailbox.sync_state == SyncState.STOPPED:
        return "mailbox has a permanent error; fix the settings or re-run the connection test"
    if mailbox.kind == MailboxKind.PERSONAL and not (mailbox.owner and mailbox.owner.is_active):
        return "owner is deactivated"
    if mailbox.kind == MailboxKind.TEAM and not Inbox.objects.filter(mailbox=mailbox).exists():
        return "team email is not connected to an inbox"
    return ""


def mailboxes_syncable() -> list[UUID]:
    """Ids of every mailbox that syncs now."""
    return [
        m.pk
        for m in Mailbox.objects.exclude(
            status__in=[MailboxStatus.DISCONNECTED, MailboxStatus.NEEDS_REAUTH]
        )
        .exclude(sync_state=SyncState.STOPPED)
        .select_related("owner")
        if not mailbox_syncable(m)
    ]


# IMAP IDLE watches the INBOX only: a personal IMAP mailbox's Sent folder (mail sent
# from a phone or another app, logged in the CRM) still needs the poll. Gmail's watch
# and Graph's subscriptions cover every folder the sync reads.
_push_covers_all = ~(Q(provider=Provider.IMAP) & Q(kind=MailboxKind.PERSONAL))


def mailboxes_due(now: datetime | None = None) -> list[UUID]:
    """Ids of the mailboxes a poll should sync (the lease keeps doubles harmless).

    A mailbox whose push holds (``Mailbox.pushed_until``: an IMAP IDLE, a Gmail watch,
    Graph subscriptions) tells us of new mail itself; the poll only looks at it when
    its last sync is older than PUSH_SAFETY_POLL_SECONDS, in case a push went missing.
    """
    now = now or timezone.now()
    safety = now - timedelta(seconds=settings.PUSH_SAFETY_POLL_SECONDS)
    return [
        m.pk
        for m in Mailbox.objects.exclude(
            status__in=[MailboxStatus.DISCONNECTED, MailboxStatus.NEEDS_REAUTH]
        )
        .exclude(sync_state=SyncState.STOPPED)
        .exclude(Q(pushed_until__gt=now) & Q(last_synced_at__gt=safety) & _push_covers_all)
        .select_related("owner")
        if not mailbox_syncable(m)
    ]


def schedule_sync(mailbox_id: UUID | str) -> None:
    """Start a sync once the current transaction commits (a worker must see the row)."""
    from django.db import transaction

    from inboxes.tasks import sync_mailbox

    transaction.on_commit(lambda: sync_mailbox.delay(str(mailbox_id)))


# A poll queues at most one sync per mailbox: if the workers fall behind (a thousand
# mailboxes polled every minute by two worker processes), the next poll finds the
# mark and skips the mailbox instead of queueing it again, so the queue never grows
# past one poll per mailbox and pushes are not stuck behind piles of polls. The mark
# goes when the sync starts; its timeout covers a task the broker lost.
POLL_MARK_SECONDS = 15 * 60


def _poll_mark(mailbox_id: UUID | str) -> str:
    return f"sync-poll-queued:{mailbox_id}"


def poll_claim(mailbox_id: UUID | str) -> bool:
    """True (and the mailbox marked) when no poll of it is waiting in the queue."""
    return bool(cache.add(_poll_mark(mailbox_id), 1, timeout=POLL_MARK_SECONDS))


def poll_started(mailbox_id: UUID | str) -> None:
    cache.delete(_poll_mark(mailbox_id))
