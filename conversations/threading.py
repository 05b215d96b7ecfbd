"""Filing team-mailbox messages into conversations (DESIGN.md section 3).

A message joins the conversation that holds one of the messages it answers
(In-Reply-To, References; Outlook's Thread-Index when those are missing), as
long as its sender took part in that conversation; failing that, a recent
conversation with the same customer and subject; failing that, it opens a new
one, which goes through routing. Ingestion is idempotent: one message is in at most
one conversation per inbox (a unique constraint), so re-running changes nothing.
"""

from __future__ import annotations

import re
from datetime import timedelta

from django.db.models import F
from django.db.models.functions import Greatest
from django.utils import timezone

from conversations.models import (
    Conversation,
    ConversationEvent,
    ConversationMessage,
    ConversationStatus,
    Direction,
    EventKind,
    Inbox,
    Message,
)
from conversations.routing import conversation_route
from conversations.summary import conversation_summaries_refresh

SUBJECT_FALLBACK_DAYS = 14
_REPLY_PREFIX = re.compile(r"^\s*((re|fw|fwd|aw|wg|sv|vs|antw|r|tr|rv)\s*(\[\d+\])?\s*:\s*)+", re.I)


def normalize_subject(subject: str) -> str:
    return " ".join(_REPLY_PREFIX.sub("", subject or "").split()).lower()


def _participants(conversation: Conversation) -> set[str]:
    people = {conversation.customer_address}
    for sender, to, cc in Message.objects.filter(
        conversationmessage__conversation=conversation
    ).values_list("from_address", "to", "cc"):
        people.add((sender or "").lower())
        people.update((p.get("address") or "").lower() for p in [*(to or []), *(cc or [])])
    people.discard("")
    return people


def _belongs(conversation: Conversation, message: Message, team_address: str) -> bool:
    """A customer's message joins a thread only if they took part in it: people who
    answer the same newsletter each get their own conversation."""
    sender = message.from_address.lower()
    if message.direction == Direction.OUTBOUND or sender == team_address:
        return True
    return sender in _participants(conversation)


def _find_conversation(inbox: Inbox, message: Message, team_address: str) -> Conversation | None:
    refs = [ref for ref in [message.in_reply_to, *reversed(message.references)] if ref]
    candidates: list[Conversation] = []
    if refs:
        links = (
            ConversationMessage.objects.filter(inbox=inbox, message__message_id__in=refs)
            .select_related("conversation")
            .order_by("-created_at")[:20]
        )
        candidates = list({link.conversation_id: link.conversation for link in links}.values())
    if not candidates and message.thread_root:
        links = (
            ConversationMessage.objects.filter(
                inbox=inbox, message__thread_root=message.thread_root
            )
            .select_related("conversation")
            .order_by("-created_at")[:20]
        )
        candidates = list({link.conversation_id: link.conversation for link in links}.values())
    for conversation in candidates:
        if _belongs(conversation, message, team_address):
            return conversation
    if candidates:
        return None  # an answer to a thread this sender was not part of: its own conversation
    customer = _customer_of(message, team_address)
    subject = normalize_subject(message.subject)
    if not customer or not subject:
        return None
    since = (message.sent_at or timezone.now()) - timedelta(days=SUBJECT_FALLBACK_DAYS)
    recent = Conversation.objects.filter(
        inbox=inbox, customer_address=customer, last_message_at__gte=since
    ).order_by("-last_message_at")[:20]
    return next((c for c in recent if normalize_subject(c.subject) == subject), None)


def _customer_of(message: Message, team_address: str) -> str:
    """The outside party: the sender of an inbound message, else its first recipient."""
    if message.direction == Direction.INBOUND and message.from_address.lower() != team_address:
        return message.from_address.lower()
    for recipient in message.to or []:
        address = (recipient.get("address") or "").lower()
        if address and address != team_address:
            return address
    return ""


def thread_into_inbox(
    inbox: Inbox, messages: list[Message], *, backfill: bool
) -> list[Conversation]:
    """File each message into a conversation of ``inbox``; returns those it opened."""
    already = set(
        ConversationMessage.objects.filter(inbox=inbox, message__in=messages).values_list(
            "message_id", flat=True
        )
    )
    team_address = inbox.mailbox.canonical_address if inbox.mailbox_id else ""
    opened: list[Conversation] = []
    touched: set = set()
    for message in messages:
        if message.pk in already:
            continue
        already.add(message.pk)
        when = message.sent_at or timezone.now()
        conversation = _find_conversation(inbox, message, team_address)
        if conversation is None:
            conversation = Conversation.objects.create(
                account_id=inbox.account_id,
                inbox=inbox,
                subject=message.subject,
                customer_address=_customer_of(message, team_address),
                last_message_at=when,
                message_count=0,
            )
            opened.append(conversation)
        ConversationMessage.objects.create(inbox=inbox, conversation=conversation, message=message)
        updates = {
            "message_count": F("message_count") + 1,
            "last_message_at": Greatest(F("last_message_at"), when),
            "updated_at": timezone.now(),
        }
        customer_wrote = (
            message.direction == Direction.INBOUND and message.from_address.lower() != team_address
        )
        if customer_wrote and not backfill and conversation.status == ConversationStatus.CLOSED:
            updates["status"] = ConversationStatus.OPEN  # a customer's reply reopens it
            updates["closed_at"] = None
            ConversationEvent.objects.create(
                conversation=conversation,
                kind=EventKind.REOPENED,
                detail={"reason": "the customer wrote again"},
            )
            conversation.status = ConversationStatus.OPEN
        Conversation.objects.filter(pk=conversation.pk).update(**updates)
        touched.add(conversation.pk)
    conversation_summaries_refresh(touched)
    for conversation in opened:
        conversation_route(conversation, notify=not backfill)
    return opened
