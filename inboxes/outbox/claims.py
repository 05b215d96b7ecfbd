"""Claiming an outbox's due items: queued -> sending, in one statement.

A claim counts in ``attempts``, which fences every later write of the claim:
once the sweeper has queued an item again, another claim owns it. A claim is
committed durably (flushed to disk: PostgreSQL's default ``synchronous_commit``;
on SQLite for this commit alone, see ``_claim_portable``): after any crash it is
what tells the sweeper that the item may have started going out. A claim whose
marks will be committed without a flush records the database's epoch then
(``marks_epoch``, ``epoch.py``).

A mailbox with send limits (``limits.py``) claims at most what its rolling windows
allow, counted in the claim's transaction after taking the mailbox's claim lock
(PostgreSQL: an advisory lock; SQLite serialises writers): two runs of one mailbox
cannot both count the same room. A claim takes an item out of being held
(``held_until`` cleared): from then on it is sending, or settled like any other.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from django.core.files.storage import default_storage
from django.db import connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from inboxes.models import Message, OutboxItem, OutboxState
from inboxes.outbox.limits import SendLimits, allowance


@dataclass
class Claimed:
    """One claimed item: what its send needs, read in the claim's statement."""

    pk: UUID
    attempts: int
    envelope_from: str
    recipients: list[str]
    message_pk: UUID
    message_id: str
    raw_name: str


def claim_due(
    mailbox_id: UUID | str,
    limit: int,
    *,
    marks_epoch: str = "",
    limits: SendLimits | None = None,
) -> list[Claimed]:
    """Claim up to ``limit`` due items of the mailbox, oldest first (queued -> sending),
    and no more than its send ``limits`` allow now (None: no limits).
    ``marks_epoch``: the database's epoch (``epoch.current_epoch()``) when the
    claim's marks will be committed without a flush, else empty."""
    if connection.vendor == "postgresql":
        if limits is None:
            return _claim_postgresql(mailbox_id, limit, timezone.now(), marks_epoch)
        with transaction.atomic():
            # Held until the commit: the next claim of this mailbox counts this one's
            # items as sending. Committed durably (the default synchronous_commit).
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
                    [f"outbox-claim:{mailbox_id}"],
                )
            now = timezone.now()
            room = min(limit, allowance(mailbox_id, limits, now))
            return _claim_postgresql(mailbox_id, room, now, marks_epoch) if room else []
    return _claim_portable(mailbox_id, limit, timezone.now(), marks_epoch, limits)


def _claim_postgresql(
    mailbox_id: UUID | str, limit: int, now: datetime, marks_epoch: str
) -> list[Claimed]:
    # SKIP LOCKED: two runs of one mailbox take disjoint items instead of waiting
    # for each other; a row another run has claimed and committed no longer
    # matches state = 'queued' when it is re-checked under the lock. The chosen
    # ids are MATERIALIZED: as "id IN (SELECT ... LIMIT n)" the planner may rescan
    # the subquery per row, which then sees this statement's own updates and
    # returns the next n, again and again: the LIMIT would not hold.
    items = OutboxItem._meta.db_table
    messages = Message._meta.db_table
    sql = f"""
        WITH due AS MATERIALIZED (
            SELECT id FROM {items}
             WHERE mailbox_id = %(mailbox)s AND state = %(queued)s
               AND (next_attempt_at IS NULL OR next_attempt_at <= %(now)s)
             ORDER BY created_at
             LIMIT %(limit)s
               FOR UPDATE SKIP LOCKED
        ), claimed AS (
            UPDATE {items} AS o
               SET state = %(sending)s, claimed_at = %(now)s, attempts = o.attempts + 1,
                   data_started_at = NULL, marks_epoch = %(epoch)s, held_until = NULL
              FROM due
             WHERE o.id = due.id AND o.state = %(queued)s
            RETURNING o.id, o.attempts, o.envelope_from, o.recipients, o.message_id, o.created_at
        )
        SELECT c.id, c.attempts, c.envelope_from, c.recipients, c.message_id,
               m.message_id, m.raw
          FROM claimed c JOIN {messages} m ON m.id = c.message_id
         ORDER BY c.created_at, c.id
    """  # noqa: S608 - table names from the models; every value is a parameter
    params: dict[str, Any] = {
        "sending": OutboxState.SENDING,
        "queued": OutboxState.QUEUED,
        "now": now,
        "mailbox": mailbox_id,
        "limit": limit,
        "epoch": marks_epoch,
    }
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    return [
        Claimed(
            pk=pk,
            attempts=attempts,
            envelope_from=envelope_from,
            # Django has psycopg hand jsonb over as text (JSONField parses it).
            recipients=json.loads(recipients) if isinstance(recipients, str) else recipients,
            message_pk=message_pk,
            message_id=message_id,
            raw_name=raw_name or "",
        )
        for pk, attempts, envelope_from, recipients, message_pk, message_id, raw_name in rows
    ]


def _claim_portable(
    mailbox_id: UUID | str,
    limit: int,
    now: datetime,
    marks_epoch: str,
    limits: SendLimits | None,
) -> list[Claimed]:
    """SQLite: one conditional UPDATE per candidate (writes are serialised there,
    so each claim is still atomic; a candidate someone else took is skipped), in one
    transaction committed with ``synchronous=FULL``: the WAL is synced at its commit
    (the connection's NORMAL syncs it only at checkpoints, and a machine crash could
    lose the claim, then the item would look never tried). The level cannot change
    inside a transaction: within the caller's, its commit decides."""
    durable = not connection.in_atomic_block
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA synchronous")
        (level,) = cursor.fetchone()
        if durable:
            cursor.execute("PRAGMA synchronous = FULL")
    try:
        with transaction.atomic():
            if limits is not None:
                limit = min(limit, allowance(mailbox_id, limits, now))
                if not limit:
                    return []
            return _claim_portable_rows(mailbox_id, limit, now, marks_epoch)
    finally:
        if durable:
            with connection.cursor() as cursor:
                cursor.execute(f"PRAGMA synchronous = {int(level)}")


def _claim_portable_rows(
    mailbox_id: UUID | str, limit: int, now: datetime, marks_epoch: str
) -> list[Claimed]:
    due = (
        OutboxItem.objects.filter(mailbox_id=mailbox_id, state=OutboxState.QUEUED)
        .filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))
        .order_by("created_at", "pk")
    )
    won = [
        pk
        for pk in due.values_list("pk", flat=True)[:limit]
        if OutboxItem.objects.filter(pk=pk, state=OutboxState.QUEUED).update(
            state=OutboxState.SENDING,
            claimed_at=now,
            attempts=F("attempts") + 1,
            data_started_at=None,
            marks_epoch=marks_epoch,
            held_until=None,
        )
    ]
    rows = (
        OutboxItem.objects.filter(pk__in=won)
        .order_by("created_at", "pk")
        .values_list(
            "pk",
            "attempts",
            "envelope_from",
            "recipients",
            "message_id",
            "message__message_id",
            "message__raw",
        )
    )
    return [
        Claimed(
            pk=pk,
            attempts=attempts,
            envelope_from=envelope_from,
            recipients=list(recipients or []),
            message_pk=message_pk,
            message_id=message_id,
            raw_name=raw_name or "",
        )
        for pk, attempts, envelope_from, recipients, message_pk, message_id, raw_name in rows
    ]


def read_raw(entry: Claimed) -> bytes:
    """The raw message of a claimed item (its file, named in the claim)."""
    with default_storage.open(entry.raw_name, "rb") as handle:
        return handle.read()


def release(entries: list[Claimed], *, next_attempt_at: datetime | None, detail: str) -> int:
    """Give claimed items that were not tried back (queued, the claim not counted)."""
    if not entries:
        return 0
    ours = Q()
    for entry in entries:
        ours |= Q(pk=entry.pk, attempts=entry.attempts)
    return OutboxItem.objects.filter(ours, state=OutboxState.SENDING).update(
        state=OutboxState.QUEUED,
        attempts=F("attempts") - 1,
        data_started_at=None,
        next_attempt_at=next_attempt_at,
        detail=detail[:4000],
    )


def raw_of(item: OutboxItem) -> bytes:
    """The raw message of an item read with its message."""
    with item.message.raw.open("rb") as handle:
        return handle.read()
