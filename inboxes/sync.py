"""Keeping a mailbox in sync: cursor -> fetch -> parse once -> idempotent ingest.

One mailbox is synced by one worker at a time, across any number of worker
processes and machines, through a lease on the mailbox row: taking it is a
conditional UPDATE (only one can win), it is renewed after every batch, and a
worker that dies simply lets it run out (SYNC_LEASE_SECONDS), after which any
worker may take over and resume from the committed cursor.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import connection
from django.db.models import F, Model, Q
from django.utils import timezone

from audit.services import audit_record
from core.memory import malloc_release
from inboxes import consumers
from inboxes.ingest import ingest_batch
from inboxes.mime import ParsedMessage
from inboxes.models import (
    FolderRole,
    Inbox,
    Mailbox,
    MailboxFolder,
    MailboxKind,
    MailboxMessage,
    MailboxStatus,
    Message,
    Provider,
    SyncState,
)
from inboxes.parse_helper import parsed_ahead
from inboxes.providers import open_session
from inboxes.providers.base import FolderSpec, MailSession, ProviderError, RawMessage

log = logging.getLogger(__name__)

# An ingest batch: at most this many messages or about this many bytes (a bigger
# message comes alone), whatever the provider's own fetch batches are. The peak
# memory of a sync follows the bytes of its biggest batches, not the mailbox: three
# are in flight (one fetched, one with the parse helper, one being stored), so
# 1.5 MiB rather than 2 (bench/README.md: 12 MiB less at the peak, ~10% slower).
INGEST_BATCH = 100
INGEST_BATCH_BYTES = 1536 * 1024
# Keys looked up in the ledger at a time (which of them are stored already).
LEDGER_CHUNK = 1000
# After this many messages of a first import, refresh the planner's statistics.
ANALYZE_AFTER = (1_000, 10_000)


def analyzed_models() -> list[type[Model]]:
    """The tables a first import fills: the engine's and its consumers'."""
    return [Message, MailboxMessage, *consumers.models_filled_by_import()]


@dataclass
class SyncResult:
    mailbox_id: str
    ran: bool
    imported: int = 0
    reason: str = ""
    folders: dict[str, int] = field(default_factory=dict)


# --- The lease --------------------------------------------------------------------------------


def lease_acquire(mailbox_id, seconds: int | None = None) -> str | None:
    token = uuid.uuid4().hex
    now = timezone.now()
    seconds = seconds or settings.SYNC_LEASE_SECONDS
    won = (
        Mailbox.objects.filter(pk=mailbox_id)
        .filter(Q(sync_lease_until__isnull=True) | Q(sync_lease_until__lt=now))
        .update(sync_lease_token=token, sync_lease_until=now + timedelta(seconds=seconds))
    )
    return token if won else None


def lease_renew(mailbox_id, token: str, seconds: int | None = None) -> bool:
    seconds = seconds or settings.SYNC_LEASE_SECONDS
    return bool(
        Mailbox.objects.filter(pk=mailbox_id, sync_lease_token=token).update(
            sync_lease_until=timezone.now() + timedelta(seconds=seconds)
        )
    )


def lease_release(mailbox_id, token: str) -> None:
    Mailbox.objects.filter(pk=mailbox_id, sync_lease_token=token).update(
        sync_lease_token="", sync_lease_until=None
    )


class LeaseLost(Exception):
    """Another worker took the mailbox over (this one stalled past its lease)."""


# --- Which mailboxes sync ----------------------------------------------------------------------


def mailbox_syncable(mailbox: Mailbox) -> str:
    """Why a mailbox is not synced now ("" when it is)."""
    if mailbox.status in (MailboxStatus.DISCONNECTED, MailboxStatus.NEEDS_REAUTH):
        return f"mailbox is {mailbox.status}"
    if mailbox.status == MailboxStatus.ERROR and mailbox.sync_state == SyncState.STOPPED:
        return "mailbox has a permanent error; fix the settings or re-run the connection test"
    if mailbox.kind == MailboxKind.PERSONAL and not mailbox.owner.is_active:
        return "owner is deactivated"
    if mailbox.kind == MailboxKind.TEAM and not Inbox.objects.filter(mailbox=mailbox).exists():
        return "team email is not connected to an inbox"
    return ""


def mailboxes_due() -> list:
    """Ids of the mailboxes a poll should sync (the lease keeps doubles harmless)."""
    return [
        m.pk
        for m in Mailbox.objects.exclude(
            status__in=[MailboxStatus.DISCONNECTED, MailboxStatus.NEEDS_REAUTH]
        )
        .exclude(sync_state=SyncState.STOPPED)
        .select_related("owner")
        if not mailbox_syncable(m)
    ]


# --- Sync ----------------------------------------------------------------------------------------


def _backfill_since(mailbox: Mailbox) -> datetime | None:
    if mailbox.backfill_days is None:
        return None
    return timezone.now() - timedelta(days=mailbox.backfill_days)


def mailbox_sync(mailbox_id) -> SyncResult:
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
        with _session(mailbox) as session:
            for spec in session.folders():
                count = _sync_folder(session, mailbox, spec, token)
                result.folders[spec.role] = count
                result.imported += count
        _record_success(mailbox)
    except ProviderError as exc:
        _record_failure(mailbox, exc)
        raise
    finally:
        lease_release(mailbox_id, token)
    if Mailbox.objects.filter(pk=mailbox_id, sync_requested=True).exists():
        schedule_sync(mailbox_id)  # someone asked while this sync ran
    return result


def _session(mailbox: Mailbox):
    """The provider's session; for IMAP the IDLE watcher's own when it triggered this
    sync in its process (inboxes/watch.py), saving a login."""
    if mailbox.provider == Provider.IMAP:
        from inboxes.providers.imap.session import sync_session

        return sync_session(mailbox)
    return open_session(mailbox)


def _folder_for(mailbox: Mailbox, spec: FolderSpec) -> MailboxFolder:
    folder, _ = MailboxFolder.objects.get_or_create(
        mailbox=mailbox, role=spec.role, defaults={"name": spec.name}
    )
    if folder.name != spec.name:
        folder.name = spec.name
        folder.save(update_fields=["name", "updated_at"])
    return folder


# Kept in the per-batch cursor while a history (a first sync, or a re-read after
# a reset) is not all in: its last key. A sync that resumes after a crash or a
# dropped connection files the keys up to it as history too.
HISTORY_MARK = "history_through"


def _sync_folder(session: MailSession, mailbox: Mailbox, spec: FolderSpec, token: str) -> int:
    folder = _folder_for(mailbox, spec)
    pending_history = folder.cursor.get(HISTORY_MARK, "")
    first_sync = not folder.cursor or bool(pending_history)
    if folder.backfill_from is None:
        folder.backfill_from = _backfill_since(mailbox) or datetime(1970, 1, 1, tzinfo=UTC)
        folder.save(update_fields=["backfill_from", "updated_at"])
    cursor = {k: v for k, v in folder.cursor.items() if k != HISTORY_MARK}
    changes = session.changes(spec, cursor, since=_backfill_since(mailbox))
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
            known = set(
                MailboxMessage.objects.filter(folder=folder, provider_key__in=chunk).values_list(
                    "provider_key", flat=True
                )
            )
            wanted = [key for key in chunk if key not in known]
            through = None  # the last key of the chunk the stored cursor covers
            # closing(): a failure mid-chunk stops the fetching before the session goes
            with contextlib.closing(_parsed_batches(session, spec, wanted)) as batches:
                for raws, parsed in batches:
                    through = raws[-1].key
                    _ingest(
                        mailbox,
                        folder,
                        changes,
                        (raws, parsed),
                        through,
                        cursor,
                        is_history,
                        history_through,
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
                _ingest(
                    mailbox,
                    folder,
                    changes,
                    ([], []),
                    chunk[-1],
                    cursor,
                    is_history,
                    history_through,
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


def _ingest(mailbox, folder, changes, batch, last, cursor, is_history, history_through) -> None:
    """Store one batch, ``(raws, parsed)``, and move the cursor past ``last``, a key of
    ``changes``."""
    cursor = changes.cursor_after(last, cursor)
    if is_history and last != history_through:
        cursor = {**cursor, HISTORY_MARK: history_through}
    raws, parsed = batch
    ingest_batch(
        mailbox=mailbox,
        folder=folder,
        raws=raws,
        parsed=parsed,
        cursor=cursor,
        backfill=is_history,
    )


# While one batch is stored (files, database) and the next one parsed (by the
# parse helper, see _parsed_batches), the one after is fetched: they overlap
# instead of taking turns. At most three batches are in memory.
PREFETCH = True


def _prefetched(batches: Iterator[list]) -> Iterator[list]:
    """``batches`` read one step ahead by a helper thread, in order, errors included.

    The thread is the only user of the provider's connection while this runs; it
    never fetches more than one batch ahead, and closing this generator (the
    consumer stops, or fails) waits for its current round trip to end."""
    ready: queue.Queue = queue.Queue()
    slot = threading.Semaphore(1)  # fetch the next batch only once the last one was taken
    stop = threading.Event()
    done = object()

    def run() -> None:
        try:
            while True:
                while not slot.acquire(timeout=0.2):
                    if stop.is_set():
                        return
                if stop.is_set():
                    return
                batch = next(batches, done)
                ready.put(batch)
                if batch is done:
                    return
        except BaseException as exc:  # handed over to the consumer, in order
            ready.put(exc)

    thread = threading.Thread(target=run, name="sync-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = ready.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            slot.release()
            yield item
            del item
    finally:
        stop.set()
        thread.join()


def _fetch_batches(session: MailSession, spec: FolderSpec, keys: list[str]) -> Iterator[list]:
    """The messages of ``keys`` in batches bounded by count and bytes, each one as it
    arrives (a message bigger than the bound comes alone)."""
    if not keys:
        return
    by_round_trip = getattr(session, "fetch_batches", None)
    if by_round_trip is not None:  # IMAP: its round trips have the same bounds
        batches = by_round_trip(spec, keys)
        yield from _prefetched(batches) if PREFETCH else batches
        return
    batch: list[RawMessage] = []
    size = 0
    for raw in session.fetch(spec, keys):
        if batch and (len(batch) >= INGEST_BATCH or size + len(raw.raw) > INGEST_BATCH_BYTES):
            yield batch
            batch, size = [], 0
        batch.append(raw)
        size += len(raw.raw)
    if batch:
        yield batch


def _parsed_batches(
    session: MailSession, spec: FolderSpec, keys: list[str]
) -> Iterator[tuple[list[RawMessage], list[ParsedMessage]]]:
    """The batches of ``_fetch_batches``, each with its messages parsed; the parse
    helper process (inboxes/parse_helper.py) parses one batch ahead of the one
    being stored, so parsing runs on the second core."""
    batches = _fetch_batches(session, spec, keys)
    try:
        yield from parsed_ahead(
            batches, lambda item: item.raw, use_helper=settings.SYNC_PARSE_HELPER
        )
    finally:
        batches.close()  # stop the fetching before the session goes


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


def _record_success(mailbox: Mailbox) -> None:
    Mailbox.objects.filter(pk=mailbox.pk).exclude(status=MailboxStatus.DISCONNECTED).update(
        status=MailboxStatus.CONNECTED,
        last_error="",
        sync_state=SyncState.IDLE,
        sync_last_error="",
        last_synced_at=timezone.now(),
    )


def _record_failure(mailbox: Mailbox, exc: ProviderError) -> None:
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


# --- Reconciliation ---------------------------------------------------------------------------------


@dataclass
class ReconcileResult:
    mailbox_id: str
    ran: bool
    missing_before: int = 0
    missing_after: int = 0
    reason: str = ""


def mailbox_reconcile(mailbox_id) -> ReconcileResult:
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
        with _session(mailbox) as session:
            for spec in session.folders():
                folder = _folder_for(mailbox, spec)
                if not folder.cursor:
                    continue  # never synced: the sync imports it, not reconciliation
                before, after = _reconcile_folder(session, mailbox, folder, spec, token)
                result.missing_before += before
                result.missing_after += after
    except ProviderError as exc:
        _record_failure(mailbox, exc)
        raise
    finally:
        lease_release(mailbox_id, token)
    if Mailbox.objects.filter(pk=mailbox_id, sync_requested=True).exists():
        schedule_sync(mailbox_id)  # a push was refused the lease while this ran
    return result


def _missing_keys(folder: MailboxFolder, server_keys: list[str]) -> list[str]:
    missing = []
    for start in range(0, len(server_keys), 1000):
        chunk = server_keys[start : start + 1000]
        known = set(
            MailboxMessage.objects.filter(folder=folder, provider_key__in=chunk).values_list(
                "provider_key", flat=True
            )
        )
        missing.extend(key for key in chunk if key not in known)
    return missing


def _reconcile_folder(
    session: MailSession, mailbox: Mailbox, folder: MailboxFolder, spec: FolderSpec, token: str
) -> tuple[int, int]:
    server_keys = session.keys_since(spec, folder.backfill_from)
    missing = _missing_keys(folder, server_keys)
    before = len(missing)
    with contextlib.closing(_parsed_batches(session, spec, missing)) as batches:
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
    still_missing = _missing_keys(folder, server_keys) if before else []
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
        audit_record(
            account=mailbox.account,
            actor=None,
            action="mailbox.reconciled",
            target=mailbox,
            data={"folder": spec.name, "missing": before, "still_missing": after},
        )
    return before, after


def mailbox_resync(*, actor, mailbox: Mailbox) -> None:
    """Admins: read every folder again from the start of its backfill window.

    Stored keys are skipped and content is deduplicated, so this fills gaps and
    never duplicates; it also clears a stopped sync after the cause was fixed.
    """
    from inboxes.rules import check_admin

    check_admin(actor, "resync a mailbox")
    MailboxFolder.objects.filter(mailbox=mailbox).update(
        cursor={}, alert="", updated_at=timezone.now()
    )
    Mailbox.objects.filter(pk=mailbox.pk).update(sync_state=SyncState.PENDING, sync_last_error="")
    audit_record(account=mailbox.account, actor=actor, action="mailbox.resync", target=mailbox)


def schedule_sync(mailbox_id) -> None:
    """Start a sync once the current transaction commits (a worker must see the row)."""
    from django.db import transaction

    from inboxes.tasks import sync_mailbox

    transaction.on_commit(lambda: sync_mailbox.delay(str(mailbox_id)))
