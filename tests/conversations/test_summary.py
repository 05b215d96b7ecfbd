"""Conversation.customer_name and .snippet stay what the list would compute from the
messages, through threading, replies, deletions and the migration's backfill."""

from __future__ import annotations

import importlib
import random

import pytest
from django.db import connection, transaction
from django.db.migrations.loader import MigrationLoader
from django.db.models import OuterRef, Subquery
from django.db.models.functions import Substr

from conversations.handling import conversation_reply, message_delete
from conversations.models import Conversation
from conversations.summary import conversation_summaries_refresh, snippet_of
from conversations.threading import thread_into_inbox
from inboxes.models import Direction, Inbox, Mailbox, Message
from tests.support.conversations_factory import make_conversation, make_message

pytestmark = pytest.mark.django_db
SUPPORT = "support@acme.example.com"


@pytest.fixture
def support(account):
    mailbox = Mailbox.objects.create(
        account=account,
        kind="team",
        address=SUPPORT,
        canonical_address=SUPPORT,
        imap_host="imap.acme.example.com",
    )
    return Inbox.objects.create(
        account=account, name="Support", mailbox=mailbox, from_name="Acme Support"
    )


def summary(conversation) -> tuple[str, str]:
    conversation.refresh_from_db()
    return conversation.customer_name, conversation.snippet


def reply_to(inbox, first, **kwargs) -> Message:
    return make_message(
        inbox,
        subject=f"Re: {first.subject}",
        in_reply_to=first.message_id,
        references=[first.message_id],
        **kwargs,
    )


def test_a_new_conversation_shows_its_customer_and_the_start_of_its_text(support):
    start = "  Hello,\n\n  my\tprinter   is on fire "
    conversation = make_conversation(support, sender_name="Carol Chen", text=start + "x" * 300)
    # The first 160 characters, with their whitespace runs collapsed.
    assert summary(conversation) == (
        "Carol Chen",
        "Hello, my printer is on fire " + "x" * (160 - len(start)),
    )


def test_the_newest_message_gives_the_snippet_and_an_older_one_filed_late_does_not(support):
    first = make_message(support, sender_name="Carol", text="First question", minutes_ago=60)
    thread_into_inbox(support, [first], backfill=False)
    conversation = Conversation.objects.get()
    newer = reply_to(support, first, sender_name="Carol", text="Any news?", minutes_ago=10)
    thread_into_inbox(support, [newer], backfill=False)
    assert summary(conversation) == ("Carol", "Any news?")
    # Mail synced late (another folder, a resync) that was sent in between.
    late = reply_to(support, first, sender_name="Carol", text="Also this", minutes_ago=30)
    thread_into_inbox(support, [late], backfill=False)
    assert summary(conversation) == ("Carol", "Any news?")
    # The team's own reply, synced from Sent, is newest: it becomes the snippet.
    sent = reply_to(
        support, first, sender=SUPPORT, sender_name="Acme", text="Fixed!", minutes_ago=1
    )
    Message.objects.filter(pk=sent.pk).update(direction=Direction.OUTBOUND)
    sent.direction = Direction.OUTBOUND
    thread_into_inbox(support, [sent], backfill=False)
    assert summary(conversation) == ("Carol", "Fixed!")


def test_the_customer_name_is_the_earliest_inbound_sender_that_has_one(support):
    first = make_message(support, sender_name="", text="no name here", minutes_ago=60)
    thread_into_inbox(support, [first], backfill=False)
    conversation = Conversation.objects.get()
    assert summary(conversation) == ("", "no name here")
    named = reply_to(support, first, sender_name="Carol C.", text="signed", minutes_ago=20)
    thread_into_inbox(support, [named], backfill=False)
    assert summary(conversation)[0] == "Carol C."
    # An older named message filed later is now the earliest: its name wins.
    older = reply_to(support, first, sender_name="Carol Chen", text="older", minutes_ago=40)
    thread_into_inbox(support, [older], backfill=False)
    assert summary(conversation) == ("Carol Chen", "signed")


def test_an_agent_reply_becomes_the_snippet(admin, support):
    conversation = make_conversation(support, sender_name="Carol")
    with transaction.atomic():
        conversation_reply(actor=admin, conversation=conversation, text="We are on it.")
    name, snippet = summary(conversation)
    assert name == "Carol"
    assert snippet.startswith("We are on it. On ")


def test_deleting_the_newest_message_recomputes_from_what_is_left(admin, support):
    first = make_message(support, sender_name="Carol", text="The question", minutes_ago=30)
    second = reply_to(support, first, sender_name="", text="The follow-up", minutes_ago=10)
    thread_into_inbox(support, [first, second], backfill=False)
    conversation = Conversation.objects.get()
    assert summary(conversation) == ("Carol", "The follow-up")
    message_delete(actor=admin, message=second)
    assert summary(conversation) == ("Carol", "The question")
    message_delete(actor=admin, message=first)
    assert summary(conversation) == ("", "")
    assert conversation.message_count == 0


def test_whitespace_is_collapsed_exactly_like_python_does(support):
    whitespace = "".join(chr(c) for c in range(0x3001) if chr(c).isspace())
    text = f"{whitespace}a{whitespace}b\u200bc\u00adé{whitespace}z"
    conversation = make_conversation(support, text=text)
    assert summary(conversation)[1] == snippet_of(text) == "a b\u200bc\u00adé z"


def list_annotations(queryset):
    """The conversation list's subqueries before the fields existed (the reference)."""
    in_thread = Message.objects.filter(conversationmessage__conversation=OuterRef("pk"))
    return queryset.annotate(
        name_then=Subquery(
            in_thread.filter(direction=Direction.INBOUND)
            .exclude(from_name="")
            .order_by("sent_at", "created_at")
            .values("from_name")[:1]
        ),
        start_then=Subquery(
            in_thread.order_by("-sent_at", "-created_at")
            .annotate(start=Substr("text", 1, 160))
            .values("start")[:1]
        ),
    )


def shuffled_history(inbox, seed: int) -> list[Conversation]:
    """Threads filed in random batches and orders, with names missing and team replies."""
    rng = random.Random(seed)
    messages = []
    for thread in range(8):
        first = make_message(
            inbox,
            sender=f"c{thread}@customer.example.com",
            sender_name=rng.choice(["", f"Customer {thread}"]),
            text=f"Thread {thread}\n\n  opening " + "word " * rng.randint(0, 60),
            minutes_ago=rng.randint(100, 200),
        )
        messages.append(first)
        for n in range(rng.randint(0, 5)):
            team = rng.random() < 0.3
            messages.append(
                reply_to(
                    inbox,
                    first,
                    sender=SUPPORT if team else first.from_address,
                    sender_name=rng.choice(["", "Acme" if team else f"Name {thread}.{n}"]),
                    text=f"reply {n}\t of {thread}" + "  more " * rng.randint(0, 40),
                    minutes_ago=rng.randint(0, 99),
                )
            )
    rng.shuffle(messages)
    while messages:
        size = rng.randint(1, 6)
        thread_into_inbox(inbox, messages[:size], backfill=False)
        messages = messages[size:]
    return list(Conversation.objects.filter(inbox=inbox))


def test_the_fields_equal_what_the_list_computed_from_the_messages(support):
    shuffled_history(support, seed=7)
    rows = list_annotations(Conversation.objects.filter(inbox=support))
    assert len(rows) >= 8  # replies filed before what they answer open their own
    for row in rows:
        assert row.customer_name == (row.name_then or "")
        assert row.snippet == " ".join((row.start_then or "").split())


def test_the_migration_backfills_existing_conversations(support):
    conversations = shuffled_history(support, seed=11)
    expected = {c.pk: (c.customer_name, c.snippet) for c in conversations}
    assert any(name for name, _ in expected.values())
    Conversation.objects.update(customer_name="", snippet="")
    migration = importlib.import_module(
        "conversations.migrations.0006_conversation_summary_and_nav_counts"
    )

    class SchemaEditor:  # what RunPython hands over, without DDL state
        def __init__(self):
            self.connection = connection

        def execute(self, sql, params=()):
            with connection.cursor() as cursor:
                cursor.execute(sql, params)

    # The models as they were when the migration ran (Message was in conversations then).
    then = MigrationLoader(connection).project_state(
        ("conversations", "0006_conversation_summary_and_nav_counts")
    )
    migration.backfill_summaries(then.apps, SchemaEditor())
    assert {c.pk: (c.customer_name, c.snippet) for c in Conversation.objects.all()} == expected


def test_refreshing_leaves_other_conversations_alone(support):
    one = make_conversation(support, sender="a@customer.example.com", sender_name="A")
    two = make_conversation(support, sender="b@customer.example.com", sender_name="B")
    Conversation.objects.update(customer_name="stale", snippet="stale")
    conversation_summaries_refresh([str(one.pk)])
    assert summary(one) == ("A", "Hello")
    assert summary(two) == ("stale", "stale")
