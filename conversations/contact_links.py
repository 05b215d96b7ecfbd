"""A conversation and the CRM contact with its customer's address.

A conversation links to the contact whose canonical address is the customer's
(``Conversation.customer_canonical``): when threading opens it, when it grows and a
contact with that address exists by then, and when such a contact is created later
(crm/hooks.py, filled in ConversationsConfig.ready). Its mail shows on the contact's
timeline: one "email" event per message, written when the message is threaded into a
linked conversation, and for the messages it already held when it is linked. Every
step works on a whole batch in a fixed number of queries.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.db import transaction
from django.db.models import Case, Value, When

from accounts.models import User
from audit.services import audit_record
from conversations.models import Conversation, ConversationMessage
from conversations.selectors import conversations_visible_to
from core.errors import Invalid
from core.text import one_line
from crm.contacts import contact_create, contact_existing
from crm.errors import ContactExists
from crm.models import Contact, TimelineEvent, TimelineType
from crm.parties import canonical_or_empty
from crm.timeline import timeline_add_many
from inboxes.models import Message

# How many conversations one UPDATE links (the CASE grows with it).
LINK_CHUNK = 500


def customer_canonical(address: str) -> str:
    """The canonical form of a customer address, or "" when it is not one (a
    malformed From: must not stop a sync)."""
    return canonical_or_empty(address) if address else ""


def contacts_by_canonical(account_id: Any, canonicals: Iterable[str]) -> dict[str, Contact]:
    """The account's contacts with these canonical addresses, in one query."""
    wanted = {c for c in canonicals if c}
    if not wanted:
        return {}
    return {
        contact.canonical_email: contact
        for contact in Contact.objects.filter(account_id=account_id, canonical_email__in=wanted)
    }


def message_event(
    *,
    contact_id: Any,
    account_id: Any,
    conversation_id: Any,
    inbox_name: str,
    message: Message,
) -> TimelineEvent:
    """The timeline line of one message of a linked conversation (not saved)."""
    return TimelineEvent(
        account_id=account_id,
        contact_id=contact_id,
        type=TimelineType.EMAIL,
        at=message.sent_at or message.created_at,
        email=None,
        detail={
            "conversation": str(conversation_id),
            "inbox": inbox_name,
            "subject": message.subject,
            "direction": message.direction,
            "message": str(message.pk),
            "from": message.from_address,
        },
    )


def timeline_for_filed(links: list[ConversationMessage], *, inbox_name: str) -> None:
    """The messages just threaded into conversations that have a contact, on its
    timeline (the links' conversations are loaded: threading holds them)."""
    events = [
        message_event(
            contact_id=link.conversation.contact_id,
            account_id=link.conversation.account_id,
            conversation_id=link.conversation.pk,
            inbox_name=inbox_name,
            message=link.message,
        )
        for link in links
        if link.conversation.contact_id is not None
    ]
    timeline_add_many(events)


def conversations_link(conversations: list[Conversation], contacts: dict[str, Contact]) -> int:
    """Link each conversation without a contact to the contact with its customer's
    canonical address, and put the messages it holds on that contact's timeline,
    once: a message already there for that conversation is not added again.
    Returns how many conversations were linked."""
    pairs = {
        c.pk: contacts[c.customer_canonical]
        for c in conversations
        if c.contact_id is None and c.customer_canonical in contacts
    }
    if not pairs:
        return 0
    with transaction.atomic():
        linked = _link_free(pairs)
        for conversation in conversations:
            if conversation.pk in linked:
                conversation.contact = pairs[conversation.pk]
        _backfill_timeline({pk: pairs[pk] for pk in linked})
    return len(linked)


def _link_free(pairs: dict[Any, Contact]) -> list[Any]:
    """Set the contact of those conversations that still have none; returns them."""
    linked: list[Any] = []
    items = list(pairs.items())
    for start in range(0, len(items), LINK_CHUNK):
        chunk = dict(items[start : start + LINK_CHUNK])
        # Only those still without a contact: a concurrent link already wrote their events.
        still_free = list(
            Conversation.objects.select_for_update()
            .filter(pk__in=chunk, contact__isnull=True)
            .values_list("pk", flat=True)
        )
        if still_free:
            Conversation.objects.filter(pk__in=still_free).update(
                contact_id=Case(
                    *(When(pk=pk, then=Value(chunk[pk].pk)) for pk in still_free),
                )
            )
        linked += still_free
    return linked


def _backfill_timeline(contact_of: dict[Any, Contact]) -> None:
    """The messages the newly linked conversations hold, on their contacts' timelines;
    two queries to read, one to write."""
    if not contact_of:
        return
    already = set(
        TimelineEvent.objects.filter(
            contact_id__in={c.pk for c in contact_of.values()},
            type=TimelineType.EMAIL,
            detail__conversation__in=[str(pk) for pk in contact_of],
        ).values_list("contact_id", "detail__message")
    )
    links = (
        ConversationMessage.objects.filter(conversation_id__in=list(contact_of))
        .select_related("message", "inbox")
        .only(
            "conversation",
            "message",
            "inbox",
            "inbox__name",
            "message__subject",
            "message__direction",
            "message__from_address",
            "message__sent_at",
            "message__created_at",
        )
    )
    events = []
    for link in links:
        contact = contact_of[link.conversation_id]
        if (contact.pk, str(link.message_id)) in already:
            continue
        events.append(
            message_event(
                contact_id=contact.pk,
                account_id=contact.account_id,
                conversation_id=link.conversation_id,
                inbox_name=link.inbox.name,
                message=link.message,
            )
        )
    timeline_add_many(events)


def conversations_link_new_contacts(contacts: list[Contact]) -> int:
    """crm/hooks.py: contacts were created (one, or an import's batch); the
    conversations with their addresses link to them."""
    by_account: dict[Any, dict[str, Contact]] = {}
    for contact in contacts:
        by_account.setdefault(contact.account_id, {})[contact.canonical_email] = contact
    linked = 0
    for account_id, found in by_account.items():
        waiting = list(
            Conversation.objects.filter(
                account_id=account_id, customer_canonical__in=list(found), contact__isnull=True
            ).only("pk", "account_id", "customer_canonical", "contact_id")
        )
        linked += conversations_link(waiting, found)
    return linked


def conversation_make_contact(*, actor: User, conversation: Conversation) -> Contact:
    """One click: the customer becomes a contact (their name and address), and the
    conversation (with every other one of theirs) links to it. If a contact with the
    address exists already, the conversation links to that one."""
    if not conversations_visible_to(actor).filter(pk=conversation.pk).exists():
        raise Invalid("Unknown conversation.")
    if conversation.contact_id is not None:
        return Contact.objects.get(pk=conversation.contact_id)
    if not conversation.customer_canonical:
        raise Invalid(
            "This conversation has no valid customer address to make a contact of.",
            errors={"email": ["No valid customer address."]},
        )
    with transaction.atomic():
        try:
            contact = contact_create(
                account=actor.account,
                email=conversation.customer_address,
                name=one_line(conversation.customer_name)[:200],
                owner=actor,
            )
        except ContactExists:
            existing = contact_existing(actor.account, conversation.customer_canonical)
            if existing is None:  # deleted since: nothing to link to
                raise
            contact = existing
            conversations_link([conversation], {contact.canonical_email: contact})
        audit_record(
            account=actor.account,
            actor=actor,
            action="conversation.contact_made",
            target=conversation,
            data={"contact": str(contact.pk)},
        )
    conversation.contact = contact
    return contact
