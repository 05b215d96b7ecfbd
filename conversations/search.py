"""The inbox search: the conversations with a message that a search finds.

What a search finds in one message is the engine's (inboxes/search.py: every term
starts a word of the subject, sender or text, or is part of the sender's address;
PostgreSQL answers from indexes, SQLite scans). A conversation is found when one of
its messages is; its subject and customer address are those of its messages (the
first one's subject, the customer's address as the sender of their mail or the
recipient of the agent's), so they are searched there.

The query keeps the list's shape: ``id IN (the links of the matching messages)``,
which PostgreSQL plans either way round: for a rare term it reads the matching
messages from the index and then their conversations; for a common one it walks the
list newest first and stops at a page. bench/inbox.py measures both.
"""

from __future__ import annotations

from django.db.models import QuerySet

from conversations.models import Conversation, ConversationMessage
from inboxes.search import messages_matching


def search_conversations(
    conversations: QuerySet[Conversation], text: str
) -> QuerySet[Conversation]:
    """``conversations`` narrowed to those a search finds; all of them for an empty
    search, none for one without a word."""
    if not text.strip():
        return conversations
    links = ConversationMessage.objects.filter(message__in=messages_matching(text)).values(
        "conversation_id"
    )
    return conversations.filter(pk__in=links)
