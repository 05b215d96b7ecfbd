"""Reads: which inboxes and conversations a user may see, and the list queries."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from django.db import connection
from django.db.models import Count, Exists, F, Max, OuterRef, Prefetch, Q, QuerySet

from accounts.models import Role, Team, User
from accounts.selectors import users_visible_to
from conversations.models import (
    Conversation,
    ConversationEvent,
    ConversationMessage,
    ConversationStatus,
    Note,
    ReadState,
    RoutingRule,
)
from conversations.search import search_conversations as conversation_search
from inboxes.models import Attachment, Inbox, Message, OutboxItem
from inboxes.selectors import inboxes_visible_to

# A place in the conversation list: (last_message_at, id).
ListPlace = tuple[datetime | None, Any]


def conversations_visible_to(user) -> QuerySet[Conversation]:
    visible = inboxes_visible_to(user).values("pk")
    return Conversation.objects.filter(account_id=user.account_id, inbox__in=visible)


def conversations_to_show(user: User) -> QuerySet[Conversation]:
    """The conversations the user may open, with what the page shows of their inbox,
    team email and assignee."""
    return conversations_visible_to(user).select_related("inbox__mailbox", "assignee")


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

    ``view``: "unassigned", "mine", "open" (all open; a snoozed conversation is in
    none of these three until it wakes), "mentions" (a note mentions the user, any
    status), "snoozed", "closed", "bounces" (opened by a delivery report tied to no
    email, any status).
    """
    conversations = conversations_visible_to(user).select_related("inbox", "assignee")
    awake = Q(status="open", snoozed_until__isnull=True)
    if view == "unassigned":
        conversations = conversations.filter(awake, assignee__isnull=True)
    elif view == "mine":
        conversations = conversations.filter(awake, assignee=user)
    elif view == "open":
        conversations = conversations.filter(awake)
    elif view == "mentions":
        mentioned = Note.mentions.through.objects.filter(
            note__conversation=OuterRef("pk"), user=user
        )
        conversations = conversations.filter(Exists(mentioned))
    elif view == "snoozed":
        conversations = conversations.filter(status="open", snoozed_until__isnull=False)
    elif view == "closed":
        conversations = conversations.filter(status="closed")
    elif view == "bounces":
        conversations = conversations.filter(is_bounce=True)
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
    """The conversations a search finds (conversations/search.py)."""
    return conversation_search(conversations, text)


def conversation_detail(conversation: Conversation) -> Conversation:
    """The conversation with its whole thread, notes and events, in a fixed number
    of queries however long the thread is."""
    detailed = (
        Conversation.objects.select_related("inbox__mailbox", "assignee", "contact")
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
        .select_related("outbox__mailbox")
        .prefetch_related("attachments", "bounces")
        .order_by("sent_at", "created_at")
    )
    return detailed


# --- The inbox overview (conversations/overview_views.py) ------------------------------------------


def inbox_conversations_visible_to(user: User, inbox: Inbox) -> QuerySet[Conversation]:
    return conversations_visible_to(user).filter(inbox=inbox)


def open_counts(conversations: QuerySet[Conversation]) -> tuple[int, int]:
    """How many of these conversations are open now, and how many of those unassigned."""
    open_now = conversations.filter(status=ConversationStatus.OPEN)
    return open_now.count(), open_now.filter(assignee__isnull=True).count()


def other_inboxes_visible_to(user: User, inbox: Inbox) -> QuerySet[Inbox]:
    return inboxes_visible_to(user).exclude(pk=inbox.pk).order_by("name")


# --- The inbox screen (conversations/inbox_views.py) -----------------------------------------------


def inbox_names_visible_to(user: User) -> QuerySet[Inbox]:
    """The inboxes the user may see, names only (the left pane): without the team
    email join or the teams prefetch of inboxes_visible_to."""
    return (
        inboxes_visible_to(user)
        .select_related(None)
        .prefetch_related(None)
        .only("pk", "name")
        .order_by("name")
    )


def open_counts_per_inbox(user: User, inbox_ids: list[Any]) -> dict[Any, Mapping[str, Any]]:
    """Per inbox: its open conversations, the unassigned ones and the user's own, in
    one query (an index-only scan of conv_nav_counts)."""
    rows = (
        Conversation.objects.filter(
            account_id=user.account_id,
            status="open",
            snoozed_until__isnull=True,
            inbox__in=inbox_ids,
        )
        .order_by()
        .values("inbox")
        .annotate(
            open=Count("inbox"),
            unassigned=Count("inbox", filter=Q(assignee__isnull=True)),
            mine=Count("inbox", filter=Q(assignee=user)),
        )
    )
    return {row["inbox"]: row for row in rows}


ROW_VALUES = (
    "id",
    "subject",
    "status",
    "customer_address",
    "customer_name",
    "snippet",
    "last_message_at",
    "message_count",
    "inbox_id",
    "assignee_id",
    "is_read",
    "is_bounce",
    "snoozed_until",
)


def conversation_rows(
    user: User,
    *,
    view: str,
    inbox: Inbox | None,
    search: str,
    after: ListPlace | None = None,
    down_to: ListPlace | None = None,
    limit: int,
) -> list[dict[str, Any]]:
    """Up to ``limit`` rows of the conversation list as plain values (no model
    instances), in one query however deep the page is: a keyset cursor (``after``)
    starts the scan at its row, ``down_to`` ends it at that row."""
    conversations = conversation_list(user, view=view, inbox=inbox, search=search)
    if after is not None:
        conversations = conversations_older_than(conversations, *after)
    if down_to is not None:
        conversations = conversations_down_to(conversations, *down_to)
    return list(
        conversations.values(
            *ROW_VALUES,
            inbox_name=F("inbox__name"),
            assignee_full_name=F("assignee__full_name"),
            assignee_email=F("assignee__email"),
        )[:limit]
    )


VERSION_ROW = (
    "status",
    "assignee_id",
    "message_count",
    "last_message_at",
    "updated_at",
    "subject",
    "contact_id",
    "snoozed_until",
)


def thread_state(conversation_pk: Any) -> list[Any]:
    """What the thread and its header show, from four small queries (the poll's
    check): the conversation's VERSION_ROW, its outbox, and its notes and events."""
    row = Conversation.objects.filter(pk=conversation_pk).values_list(*VERSION_ROW)
    outbox = OutboxItem.objects.filter(
        message__conversationmessage__conversation_id=conversation_pk
    )
    notes = Note.objects.filter(conversation_id=conversation_pk).aggregate(
        n=Count("pk"), last=Max("created_at")
    )
    events = ConversationEvent.objects.filter(conversation_id=conversation_pk).aggregate(
        n=Count("pk"), last=Max("id")
    )
    return [list(row), sorted(outbox.values_list("pk", "state", "detail")), notes, events]


def assignable_people(conversation: Conversation, viewer: User) -> list[User]:
    """The active people who can see the conversation's inbox, for its Assignee choice."""
    people = users_visible_to(viewer).filter(is_active=True)
    inbox = conversation.inbox
    if inbox.restricted:
        people = people.filter(
            Q(role="admin") | Q(teams__in=inbox.visible_to_teams.all())
        ).distinct()
    return list(people.order_by("full_name", "email"))


def messages_visible_to(user: User) -> QuerySet[Message]:
    """The messages of the conversations the user may see."""
    in_visible = ConversationMessage.objects.filter(
        message=OuterRef("pk"), conversation__in=conversations_visible_to(user)
    )
    return Message.objects.filter(Exists(in_visible))


def message_in_visible_conversation(user: User, message: Message) -> bool:
    """The engine's reader hook (inboxes/access.py): in a conversation the user may see."""
    return messages_visible_to(user).filter(pk=message.pk).exists()


def attachments_visible_to(user: User) -> QuerySet[Attachment]:
    """The attachments of the messages of the conversations the user may see."""
    visible = ConversationMessage.objects.filter(
        message=OuterRef("message_id"), conversation__in=conversations_visible_to(user)
    )
    return Attachment.objects.filter(Exists(visible))


# --- Settings > Inboxes > Routing and access, and the teams that inboxes use -----------------------


def routing_rule_of(inbox: Inbox) -> RoutingRule | None:
    """The inbox's routing rule, or None (no automatic assignment)."""
    return RoutingRule.objects.filter(inbox=inbox).first()


def routing_rule_with_people(inbox: Inbox) -> RoutingRule | None:
    """The inbox's routing rule with whom it names, or None (no automatic assignment)."""
    return (
        RoutingRule.objects.filter(inbox=inbox)
        .select_related("team", "last_assigned")
        .prefetch_related("users", "team__members")
        .first()
    )


def people_who_see(inbox: Inbox) -> list[User]:
    """Everyone who can see the inbox now: admins, and all or only the teams' members."""
    people = User.objects.filter(account_id=inbox.account_id, is_active=True)
    if inbox.restricted:
        people = people.filter(
            Q(role=Role.ADMIN) | Q(teams__in=inbox.visible_to_teams.all())
        ).distinct()
    return list(people.order_by("full_name", "email"))


def routing_rules_using(teams: Iterable[Team]) -> QuerySet[RoutingRule]:
    """The routing rules that take turns among a team's members (on or off)."""
    return RoutingRule.objects.filter(team__in=teams).select_related("inbox")


def restricted_inboxes_seen_by(teams: Iterable[Team]) -> dict[Any, list[Inbox]]:
    """Per team: the inboxes that only some teams see, this team among them, by name."""
    links = (
        Inbox.visible_to_teams.through.objects.filter(team__in=teams, inbox__restricted=True)
        .select_related("inbox")
        .order_by("inbox__name")
    )
    seen: dict[Any, list[Inbox]] = {}
    for link in links:
        seen.setdefault(link.team_id, []).append(link.inbox)
    return seen
