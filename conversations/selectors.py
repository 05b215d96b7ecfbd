"""Reads: which inboxes and conversations a user may see, and the list queries."""

from __future__ import annotations

from datetime import datetime

from django.db import connection
from django.db.models import Exists, OuterRef, Prefetch, Q, QuerySet

from conversations.models import (
    Conversation,
    ConversationEvent,
    ConversationMessage,
    Note,
    ReadState,
)
from inboxes.models import Message
from inboxes.selectors import inboxes_visible_to


def conversations_visible_to(user) -> QuerySet[Conversation]:
    visible = inboxes_visible_to(user).values("pk")
    return Conversation.objects.filter(account_id=user.account_id, inbox__in=visible)


def conversation_list(
    user,
    *,
    view: str = "",
    inbox=None,
    status: str = "",
    assignee=None,
    unassigned: bool = False,
    search: str = "",
) -> QuerySet[Conversation]:
    """The conversation list with the unread flag, newest activity first.

    ``view``: "unassigned", "mine", "open" (all open), "closed".
    """
    conversations = conversations_visible_to(user).select_related("inbox", "assignee")
    if view == "unassigned":
        conversations = conversations.filter(status="open", assignee__isnull=True)
    elif view == "mine":
        conversations = conversations.filter(status="open", assignee=user)
    elif view == "open":
        conversations = conversations.filter(status="open")
    elif view == "closed":
        conversations = conversations.filter(status="closed")
    if inbox is not None:
        conversations = conversations.filter(inbox=inbox)
    if status:
        conversations = conversations.filter(status=status)
    if assignee is not None:
        conversations = conversations.filter(assignee=assignee)
    if unassigned:
        conversations = conversations.filter(assignee__isnull=True)
    if search:
        conversations = search_conversations(conversations, search)
    read = ReadState.objects.filter(
        conversation=OuterRef("pk"), user=user, read_at__gte=OuterRef("last_message_at")
    )
    return conversations.annotate(is_read=Exists(read)).order_by("-last_message_at", "-id")


def conversations_older_than(
    conversations: QuerySet[Conversation], last_message_at: datetime | None, pk
) -> QuerySet[Conversation]:
    """The rows after (last_message_at, pk) in the list's order, newest first: a
    keyset cursor. ``last_message_at <= t`` is the index range, so the scan starts
    at the cursor however deep it is; the OR only settles ties on t."""
    if last_message_at is None:
        tie = Q(last_message_at__isnull=True, pk__lt=pk)
        return conversations.filter(
            tie | Q(last_message_at__isnull=False) if _nulls_first() else tie
        )
    older = Q(last_message_at__lte=last_message_at) & (
        Q(last_message_at__lt=last_message_at) | Q(pk__lt=pk)
    )
    return conversations.filter(
        older if _nulls_first() else older | Q(last_message_at__isnull=True)
    )


def conversations_down_to(
    conversations: QuerySet[Conversation], last_message_at: datetime | None, pk
) -> QuerySet[Conversation]:
    """The rows from the top of the list down to (last_message_at, pk), included."""
    if last_message_at is None:
        tie = Q(last_message_at__isnull=True, pk__gte=pk)
        return conversations.filter(
            tie if _nulls_first() else tie | Q(last_message_at__isnull=False)
        )
    newer = Q(last_message_at__gte=last_message_at) & (
        Q(last_message_at__gt=last_message_at) | Q(pk__gte=pk)
    )
    return conversations.filter(
        newer | Q(last_message_at__isnull=True) if _nulls_first() else newer
    )


def _nulls_first() -> bool:
    """ "-last_message_at" puts a NULL first where NULL sorts as the largest value
    (PostgreSQL) and last elsewhere (SQLite)."""
    return connection.features.nulls_order_largest


def search_conversations(
    conversations: QuerySet[Conversation], text: str
) -> QuerySet[Conversation]:
    """Subject, participants and body. The body match runs as a subquery so the
    list keeps one row per conversation without DISTINCT over the whole list."""
    text = text.strip()
    if not text:
        return conversations
    in_body = ConversationMessage.objects.filter(conversation=OuterRef("pk")).filter(
        Q(message__text__icontains=text)
        | Q(message__from_address__icontains=text)
        | Q(message__from_name__icontains=text)
    )
    return conversations.filter(
        Q(subject__icontains=text) | Q(customer_address__icontains=text) | Exists(in_body)
    )


def conversation_detail(conversation: Conversation) -> Conversation:
    """The conversation with its whole thread, notes and events, in a fixed number
    of queries however long the thread is."""
    detailed = (
        Conversation.objects.select_related("inbox__mailbox", "assignee")
        .prefetch_related(
            Prefetch(
                "notes",
                queryset=Note.objects.select_related("author").prefetch_related("mentions"),
            ),
            Prefetch(
                "events", queryset=ConversationEvent.objects.select_related("actor", "assignee")
            ),
        )
        .get(pk=conversation.pk)
    )
    detailed.thread = list(
        Message.objects.filter(conversationmessage__conversation=detailed)
        .select_related("outbox")
        .prefetch_related("attachments")
        .order_by("sent_at", "created_at")
    )
    return detailed
