"""Which mailboxes sync, and asking for a sync."""

from __future__ import annotations

from uuid import UUID

from inboxes.models import Inbox, Mailbox, MailboxKind, MailboxStatus, SyncState


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


def mailboxes_due() -> list[UUID]:
    """Ids of the mailboxes a poll should sync (the lease keeps doubles harmless)."""
    return [
        m.pk
        for m in Mailbox.objects.exclude(
            status__in=[MailboxStatus.DISCONNECTED, MailboxStatus.NEEDS_REAUTH]
        )
        .exclude(sync_state=SyncState.STOPPED)
        .select_related("owner")
        if not mailbox_syncable(m)
    ]


def schedule_sync(mailbox_id: UUID | str) -> None:
    """Start a sync once the current transaction commits (a worker must see the row)."""
    from django.db import transaction

    from inboxes.tasks import sync_mailbox

    transaction.on_commit(lambda: sync_mailbox.delay(str(mailbox_id)))
