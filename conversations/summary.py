"""What the conversation list shows of a conversation without reading its messages.

``Conversation.customer_name``: the sender's name on the earliest inbound message
(by sent_at, then created_at) that has one. ``Conversation.snippet``: the first
160 characters of the newest message's text (by sent_at, then created_at), with
whitespace runs collapsed to single spaces. Both are recomputed from the
messages a conversation holds whenever that set changes (threading, replies,
deletions), so an older message filed late never displaces the newest one.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from django.db import connection

from conversations.models import Conversation, ConversationMessage
from inboxes.models import Direction, Message

SNIPPET_SOURCE_CHARS = 160

# Exactly the characters Python's str.split() treats as whitespace, so PostgreSQL's
# regexp_replace and snippet_of() agree (tests/conversations/test_summary.py checks it).
_PG_WHITESPACE_RUN = (
    r"[\t\n\u000b\f\r\u001c-\u001f \u0085\u00a0\u1680\u2000-\u200a"
    r"\u2028\u2029\u202f\u205f\u3000]+"
)


def snippet_of(text: str) -> str:
    return " ".join((text or "")[:SNIPPET_SOURCE_CHARS].split())


def conversation_summaries_refresh(conversation_ids: Iterable) -> None:
    """Recompute customer_name and snippet of these conversations from their messages."""
    ids = list(dict.fromkeys(uuid.UUID(str(pk)) for pk in conversation_ids))
    if not ids:
        return
    if connection.vendor == "postgresql":
        _refresh_in_postgres(ids)
    else:
        _refresh_one_by_one(ids)


def _refresh_in_postgres(ids: list) -> None:
    """One statement for any number of conversations: DISTINCT ON picks each
    conversation's earliest named inbound message and its newest message."""
    conversations = Conversation._meta.db_table
    links = ConversationMessage._meta.db_table
    messages = Message._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(  # table names come from the models, values are parameters
            f"""
            WITH named AS (
                SELECT DISTINCT ON (l.conversation_id) l.conversation_id, m.from_name
                  FROM {links} l JOIN {messages} m ON m.id = l.message_id
                 WHERE l.conversation_id = ANY(%(ids)s)
                   AND m.direction = %(inbound)s AND m.from_name <> ''
                 ORDER BY l.conversation_id, m.sent_at, m.created_at
            ), newest AS (
                SELECT DISTINCT ON (l.conversation_id) l.conversation_id, m.id AS message_id
                  FROM {links} l JOIN {messages} m ON m.id = l.message_id
                 WHERE l.conversation_id = ANY(%(ids)s)
                 ORDER BY l.conversation_id, m.sent_at DESC, m.created_at DESC
            )
            UPDATE {conversations} AS c SET
                   customer_name = COALESCE(named.from_name, ''),
                   snippet = COALESCE(btrim(regexp_replace(
                       substr(m.text, 1, %(chars)s), %(whitespace)s, ' ', 'g'), ' '), '')
              FROM {conversations} AS target
              LEFT JOIN named ON named.conversation_id = target.id
              LEFT JOIN newest ON newest.conversation_id = target.id
              LEFT JOIN {messages} m ON m.id = newest.message_id
             WHERE target.id = ANY(%(ids)s) AND c.id = target.id
            """,  # noqa: S608
            {
                "ids": ids,
                "inbound": Direction.INBOUND,
                "chars": SNIPPET_SOURCE_CHARS,
                "whitespace": _PG_WHITESPACE_RUN,
            },
        )


def _refresh_one_by_one(ids: list) -> None:
    for conversation_id in ids:
        in_thread = Message.objects.filter(conversationmessage__conversation_id=conversation_id)
        name = (
            in_thread.filter(direction=Direction.INBOUND)
            .exclude(from_name="")
            .order_by("sent_at", "created_at")
            .values_list("from_name", flat=True)
            .first()
        )
        text = in_thread.order_by("-sent_at", "-created_at").values_list("text", flat=True).first()
        Conversation.objects.filter(pk=conversation_id).update(
            customer_name=name or "", snippet=snippet_of(text or "")
        )
