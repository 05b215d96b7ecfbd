"""The send run for a Gmail mailbox: the items go out through the Gmail API (one
client for the run), each once, threaded as with the per-item send; a rate limit
puts the rest of the run back for later instead of hammering the API."""

from __future__ import annotations

import email
from email import policy

import pytest
from django.db import transaction

from conversations.handling import conversation_reply
from conversations.models import Conversation
from inboxes.models import OutboxItem, Provider
from inboxes.oauth_connect import oauth_mailbox_connect
from inboxes.outbox import outbox_send_run
from inboxes.outbox.outcomes import backoff
from inboxes.providers.gmail import api as gmail_api
from tests.inboxes.test_gmail import SUPPORT, grant_for
from tests.support.mail import make_email, team_inbox

pytest_plugins = ["tests.support.fakes.google"]
pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def no_waits(monkeypatch):
    monkeypatch.setattr(gmail_api, "_sleep", lambda seconds: None)


@pytest.fixture
def gmail_support(admin, fake_google):
    inbox = team_inbox(admin.account)
    mailbox = oauth_mailbox_connect(
        actor=admin,
        provider=Provider.GMAIL,
        grant=grant_for(fake_google, SUPPORT),
        kind="team",
        inbox=inbox,
        acknowledge_team_visibility=True,
    )
    fake_google.deliver(SUPPORT, make_email(subject="Broken widget"))
    from inboxes.sync import mailbox_sync

    mailbox_sync(mailbox.pk)
    return mailbox, Conversation.objects.get(subject="Broken widget")


def replies(admin, conversation, count: int) -> list[OutboxItem]:
    items = []
    for n in range(count):
        with transaction.atomic():
            message = conversation_reply(actor=admin, conversation=conversation, text=f"Answer {n}")
        items.append(OutboxItem.objects.get(message=message))
    return items


def test_a_run_sends_every_reply_through_the_gmail_api_once(gmail_support, admin, fake_google):
    mailbox, conversation = gmail_support
    items = replies(admin, conversation, 3)

    result = outbox_send_run(mailbox.pk)

    assert (result.claimed, result.sent, result.connections) == (3, 3, 1)
    sent_ids = [
        email.message_from_bytes(s.raw, policy=policy.default)["Message-ID"]
        for s in fake_google.sent
    ]
    assert sent_ids == [i.message.message_id for i in items]
    assert len(fake_google.calls_to("messages/send")) == 3
    assert len({s.thread_id for s in fake_google.sent}) == 1  # the customer's thread
    for item in OutboxItem.objects.filter(pk__in=[i.pk for i in items]):
        assert item.state == "sent" and item.detail.startswith("Gmail accepted it")
        assert item.attempts == 1 and not item.sent_copy_stored  # Gmail keeps its own
    assert outbox_send_run(mailbox.pk).claimed == 0
    assert len(fake_google.sent) == 3


def test_a_rate_limit_puts_the_rest_of_the_run_back_for_later(gmail_support, admin, fake_google):
    mailbox, conversation = gmail_support
    items = replies(admin, conversation, 3)
    fake_google.fail_next(429, "/messages/send", retry_after=1)

    result = outbox_send_run(mailbox.pk)

    assert fake_google.sent == [] and len(fake_google.calls_to("messages/send")) == 1
    assert result.retry_in == backoff(1)
    rows = {r.pk: r for r in OutboxItem.objects.filter(pk__in=[i.pk for i in items])}
    assert {r.state for r in rows.values()} == {"queued"}
    assert [rows[i.pk].attempts for i in items] == [1, 0, 0]  # only the first was tried
    assert len({rows[i.pk].next_attempt_at for i in items[1:]}) == 1

    OutboxItem.objects.filter(pk__in=[i.pk for i in items]).update(next_attempt_at=None)
    assert outbox_send_run(mailbox.pk).sent == 3
    assert len(fake_google.sent) == 3


def test_bcc_recipients_reach_the_gmail_api_in_a_bcc_field(gmail_support, admin, fake_google):
    """Gmail's send API has no envelope: it delivers to To, Cc and Bcc of the bytes."""
    from inboxes.outbox import Recipient, outbox_create

    mailbox, _ = gmail_support
    with transaction.atomic():
        item = outbox_create(
            mailbox=mailbox,
            from_name="Support",
            to=[Recipient("pat@customer.example.com")],
            bcc=[Recipient("boss@acme.example.com")],
            subject="Quote",
            text="Hi\n",
        )
    with item.message.raw.open("rb") as file:
        assert b"boss@" not in file.read()  # the stored copy keeps Bcc private

    assert outbox_send_run(mailbox.pk).sent == 1
    (sent,) = fake_google.sent
    headers = email.message_from_bytes(sent.raw, policy=policy.default)
    assert [a.addr_spec for a in headers["Bcc"].addresses] == ["boss@acme.example.com"]
    assert [a.addr_spec for a in headers["To"].addresses] == ["pat@customer.example.com"]
