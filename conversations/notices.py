"""What the conversations inbox tells people (notifications/): mentions, assignments,
and who sent a reply whose send failed."""

from __future__ import annotations

from django.urls import reverse

from accounts.models import User
from audit.models import AuditEvent
from conversations.models import Conversation, ConversationMessage, Note
from inboxes.models import OutboxItem
from notifications.models import Kind, SubjectType
from notifications.sends import Sender
from notifications.services import notify


def _url(conversation: Conversation) -> str:
    return reverse("inbox-conversation", args=[conversation.pk])


def _subject(conversation: Conversation) -> str:
    return conversation.subject or "(no subject)"


def notify_mentions(note: Note, actor: User) -> None:
    """Each teammate a note @mentions hears of it (not the author mentioning themselves)."""
    conversation = note.conversation
    people = [u for u in note.mentions.all() if u.pk != actor.pk]
    snippet = note.text if len(note.text) <= 140 else note.text[:139] + "…"
    notify(
        account_id=conversation.account_id,
        users=people,
        kind=Kind.MENTION,
        text=f'{actor.display_name} mentioned you on "{_subject(conversation)}": {snippet}',
        url=_url(conversation),
        subject_type=SubjectType.CONVERSATION,
        subject_id=conversation.pk,
        key=f"note:{note.pk}",
    )


def notify_assigned(
    conversation: Conversation, assignee: User, *, actor: User | None, event_id: int
) -> None:
    """The new assignee hears of it, unless they assigned themselves."""
    if actor is not None and actor.pk == assignee.pk:
        return
    by = f"{actor.display_name} assigned" if actor is not None else "Routing assigned"
    notify(
        account_id=conversation.account_id,
        users=[assignee],
        kind=Kind.ASSIGNED,
        text=f'{by} you "{_subject(conversation)}" in {conversation.inbox.name}.',
        url=_url(conversation),
        subject_type=SubjectType.CONVERSATION,
        subject_id=conversation.pk,
        key=f"assigned:{event_id}",
    )


def reply_sender(item: OutboxItem) -> Sender | None:
    """The agent who wrote a reply (the audit log records it with the outbox row)."""
    link = (
        ConversationMessage.objects.select_related("conversation")
        .filter(message_id=item.message_id)
        .first()
    )
    if link is None:
        return None
    event = AuditEvent.objects.filter(
        account_id=item.account_id, action="conversation.replied", data__outbox=str(item.pk)
    ).first()
    author = User.objects.filter(pk=event.actor_id).first() if event and event.actor_id else None
    if author is None:
        author = link.conversation.assignee
    if author is None:
        return None
    return Sender(
        user=author,
        subject_type=SubjectType.CONVERSATION,
        subject_id=link.conversation.pk,
        url=_url(link.conversation),
    )
