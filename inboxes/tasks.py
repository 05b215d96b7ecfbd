"""Thin Celery tasks: ids in, one service call, the retry policy."""

from __future__ import annotations

from celery import shared_task

from inboxes.outbox import outbox_send_run, outbox_sweep
from inboxes.providers.base import ProviderError
from inboxes.sync import LeaseLost, mailbox_reconcile, mailbox_sync, mailboxes_due
from inboxes.sync.schedule import poll_claim, poll_started


@shared_task(bind=True, max_retries=None)
def sync_mailbox(self, mailbox_id: str) -> dict:
    poll_started(mailbox_id)
    try:
        result = mailbox_sync(mailbox_id)
    except ProviderError as exc:
        if exc.permanent:
            return {"ran": True, "error": str(exc)}  # recorded on the mailbox; no hot loop
        # Transient: capped exponential backoff (Celery's own retry).
        raise self.retry(exc=exc, countdown=min(30 * 2**self.request.retries, 900)) from exc
    except LeaseLost:
        return {"ran": True, "error": "lease lost"}
    return {"ran": result.ran, "imported": result.imported, "reason": result.reason}


@shared_task
def sync_due_mailboxes() -> int:
    queued = 0
    for mailbox_id in mailboxes_due():
        if poll_claim(mailbox_id):  # not while an earlier poll of it still waits
            sync_mailbox.delay(str(mailbox_id))
            queued += 1
    return queued


@shared_task(bind=True, max_retries=3)
def reconcile_mailbox(self, mailbox_id: str) -> dict:
    try:
        result = mailbox_reconcile(mailbox_id)
    except ProviderError as exc:
        if exc.permanent:
            return {"ran": True, "error": str(exc)}
        raise self.retry(exc=exc, countdown=300) from exc
    return {"ran": result.ran, "missing": result.missing_after}


@shared_task
def reconcile_all_mailboxes() -> int:
    ids = mailboxes_due()
    for mailbox_id in ids:
        reconcile_mailbox.delay(str(mailbox_id))
    return len(ids)


@shared_task(bind=True, max_retries=None)
def send_outbox(self, mailbox_id: str) -> dict:
    """One send run of a mailbox: its due items over one connection."""
    result = outbox_send_run(mailbox_id)
    if result.retry_in is not None:
        # Items were put back with a backoff: run again when the first is due.
        raise self.retry(countdown=result.retry_in)
    return {
        "claimed": result.claimed,
        "sent": result.sent,
        "failed": result.failed,
        "unknown": result.unknown,
        "held": result.held,
        "connections": result.connections,
    }


@shared_task
def sweep_outbox() -> dict:
    return outbox_sweep()


@shared_task
def keep_push_channel(mailbox_id: str) -> None:
    """Make or renew one mailbox's push channel (on connect, after a lifecycle event)."""
    from inboxes.push.renewal import keep_push_channel as keep

    keep(mailbox_id)


@shared_task
def keep_all_push_channels() -> int:
    from inboxes.push.renewal import keep_all_push_channels as keep_all

    return keep_all()


@shared_task
def index_messages() -> int:
    """Fill the search column of the messages stored since (inboxes/search_index.py)."""
    from inboxes.search_index import search_index_run

    indexed, more = search_index_run()
    if more:
        index_messages.delay()  # a big backlog (an upgrade) goes on in the next run
    return indexed
