"""Storing a batch of fetched messages: once, idempotently, with the cursor.

Each message is parsed once (inboxes/mime/). Its raw bytes and attachments
go to Django's storage before the transaction (file I/O is not rolled back, and
an orphan file is harmless where a lost message is not); then one transaction
inserts the messages, their attachments, the folder's keys, files them with the
consumer and moves the folder's cursor, so the cursor is never ahead of what is
stored.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from collections.abc import Container, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any
from uuid import UUID

from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import models, transaction
from django.db.models import F
from django.db.models.fields.files import FieldFile
from django.utils import timezone

from core.bulk import bulk_insert
from inboxes import consumers, events
from inboxes.mime import Address, ParsedMessage, parse_message
from inboxes.mime.dedupe import key_path_shard
from inboxes.models import (
    Attachment,
    Direction,
    Mailbox,
    MailboxFolder,
    MailboxMessage,
    Message,
    MessageKind,
    Tombstone,
)
from inboxes.providers.base import RawMessage
from inboxes.search_index import search_index_soon


@dataclass
class BatchResult:
    fetched: int
    stored: int  # new Message rows
    linked: int  # keys recorded in the folder's ledger


def stored_key(parsed: ParsedMessage, found: Container[str]) -> str | None:
    """The key a stored copy of ``parsed`` has among ``found`` (keys of rows looked up
    by ``parsed.dedupe_keys``): its v2 key, else its v1 key, else None."""
    for key in parsed.dedupe_keys:
        if key and key in found:
            return key
    return None


def _raw_name(account_id: UUID, dedupe_key: str) -> str:
    return f"raw/{account_id}/{key_path_shard(dedupe_key)}/{dedupe_key}.eml"


def _attachment_name(account_id: UUID, dedupe_key: str, index: int, filename: str) -> str:
    suffix = hashlib.sha256(filename.encode("utf-8", "replace")).hexdigest()[:8]
    shard = key_path_shard(dedupe_key)
    return f"attachments/{account_id}/{shard}/{dedupe_key}-{index}-{suffix}"


def _addresses(items: Iterable[Address]) -> list[dict[str, str]]:
    return [{"name": a.name, "address": a.address} for a in items]


def outlook_thread_root(thread_index: str) -> str:
    """The thread part of an Outlook Thread-Index header (hex), or ""."""
    try:
        raw = base64.b64decode("".join(thread_index.split()), validate=False)
    except (binascii.Error, ValueError):
        return ""
    return raw[:22].hex() if len(raw) >= 22 else ""


def message_row(
    *, account_id: UUID, parsed: ParsedMessage, raw_size: int, direction: str = Direction.INBOUND
) -> Message:
    """An unsaved Message for ``parsed``, without its raw file (see ``message_from_parsed``)."""
    return Message(
        account_id=account_id,
        dedupe_key=parsed.dedupe_key,
        direction=direction,
        message_id=parsed.message_id[:998],
        in_reply_to=parsed.in_reply_to[:998],
        references=parsed.references,
        thread_root=outlook_thread_root(parsed.headers.get("thread-index", "")),
        subject=parsed.subject,
        from_name=(parsed.from_.name if parsed.from_ else "")[:320],
        from_address=(parsed.from_.address if parsed.from_ else "")[:320],
        to=_addresses(parsed.to),
        cc=_addresses(parsed.cc),
        sent_at=parsed.date,
        text=parsed.text,
        html=parsed.html,
        has_remote_images=parsed.has_remote_images,
        headers=parsed.headers,
        raw_size=raw_size,
        parse_error=parsed.error,
        kind=parsed.kind if direction == Direction.INBOUND else "email",
        bounce=parsed.bounce,
    )


def _save_raw(account_id: UUID, dedupe_key: str, raw: bytes) -> str:
    """The name of the raw file of the message: the one stored before when it is
    complete, else a new one (a worker killed mid-write leaves a partial file,
    which is never reused)."""
    name = _raw_name(account_id, dedupe_key)
    try:
        if default_storage.size(name) == len(raw):
            return name
    except OSError:  # not there (FileSystemStorage raises FileNotFoundError)
        pass
    return default_storage.save(name, ContentFile(raw))


def message_from_parsed(
    *, account_id: UUID, parsed: ParsedMessage, raw: bytes, direction: str = Direction.INBOUND
) -> Message:
    """An unsaved Message for ``parsed``; the raw bytes are written to storage now."""
    message = message_row(
        account_id=account_id, parsed=parsed, raw_size=len(raw), direction=direction
    )
    message.raw.name = _save_raw(account_id, parsed.dedupe_key, raw)
    return message


def attachments_store(message: Message, parsed: ParsedMessage) -> list[Attachment]:
    """The saved ``message``'s attachment rows, their files written now."""
    if not parsed.attachments:
        return []
    names = _write_attachments(message.account_id, parsed)
    return Attachment.objects.bulk_create(_attachment_rows(message, parsed, names))


def messages_from_parsed(
    *, account_id: UUID, items: list[tuple[ParsedMessage, bytes]], direction: str
) -> list[Message]:
    """``message_from_parsed`` for many messages (parsed, raw): their raw files are
    written by the storage threads, all joined before this returns."""
    pool = _storage_pool()
    names = list(pool.map(lambda item: _save_raw(account_id, item[0].dedupe_key, item[1]), items))
    messages = []
    for (parsed, raw), name in zip(items, names, strict=True):
        message = message_row(
            account_id=account_id, parsed=parsed, raw_size=len(raw), direction=direction
        )
        message.raw.name = name
        messages.append(message)
    return messages


# Creating a file is mostly kernel time, not Python (0.1-1 ms each here, in the
# file system's create): a batch's files are written by a few threads, all joined
# before the transaction that refers to them. (Writing them while the transaction
# ran instead was no faster here and would hold its row locks for as long as a
# remote storage takes.) One pool per process (a forked worker must not inherit
# its parent's).
STORAGE_THREADS = 4
_pool: tuple[int, ThreadPoolExecutor] | None = None


def _storage_pool() -> ThreadPoolExecutor:
    global _pool
    if _pool is None or _pool[0] != os.getpid():
        _pool = (
            os.getpid(),
            ThreadPoolExecutor(max_workers=STORAGE_THREADS, thread_name_prefix="ingest-files"),
        )
    return _pool[1]


@dataclass
class _Stored:
    """One new message of a batch with its files on disk (attachment payloads dropped)."""

    message: Message
    parsed: ParsedMessage
    attachments: list[Attachment]


def _write_files(account_id: UUID, parsed: ParsedMessage, raw: bytes) -> tuple[str, list[str]]:
    """Raw MIME (unless already there) and attachments of one message: their names."""
    return _save_raw(account_id, parsed.dedupe_key, raw), _write_attachments(account_id, parsed)


def _write_attachments(account_id: UUID, parsed: ParsedMessage) -> list[str]:
    return [
        default_storage.save(
            _attachment_name(account_id, parsed.dedupe_key, index, part.filename),
            ContentFile(part.payload),
        )
        for index, part in enumerate(parsed.attachments)
    ]


def _attachment_rows(message: Message, parsed: ParsedMessage, names: list[str]) -> list[Attachment]:
    return [
        Attachment(
            message=message,
            filename=part.filename[:255],
            content_type=part.content_type[:255],
            size=len(part.payload),
            content_id=(part.content_id or "")[:255],
            inline=part.inline,
            file=name,
        )
        for part, name in zip(parsed.attachments, names, strict=True)
    ]


def _store_files(account_id: UUID, new: list[tuple[ParsedMessage, bytes]]) -> list[_Stored]:
    """Write the files of ``new`` (parsed, raw) in parallel and wait for all of them."""
    pool = _storage_pool()
    futures = [pool.submit(_write_files, account_id, p, raw) for p, raw in new]
    stored = []
    for (p, raw), future in zip(new, futures, strict=True):
        raw_name, names = future.result()
        message = message_row(account_id=account_id, parsed=p, raw_size=len(raw))
        message.raw.name = raw_name
        attachments = _attachment_rows(message, p, names)
        p.attachments.clear()  # the payloads are on disk: don't keep them for the rest of the batch
        stored.append(_Stored(message, p, attachments))
    return stored


def _tie_bounces(account_id: UUID, messages: list[Message]) -> None:
    """Point each bounce at the account's outbound email it reports on (found by the
    original's Message-ID): one query for the whole batch. inboxes/delivery.py reads
    the tie; a bounce that names no email of ours stays untied."""
    wanted = {
        m.bounce["original_message_id"]: m
        for m in messages
        if m.kind == MessageKind.BOUNCE and m.bounce and m.bounce.get("original_message_id")
    }
    if not wanted:
        return
    originals = dict(
        Message.objects.filter(
            account_id=account_id, direction=Direction.OUTBOUND, message_id__in=list(wanted)
        )
        .order_by("created_at")  # the newest wins, should a Message-ID repeat
        .values_list("message_id", "id")
    )
    for message in messages:
        if message.kind == MessageKind.BOUNCE and message.bounce:
            message.bounce_of_id = originals.get(message.bounce.get("original_message_id", ""))


def _report_bounces(messages: list[Message]) -> None:
    """After commit, tell the sender of each email a new bounce was tied to (by the
    engine, or by a consumer while delivering): one query, only for a batch with bounces."""
    bounces = [m.pk for m in messages if m.kind == MessageKind.BOUNCE]
    if not bounces:
        return
    tied = list(
        Message.objects.filter(pk__in=bounces, bounce_of__isnull=False).values_list("pk", flat=True)
    )
    for pk in tied:
        transaction.on_commit(partial(events.report_bounce, pk))


def ingest_batch(
    *,
    mailbox: Mailbox,
    folder: MailboxFolder,
    raws: Sequence[RawMessage],
    cursor: dict[str, Any],
    backfill: bool,
    parsed: Sequence[ParsedMessage] | None = None,
) -> BatchResult:
    """Store ``raws`` (already fetched from ``folder``) and move the folder's cursor.

    ``parsed``: ``parse_message`` of each of ``raws``, when it was parsed elsewhere
    (the sync's parse helper); else they are parsed here."""
    account_id = mailbox.account_id
    if parsed is None:
        parsed = [parse_message(item.raw) for item in raws]
    # Every key a stored copy may have: v2, and v1 for rows stored before v2.
    keys = {key for p in parsed for key in p.dedupe_keys if key}
    tombstoned = (
        set(
            Tombstone.objects.filter(account_id=account_id, dedupe_key__in=keys).values_list(
                "dedupe_key", flat=True
            )
        )
        if keys
        else set()
    )
    existing = (
        set(
            Message.objects.filter(account_id=account_id, dedupe_key__in=keys).values_list(
                "dedupe_key", flat=True
            )
        )
        if keys
        else set()
    )
    # The consumers decide the whole batch at once (their queries), then each
    # message is a lookup. Mail stored before (another mailbox, or a crash) is asked
    # too: this mailbox's ledger links it only when kept here (see below).
    keeps = consumers.batch_keeps(mailbox, parsed)
    kept: set[str] = set()
    wanted: dict[str, tuple[ParsedMessage, bytes]] = {}
    for item, p in zip(raws, parsed, strict=True):
        key = p.dedupe_key
        if stored_key(p, tombstoned) or key in kept or not keeps(p):
            continue
        kept.update(k for k in p.dedupe_keys if k)
        if not stored_key(p, existing):
            wanted[key] = (p, item.raw)
    # Files before rows: written (and waited for) before the transaction.
    new = {s.message.dedupe_key: s for s in _store_files(account_id, list(wanted.values()))}
    del wanted
    _tie_bounces(account_id, [s.message for s in new.values()])

    with transaction.atomic():
        bulk_insert(Message, [s.message for s in new.values()], ignore_conflicts=True)
        # Another mailbox of the account may have stored the same email a moment
        # ago (the same mail to two team addresses): read back which rows exist.
        stored = (
            Message.objects.filter(account_id=account_id, dedupe_key__in=keys).values_list(
                "dedupe_key", "id", "direction"
            )
            if keys
            else []
        )
        # A message stored by another mailbox of the account is linked to this one
        # only when kept here, or when it is Postkamer's own sent mail (its copy in
        # Sent): personal mail that no consumer keeps leaves nothing but its key, even
        # when a team mailbox holds the same email.
        ids = {
            key: pk
            for key, pk, direction in stored
            if key in kept or direction == Direction.OUTBOUND
        }
        created = {key for key, s in new.items() if ids.get(key) == s.message.pk}
        Attachment.objects.bulk_create([a for key in created for a in new[key].attachments])
        # Each message's row, by the key it was stored under (v2, else v1); none
        # when it is tombstoned or not kept here.
        rows: list[tuple[str, UUID] | None] = []
        for p in parsed:
            found = None if stored_key(p, tombstoned) else stored_key(p, ids)
            rows.append((found, ids[found]) if found else None)
        MailboxMessage.objects.bulk_create(
            [
                MailboxMessage(
                    folder=folder,
                    provider_key=item.key,
                    message_id=row[1] if row else None,
                    dedupe_key=row[0] if row else p.dedupe_key,
                )
                for item, p, row in zip(raws, parsed, rows, strict=True)
            ],
            ignore_conflicts=True,
        )
        # Full rows only for the messages stored before (by another mailbox, or
        # this one before a crash); this batch's own rows are already in memory.
        earlier = {row[1] for row in rows if row and row[0] not in created}
        loaded = {m.pk: m for m in Message.objects.filter(pk__in=earlier)} if earlier else {}
        delivered, seen = [], set()
        for row in rows:
            if row is None or row[1] in seen:
                continue
            seen.add(row[1])
            delivered.append(new[row[0]].message if row[0] in created else loaded[row[1]])
        consumers.deliver(mailbox, delivered, backfill=backfill)
        _report_bounces([new[key].message for key in created])
        if created:
            search_index_soon()  # the search column, after the commit (inboxes/search_index.py)
        MailboxFolder.objects.filter(pk=folder.pk).update(
            cursor=cursor,
            imported_count=F("imported_count") + len(raws),
            unparsed_count=F("unparsed_count") + sum(1 for key in created if new[key].parsed.error),
            last_synced_at=timezone.now(),
            updated_at=timezone.now(),
        )
        Mailbox.objects.filter(pk=mailbox.pk).update(sync_done=F("sync_done") + len(raws))
    folder.cursor = cursor
    rows_release_files([*(s.message for s in new.values()), *loaded.values()])
    rows_release_files([a for s in new.values() for a in s.attachments])
    return BatchResult(fetched=len(raws), stored=len(created), linked=len(raws))


def rows_release_files(rows: Iterable[models.Model]) -> None:
    """Break the cycle between each row and its ``FieldFile`` (Django keeps the
    FieldFile in the row's ``__dict__`` and the FieldFile points back at the row):
    only the cyclic GC frees such a pair, so a batch's rows and the texts they
    hold outlived it until a full collection, which came every few thousand
    messages (a Gmail sync of 10,000: ~20 MiB more at the peak). The bare name is
    put back; the descriptor makes a new FieldFile if the row is asked again."""
    for row in rows:
        values = vars(row)
        for name, value in list(values.items()):
            if isinstance(value, FieldFile) and value.instance is row:
                values[name] = value.name
