"""Older mail imported later: a folder's import window moved back.

When a mailbox's window is made larger (inboxes/history.py), each folder's
``backfill_from`` still marks where its imported window starts. After the folder
is brought up to date from its cursor, the sync lists what the server holds
between the new start and that mark (``keys_since(since, before)``: only the
older part, so nothing that arrives meanwhile is mistaken for history), skips
what the sync ledger holds already (an interrupted import resumes; nothing is
fetched twice), and files the rest as history: ``backfill=True`` to the
consumers, so nothing is routed, notified or reopened. Only once all of it is in
does ``backfill_from`` move back, so reconciliation (which expects everything
since ``backfill_from``) never takes the older mail for a gap and files it as new.
"""

from __future__ import annotations

import contextlib
import logging
from datetime import datetime

from django.utils import timezone

from audit.services import audit_record
from core.memory import malloc_release
from inboxes.models import Mailbox, MailboxFolder, MailboxStatus, SyncState
from inboxes.providers.base import FolderSpec, MailSession
from inboxes.sync.batches import parsed_batches
from inboxes.sync.folders import (
    ALL_MAIL_FROM,
    ANALYZE_AFTER,
    HISTORY_MARK,
    backfill_since,
    tables_analyze,
)
from inboxes.sync.ingest import ingest_batch
from inboxes.sync.lease import LeaseLost, lease_renew
from inboxes.sync.ledger import missing_keys

log = logging.getLogger(__name__)


def window_start(mailbox: Mailbox) -> datetime:
    """Where the mailbox's import window starts now."""
    return backfill_since(mailbox) or ALL_MAIL_FROM


def history_pending(folder: MailboxFolder, start: datetime) -> bool:
    """Does ``folder`` lack the part of the window before its ``backfill_from``?

    Not while its own first import (or a re-read after a reset) is unfinished:
    that one lists the whole window itself."""
    return (
        folder.backfill_from is not None
        and folder.backfill_from > start
        and bool(folder.cursor)
        and HISTORY_MARK not in folder.cursor
    )


def import_older_mail(session: MailSession, mailbox: Mailbox, spec: FolderSpec, token: str) -> int:
    """Import the part of the window before the folder's ``backfill_from``, quietly;
    the number of messages fetched (0 when there is nothing older to import)."""
    folder = MailboxFolder.objects.filter(mailbox=mailbox, role=spec.role).first()
    start = window_start(mailbox)
    if folder is None or not history_pending(folder, start):
        return 0
    previous_from = folder.backfill_from
    assert previous_from is not None  # history_pending
    since = None if start == ALL_MAIL_FROM else start
    keys = session.keys_since(spec, since, before=previous_from)
    missing = missing_keys(folder, keys)  # the ledger, looked up in chunks
    imported = 0
    if missing:
        # Progress as for the first import: "n of N", N all the older mail listed.
        Mailbox.objects.filter(pk=mailbox.pk, status=MailboxStatus.CONNECTED).update(
            status=MailboxStatus.SYNCING
        )
        Mailbox.objects.filter(pk=mailbox.pk).update(
            sync_state=SyncState.HISTORY,
            sync_done=len(keys) - len(missing),
            sync_total=len(keys),
        )
        with contextlib.closing(parsed_batches(session, spec, missing)) as batches:
            for raws, parsed in batches:
                # The cursor stays where it is: this is older mail, not what changed.
                ingest_batch(
                    mailbox=mailbox,
                    folder=folder,
                    raws=raws,
                    parsed=parsed,
                    cursor=folder.cursor,
                    backfill=True,
                )
                count = len(raws)
                del raws, parsed
                malloc_release()
                if any(imported < n <= imported + count for n in ANALYZE_AFTER):
                    tables_analyze()
                imported += count
                if not lease_renew(mailbox.pk, token):
                    raise LeaseLost(str(mailbox.pk))
    MailboxFolder.objects.filter(pk=folder.pk).update(
        backfill_from=start, updated_at=timezone.now()
    )
    audit_record(
        account=mailbox.account,
        actor=None,
        action="mailbox.history_imported",
        target=mailbox,
        data={
            "folder": spec.name,
            "from": start.isoformat(),
            "listed": len(keys),
            "imported": imported,
        },
    )
    log.info(
        "older mail of %s %s since %s: %d listed, %d imported",
        mailbox.pk,
        spec.name,
        start,
        len(keys),
        imported,
    )
    return imported
