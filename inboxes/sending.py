"""The outbox: every email Postkamer sends leaves exactly once.

1. ``outbox_create`` writes the message (its Message-ID fixed now) and an
   OutboxItem in the caller's transaction, and enqueues the send on commit, so
   a worker never sees a row that was rolled back and a crash before commit
   sends nothing.
2. ``outbox_send`` claims the item with a conditional UPDATE (queued ->
   sending): two workers handed the same task cannot both send it. Just before
   the message data goes out it records ``data_started_at`` (committed).
3. On the server's 250 the item is marked sent at once, then a copy is stored
   in the mailbox's Sent folder.

The window, and how it is closed: if a worker dies after ``data_started_at``
and before the sent mark (in practice: while the server holds the data and
has not answered, or in the instant between its 250 and our UPDATE), nobody can
know whether the server took the message. The sweeper then marks the item
``unknown`` and looks for its Message-ID in the Sent folder (providers that keep
a copy of what they relay, like Gmail and Microsoft 365, answer yes); if it is
not there the item stays ``unknown`` and is shown to the sender, never resent
blindly. A worker that dies before ``data_started_at`` sent nothing, and the
item is simply sent again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, make_msgid

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from conversations.models import Direction, Message
from inboxes.ingest import message_from_parsed
from inboxes.models import Mailbox, OutboxItem, OutboxState, Provider
from inboxes.parsing import parse_message
from inboxes.providers import open_session, open_transport
from inboxes.providers.base import ProviderError, SendOutcomeUnknown

log = logging.getLogger(__name__)


class ClaimLost(Exception):
    """The sweeper gave the item to another claim while this one was still
    before DATA (it was slower than OUTBOX_SEND_LEASE_SECONDS): send nothing."""


class SendLater(Exception):
    """A transient failure: the item is queued again for ``countdown`` seconds."""

    def __init__(self, detail: str, countdown: int):
        super().__init__(detail)
        self.countdown = countdown


@dataclass(frozen=True)
class Recipient:
    address: str
    name: str = ""


def _address(recipient: Recipient) -> Address:
    return Address(display_name=recipient.name, addr_spec=recipient.address)


def build_mime(
    *,
    from_address: str,
    from_name: str,
    to: list[Recipient],
    cc: list[Recipient],
    subject: str,
    text: str,
    html: str = "",
    in_reply_to: str = "",
    references: list[str] | None = None,
) -> tuple[bytes, str]:
    """The message as it will go out, and its Message-ID."""
    domain = from_address.rsplit("@", 1)[-1]
    message_id = make_msgid(domain=domain)
    mime = EmailMessage(policy=SMTP)
    mime["From"] = Address(display_name=from_name, addr_spec=from_address)
    mime["To"] = [_address(r) for r in to]
    if cc:
        mime["Cc"] = [_address(r) for r in cc]
    mime["Subject"] = subject
    mime["Date"] = format_datetime(timezone.now())
    mime["Message-ID"] = message_id
    if in_reply_to:
        mime["In-Reply-To"] = in_reply_to
    refs = [*(references or []), *([in_reply_to] if in_reply_to else [])]
    refs = list(dict.fromkeys(ref for ref in refs if ref))
    if refs:
        mime["References"] = " ".join(refs[-20:])
    mime.set_content(text)
    if html:
        mime.add_alternative(html, subtype="html")
    return mime.as_bytes(), message_id


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
) -> OutboxItem:
    """Queue an email; call it inside the transaction of the user's action."""
    cc = cc or []
    raw, _ = build_mime(
        from_address=mailbox.address,
        from_name=from_name,
        to=to,
        cc=cc,
        subject=subject,
        text=text,
        html=html,
        in_reply_to=in_reply_to,
        references=references,
    )
    parsed = parse_message(raw)
    message = message_from_parsed(
        account_id=mailbox.account_id, parsed=parsed, raw=raw, direction=Direction.OUTBOUND
    )
    message.save()
    item = OutboxItem.objects.create(
        account_id=mailbox.account_id,
        mailbox=mailbox,
        message=message,
        envelope_from=mailbox.address,
        recipients=list(dict.fromkeys(r.address for r in [*to, *cc])),
    )
    transaction.on_commit(lambda: enqueue_send(item.pk))
    return item


def enqueue_send(item_id) -> None:
    from inboxes.tasks import send_outbox_item

    send_outbox_item.apply_async(args=[str(item_id)])


def _backoff(attempt: int) -> int:
    return min(settings.OUTBOX_RETRY_BASE_SECONDS * 2 ** max(attempt - 1, 0), 3600)


def outbox_send(item_id) -> str:
    """Send one queued item; returns its state afterwards. Raises SendLater on a
    transient failure (the task retries with Celery's countdown)."""
    now = timezone.now()
    claimed = (
        OutboxItem.objects.filter(pk=item_id, state=OutboxState.QUEUED)
        .filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))
        .update(
            state=OutboxState.SENDING,
            claimed_at=now,
            attempts=F("attempts") + 1,
            data_started_at=None,
        )
    )
    item = OutboxItem.objects.select_related("mailbox", "message").get(pk=item_id)
    if not claimed:
        return item.state
    raw = _raw_of(item)

    def before_data() -> None:
        # Fenced by this claim (``attempts`` counts claims): once the sweeper has
        # queued the item again, another worker may be sending it.
        ours = OutboxItem.objects.filter(
            pk=item.pk,
            state=OutboxState.SENDING,
            attempts=item.attempts,
            data_started_at__isnull=True,
        ).update(data_started_at=timezone.now())
        if not ours:
            raise ClaimLost(str(item.pk))

    try:
        with open_transport(item.mailbox) as transport:
            result = transport.send(
                raw,
                envelope_from=item.envelope_from,
                recipients=item.recipients,
                before_data=before_data,
            )
    except ClaimLost:
        log.warning("outbox %s: taken over before DATA; this attempt sent nothing", item.pk)
        return OutboxItem.objects.get(pk=item.pk).state
    except SendOutcomeUnknown as exc:
        if exc.message_id and exc.message_id != item.message.message_id:
            # Look it up later under the id the provider really used.
            Message.objects.filter(pk=item.message_id).update(message_id=exc.message_id)
        _mark(item, OutboxState.UNKNOWN, str(exc))
        return outbox_resolve_unknown(item.pk)
    except ProviderError as exc:
        if exc.reauth:
            # Not the message's fault: it waits for the owner to sign in again
            # (outbox_resume sends it then) instead of failing for good.
            OutboxItem.objects.filter(pk=item.pk, state=OutboxState.SENDING).update(
                state=OutboxState.QUEUED,
                detail=f"Waiting for {item.mailbox.address} to be reconnected: {exc}",
                next_attempt_at=timezone.now() + timedelta(days=365),
            )
            return OutboxState.QUEUED
        if exc.permanent:
            _mark(item, OutboxState.FAILED, str(exc))
            return OutboxState.FAILED
        attempts = item.attempts
        if attempts >= settings.OUTBOX_MAX_ATTEMPTS:
            _mark(item, OutboxState.FAILED, f"Gave up after {attempts} attempts: {exc}")
            return OutboxState.FAILED
        countdown = _backoff(attempts)
        OutboxItem.objects.filter(pk=item.pk, state=OutboxState.SENDING).update(
            state=OutboxState.QUEUED,
            detail=f"Attempt {attempts} failed, retrying: {exc}",
            next_attempt_at=timezone.now() + timedelta(seconds=countdown),
        )
        raise SendLater(str(exc), countdown) from exc
    detail = result.detail
    if result.message_id and result.message_id != item.message.message_id:
        # The provider assigned its own Message-ID: replies must thread on the real one.
        Message.objects.filter(pk=item.message_id).update(message_id=result.message_id)
    if result.refused:
        detail += " (refused: " + "; ".join(f"{r}: {t}" for r, t in result.refused.items()) + ")"
    _mark(item, OutboxState.SENT, detail, sent_at=timezone.now())
    outbox_store_sent_copy(item.pk)
    return OutboxState.SENT


def _raw_of(item: OutboxItem) -> bytes:
    with item.message.raw.open("rb") as handle:
        return handle.read()


def _mark(item: OutboxItem, state: str, detail: str, **extra) -> None:
    OutboxItem.objects.filter(pk=item.pk).update(state=state, detail=detail[:4000], **extra)
    log.info("outbox %s -> %s: %s", item.pk, state, detail)


def outbox_store_sent_copy(item_id) -> bool:
    """A copy in the mailbox's Sent folder, as a mail client keeps. Best effort:
    the sweeper tries again later; the next sync recognises the copy by content."""
    item = OutboxItem.objects.select_related("mailbox", "message").get(pk=item_id)
    if item.sent_copy_stored or item.mailbox.provider != Provider.IMAP:
        # Gmail and Microsoft 365 keep what they send in Sent by themselves.
        return item.sent_copy_stored
    try:
        with open_session(item.mailbox) as session:
            session.store_sent_copy(_raw_of(item))
    except ProviderError as exc:
        log.warning("could not store the sent copy of %s: %s", item.pk, exc)
        return False
    OutboxItem.objects.filter(pk=item.pk).update(sent_copy_stored=True)
    return True


def outbox_resolve_unknown(item_id) -> str:
    """Look for an item of unknown outcome in the Sent folder before anything else."""
    item = OutboxItem.objects.select_related("mailbox", "message").get(pk=item_id)
    if item.state != OutboxState.UNKNOWN:
        return item.state
    try:
        with open_session(item.mailbox) as session:
            sent = session.sent_folder()
            found = sent is not None and session.find_message_id(sent, item.message.message_id)
    except ProviderError as exc:
        log.warning("could not look up %s in Sent: %s", item.pk, exc)
        return OutboxState.UNKNOWN
    if found:
        _mark(
            item,
            OutboxState.SENT,
            "Found in the Sent folder after the connection dropped.",
            sent_at=timezone.now(),
            sent_copy_stored=True,
        )
        return OutboxState.SENT
    OutboxItem.objects.filter(pk=item.pk, state=OutboxState.UNKNOWN).update(
        detail=(
            "Delivery could not be confirmed: the connection dropped after the message was "
            "sent and it is not in the Sent folder. It was not sent again automatically; "
            "send it again if the recipient did not get it."
        )
    )
    return OutboxState.UNKNOWN


def outbox_resume(mailbox_id) -> int:
    """After a reconnect: send what waited for it, now (on commit)."""
    waiting = list(
        OutboxItem.objects.filter(mailbox_id=mailbox_id, state=OutboxState.QUEUED).values_list(
            "pk", flat=True
        )
    )
    OutboxItem.objects.filter(pk__in=waiting).update(next_attempt_at=timezone.now())
    for item_id in waiting:
        transaction.on_commit(lambda item_id=item_id: enqueue_send(item_id))
    return len(waiting)


def outbox_sweep() -> dict[str, int]:
    """Run by beat: re-publish lost sends (the database is the truth, not the broker),
    recover sends whose worker died, and store missing Sent copies."""
    now = timezone.now()
    lease = timedelta(seconds=settings.OUTBOX_SEND_LEASE_SECONDS)
    counts = {"requeued": 0, "recovered": 0, "unknown": 0, "copies": 0}
    due = OutboxItem.objects.filter(
        state=OutboxState.QUEUED, created_at__lt=now - timedelta(seconds=5)
    )
    due = due.filter(
        Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now - timedelta(seconds=5))
    )
    for item_id in due.values_list("pk", flat=True)[:500]:
        enqueue_send(item_id)
        counts["requeued"] += 1
    stale = OutboxItem.objects.filter(state=OutboxState.SENDING, claimed_at__lt=now - lease)
    # Nothing went out before data_started_at: these are safe to send again.
    counts["recovered"] = stale.filter(data_started_at__isnull=True).update(
        state=OutboxState.QUEUED, detail="The worker stopped before sending; queued again."
    )
    for item_id in stale.filter(data_started_at__isnull=False).values_list("pk", flat=True):
        OutboxItem.objects.filter(pk=item_id, state=OutboxState.SENDING).update(
            state=OutboxState.UNKNOWN, detail="The worker stopped while the message was going out."
        )
        outbox_resolve_unknown(item_id)
        counts["unknown"] += 1
    missing_copies = OutboxItem.objects.filter(
        state=OutboxState.SENT,
        sent_copy_stored=False,
        mailbox__provider=Provider.IMAP,
        sent_at__gt=now - timedelta(days=2),
        sent_at__lt=now - timedelta(seconds=30),
    )
    for item_id in missing_copies.values_list("pk", flat=True)[:100]:
        counts["copies"] += int(outbox_store_sent_copy(item_id))
    return counts
