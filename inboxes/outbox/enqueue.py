"""Queueing an email in the user's transaction, and asking for a send run.

``outbox_create`` writes the message (its Message-ID fixed now; composed with its
row's fields, inboxes/outbox/compose.py) and an OutboxItem in the caller's transaction, and on commit asks for a send run of
the mailbox (``enqueue_send_run``), so a worker never sees a row that was rolled
back and a crash before commit sends nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from django.core.cache import cache
from django.db import transaction
from django.utils import timezone

from core.bulk import bulk_insert
from inboxes.models import Direction, Mailbox, Message, OutboxItem, OutboxState
from inboxes.outbox.compose import Attachment, CalendarPart, Recipient, compose
from inboxes.sync.ingest import attachments_store, message_from_parsed, messages_from_parsed

log = logging.getLogger(__name__)


def outbox_create(
    *,
    mailbox: Mailbox,
    from_name: str,
    to: list[Recipient],
    cc: list[Recipient] | None = None,
    subject: str,
    text: str,
    html: str = "",
    in_reply_to: str = "",
    references: list[str] | None = None,
    automatic: bool = False,
    bcc: list[Recipient] | None = None,
    attachments: Sequence[Attachment] = (),
    calendar: CalendarPart | None = None,
) -> OutboxItem:
    """Queue an email; call it inside the transaction of the user's action.

    ``automatic``, ``attachments`` and ``calendar`` as for ``compose``. ``bcc`` get the
    email too and are in no header (only the envelope names them)."""
    cc = cc or []
    bcc = bcc or []
    composed = compose(
        from_address=mailbox.address,
        from_name=from_name,
        to=to,
        cc=cc,
        subject=subject,
        text=text,
        html=html,
        in_reply_to=in_reply_to,
        references=references,
        automatic=automatic,
        attachments=attachments,
        calendar=calendar,
    )
    message = message_from_parsed(
        account_id=mailbox.account_id,
        parsed=composed.parsed,
        raw=composed.raw,
        direction=Direction.OUTBOUND,
    )
    message.save()
    attachments_store(message, composed.parsed)
    item = OutboxItem.objects.create(
        account_id=mailbox.account_id,
        mailbox=mailbox,
        message=message,
        envelope_from=mailbox.address,
        recipients=list(dict.fromkeys(r.address for r in [*to, *cc, *bcc])),
    )
    transaction.on_commit(lambda: enqueue_send_run(mailbox.pk))
    return item


@dataclass(frozen=True)
class Draft:
    """One email of ``outbox_create_many``."""

    to: list[Recipient]
    subject: str
    text: str
    html: str = ""
    in_reply_to: str = ""
    references: list[str] | None = None


def outbox_create_many(
    *, mailbox: Mailbox, from_name: str, drafts: list[Draft]
) -> list[OutboxItem]:
    """``outbox_create`` for many emails from one mailbox (a sequence's due steps):
    the files written in parallel, the rows in two bulk inserts, one send run asked
    for on commit. Call it inside the caller's transaction, as ``outbox_create``."""
    built = []
    for draft in drafts:
        composed = compose(
            from_address=mailbox.address,
            from_name=from_name,
            to=draft.to,
            cc=[],
            subject=draft.subject,
            text=draft.text,
            html=draft.html,
            in_reply_to=draft.in_reply_to,
            references=draft.references,
        )
        built.append((composed.parsed, composed.raw))
    messages = messages_from_parsed(
        account_id=mailbox.account_id, items=built, direction=Direction.OUTBOUND
    )
    bulk_insert(Message, messages)
    items = OutboxItem.objects.bulk_create(
        OutboxItem(
            account_id=mailbox.account_id,
            mailbox=mailbox,
            message=message,
            envelope_from=mailbox.address,
            recipients=list(dict.fromkeys(r.address for r in draft.to)),
        )
        for message, draft in zip(messages, drafts, strict=True)
    )
    if items:
        transaction.on_commit(lambda: enqueue_send_run(mailbox.pk))
    return items


def outbox_resume(mailbox_id: UUID | str) -> int:
    """After a reconnect: send what waited for it, now (one run, on commit)."""
    waiting = OutboxItem.objects.filter(mailbox_id=mailbox_id, state=OutboxState.QUEUED).update(
        next_attempt_at=timezone.now()
    )
    if waiting:
        transaction.on_commit(lambda: enqueue_send_run(mailbox_id))
    return waiting


RUN_LEASE_SECONDS = 60


# --- Asking for a send run (deduplicated per mailbox) --------------------------------------------
#
# A lease in the cache (Redis in production), like the sync lease: "a run of
# this mailbox is queued or running". Taking it is an atomic add, so a burst of
# replies publishes one run, not one task each. It only saves duplicate runs:
# the claims keep every send single whatever the cache says, so a lost or
# expired lease costs at most a second run, and a cache outage only the
# deduplication. As with the sync, a request is written before the lease is
# tried and the holder looks at it after letting go: an item committed after
# the run's last claim is never left for the sweeper.


def _lease_key(mailbox_id: UUID | str) -> str:
    return f"outbox-run:{mailbox_id}"


def _requested_key(mailbox_id: UUID | str) -> str:
    return f"outbox-run-requested:{mailbox_id}"


def _cache_call(what: str, call: Callable[[], Any], default: Any) -> Any:
    try:
        return call()
    except Exception as exc:  # noqa: BLE001 - any cache failure: carry on undeduplicated
        log.warning("outbox run lease: could not %s: %r", what, exc)
        return default


def enqueue_send_run(
    mailbox_id: UUID | str, *, countdown: int | None = None, force: bool = False
) -> bool:
    """Ask for a send run of the mailbox; publishes one unless a run holds the lease
    (that run sees the request). ``force`` publishes anyway (the sweeper: the holder
    may be dead). Returns whether a task was published."""
    from inboxes.tasks import send_outbox

    mailbox_id = str(mailbox_id)
    _cache_call(
        "request", lambda: cache.set(_requested_key(mailbox_id), 1, RUN_LEASE_SECONDS), None
    )
    if not force:
        taken = _cache_call(
            "take the lease",
            lambda: cache.add(_lease_key(mailbox_id), "queued", RUN_LEASE_SECONDS),
            True,
        )
        if not taken:
            return False
    send_outbox.apply_async(args=[mailbox_id], countdown=countdown)
    return True


def run_lease_hold(mailbox_id: UUID | str) -> None:
    """The run holds (or renews) the lease; called at its start and after every chunk."""
    _cache_call(
        "hold the lease",
        lambda: cache.set(_lease_key(mailbox_id), "running", RUN_LEASE_SECONDS),
        None,
    )


def run_requests_answered(mailbox_id: UUID | str) -> None:
    """Called before a run's claims: everything committed so far will be claimed."""
    _cache_call("clear requests", lambda: cache.delete(_requested_key(mailbox_id)), None)


def run_lease_release(mailbox_id: UUID | str) -> bool:
    """Let go of the lease. True when a request came meanwhile and the lease was
    taken back: the caller runs on (the requester's publish was refused)."""
    _cache_call("release the lease", lambda: cache.delete(_lease_key(mailbox_id)), None)
    if not _cache_call("read requests", lambda: cache.get(_requested_key(mailbox_id)), None):
        return False
    return bool(
        _cache_call(
            "take the lease back",
            lambda: cache.add(_lease_key(mailbox_id), "running", RUN_LEASE_SECONDS),
            False,
        )
    )
