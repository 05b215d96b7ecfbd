"""What became of a send: the states an item is settled in, and the Sent lookup
that settles an ``unknown`` one."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any
from uuid import UUID

from django.conf import settings
from django.utils import timezone

from inboxes import events
from inboxes.models import Message, OutboxItem, OutboxState
from inboxes.outbox.claims import Claimed
from inboxes.providers import open_session
from inboxes.providers.base import ProviderError, SendOutcomeUnknown, SendResult

log = logging.getLogger(__name__)


class ClaimLost(Exception):
    """The sweeper gave the item to another claim while this one was still
    before DATA (it was slower than OUTBOX_SEND_LEASE_SECONDS): send nothing."""


class SendLater(Exception):
    """A transient failure: the item is queued again for ``countdown`` seconds."""

    def __init__(self, detail: str, countdown: int):
        super().__init__(detail)
        self.countdown = countdown


def backoff(attempt: int) -> int:
    return min(settings.OUTBOX_RETRY_BASE_SECONDS * 2 ** max(attempt - 1, 0), 3600)


def record_state(item: OutboxItem | Claimed, state: str, detail: str, **extra: Any) -> None:
    OutboxItem.objects.filter(pk=item.pk).update(state=state, detail=detail[:4000], **extra)
    log.info("outbox %s -> %s: %s", item.pk, state, detail)
    if state in (OutboxState.FAILED, OutboxState.UNKNOWN):
        events.report_send_outcome(item.pk)


def settle_failure(
    item: OutboxItem | Claimed, exc: ProviderError, *, mailbox_address: str
) -> tuple[str, int | None]:
    """Record a send that failed for sure (nothing was delivered): ``(state,
    countdown)``, countdown set when the item is queued again for a retry.
    ``item`` needs ``pk`` and ``attempts`` (the claim's)."""
    if exc.reauth:
        # Not the message's fault: it waits for the owner to sign in again
        # (outbox_resume sends it then) instead of failing for good.
        OutboxItem.objects.filter(pk=item.pk, state=OutboxState.SENDING).update(
            state=OutboxState.QUEUED,
            detail=f"Waiting for {mailbox_address} to be reconnected: {exc}"[:4000],
            next_attempt_at=timezone.now() + timedelta(days=365),
        )
        return OutboxState.QUEUED, None
    if exc.permanent:
        record_state(item, OutboxState.FAILED, str(exc))
        return OutboxState.FAILED, None
    attempts = item.attempts
    if attempts >= settings.OUTBOX_MAX_ATTEMPTS:
        record_state(item, OutboxState.FAILED, f"Gave up after {attempts} attempts: {exc}")
        return OutboxState.FAILED, None
    countdown = backoff(attempts)
    OutboxItem.objects.filter(pk=item.pk, state=OutboxState.SENDING).update(
        state=OutboxState.QUEUED,
        detail=f"Attempt {attempts} failed, retrying: {exc}"[:4000],
        next_attempt_at=timezone.now() + timedelta(seconds=countdown),
    )
    return OutboxState.QUEUED, countdown


def record_unknown(
    item: OutboxItem | Claimed, exc: SendOutcomeUnknown, *, message_pk: UUID, message_id: str
) -> None:
    """The data went out and no answer came back: ``unknown`` until the Sent lookup."""
    if exc.message_id and exc.message_id != message_id:
        # Look it up later under the id the provider really used.
        Message.objects.filter(pk=message_pk).update(message_id=exc.message_id)
    record_state(item, OutboxState.UNKNOWN, str(exc))


def sent_detail(result: SendResult) -> str:
    detail = result.detail
    if result.refused:
        detail += " (refused: " + "; ".join(f"{r}: {t}" for r, t in result.refused.items()) + ")"
    return detail


def outbox_resolve_unknown(item_id: UUID | str) -> str:
    """Look for an item of unknown outcome in the Sent folder before anything else."""
    item = OutboxItem.objects.select_related("mailbox", "message").get(pk=item_id)
    if item.state != OutboxState.UNKNOWN:
        return item.state
    try:
        with open_session(item.mailbox) as session:
            sent = session.sent_folder()
            found = sent is not None and session.find_message_id(sent, item.message.message_id)
    except ProviderError as exc:
        log.warning("could not look up %s in Sent: %s", item.pk, exc)
        return OutboxState.UNKNOWN
    if found:
        record_state(
            item,
            OutboxState.SENT,
            "Found in the Sent folder after the connection dropped.",
            sent_at=timezone.now(),
            sent_copy_stored=True,
        )
        return OutboxState.SENT
    OutboxItem.objects.filter(pk=item.pk, state=OutboxState.UNKNOWN).update(
        detail=(
            f"Delivery could not be confirmed: {_cause(item)}, and it is not in the Sent folder. "
            "It was not sent again automatically; send it again if the recipient did not get it."
        )
    )
    events.report_send_outcome(item.pk)
    return OutboxState.UNKNOWN


def _cause(item: OutboxItem) -> str:
    """Why the outcome of an ``unknown`` item cannot be known, without claiming
    that its data went out when that is not known either."""
    if item.data_started_at is None:
        # Its send run's marks were committed without a flush, and the database
        # lost the last ones in a crash (epoch.py): it may never have been reached.
        return (
            "the database server (or its machine) stopped while this message's send run "
            "was going on (it may or may not have been reached)"
        )
    if (
        not item.marks_epoch
        and OutboxItem.objects.filter(
            mailbox_id=item.mailbox_id, data_started_at=item.data_started_at
        )
        .exclude(pk=item.pk)
        .exists()
    ):
        # A mark shared with other items: a send run of an earlier version, which
        # marked a window of up to 20 items at once (and recorded no epoch).
        return (
            "the worker stopped while a batch of messages, this one included, was going out "
            "over one connection (it may or may not have been reached)"
        )
    return "the connection or the worker stopped while the message was going out"
