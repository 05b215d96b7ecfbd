"""Storing a batch of fetched messages: once, idempotently, with the cursor.

Each message is parsed once (inboxes/parsing.py). One transaction inserts the
messages, their attachments, the folder's keys, files them with the consumer and
moves the folder's cursor, so the cursor is never ahead of what is stored. The raw
bytes and attachments go to Django's storage while that transaction works, and it
commits only once every file is written (file I/O is not rolled back, and an
orphan file is harmless where a lost message is not): no committed row ever refers
to a file that is not complete.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
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


def message_row(
    *, account_id, parsed: ParsedMessage, raw_size: int, direction: str = Direction.INBOUND
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
    )


def _save_raw(account_id, dedupe_key: str, raw: bytes) -> str:
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
    *, account_id, parsed: ParsedMessage, raw: bytes, direction: str = Direction.INBOUND
) -> Message:
    """An unsaved Message for ``parsed``; the raw bytes are written to storage now."""
    message = message_row(
        account_id=account_id, parsed=parsed, raw_size=len(raw), direction=direction
    )
    message.raw.name = _save_raw(account_id, parsed.dedupe_key, raw)
    return message


# Creating a file is mostly kernel time, not Python (0.1-1 ms each here, in the
# kernel's file creation): a few threads write a batch's files while the
# transaction's inserts and threading run, all joined before it commits. One pool
# per process (a forked worker must not inherit its parent's).
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
class _New:
    """One new message of a batch, its files being written by the pool."""

    message: Message
    parsed: ParsedMessage
    files: Future  # -> (raw file name, attachment file names)


def _write_files(account_id, parsed: ParsedMessage, raw: bytes) -> tuple[str, list[str]]:
    """Raw MIME (unless already there) and attachments of one message: their names."""
    raw_name = _save_raw(account_id, parsed.dedupe_key, raw)
    names = [
        default_storage.save(
            _attachment_name(account_id, parsed.dedupe_key, index, part.filename),
            ContentFile(part.payload),
        )
        for index, part in enumerate(parsed.attachments)
    ]
    return raw_name, names


def _start_files(account_id, wanted: list[tuple[ParsedMessage, bytes]]) -> list[_New]:
    """Start writing the files of ``wanted`` (parsed, raw); the rows name the raw
    file it will most likely get (``_finish_files`` corrects the rare other case)."""
    pool = _storage_pool()
    new = []
    for p, raw in wanted:
        message = message_row(account_id=account_id, parsed=p, raw_size=len(raw))
        message.raw.name = _raw_name(account_id, p.dedupe_key)
        new.append(_New(message, p, pool.submit(_write_files, account_id, p, raw)))
    return new


def _finish_files(new: list[_New], created: set[str]) -> list[Attachment]:
    """Wait until every file is written (raising the first error, which rolls the
    transaction back); the attachment rows of the created messages."""
    attachments = []
    for item in new:
        raw_name, names = item.files.result()
        message = item.message
        if message.dedupe_key not in created:
            continue
        if raw_name != message.raw.name:
            # Another name than the usual (a partial file was in the way, or a
            # worker storing the same email raced this one): the row follows the file.
            message.raw.name = raw_name
            Message.objects.filter(pk=message.pk).update(raw=raw_name)
        attachments.extend(
            Attachment(
                message=message,
                filename=part.filename[:255],
                content_type=part.content_type[:255],
                size=len(part.payload),
                content_id=(part.content_id or "")[:255],
                inline=part.inline,
                file=name,
            )
            for part, name in zip(item.parsed.attachments, names, strict=True)
        )
        item.parsed.attachments.clear()  # the payloads are on disk
    return attachments


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
    wanted: dict[str, tuple[ParsedMessage, bytes]] = {}
    for item, p in zip(raws, parsed, strict=True):
        key = p.dedupe_key
        if key in tombstoned or key in existing or key in wanted:
            continue
        if consumers.keeps(mailbox, p):
            wanted[key] = (p, item.raw)
    # Written while the transaction below works; it commits only once they are all in.
    new = {
        item.message.dedupe_key: item for item in _start_files(account_id, list(wanted.values()))
    }
    del wanted

    try:
        with transaction.atomic():
            Message.objects.bulk_create(
                [item.message for item in new.values()], ignore_conflicts=True
            )
            # Another mailbox of the account may have stored the same email a moment
            # ago (the same mail to two team addresses): read back which rows exist.
            ids = (
                dict(
                    Message.objects.filter(account_id=account_id, dedupe_key__in=keys).values_list(
                        "dedupe_key", "id"
                    )
                )
                if keys
                else {}
            )
            created = {key for key, item in new.items() if ids.get(key) == item.message.pk}
            MailboxMessage.objects.bulk_create(
                [
                    MailboxMessage(
                        folder=folder,
                        provider_key=item.key,
                        message_id=ids.get(p.dedupe_key)
                        if p.dedupe_key not in tombstoned
                        else None,
                        dedupe_key=p.dedupe_key,
                    )
                    for item, p in zip(raws, parsed, strict=True)
                ],
                ignore_conflicts=True,
            )
            # Full rows only for the messages stored before (by another mailbox, or
            # this one before a crash); this batch's own rows are already in memory.
            earlier = {
                ids[k] for k in keys if k in ids and k not in created and k not in tombstoned
            }
            loaded = {m.pk: m for m in Message.objects.filter(pk__in=earlier)} if earlier else {}
            delivered, seen = [], set()
            for p in parsed:
                key = p.dedupe_key
                if key in tombstoned or key not in ids or ids[key] in seen:
                    continue
                seen.add(ids[key])
                delivered.append(new[key].message if key in created else loaded[ids[key]])
            consumers.deliver(mailbox, delivered, backfill=backfill)
            Attachment.objects.bulk_create(_finish_files(list(new.values()), created))
            MailboxFolder.objects.filter(pk=folder.pk).update(
                cursor=cursor,
                imported_count=F("imported_count") + len(raws),
                unparsed_count=F("unparsed_count")
                + sum(1 for key in created if new[key].parsed.error),
                last_synced_at=timezone.now(),
                updated_at=timezone.now(),
            )
            Mailbox.objects.filter(pk=mailbox.pk).update(sync_done=F("sync_done") + len(raws))
    finally:
        # Whatever happened, no write of this batch is still running afterwards.
        wait(item.files for item in new.values())
    folder.cursor = cursor
    return BatchResult(fetched=len(raws), stored=len(created), linked=len(raws))
