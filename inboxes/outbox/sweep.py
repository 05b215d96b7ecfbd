"""The outbox's sweeper, run by beat every OUTBOX_SWEEP_SECONDS."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db.models import Count, Q
from django.utils import timezone

from inboxes.models import OutboxItem, OutboxState, Provider
from inboxes.outbox.enqueue import enqueue_send_run
from inboxes.outbox.epoch import current_epoch
from inboxes.outbox.outcomes import outbox_resolve_unknown
from inboxes.outbox.sent_copies import outbox_store_sent_copy


def outbox_sweep() -> dict[str, int]:
    """Run by beat: re-publish lost sends (the database is the truth, not the broker),
    recover sends whose worker died, and store missing Sent copies."""
    now = timezone.now()
    lease = timedelta(seconds=settings.OUTBOX_SEND_LEASE_SECONDS)
    counts = {"requeued": 0, "runs": 0, "recovered": 0, "unknown": 0, "copies": 0}
    stale = OutboxItem.objects.filter(state=OutboxState.SENDING, claimed_at__lt=now - lease)
    # Nothing went out before data_started_at: these are safe to send again, unless
    # their marks were committed without a flush in an epoch that has ended since (a
    # database crash may have lost them, marks.py): then each may have started.
    marks_lost = Q(marks_epoch__gt="") & ~Q(marks_epoch=current_epoch())
    maybe_started = Q(data_started_at__isnull=False) | marks_lost
    counts["recovered"] = stale.exclude(maybe_started).update(
        state=OutboxState.QUEUED, detail="The worker stopped before sending; queued again."
    )
    for item_id in stale.filter(maybe_started).values_list("pk", flat=True):
        OutboxItem.objects.filter(pk=item_id, state=OutboxState.SENDING).update(
            state=OutboxState.UNKNOWN, detail="The worker stopped while the message was going out."
        )
        outbox_resolve_unknown(item_id)
        counts["unknown"] += 1
    due = OutboxItem.objects.filter(state=OutboxState.QUEUED).filter(
        Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now - timedelta(seconds=5))
    )
    # Older than a few seconds: their run was lost (or its worker died), not just slow
    # to start. Recovered items (claimed_at is old) count at once.
    due = due.filter(Q(created_at__lt=now - timedelta(seconds=5)) | Q(claimed_at__lt=now - lease))
    per_mailbox = due.values("mailbox_id").annotate(items=Count("pk")).order_by()
    for row in per_mailbox[:500]:
        # Forced: the lease may be held by a run whose worker died.
        enqueue_send_run(row["mailbox_id"], force=True)
        counts["requeued"] += row["items"]
        counts["runs"] += 1
    missing_copies = OutboxItem.objects.filter(
        state=OutboxState.SENT,
        sent_copy_stored=False,
        mailbox__provider=Provider.IMAP,
        sent_at__gt=now - timedelta(days=2),
        sent_at__lt=now - timedelta(seconds=30),
    )
    for item_id in missing_copies.values_list("pk", flat=True)[:100]:
        counts["copies"] += int(outbox_store_sent_copy(item_id))
    return counts
