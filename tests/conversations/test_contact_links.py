"""A conversation links to the CRM contact with its customer's address, and its mail is
on that contact's timeline once (conversations/contact_links.py)."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from conversations.contact_links import conversation_make_contact, conversations_link_new_contacts
from conversations.handling import conversation_reply
from conversations.models import Conversation
from conversations.threading import thread_into_inbox
from core.errors import Invalid
from crm.contacts import contact_create
from crm.hooks import contacts_created
from crm.models import Contact, TimelineEvent
from inboxes.models import Inbox, Mailbox
from tests.support.conversations_factory import make_conversation, make_message

pytestmark = pytest.mark.django_db


@pytest.fixture
def support(account):
    mailbox = Mailbox.objects.create(
        account=account,
        kind="team",
        address="support@acme.example.com",
        canonical_address="support@acme.example.com",
        imap_host="imap.acme.example.com",
    )
    return Inbox.objects.create(
        account=account, name="Support", mailbox=mailbox, from_name="Acme Support"
    )


def events_of(contact: Contact) -> list[dict]:
    return [
        event.detail
        for event in TimelineEvent.objects.filter(contact=contact).order_by("at", "created_at")
    ]


def test_a_new_conversation_links_to_the_contact_and_each_message_goes_on_its_timeline(
    account, support
):
    contact = contact_create(account=account, email="Carol@Customer.example.com", name="Carol")
    conversation = make_conversation(support, messages=2, subject="Widget")
    assert conversation.contact_id == contact.pk
    events = events_of(contact)
    assert [e["direction"] for e in events] == ["inbound", "inbound"]
    first = conversation.messages.order_by("sent_at").first()
    assert events[0] == {
        "conversation": str(conversation.pk),
        "inbox": "Support",
        "subject": "Widget",
        "direction": "inbound",
        "message": str(first.pk),
        "from": "carol@customer.example.com",
    }
    assert TimelineEvent.objects.filter(contact=contact, type="email", email=None).count() == 2
    contact.refresh_from_db()
    assert contact.last_activity_at is not None


def test_a_gmail_spelling_of_the_address_links_too(account, support):
    contact = contact_create(account=account, email="janedoe@gmail.com")
    conversation = make_conversation(support, sender="Jane.Doe+shop@googlemail.com")
    assert conversation.contact_id == contact.pk


def test_the_agents_reply_goes_on_the_timeline(account, admin, support):
    contact = contact_create(account=account, email="carol@customer.example.com")
    conversation = make_conversation(support)
    reply = conversation_reply(actor=admin, conversation=conversation, text="On it")
    outbound = [e for e in events_of(contact) if e["direction"] == "outbound"]
    assert outbound == [
        {
            "conversation": str(conversation.pk),
            "inbox": "Support",
            "subject": reply.subject,
            "direction": "outbound",
            "message": str(reply.pk),
            "from": "support@acme.example.com",
        }
    ]


def test_a_contact_created_later_links_existing_conversations_with_their_mail_once(
    account, support
):
    mine = make_conversation(support, messages=3, sender="dan@prospect.example.com")
    theirs = make_conversation(support, sender="eve@other.example.com")
    contact = contact_create(account=account, email="DAN@prospect.example.com", name="Dan")
    mine.refresh_from_db()
    theirs.refresh_from_db()
    assert mine.contact_id == contact.pk and theirs.contact_id is None
    assert len(events_of(contact)) == 3
    # Told again (an import that passes it twice, a retry): nothing is written twice.
    Conversation.objects.filter(pk=mine.pk).update(contact=None)
    assert conversations_link_new_contacts([contact]) == 1
    assert len(events_of(contact)) == 3
    # A later message adds its own line.
    thread_into_inbox(
        support,
        [
            make_message(
                support,
                subject="Re: x",
                sender="dan@prospect.example.com",
                in_reply_to=mine.messages.first().message_id,
            )
        ],
        backfill=False,
    )
    assert len(events_of(contact)) == 4


def test_an_import_tells_the_hook_once_for_the_batch(account, support):
    """An import creates its contacts in bulk and calls crm.hooks.contacts_created once."""
    conversations = [
        make_conversation(support, sender=f"lead{n}@prospect.example.com") for n in range(6)
    ]
    contacts = Contact.objects.bulk_create(
        Contact(
            account=account,
            email=f"lead{n}@prospect.example.com",
            canonical_email=f"lead{n}@prospect.example.com",
        )
        for n in range(6)
    )
    with CaptureQueriesContext(connection) as queries:
        contacts_created(contacts)
    linked = dict(
        Conversation.objects.filter(pk__in=[c.pk for c in conversations]).values_list(
            "customer_address", "contact_id"
        )
    )
    assert linked == {c.email: c.pk for c in contacts}
    assert TimelineEvent.objects.filter(contact__in=contacts).count() == 6
    # find, lock, link, read the timeline and the messages, write, and a savepoint
    assert len(queries) <= 9, [q["sql"][:80] for q in queries]


def test_a_conversation_that_grows_after_its_contact_appeared_links_then(account, support):
    """A contact made without the hook (e.g. before this existed): the next message links."""
    conversation = make_conversation(support, messages=2)
    contact = Contact.objects.create(
        account=account,
        email="carol@customer.example.com",
        canonical_email="carol@customer.example.com",
    )
    first = conversation.messages.order_by("sent_at").first()
    answer = make_message(support, subject="Re: again", in_reply_to=first.message_id)
    thread_into_inbox(support, [answer], backfill=False)
    conversation.refresh_from_db()
    assert conversation.contact_id == contact.pk
    assert sorted(e["message"] for e in events_of(contact)) == sorted(
        str(pk) for pk in conversation.messages.values_list("pk", flat=True)
    )


def test_linking_a_batch_costs_the_same_queries_whatever_its_size(account, support):
    def batch(tag: str, size: int):
        for n in range(size):
            contact_create(account=account, email=f"{tag}{n}@prospect.example.com")
        return [
            make_message(support, sender=f"{tag}{n}@prospect.example.com", subject=f"{tag} {n}")
            for n in range(size)
        ]

    small, large = batch("small", 3), batch("large", 30)
    with CaptureQueriesContext(connection) as three:
        thread_into_inbox(support, small, backfill=True)
    with CaptureQueriesContext(connection) as thirty:
        thread_into_inbox(support, large, backfill=True)

    # The CRM's part (the whole of threading is held to this on PostgreSQL in
    # test_threading.py; SQLite refreshes summaries row by row).
    def crm_queries(captured: CaptureQueriesContext) -> list[str]:
        return [q["sql"][:60] for q in captured.captured_queries if '"crm_' in q["sql"]]

    assert crm_queries(three) == crm_queries(thirty)
    assert len(crm_queries(thirty)) == 3  # the contacts, the events, the last activity
    assert TimelineEvent.objects.count() == 33
    assert Conversation.objects.filter(contact__isnull=False).count() == 33


def test_deleting_the_contact_unlinks_the_conversation(account, support):
    contact = contact_create(account=account, email="carol@customer.example.com")
    conversation = make_conversation(support)
    contact.delete()
    conversation.refresh_from_db()
    assert conversation.contact_id is None


def test_make_contact_from_the_customers_name_and_address(account, member, support):
    conversation = make_conversation(support, sender="Frank@Lead.example.com", sender_name="Frank")
    contact = conversation_make_contact(actor=member, conversation=conversation)
    assert (contact.email, contact.name, contact.owner) == (
        "frank@lead.example.com",
        "Frank",
        member,
    )
    conversation.refresh_from_db()
    assert conversation.contact_id == contact.pk
    assert len(events_of(contact)) == 1
    # Twice is harmless: the same contact.
    assert conversation_make_contact(actor=member, conversation=conversation) == contact
    assert Contact.objects.count() == 1


def test_make_contact_links_to_an_existing_contact(account, member, support):
    conversation = make_conversation(support)
    existing = Contact.objects.create(
        account=account,
        email="carol@customer.example.com",
        canonical_email="carol@customer.example.com",
    )
    assert conversation_make_contact(actor=member, conversation=conversation) == existing
    conversation.refresh_from_db()
    assert conversation.contact_id == existing.pk


def test_make_contact_needs_a_visible_conversation_with_an_address(
    account, member, outsider, support
):
    conversation = make_conversation(support)
    with pytest.raises(Invalid, match="Unknown conversation"):
        conversation_make_contact(actor=outsider, conversation=conversation)
    Conversation.objects.filter(pk=conversation.pk).update(
        customer_address="", customer_canonical=""
    )
    conversation.refresh_from_db()
    with pytest.raises(Invalid, match="no valid customer address"):
        conversation_make_contact(actor=member, conversation=conversation)
    assert not Contact.objects.exists()


def test_the_api_returns_the_contact_id(account, member_api, support):
    linked = make_conversation(support)
    other = make_conversation(support, sender="nobody@else.example.com")
    contact = contact_create(account=account, email="carol@customer.example.com")
    listing = member_api.get("/api/v1/conversations/").json()["results"]
    assert {row["id"]: row["contact"] for row in listing} == {
        str(linked.pk): str(contact.pk),
        str(other.pk): None,
    }
    detail = member_api.get(f"/api/v1/conversations/{linked.pk}/").json()
    assert detail["contact"] == str(contact.pk)
