"""Threading with real-world header shapes (fixtures in tests/fixtures/threading/)."""

from __future__ import annotations

import os
import random
from datetime import timedelta
from pathlib import Path

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from conversations.models import Conversation, ConversationEvent, ConversationMessage
from conversations.threading import thread_into_inbox
from inboxes.models import Direction, Inbox, Mailbox, MailboxFolder, Message
from inboxes.providers.base import RawMessage
from inboxes.sync.ingest import ingest_batch

FIXTURES = Path(__file__).parent.parent / "fixtures" / "threading"
pytestmark = pytest.mark.django_db
requires_postgres = pytest.mark.skipif(
    not os.environ.get("DATABASE_URL", "").startswith(("postgres:", "postgresql:")),
    reason="query counts are those of PostgreSQL",
)


@pytest.fixture
def file_into(account):
    mailbox = Mailbox.objects.create(
        account=account,
        kind="team",
        address="support@acme.example.com",
        canonical_address="support@acme.example.com",
    )
    inbox = Inbox.objects.create(account=account, name="Support", mailbox=mailbox)
    folder = MailboxFolder.objects.create(mailbox=mailbox, role="inbox", name="INBOX")

    def deliver(*names: str) -> Inbox:
        for name in names:
            raw = (FIXTURES / name).read_bytes()
            ingest_batch(
                mailbox=mailbox,
                folder=folder,
                raws=[RawMessage(key=name, raw=raw)],
                cursor={},
                backfill=False,
            )
        return inbox

    return deliver


def threads(inbox: Inbox) -> list[list[str]]:
    """Each conversation as the list of its senders, oldest conversation first."""
    return [
        list(c.messages.order_by("sent_at").values_list("from_address", flat=True))
        for c in Conversation.objects.filter(inbox=inbox).order_by("created_at")
    ]


def test_outlook_follow_up_without_references_and_a_changed_subject_joins_by_thread_index(
    file_into,
):
    inbox = file_into("outlook_1_new.eml", "outlook_2_followup_no_references.eml")
    assert threads(inbox) == [["dirk@klant.example.nl", "dirk@klant.example.nl"]]


def test_gmail_reply_joins_by_in_reply_to(file_into):
    inbox = file_into("gmail_1_new.eml", "gmail_2_reply.eml")
    assert threads(inbox) == [["priya.natarajan@gmail.com"] * 2]


def test_apple_mail_reply_with_a_changed_subject_joins_by_references(file_into):
    inbox = file_into("apple_1_new.eml", "apple_2_reply_changed_subject.eml")
    assert threads(inbox) == [["juergen@firma.example.de"] * 2]
    assert Conversation.objects.get(inbox=inbox).subject == "Rechnung November"


def test_people_answering_the_same_newsletter_are_not_merged(file_into):
    inbox = file_into(
        "newsletter.eml",
        "newsletter_reply_ann.eml",
        "newsletter_reply_ben.eml",
        "newsletter_reply_ben_again.eml",
    )
    assert threads(inbox) == [
        ["support@acme.example.com"],
        ["ann@one.example.com"],
        ["ben@two.example.com", "ben@two.example.com"],
    ]


def test_unrelated_customers_with_the_same_subject_stay_apart(file_into):
    inbox = file_into("gmail_1_new.eml", "outlook_1_new.eml", "apple_1_new.eml")
    assert len(threads(inbox)) == 3


def test_refiling_the_same_files_changes_nothing(file_into):
    inbox = file_into("gmail_1_new.eml", "gmail_2_reply.eml")
    file_into("gmail_1_new.eml", "gmail_2_reply.eml")
    assert threads(inbox) == [["priya.natarajan@gmail.com"] * 2]


def test_filing_every_fixture_in_one_batch_groups_like_one_at_a_time(file_into, account):
    names = sorted(path.name for path in FIXTURES.glob("*.eml"))
    one_at_a_time = threads(file_into(*names))
    ConversationMessage.objects.all().delete()
    Conversation.objects.all().delete()
    inbox = Inbox.objects.get(account=account)
    folder = MailboxFolder.objects.get(mailbox=inbox.mailbox)
    ingest_batch(
        mailbox=inbox.mailbox,
        folder=folder,
        raws=[RawMessage(key=f"again-{n}", raw=(FIXTURES / n).read_bytes()) for n in names],
        cursor={},
        backfill=False,
    )
    assert threads(inbox) == one_at_a_time
    assert len(one_at_a_time) == 6


# --- A batch is filed exactly as if its messages came one at a time ------------------------------

TEAM = "support@acme.example.com"


def _mailbox_inbox(account, name: str, **mailbox) -> Inbox:
    mailbox = Mailbox.objects.create(
        account=account, kind="team", address=TEAM, canonical_address=TEAM, **mailbox
    )
    return Inbox.objects.create(account=account, name=name, mailbox=mailbox)


def _random_mail(account, rng: random.Random, count: int) -> list[Message]:
    """Threads with References, Outlook Thread-Index only, subject-only follow-ups,
    newsletters answered by strangers, team replies, Cc'd colleagues joining,
    and mail arriving out of order."""
    people = [f"p{n}@customer{n % 3}.example.com" for n in range(6)]
    start = timezone.now() - timedelta(days=40)
    made: list[Message] = []
    for n in range(count):
        parent = rng.choice(made) if made and rng.random() < 0.6 else None
        sender = rng.choice(people)
        kind = rng.random()
        direction = Direction.INBOUND
        if parent is not None and kind < 0.2:
            sender, direction = TEAM, Direction.OUTBOUND
        elif parent is not None and kind < 0.45:
            sender = parent.from_address if parent.from_address != TEAM else sender
        to = [{"name": "", "address": TEAM if sender != TEAM else rng.choice(people)}]
        cc = [{"name": "", "address": rng.choice(people)}] if rng.random() < 0.3 else []
        subject = rng.choice(["Invoice", "Printer", "Access", "Newsletter", f"Topic {n}"])
        in_reply_to, references, root = "", [], ""
        if parent is not None:
            subject = f"Re: {parent.subject}"
            how = rng.random()
            if how < 0.6:
                in_reply_to = parent.message_id
                references = [*parent.references, parent.message_id][-4:]
            elif how < 0.8:
                root = parent.thread_root or f"root-{parent.pk}"
                if not parent.thread_root:
                    Message.objects.filter(pk=parent.pk).update(thread_root=root)
                    parent.thread_root = root
        message_id = f"<r{n}.{rng.random()}@mail.example.com>"
        made.append(
            Message.objects.create(
                account=account,
                dedupe_key=f"random-{n}-{rng.random()}",
                direction=direction,
                message_id=message_id,
                in_reply_to=in_reply_to,
                references=references,
                thread_root=root,
                subject=subject,
                from_name=rng.choice(["", sender.split("@")[0].title()]),
                from_address=sender,
                to=to,
                cc=cc,
                sent_at=start + timedelta(hours=n * 6 + rng.randint(-30, 30)),
                text=f"message {n}",
            )
        )
    return made


def _filed(inbox: Inbox) -> list[tuple]:
    """Each conversation by its message ids, with what threading wrote on it."""
    result = []
    for conversation in Conversation.objects.filter(inbox=inbox):
        message_ids = frozenset(conversation.messages.values_list("message_id", flat=True))
        result.append(
            (
                message_ids,
                conversation.subject,
                conversation.customer_address,
                conversation.message_count,
                conversation.last_message_at,
                conversation.status,
                conversation.customer_name,
                conversation.snippet,
                ConversationEvent.objects.filter(conversation=conversation).count(),
            )
        )
    return sorted(result, key=lambda row: sorted(row[0]))


def _mail(account, name: str, sender: str, *, minutes_ago: int, **fields) -> Message:
    return Message.objects.create(
        account=account,
        dedupe_key=name,
        message_id=f"<{name}@mail.example.com>",
        from_address=sender,
        to=[{"name": "", "address": TEAM}],
        sent_at=timezone.now() - timedelta(minutes=minutes_ago),
        **{"subject": "Broken printer", **fields},
    )


def test_a_link_made_earlier_in_the_batch_is_the_newest_link(account):
    inbox = _mailbox_inbox(account, "Support")
    question = _mail(account, "question", "carol@c.example.com", minutes_ago=30)
    thread_into_inbox(inbox, [question], backfill=False)
    # Dave answers Carol's mail (his own conversation, he was not in hers) with Carol
    # in Cc; Carol answers Dave: her reply references both, Dave's is the newest.
    dave = _mail(
        account,
        "dave",
        "dave@d.example.com",
        minutes_ago=20,
        in_reply_to=question.message_id,
        references=[question.message_id],
        cc=[{"name": "", "address": "carol@c.example.com"}],
    )
    carol = _mail(
        account,
        "carol",
        "carol@c.example.com",
        minutes_ago=10,
        in_reply_to=dave.message_id,
        references=[question.message_id, dave.message_id],
    )
    thread_into_inbox(inbox, [dave, carol], backfill=False)
    assert Conversation.objects.get(messages=carol) == Conversation.objects.get(messages=dave)
    assert Conversation.objects.filter(inbox=inbox).count() == 2


def test_whoever_took_part_in_a_conversation_joined_by_subject_counts_in_the_batch(account):
    inbox = _mailbox_inbox(account, "Support")
    question = _mail(
        account,
        "question",
        "carol@c.example.com",
        minutes_ago=30,
        cc=[{"name": "", "address": "erin@c.example.com"}],
    )
    thread_into_inbox(inbox, [question], backfill=False)
    # Carol writes again without References (joins by subject); Erin, Cc'd on the
    # first mail, answers that one.
    again = _mail(
        account, "again", "carol@c.example.com", minutes_ago=20, subject="Re: Broken printer"
    )
    erin = _mail(
        account, "erin", "erin@c.example.com", minutes_ago=10, in_reply_to=again.message_id
    )
    thread_into_inbox(inbox, [again, erin], backfill=False)
    assert Conversation.objects.filter(inbox=inbox).count() == 1
    assert Conversation.objects.get().message_count == 3


def test_the_subject_fallback_looks_at_the_customers_twenty_most_recent_conversations(account):
    inbox = _mailbox_inbox(account, "Support")
    old = [
        _mail(account, f"old-{n}", "carol@c.example.com", minutes_ago=100 - n, subject=f"Topic {n}")
        for n in range(25)
    ]
    thread_into_inbox(inbox, old, backfill=False)
    assert Conversation.objects.filter(inbox=inbox).count() == 25
    # Topic 5 is the 20th most recent, Topic 4 the 21st.
    fifth = _mail(account, "again-5", "carol@c.example.com", minutes_ago=1, subject="Re: Topic 5")
    fourth = _mail(account, "again-4", "carol@c.example.com", minutes_ago=1, subject="Re: Topic 4")
    thread_into_inbox(inbox, [fifth, fourth], backfill=False)
    assert Conversation.objects.get(messages=fifth) == Conversation.objects.get(messages=old[5])
    assert Conversation.objects.get(messages=fourth).message_count == 1


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_batch_is_filed_exactly_as_one_message_at_a_time(account, seed):
    rng = random.Random(seed)
    one_by_one = _mailbox_inbox(account, "One by one", status="disconnected")
    batched = _mailbox_inbox(account, "Batched")
    mail = _random_mail(account, rng, 80)
    late = {m.pk for m in rng.sample(mail, 12)}  # some mail comes days late
    order = sorted(mail, key=lambda m: m.sent_at + timedelta(days=3 if m.pk in late else 0))
    first, rest = order[:30], order[30:]
    # Some history first, then a few conversations are closed, then the rest arrives.
    for inbox in (one_by_one, batched):
        thread_into_inbox(inbox, first, backfill=True)
        Conversation.objects.filter(
            inbox=inbox, conversationmessage__message__in=first[::3]
        ).update(status="closed")
    for message in rest:
        thread_into_inbox(one_by_one, [message], backfill=False)
    while rest:
        size = rng.randint(1, 25)
        thread_into_inbox(batched, rest[:size] + rest[: size // 5], backfill=False)
        rest = rest[size:]
    expected = _filed(one_by_one)
    assert _filed(batched) == expected
    assert len(expected) > 15 and any(row[3] > 3 for row in expected)
    assert any(row[5] == "open" and row[8] for row in expected)  # reopened ones


@requires_postgres
def test_the_number_of_queries_does_not_grow_with_the_batch(account):
    inbox = _mailbox_inbox(account, "Support")

    def batch(size: int, tag: str) -> list[Message]:
        """New threads, replies to stored threads and within the batch, Thread-Index-only
        answers, follow-ups by subject alone and team replies, in equal shares."""
        stored = _random_mail(account, random.Random(size), 10)
        thread_into_inbox(inbox, stored, backfill=False)
        Conversation.objects.filter(inbox=inbox).update(status="closed")
        made: list[Message] = []
        for n in range(size):
            kind, parent = n % 6, stored[n % len(stored)]
            customer = parent.from_address if parent.from_address != TEAM else "p0@c.example.com"
            fields = {
                "from_address": customer,
                "subject": f"Re: {parent.subject}",
                "in_reply_to": "",
                "thread_root": "",
                "direction": Direction.INBOUND,
            }
            if kind == 0:
                fields.update(from_address=f"new{n}@c.example.com", subject=f"New {tag} {n}")
            elif kind == 1:
                fields.update(in_reply_to=parent.message_id)
            elif kind == 2:
                fields.update(in_reply_to=made[-1].message_id, from_address=made[-1].from_address)
            elif kind == 3:
                fields.update(thread_root=f"root-{tag}", subject=f"Outlook {tag}")
            elif kind == 5:
                fields.update(
                    in_reply_to=parent.message_id, from_address=TEAM, direction=Direction.OUTBOUND
                )
            made.append(
                Message.objects.create(
                    account=account,
                    dedupe_key=f"{tag}-{n}",
                    message_id=f"<{tag}-{n}@mail.example.com>",
                    from_name="Someone",
                    to=[{"name": "", "address": TEAM}],
                    sent_at=timezone.now(),
                    text=f"message {n}",
                    **fields,
                )
            )
        return made

    small, large = batch(10, "small"), batch(100, "large")
    with CaptureQueriesContext(connection) as ten:
        thread_into_inbox(inbox, small, backfill=False)
    with CaptureQueriesContext(connection) as hundred:
        thread_into_inbox(inbox, large, backfill=False)
    assert ConversationEvent.objects.filter(kind="reopened").exists()
    # 13: with the one that reads the customers' CRM contacts (conversations/contact_links.py).
    assert len(hundred) == len(ten) <= 13, [q["sql"][:80] for q in hundred.captured_queries]
