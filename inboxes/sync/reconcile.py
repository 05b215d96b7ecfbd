"""Never silently healthy: reconciliation compares what the server holds with
what is stored and imports any gap; an admin's resync reads every folder again."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING
from uuid import UUID

from django.utils import timezone

from audit.services import audit_record
from inboxes import events
from inboxes.models import Mailbox, MailboxFolder, SyncState
from inboxes.providers.base import FolderSpec, MailSession, ProviderError
from inboxes.rules import check_admin
from inboxes.sync.batches import parsed_batches
from inboxes.sync.folders import folder_for
from inboxes.sync.ingest import ingest_batch
from inboxes.sync.lease import lease_acquire, lease_release, lease_renew
from inboxes.sync.ledger import missing_keys
from inboxes.sync.run import open_sync_session, record_failure
from inboxes.sync.schedule import mailbox_syncable, schedule_sync

if TYPE_CHECKING:
    from accounts.models import User

log = logging.getLogger(__name__)


@dataclass
class ReconcileResult:
    mailbox_id: str
    ran: bool
    missing_before: int = 0
    missing_after: int = 0
    reason: str = ""


def mailbox_reconcile(mailbox_id: UUID | str) -> ReconcileResult:
    """Compare what the server holds with what is stored, import any gap, and
    leave a visible alert for whatever still is missing (never a silent success)."""
    mailbox = Mailbox.objects.select_related("owner").get(pk=mailbox_id)
    reason = mailbox_syncable(mailbox)
    if reason:
        return ReconcileResult(str(mailbox_id), ran=False, reason=reason)
    token = lease_acquire(mailbox_id)
    if token is None:
        return ReconcileResult(str(mailbox_id), ran=False, reason="another worker is syncing it")
    result = ReconcileResult(str(mailbox_id), ran=True)
    try:
        with open_sync_session(mailbox) as session:
            for spec in session.folders():
                folder = folder_for(mailbox, spec)
                if not folder.cursor:
                    continue  # never synced: the sync imports it, not reconciliation
                before, after = _reconcile_folder(session, mailbox, folder, spec, token)
                result.missing_before += before
                result.missing_after += after
    except ProviderError as exc:
        record_failure(mailbox, exc)
        raise
    finally:
        lease_release(mailbox_id, token)
    if Mailbox.objects.filter(pk=mailbox_id, sync_requested=True).exists():
        schedule_sync(mailbox_id)  # a push was refused the lease while this ran
    return result


def _reconcile_folder(
    session: MailSession, mailbox: Mailbox, folder: MailboxFolder, spec: FolderSpec, token: str
) -> tuple[int, int]:
    server_keys = session.keys_since(spec, folder.backfill_from)
    missing = missing_keys(folder, server_keys)
    before = len(missing)
    with contextlib.closing(parsed_batches(session, spec, missing)) as batches:
        for raws, parsed in batches:
            ingest_batch(
                mailbox=mailbox,
                folder=folder,
                raws=raws,
                parsed=parsed,
                cursor=folder.cursor,
                backfill=False,
            )
            lease_renew(mailbox.pk, token)
    still_missing = missing_keys(folder, server_keys) if before else []
    after = len(still_missing)
    alert = ""
    if after:
        alert = (
            f"{after} of {len(server_keys)} messages in {spec.name} could not be imported "
            f"(first: {still_missing[0]}). The sync keeps trying; see the sync ledger."
        )
    elif before:
        log.warning(
            "reconciliation of %s %s imported %d missed messages", mailbox.pk, spec.name, before
        )
    MailboxFolder.objects.filter(pk=folder.pk).update(
        server_count=len(server_keys),
        missing_count=after,
        alert=alert,
        last_reconciled_at=timezone.now(),
        updated_at=timezone.now(),
    )
    if after:
        Mailbox.objects.filter(pk=mailbox.pk).update(sync_last_error=alert)
    if before:
        events.report_sync_gap(mailbox.pk, spec.name, before, after)
        audit_record(
            account=mailbox.account,
            actor=None,
            action="mailbox.reconciled",
            target=mailbox,
            data={"folder": spec.name, "missing": before, "still_missing": after},
        )
    return before, after


def mailbox_resync(*, actor: User, mailbox: Mailbox) -> None:
    """Admins: read every folder again from the start of its backfill window.

    Stored keys are skipped and content is deduplicated, so this fills gaps and
    never duplicates; it also clears a stopped sync after the cause was fixed.
    """
    check_admin(actor, "resync a mailbox")
    MailboxFolder.objects.filter(mailbox=mailbox).update(
        cursor={}, alert="", updated_at=timezone.now()
    )
    Mailbox.objects.filter(pk=mailbox.pk).update(sync_state=SyncState.PENDING, sync_last_error="")
    audit_record(account=mailbox.account, actor=actor, action="mailbox.resync", target=mailbox)
