"""Storing a batch of fetched messages: once, idempotently, with the cursor.

Each message is parsed once (inboxes/parsing.py). Its raw bytes go to Django's
storage before the transaction (file I/O is not rolled back, and an orphan file
is harmless where a lost message is not); then one transaction inserts the
messages, their attachments, the folder's keys, files them with the consumer
and moves the folder's cursor, so the cursor is never ahead of what is stored.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from conversations.models import Attachment, Direction, Message
from inboxes import consumers
from inboxes.models import Mailbox, MailboxFolder, MailboxMessage, Tombstone
from inboxes.parsing import ParsedMessage, parse_message
from inboxes.providers.base import RawMessage


@dataclass
class BatchResult:
    fetched: int
    stored: int  # new Message rows
    linked: int  # keys recorded in the folder's ledger


def _raw_name(account_id, dedupe_key: str) -> str:
    return f"raw/{account_id}/{dedupe_key[:2]}/{dedupe_key}.eml"


def _attachment_name(account_id, dedupe_key: str, index: int, filename: str) -> str:
    suffix = hashlib.sha256(filename.encode("utf-8", "replace")).hexdigest()[:8]
    return f"attachments/{account_id}/{dedupe_key[:2]}/{dedupe_key}-{index}-{suffix}"


def _addresses(items) -> list[dict]:
    return [{"name": a.name, "address": a.address} for a in items]


def outlook_thread_root(thread_index: str) -> str:
    """The thread part of an Outlook Thread-Index header (hex), or ""."""
    try:
        raw = base64.b64decode("".join(thread_index.split()), validate=False)
    except (binascii.Error, ValueError):
        return ""
    return raw[:22].hex() if len(raw) >= 22 else ""


def message_from_parsed(
    *, account_id, parsed: ParsedMessage, raw: bytes, direction: str = Direction.INBOUND
) -> Message:
    """An unsaved Message for ``parsed``; the raw bytes are written to storage now."""
    message = Message(
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
        raw_size=len(raw),
        parse_error=parsed.error,
    )
    name = _raw_name(account_id, parsed.dedupe_key)
    if not default_storage.exists(name):
        name = default_storage.save(name, ContentFile(raw))
    message.raw.name = name
    return message


def _attachments_for(message: Message, parsed: ParsedMessage) -> list[Attachment]:
    rows = []
    for index, part in enumerate(parsed.attachments):
        name = default_storage.save(
            _attachment_name(message.account_id, message.dedupe_key, index, part.filename),
            ContentFile(part.payload),
        )
        rows.append(
            Attachment(
                message=message,
                filename=part.filename[:255],
                content_type=part.content_type[:255],
                size=len(part.payload),
                content_id=(part.content_id or "")[:255],
                inline=part.inline,
                file=name,
            )
        )
    return rows


def ingest_batch(
    *,
    mailbox: Mailbox,
    folder: MailboxFolder,
    raws: Sequence[RawMessage],
    cursor: dict,
    backfill: bool,
) -> BatchResult:
    """Store ``raws`` (already fetched from ``folder``) and move the folder's cursor."""
    account_id = mailbox.account_id
    parsed = [parse_message(item.raw) for item in raws]
    keys = {p.dedupe_key for p in parsed}
    tombstoned = set(
        Tombstone.objects.filter(account_id=account_id, dedupe_key__in=keys).values_list(
            "dedupe_key", flat=True
        )
    )
    existing = {
        m.dedupe_key: m for m in Message.objects.filter(account_id=account_id, dedupe_key__in=keys)
    }
    new_messages: dict[str, tuple[Message, ParsedMessage]] = {}
    for item, p in zip(raws, parsed, strict=True):
        key = p.dedupe_key
        if key in tombstoned or key in existing or key in new_messages:
            continue
        if consumers.keeps(mailbox, p):
            new_messages[key] = (
                message_from_parsed(account_id=account_id, parsed=p, raw=item.raw),
                p,
            )

    with transaction.atomic():
        Message.objects.bulk_create([m for m, _ in new_messages.values()], ignore_conflicts=True)
        # Another mailbox of the account may have stored the same email a moment
        # ago (the same mail to two team addresses): read back what really exists.
        stored = {
            m.dedupe_key: m
            for m in Message.objects.filter(account_id=account_id, dedupe_key__in=keys)
        }
        created = [
            (message, p)
            for key, (message, p) in new_messages.items()
            if key in stored and stored[key].pk == message.pk
        ]
        attachments = [a for message, p in created for a in _attachments_for(message, p)]
        Attachment.objects.bulk_create(attachments)
        MailboxMessage.objects.bulk_create(
            [
                MailboxMessage(
                    folder=folder,
                    provider_key=item.key,
                    message=stored.get(p.dedupe_key) if p.dedupe_key not in tombstoned else None,
                    dedupe_key=p.dedupe_key,
                )
                for item, p in zip(raws, parsed, strict=True)
            ],
            ignore_conflicts=True,
        )
        delivered, seen = [], set()
        for p in parsed:
            message = stored.get(p.dedupe_key)
            if message is not None and p.dedupe_key not in tombstoned and message.pk not in seen:
                seen.add(message.pk)
                delivered.append(message)
        consumers.deliver(mailbox, delivered, backfill=backfill)
        MailboxFolder.objects.filter(pk=folder.pk).update(
            cursor=cursor,
            imported_count=F("imported_count") + len(raws),
            unparsed_count=F("unparsed_count") + sum(1 for _, p in created if p.error),
            last_synced_at=timezone.now(),
            updated_at=timezone.now(),
        )
        Mailbox.objects.filter(pk=mailbox.pk).update(sync_done=F("sync_done") + len(raws))
    folder.cursor = cursor
    return BatchResult(fetched=len(raws), stored=len(created), linked=len(raws))
