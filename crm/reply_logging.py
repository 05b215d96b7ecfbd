"""Logging the mail a personal mailbox exchanges with contacts (R10): their replies
and the owner's own sent mail become CRM emails on the contacts' timelines, threaded
to the email they answer; a contact's reply stops their sequences.

Called by the CRM's mail consumer (crm/consumer.py) inside the sync's transaction,
once per batch: a few queries per batch, not per message."""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from django.db import IntegrityError, transaction
from django.utils import timezone

from crm.enrollments import enrollments_stop
from crm.models import Contact, Email, StopReason, TimelineEvent, TimelineType
from crm.parties import Exchange, contacts_logged, exchange_of
from crm.preferences import never_log_of
from crm.timeline import timeline_add_many
from inboxes.models import Direction, Mailbox, Message, MessageKind

# Addresses looked up in one query (the SQLite default allows 32,766 parameters).
LOOKUP_CHUNK = 5_000


def contacts_among(account_id: uuid.UUID, addresses: Iterable[str]) -> dict[str, Contact]:
    """The account's contacts whose canonical address is one of ``addresses``."""
    wanted = sorted({a for a in addresses if a})
    found: dict[str, Contact] = {}
    for start in range(0, len(wanted), LOOKUP_CHUNK):
        chunk = wanted[start : start + LOOKUP_CHUNK]
        for contact in Contact.objects.filter(account_id=account_id, canonical_email__in=chunk):
            found[contact.canonical_email] = contact
    return found


def exchange_of_message(own: str, message: Message) -> Exchange:
    recipients = [party.get("address", "") for party in (*message.to, *message.cc)]
    return exchange_of(own, message.from_address, recipients)


def _answered_ids(message: Message) -> list[str]:
    """The Message-IDs ``message`` answers, the most direct first."""
    found = [message.in_reply_to] if message.in_reply_to else []
    found.extend(reversed([r for r in message.references or [] if isinstance(r, str)]))
    return found


def _insert(emails: list[Email]) -> list[Email]:
    """Insert ``emails``; those another sync logged a moment ago are left out (the
    unique (contact, message) settles it), and a reply to one of those is left
    unthreaded rather than pointing at a row that was never written."""
    try:
        with transaction.atomic():
            Email.objects.bulk_create(emails)
        return emails
    except IntegrityError:
        pass
    created: list[Email] = []
    ours = {email.pk for email in emails}
    written: set[uuid.UUID] = set()
    for email in emails:
        if email.replied_to_id in ours and email.replied_to_id not in written:
            email.replied_to_id = None
        try:
            with transaction.atomic():
                email.save(force_insert=True)
        except IntegrityError:
            continue
        created.append(email)
        written.add(email.pk)
    return created


def emails_log(mailbox: Mailbox, messages: list[Message], *, backfill: bool) -> list[Email]:
    """Log ``messages`` (stored mail of ``mailbox``, not bounces) on the contacts they
    are exchanged with; idempotent: an email already on a contact (one the CRM sent,
    or logged before) is not logged again. Returns the new CRM emails.

    ``backfill`` (the first import, history): logged without stopping sequences."""
    own = mailbox.canonical_address
    exchanges = [(message, exchange_of_message(own, message)) for message in messages]
    contacts = contacts_among(
        mailbox.account_id, (a for _, exchange in exchanges for a in exchange.others)
    )
    if not contacts:
        return []
    never_log = never_log_of(mailbox.owner_id)
    planned: list[tuple[Message, Contact, str]] = []
    for message, exchange in exchanges:
        direction: str = Direction.OUTBOUND if exchange.outgoing else Direction.INBOUND
        for canonical in contacts_logged(exchange, contacts, never_log):
            planned.append((message, contacts[canonical], direction))
    if not planned:
        return []
    contact_ids = {contact.pk for _, contact, _ in planned}
    existing = set(
        Email.objects.filter(
            contact_id__in=contact_ids, message_id__in={m.pk for m, _, _ in planned}
        ).values_list("contact_id", "message_id")
    )
    planned = [p for p in planned if (p[1].pk, p[0].pk) not in existing]
    if not planned:
        return []

    referenced = {ref for message, _, _ in planned for ref in _answered_ids(message)}
    answered: dict[tuple[object, str], uuid.UUID] = {}
    if referenced:
        for email_id, contact_id, message_id in Email.objects.filter(
            contact_id__in=contact_ids, message__message_id__in=referenced
        ).values_list("id", "contact_id", "message__message_id"):
            answered.setdefault((contact_id, message_id), email_id)

    now = timezone.now()
    emails: list[Email] = []
    for message, contact, direction in planned:
        replied_to = next(
            (
                answered[(contact.pk, ref)]
                for ref in _answered_ids(message)
                if (contact.pk, ref) in answered
            ),
            None,
        )
        email = Email(
            id=uuid.uuid4(),
            account_id=mailbox.account_id,
            contact=contact,
            message=message,
            mailbox=mailbox,
            direction=direction,
            sent_by_id=mailbox.owner_id if direction == Direction.OUTBOUND else None,
            logged=True,
            replied_to_id=replied_to,
            at=message.sent_at or now,
        )
        emails.append(email)
        if message.message_id:
            # A later message of the same batch may answer this one.
            answered.setdefault((contact.pk, message.message_id), email.pk)

    created = _insert(emails)
    timeline_add_many(
        [
            TimelineEvent(
                account_id=email.account_id,
                contact=email.contact,
                type=TimelineType.EMAIL,
                at=email.at,
                email=email,
            )
            for email in created
        ]
    )
    if not backfill:
        _stop_sequences_of_repliers(created)
    return created


def _stop_sequences_of_repliers(created: list[Email]) -> None:
    """A contact's reply stops their sequences; an auto-reply (RFC 3834) only those
    that ask for it (``enrollments_stop``)."""
    replies: dict[object, tuple[Contact, bool]] = {}
    for email in created:
        if email.direction != Direction.INBOUND:
            continue
        auto = email.message.kind == MessageKind.AUTO_REPLY
        contact, all_auto = replies.get(email.contact_id, (email.contact, True))
        replies[email.contact_id] = (contact, all_auto and auto)
    for contact, auto_reply in replies.values():
        enrollments_stop(contact, StopReason.REPLIED, auto_reply=auto_reply)
