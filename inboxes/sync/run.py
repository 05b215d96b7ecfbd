"""Keeping a mailbox in sync: cursor -> fetch -> parse once -> idempotent ingest.

One mailbox is synced by one worker at a time, across any number of worker
processes and machines, through a lease on the mailbox row (inboxes/sync/lease.py).
Each folder is brought up to date from its stored cursor (inboxes/sync/folders.py),
a batch at a time (inboxes/sync/batches.py), each batch stored with the cursor
past it (inboxes/sync/ingest.py); then older mail is imported if the mailbox's
import window was made larger (inboxes/sync/history.py).
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from uuid import UUID

from django.utils import timezone

from inboxes import events
from inboxes.models import Mailbox, MailboxStatus, Provider, SyncState
from inboxes.providers import open_session
from inboxes.providers.base import MailSession, ProviderError
from inboxes.push.renewal import push_missing
from inboxes.sync.folders import sync_folder
from inboxes.sync.history import import_older_mail
from inboxes.sync.lease import lease_acquire, lease_release
from inboxes.sync.schedule import mailbox_syncable, schedule_sync


@dataclass
class SyncResult:
    mailbox_id: str
    ran: bool
    imported: int = 0  # the older mail of a larger window included
    history: int = 0  # of which older mail
    reason: str = ""
    folders: dict[str, int] = field(default_factory=dict)


def mailbox_sync(mailbox_id: UUID | str) -> SyncResult:
    """Bring every folder of the mailbox up to date. Safe to run any number of times."""
    mailbox = Mailbox.objects.select_related("owner").get(pk=mailbox_id)
    reason = mailbox_syncable(mailbox)
    if reason:
        return SyncResult(str(mailbox_id), ran=False, reason=reason)
    # Ask first, then try: if the lease is taken, its holder sees the request
    # once it lets go (below) and syncs again, so no push is lost.
    Mailbox.objects.filter(pk=mailbox_id).update(sync_requested=True)
    token = lease_acquire(mailbox_id)
    if token is None:
        return SyncResult(str(mailbox_id), ran=False, reason="another worker is syncing it")
    # Everything this sync lists comes after this point: it answers every request so far.
    Mailbox.objects.filter(pk=mailbox_id).update(sync_requested=False)
    result = SyncResult(str(mailbox_id), ran=True)
    try:
        with open_sync_session(mailbox) as session:
            specs = session.folders()
            for spec in specs:
                count = sync_folder(session, mailbox, spec, token)
                result.folders[spec.role] = count
                result.imported += count
            # Every folder is up to date (new mail first); then any older mail
            # that a larger import window asks for (inboxes/sync/history.py).
            for spec in specs:
                count = import_older_mail(session, mailbox, spec, token)
                result.folders[spec.role] += count
                result.imported += count
                result.history += count
        record_success(mailbox)
    except ProviderError as exc:
        record_failure(mailbox, exc)
        raise
    finally:
        lease_release(mailbox_id, token)
    if Mailbox.objects.filter(pk=mailbox_id, sync_requested=True).exists():
        schedule_sync(mailbox_id)  # someone asked while this sync ran
    return result


def open_sync_session(mailbox: Mailbox) -> AbstractContextManager[MailSession]:
    """The provider's session; for IMAP the IDLE watcher's own when it triggered this
    sync in its process (inboxes/sync/watch.py), saving a login."""
    if mailbox.provider == Provider.IMAP:
        from inboxes.providers.imap.session import sync_session

        return sync_session(mailbox)
    return open_session(mailbox)


def record_success(mailbox: Mailbox) -> None:
    Mailbox.objects.filter(pk=mailbox.pk).exclude(status=MailboxStatus.DISCONNECTED).update(
        status=MailboxStatus.CONNECTED,
        last_error="",
        sync_state=SyncState.IDLE,
        sync_last_error="",
        last_synced_at=timezone.now(),
    )
    if mailbox.status != MailboxStatus.CONNECTED:
        events.report_mailbox_health(mailbox.pk)
    if push_missing(mailbox):
        from inboxes.tasks import keep_push_channel

        keep_push_channel.delay(str(mailbox.pk))


def record_failure(mailbox: Mailbox, exc: ProviderError) -> None:
    """Transient errors are shown and retried; permanent ones stop the syncing
    until someone fixes the mailbox, so a wrong password is not hammered."""
    if exc.reauth:
        Mailbox.objects.filter(pk=mailbox.pk).update(
            status=MailboxStatus.NEEDS_REAUTH,
            last_error=str(exc),
            sync_state=SyncState.STOPPED,
            sync_last_error=str(exc),
        )
    elif exc.permanent:
        Mailbox.objects.filter(pk=mailbox.pk).update(
            status=MailboxStatus.ERROR,
            last_error=str(exc),
            sync_state=SyncState.STOPPED,
            sync_last_error=str(exc),
        )
    else:
        Mailbox.objects.filter(pk=mailbox.pk).update(
            sync_state=SyncState.ERROR, sync_last_error=str(exc)
        )
        return
    events.report_mailbox_health(mailbox.pk)
