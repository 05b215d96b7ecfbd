"""Filing team-mailbox messages into conversations (DESIGN.md section 3).

A message joins the conversation that holds one of the messages it answers
(In-Reply-To, References); failing that, an open conversation with the same
customer and subject from the last days; failing that, it opens a new one,
which goes through routing. Ingestion is idempotent: one message is in at most
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
    ConversationMessage,
    ConversationStatus,
    Direction,
    Inbox,
    Message,
)
from conversations.routing import conversation_route

SUBJECT_FALLBACK_DAYS = 14
_REPLY_PREFIX = re.compile(r"^\s*((re|fw|fwd|aw|wg|sv|vs|antw|r|tr|rv)\s*(\[\d+\])?\s*:\s*)+", re.I)


def normalize_subject(subject: str) -> str:
    return " ".join(_REPLY_PREFIX.sub("", subject or "").split()).lower()


def _find_conversation(inbox: Inbox, message: Message, team_address: str) -> Conversation | None:
    refs = [ref for ref in [message.in_reply_to, *reversed(message.references)] if ref]
    if refs:
        link = (
            ConversationMessage.objects.filter(inbox=inbox, message__message_id__in=refs)
            .select_related("conversation")
            .order_by("-created_at")
            .first()
        )
        if link is not None:
            return link.conversation
    customer = _customer_of(message, team_address)
    subject = normalize_subject(message.subject)
    if not customer or not subject:
        return None
    since = (message.sent_at or timezone.now()) - timedelta(days=SUBJECT_FALLBACK_DAYS)
    candidates = Conversation.objects.filter(
        inbox=inbox, customer_address=customer, last_message_at__gte=since
    ).order_by("-last_message_at")[:20]
    return next((c for c in candidates if normalize_subject(c.subject) == subject), None)


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
        Conversation.objects.filter(pk=conversation.pk).update(**updates)
    for conversation in opened:
        conversation_route(conversation, notify=not backfill)
    return opened
