"""The inbox search: the conversations with a message that a search finds.

What a search finds in one message is the engine's (inboxes/search.py: every term
starts a word of the subject, sender or text, or is part of the sender's address;
PostgreSQL answers from indexes, SQLite scans). A conversation is found when one of
its messages is; its subject and customer address are those of its messages (the
first one's subject, the customer's address as the sender of their mail or the
recipient of the agent's), so they are searched there.

PostgreSQL, two plans (bench/inbox.py measures both at 1,000,000 messages):

* **messages first**, for a search that matches few messages: the GIN and trigram
  indexes give the matching messages, their links their conversations, and the list
  is those conversations (an ``id IN (...)`` of at most PROBE_MESSAGES ids), ordered
  and paged as always. Reading the matching messages costs about their number.
* **the list first**, for a common word: the list is walked newest first and each
  conversation's messages checked, until a page is full. Reading a common word's
  postings would cost more than the page (a word in 84% of a million messages:
  0.2-0.5 s for its bitmap alone), while its matches come within the first rows.

The choice: PostgreSQL's statistics of the column (``estimated_share``) name the
common words; a search of none of them is read messages-first, and if more than
PROBE_MESSAGES messages match after all, the list is walked. The planner cannot
choose well by itself: it estimates every prefix search at 0.5% of the rows, and so
walks the whole list (100,000 conversations, 10-20 s) for a word found nowhere.
"""

from __future__ import annotations

from typing import Any

from django.db import connections
from django.db.models import Q, QuerySet

from conversations.models import Conversation, ConversationMessage
from inboxes.models import Message
from inboxes.search import estimated_share, messages_matching, search_terms

# Above this share of all messages (by the statistics), walk the list: a word in 4% of
# a million messages made the bounded read a 2.4 s sequential scan (the planner's pick).
WALK_SHARE = 0.01
# Messages-first reads at most this many matching messages; more, and the list is walked.
PROBE_MESSAGES = 5_000


def search_conversations(
    conversations: QuerySet[Conversation], text: str
) -> QuerySet[Conversation]:
    """``conversations`` narrowed to those a search finds; all of them for an empty
    search, none for one without a word."""
    if not text.strip():
        return conversations
    terms = search_terms(text)
    if not terms:
        return conversations.none()
    # A conversation an agent started has the customer only as the recipient of its
    # messages (not searched): an address, or a part of one with "@" or "." in it (a
    # domain), also finds it by its customer's address.
    address_like = len(terms) == 1 and ("@" in terms[0] or "." in terms[0])
    by_customer = Q(customer_address__icontains=terms[0]) if address_like else Q(pk__in=[])
    matching = messages_matching(text)
    using = conversations.db
    if (
        connections[using].vendor == "postgresql"
        and estimated_share(text, using=using) < WALK_SHARE
    ):
        few = _conversations_of_few(matching, using)
        if few is not None:
            return conversations.filter(Q(pk__in=few) | by_customer)
    links = ConversationMessage.objects.filter(message__in=matching).values("conversation_id")
    return conversations.filter(Q(pk__in=links) | by_customer)


def _conversations_of_few(matching: QuerySet[Message], using: str) -> list[Any] | None:
    """The conversations of the matching messages, or None when more than
    PROBE_MESSAGES messages match. One statement: the LIMIT keeps the planner from
    turning it into a walk, and counts."""
    sql, params = matching.order_by().values("id").query.sql_with_params()
    with connections[using].cursor() as cursor:
        cursor.execute(  # the ORM's SQL with its parameters apart, and a constant
            f"WITH few AS ({sql} LIMIT {PROBE_MESSAGES + 1}) "  # noqa: S608
            "SELECT (SELECT count(*) FROM few), array(SELECT DISTINCT conversation_id "
            "FROM conversations_conversationmessage WHERE message_id IN (SELECT id FROM few))",
            params,
        )
        count, conversation_ids = cursor.fetchone()
    return None if count > PROBE_MESSAGES else conversation_ids
