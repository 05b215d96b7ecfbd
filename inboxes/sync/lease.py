"""The sync lease: one worker syncs a mailbox at a time.

Taking it is a conditional UPDATE of the mailbox row (only one can win), it is
renewed after every batch, and a worker that dies simply lets it run out
(SYNC_LEASE_SECONDS), after which any worker may take over and resume from the
committed cursor.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import timedelta
from uuid import UUID

from django.conf import settings
from django.db.models import Q, QuerySet
from django.utils import timezone

from inboxes.models import Mailbox


class LeaseLost(Exception):
    """Another worker took the mailbox over (this one stalled past its lease)."""


# The IMAP watcher whose thread takes the lease (inboxes/sync/watch.py). A watcher
# killed mid-sync leaves its leases behind; with its name in their tokens the next
# watcher frees them as soon as the dead one's heartbeat stops, not a whole
# SYNC_LEASE_SECONDS later (watch_leases.free_dead_watchers_sync_leases).
_holder: ContextVar[str] = ContextVar("sync_lease_holder", default="")


@contextmanager
def syncing_as_watcher(name: str) -> Iterator[None]:
    """Leases taken inside carry the watcher ``name`` in their token."""
    reset = _holder.set(name)
    try:
        yield
    finally:
        _holder.reset(reset)


def watcher_token_prefix(name: str) -> str:
    """The start of every lease token a watcher takes (short: tokens are 64 chars)."""
    return "w" + hashlib.sha1(name.encode(), usedforsecurity=False).hexdigest()[:15] + "."


def lease_acquire(mailbox_id: UUID | str, seconds: int | None = None) -> str | None:
    """The lease's token, or None when another worker holds it."""
    holder = _holder.get()
    token = (watcher_token_prefix(holder) if holder else "") + uuid.uuid4().hex
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


def leases_free_of_watchers(names: Iterable[str], mailboxes: QuerySet[Mailbox]) -> int:
    """End the sync leases that the watchers ``names`` (dead ones) hold on any of
    ``mailboxes``; how many. One UPDATE."""
    held_by_them = Q()
    for name in names:
        held_by_them |= Q(sync_lease_token__startswith=watcher_token_prefix(name))
    if not held_by_them:
        return 0
    return (
        mailboxes.filter(held_by_them)
        .exclude(sync_lease_until__isnull=True)
        .update(sync_lease_token="", sync_lease_until=None)
    )
