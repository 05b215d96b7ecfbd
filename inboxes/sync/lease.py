"""The sync lease: one worker syncs a mailbox at a time.

Taking it is a conditional UPDATE of the mailbox row (only one can win), it is
renewed after every batch, and a worker that dies simply lets it run out
(SYNC_LEASE_SECONDS), after which any worker may take over and resume from the
committed cursor.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from uuid import UUID

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from inboxes.models import Mailbox


class LeaseLost(Exception):
    """Another worker took the mailbox over (this one stalled past its lease)."""


def lease_acquire(mailbox_id: UUID | str, seconds: int | None = None) -> str | None:
    """The lease's token, or None when another worker holds it."""
    token = uuid.uuid4().hex
    now = timezone.now()
    seconds = seconds or settings.SYNC_LEASE_SECONDS
    won = (
        Mailbox.objects.filter(pk=mailbox_id)
        .filter(Q(sync_lease_until__isnull=True) | Q(sync_lease_until__lt=now))
        .update(sync_lease_token=token, sync_lease_until=now + timedelta(seconds=seconds))
    )
    return token if won else None


def lease_renew(mailbox_id: UUID | str, token: str, seconds: int | None = None) -> bool:
    seconds = seconds or settings.SYNC_LEASE_SECONDS
    return bool(
        Mailbox.objects.filter(pk=mailbox_id, sync_lease_token=token).update(
            sync_lease_until=timezone.now() + timedelta(seconds=seconds)
        )
    )


def lease_release(mailbox_id: UUID | str, token: str) -> None:
    Mailbox.objects.filter(pk=mailbox_id, sync_lease_token=token).update(
        sync_lease_token="", sync_lease_until=None
    )
