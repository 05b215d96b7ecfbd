"""One folder's sync: from its stored cursor to the server's, a batch at a time.

Each batch is stored with the cursor just past it (inboxes/sync/ingest.py), so
a sync that stops anywhere resumes where the last stored batch left it. The
keys the ledger already holds are skipped; history (a first sync, or a re-read
after a reset) is filed without routing notifications.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db import connection
from django.db.models import F, Model
from django.utils import timezone

from audit.services import audit_record
from core.memory import malloc_release
from inboxes import consumers
from inboxes.mime import ParsedMessage
from inboxes.models import (
    FolderRole,
    Mailbox,
    MailboxFolder,
    MailboxMessage,
    MailboxStatus,
    Message,
    SyncState,
)
from inboxes.providers.base import Changes, FolderSpec, MailSession, RawMessage
from inboxes.sync.batches import parsed_batches
from inboxes.sync.ingest import ingest_batch
from inboxes.sync.lease import LeaseLost, lease_renew
from inboxes.sync.ledger import LEDGER_CHUNK, known_keys

# After this many messages of a first import, refresh the planner's statistics.
ANALYZE_AFTER = (1_000, 10_000)

# Kept in the per-batch cursor while a history (a first sync, or a re-read after
# a reset) is not all in: its last key. A sync that resumes after a crash or a
# dropped connection files the keys up to it as history too.
HISTORY_MARK = "history_through"


def analyzed_models() -> list[type[Model]]:
    """The tables a first import fills: the engine's and its consumers'."""
    return [Message, MailboxMessage, *consumers.models_filled_by_import()]


def tables_analyze() -> None:
    """Fresh planner statistics for the tables a first import fills.

    They grow from empty inside one sync, and until autovacuum gets to them the
    planner plans for empty tables (e.g. a hash join over every link of the inbox
    per threaded message instead of an index lookup): cost per message then grows
    with the mailbox. PostgreSQL only; other databases plan differently."""
    if connection.vendor != "postgresql":
        return
    tables = [model._meta.db_table for model in analyzed_models()]
    with connection.cursor() as cursor:
        for table in tables:
            cursor.execute(f"ANALYZE {connection.ops.quote_name(table)}")


# A folder's ``backfill_from`` when its window holds all mail.
ALL_MAIL_FROM = datetime(1970, 1, 1, tzinfo=UTC)


def backfill_since(mailbox: Mailbox) -> datetime | None:
    if mailbox.backfill_days is None:
        return None
    return timezone.now() - timedelta(days=mailbox.backfill_days)


def folder_for(mailbox: Mailbox, spec: FolderSpec) -> MailboxFolder:
    folder, _ = MailboxFolder.objects.get_or_create(
        mailbox=mailbox, role=spec.role, defaults={"name": spec.name}
    )
    if folder.name != spec.name:
        folder.name = spec.name
        folder.save(update_fields=["name", "updated_at"])
    return folder


def sync_folder(session: MailSession, mailbox: Mailbox, spec: FolderSpec, token: str) -> int:
    """Import what changed in the folder since its cursor; the number imported."""
    folder = folder_for(mailbox, spec)
    pending_history = folder.cursor.get(HISTORY_MARK, "")
    first_sync = not folder.cursor or bool(pending_history)
    since = backfill_since(mailbox)  # one moment for both: the window lists from it
    if folder.backfill_from is None:
        folder.backfill_from = since or ALL_MAIL_FROM
        folder.save(update_fields=["backfill_from", "updated_at"])
    cursor = {k: v for k, v in folder.cursor.items() if k != HISTORY_MARK}
    changes = session.changes(spec, cursor, since=since)
    if changes.reset:
        folder.resync_count += 1
        folder.alert = (
            f"The server reset the folder {spec.name} (its UIDVALIDITY changed or its sync "
            "state expired); it was read again and nothing was duplicated."
        )
        folder.save(update_fields=["resync_count", "alert", "updated_at"])
        audit_record(
            account=mailbox.account,
            actor=None,
            action="mailbox.folder_reset",
            target=mailbox,
            data={"folder": spec.name, "resyncs": folder.resync_count},
        )
    # History (the first sync, or a reset) is filed without routing notifications;
    # so is the rest of an interrupted one, but not mail that came in since.
    if not folder.cursor or changes.reset:
        history_through = changes.keys[-1] if changes.keys else ""
    else:
        history_through = pending_history if pending_history in changes.keys else ""
    history = changes.keys.index(history_through) + 1 if history_through else 0
    backfill = first_sync or changes.reset
    if backfill and spec.role == FolderRole.INBOX:
        Mailbox.objects.filter(pk=mailbox.pk).update(
            status=MailboxStatus.SYNCING if first_sync else mailbox.status,
            sync_state=SyncState.INITIAL,
            sync_done=0,
            sync_total=len(changes.keys),
        )
    elif changes.keys:
        Mailbox.objects.filter(pk=mailbox.pk).update(
            sync_state=SyncState.RUNNING, sync_done=0, sync_total=len(changes.keys)
        )
    imported = 0
    for begin, end, is_history in ((0, history, True), (history, len(changes.keys), False)):
        for start in range(begin, end, LEDGER_CHUNK):
            chunk = changes.keys[start : min(start + LEDGER_CHUNK, end)]
            known = known_keys(folder, chunk)
            wanted = [key for key in chunk if key not in known]
            through = None  # the last key of the chunk the stored cursor covers
            # closing(): a failure mid-chunk stops the fetching before the session goes
            with contextlib.closing(parsed_batches(session, spec, wanted)) as batches:
                for raws, parsed in batches:
                    through = raws[-1].key
                    _store_batch(
                        mailbox=mailbox,
                        folder=folder,
                        changes=changes,
                        raws=raws,
                        parsed=parsed,
                        through=through,
                        cursor=cursor,
                        is_history=is_history,
                        history_through=history_through,
                    )
                    cursor = folder.cursor
                    count = len(raws)
                    del raws, parsed  # this batch's bytes may go before the next one arrives
                    malloc_release()  # and the memory they took back to the system
                    if backfill and any(imported < n <= imported + count for n in ANALYZE_AFTER):
                        tables_analyze()
                    imported += count
                    if not lease_renew(mailbox.pk, token):
                        raise LeaseLost(str(mailbox.pk))
            if through != chunk[-1]:
                # Known (or meanwhile expunged) keys at the end of the chunk: move the
                # cursor past them too.
                _store_batch(
                    mailbox=mailbox,
                    folder=folder,
                    changes=changes,
                    raws=[],
                    parsed=[],
                    through=chunk[-1],
                    cursor=cursor,
                    is_history=is_history,
                    history_through=history_through,
                )
                cursor = folder.cursor
            if known:
                Mailbox.objects.filter(pk=mailbox.pk).update(sync_done=F("sync_done") + len(known))
    MailboxFolder.objects.filter(pk=folder.pk).update(
        cursor=changes.cursor,
        server_count=changes.server_count,
        last_synced_at=timezone.now(),
        updated_at=timezone.now(),
    )
    return imported


def _store_batch(
    *,
    mailbox: Mailbox,
    folder: MailboxFolder,
    changes: Changes,
    raws: Sequence[RawMessage],
    parsed: Sequence[ParsedMessage],
    through: str,
    cursor: dict[str, Any],
    is_history: bool,
    history_through: str,
) -> None:
    """Store one batch and move the cursor past ``through``, a key of ``changes``
    (``cursor``: the one stored before). A batch of history keeps the history mark
    in its cursor until the batch that ends with ``history_through``."""
    cursor = changes.cursor_after(through, cursor)
    if is_history and through != history_through:
        cursor = {**cursor, HISTORY_MARK: history_through}
    ingest_batch(
        mailbox=mailbox,
        folder=folder,
        raws=raws,
        parsed=parsed,
        cursor=cursor,
        backfill=is_history,
    )
