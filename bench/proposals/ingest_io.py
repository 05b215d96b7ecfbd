"""Prototype, for measuring only: cheaper file and row I/O in ``ingest_batch``.

    .venv/bin/python bench/sync.py --patch bench/proposals/ingest_io.py

Not product code: it replaces ``inboxes.ingest.ingest_batch`` (as the sync
calls it) in the benchmark's sync process only, to size the gains proposed in
bench/README.md. Same rows, same files, same order of guarantees (files are
written before the transaction that refers to them), but:

1. the raw MIME and attachment files of a batch are written by a small thread
   pool (creating a file costs 0.3-1 ms of waiting on this disk, most of it
   not CPU), and attachments are written before the transaction instead of
   inside it;
2. after the INSERT the batch reads back only (dedupe_key, id) instead of
   whole Message rows with their text and HTML; the Message objects already in
   memory are used for the rows this batch created;
3. a message's decoded attachment payloads are dropped as soon as they are on
   disk (smaller peak per batch).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from conversations.models import Attachment, Message
from inboxes import consumers, ingest, sync
from inboxes.models import Mailbox, MailboxFolder, MailboxMessage, Tombstone

_POOL = ThreadPoolExecutor(max_workers=4, thread_name_prefix="bench-storage")


def _save(name: str, data: bytes) -> str:
    return default_storage.save(name, ContentFile(data))


def _write_files(account_id, parsed, raw: bytes):
    """Raw MIME (if not there yet) and attachments of one message; returns names."""
    name = ingest._raw_name(account_id, parsed.dedupe_key)
    raw_name = name if default_storage.exists(name) else _save(name, raw)
    attachment_names = [
        _save(
            ingest._attachment_name(account_id, parsed.dedupe_key, index, part.filename),
            part.payload,
        )
        for index, part in enumerate(parsed.attachments)
    ]
    return raw_name, attachment_names


def _message_row(account_id, parsed, raw_size: int) -> Message:
    extra = {}
    if hasattr(ingest, "outlook_thread_root"):  # as message_from_parsed does (since 07:00)
        extra["thread_root"] = ingest.outlook_thread_root(parsed.headers.get("thread-index", ""))
    return Message(
        **extra,
        account_id=account_id,
        dedupe_key=parsed.dedupe_key,
        direction="inbound",
        message_id=parsed.message_id[:998],
        in_reply_to=parsed.in_reply_to[:998],
        references=parsed.references,
        subject=parsed.subject,
        from_name=(parsed.from_.name if parsed.from_ else "")[:320],
        from_address=(parsed.from_.address if parsed.from_ else "")[:320],
        to=ingest._addresses(parsed.to),
        cc=ingest._addresses(parsed.cc),
        sent_at=parsed.date,
        text=parsed.text,
        html=parsed.html,
        has_remote_images=parsed.has_remote_images,
        headers=parsed.headers,
        raw_size=raw_size,
        parse_error=parsed.error,
    )


def ingest_batch(*, mailbox: Mailbox, folder: MailboxFolder, raws, cursor: dict, backfill: bool):
    account_id = mailbox.account_id
    parsed = [ingest.parse_message(item.raw) for item in raws]
    keys = {p.dedupe_key for p in parsed}
    tombstoned = set(
        Tombstone.objects.filter(account_id=account_id, dedupe_key__in=keys).values_list(
            "dedupe_key", flat=True
        )
    )
    existing = set(
        Message.objects.filter(account_id=account_id, dedupe_key__in=keys).values_list(
            "dedupe_key", flat=True
        )
    )
    new: dict[str, tuple] = {}
    futures = {}
    for item, p in zip(raws, parsed, strict=True):
        key = p.dedupe_key
        if key in tombstoned or key in existing or key in new:
            continue
        if consumers.keeps(mailbox, p):
            new[key] = (_message_row(account_id, p, len(item.raw)), p)
            futures[key] = _POOL.submit(_write_files, account_id, p, item.raw)
    attachment_rows = {}
    for key, (message, p) in new.items():
        raw_name, names = futures[key].result()
        message.raw.name = raw_name
        attachment_rows[key] = [
            Attachment(
                message=message,
                filename=part.filename[:255],
                content_type=part.content_type[:255],
                size=len(part.payload),
                content_id=(part.content_id or "")[:255],
                inline=part.inline,
                file=name,
            )
            for part, name in zip(p.attachments, names, strict=True)
        ]
        p.attachments.clear()  # the payloads are on disk now
    with transaction.atomic():
        Message.objects.bulk_create([m for m, _ in new.values()], ignore_conflicts=True)
        ids = dict(
            Message.objects.filter(account_id=account_id, dedupe_key__in=keys).values_list(
                "dedupe_key", "id"
            )
        )
        created = {key for key, (m, _) in new.items() if ids.get(key) == m.pk}
        Attachment.objects.bulk_create([a for key in created for a in attachment_rows[key]])
        MailboxMessage.objects.bulk_create(
            [
                MailboxMessage(
                    folder=folder,
                    provider_key=item.key,
                    message_id=ids.get(p.dedupe_key) if p.dedupe_key not in tombstoned else None,
                    dedupe_key=p.dedupe_key,
                )
                for item, p in zip(raws, parsed, strict=True)
            ],
            ignore_conflicts=True,
        )
        # Full rows only for messages another mailbox stored before (rare).
        others = {ids[k] for k in keys if k in ids and k not in created and k not in tombstoned}
        loaded = {m.pk: m for m in Message.objects.filter(pk__in=others)} if others else {}
        delivered, seen = [], set()
        for p in parsed:
            key = p.dedupe_key
            if key in tombstoned or key not in ids or ids[key] in seen:
                continue
            seen.add(ids[key])
            delivered.append(new[key][0] if key in created else loaded[ids[key]])
        consumers.deliver(mailbox, delivered, backfill=backfill)
        folder_updates = {
            "cursor": cursor,
            "imported_count": F("imported_count") + len(raws),
            "last_synced_at": timezone.now(),
            "updated_at": timezone.now(),
        }
        if hasattr(MailboxFolder, "unparsed_count"):
            folder_updates["unparsed_count"] = F("unparsed_count") + sum(
                1 for key in created if new[key][1].error
            )
        MailboxFolder.objects.filter(pk=folder.pk).update(**folder_updates)
        Mailbox.objects.filter(pk=mailbox.pk).update(sync_done=F("sync_done") + len(raws))
    folder.cursor = cursor
    return ingest.BatchResult(fetched=len(raws), stored=len(created), linked=len(raws))


ingest.ingest_batch = ingest_batch
sync.ingest_batch = ingest_batch
