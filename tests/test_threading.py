"""Threading with real-world header shapes (fixtures in tests/fixtures/threading/)."""

from __future__ import annotations

from pathlib import Path

import pytest

from conversations.models import Conversation, Inbox
from inboxes.ingest import ingest_batch
from inboxes.models import Mailbox, MailboxFolder
from inboxes.providers.base import RawMessage

FIXTURES = Path(__file__).parent / "fixtures" / "threading"
pytestmark = pytest.mark.django_db


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
