"""The conversations inbox as the engine's consumer of team mail (inboxes/consumers.py)."""

from __future__ import annotations

from django.db.models import Model

from conversations.models import Conversation, ConversationMessage
from conversations.threading import thread_into_inbox
from inboxes.mime import ParsedMessage
from inboxes.models import Inbox, Mailbox, Message


class TeamInboxConsumer:
    """Every message of a team mailbox is threaded into the inbox it feeds (R3, R8)."""

    models_filled_by_import: tuple[type[Model], ...] = (ConversationMessage, Conversation)

    def keeps(self, mailbox: Mailbox, parsed: ParsedMessage) -> bool:
        return True

    def deliver(self, mailbox: Mailbox, messages: list[Message], *, backfill: bool) -> None:
        inbox = Inbox.objects.filter(mailbox=mailbox).select_related("mailbox").first()
        if inbox is not None:
            thread_into_inbox(inbox, messages, backfill=backfill)


team_inbox_consumer = TeamInboxConsumer()
