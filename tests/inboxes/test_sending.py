"""The outbox against real Dovecot and aiosmtpd: exactly once, clear failures."""

from __future__ import annotations

import email
from email import policy

import pytest
from django.db import transaction
from django.utils import timezone

from conversations.handling import conversation_reply
from conversations.models import Conversation
from inboxes.models import MailboxMessage, Message, OutboxItem
from inboxes.outbox import outbox_send_run
from inboxes.sync import mailbox_sync
from tests.support.mail import connect_imap_mailbox, make_email, send_due, team_inbox

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def support(admin, dovecot, smtp_server, mail_user):
    inbox = team_inbox(admin.account, from_name="Acme Support")
    mailbox = connect_imap_mailbox(
        actor=admin,
        dovecot=dovecot,
        smtp_server=smtp_server,
        user=mail_user,
        address="support@acme.example.com",
        inbox=inbox,
    )
    smtp_server.clear()
    return inbox, mailbox


def received_with(smtp_server, message_id):
    return [
        m
        for m in smtp_server.messages
        if email.message_from_bytes(m.data, policy=policy.default)["Message-ID"] == message_id
    ]


def customer_writes(dovecot, mail_user, mailbox, **kwargs):
    raw = make_email(**kwargs)
    dovecot.deliver(mail_user[0], raw)
    mailbox_sync(mailbox.pk)
    return email.message_from_bytes(raw, policy=policy.default)["Message-ID"]


def reply(admin, conversation, text="Thanks, we are on it."):
    with transaction.atomic():
        message = conversation_reply(actor=admin, conversation=conversation, text=text)
    return message, OutboxItem.objects.get(message=message)


def test_a_reply_leaves_once_with_from_name_and_threading_headers(
    support, admin, dovecot, smtp_server, mail_user
):
    inbox, mailbox = support
    first_id = customer_writes(dovecot, mail_user, mailbox, subject="Broken widget")
    conversation = Conversation.objects.get(inbox=inbox)

    message, item = reply(admin, conversation)
    assert send_due(item) == "sent"
    assert send_due(item) == "sent"  # a second run sends nothing

    [received] = received_with(smtp_server, message.message_id)
    sent = email.message_from_bytes(received.data, policy=policy.default)
    assert sent["From"] == "Acme Support <support@acme.example.com>"
    assert sent["To"] == "carol@customer.example.com"
    assert sent["In-Reply-To"] == first_id
    assert first_id in sent["References"]
    assert sent["Subject"] == "Re: Broken widget"
    item.refresh_from_db()
    assert item.state == "sent" and item.detail.startswith("250")
    assert item.sent_copy_stored  # appended to the mailbox's Sent folder

    # the customer answers the reply: same conversation
    customer_writes(
        dovecot,
        mail_user,
        mailbox,
        subject="Re: Broken widget",
        in_reply_to=message.message_id,
        references=f"{first_id} {message.message_id}",
    )
    assert Conversation.objects.filter(inbox=inbox).count() == 1
    assert Conversation.objects.get(inbox=inbox).message_count == 3


def test_a_customer_reply_reopens_a_closed_conversation(support, admin, dovecot, mail_user):
    inbox, mailbox = support
    first_id = customer_writes(dovecot, mail_user, mailbox, subject="Invoice")
    Conversation.objects.filter(inbox=inbox).update(status="closed")
    customer_writes(dovecot, mail_user, mailbox, subject="Re: Invoice", in_reply_to=first_id)
    assert Conversation.objects.get(inbox=inbox).status == "open"


def test_451_then_250_delivers_once(support, admin, dovecot, smtp_server, mail_user):
    inbox, mailbox = support
    customer_writes(dovecot, mail_user, mailbox)
    message, item = reply(admin, Conversation.objects.get(inbox=inbox))
    smtp_server.fail_next(451, "4.3.0 Try again later")

    assert outbox_send_run(mailbox.pk).retry_in is not None  # the task runs again then
    item.refresh_from_db()
    assert item.state == "queued" and "451" in item.detail and item.next_attempt_at
    assert send_due(item) == "queued"  # not due yet: nothing happens

    OutboxItem.objects.filter(pk=item.pk).update(next_attempt_at=timezone.now())
    assert send_due(item) == "sent"
    assert len(received_with(smtp_server, message.message_id)) == 1
    item.refresh_from_db()
    assert item.attempts == 2


def test_550_fails_at_once_with_the_servers_reason(support, admin, dovecot, smtp_server, mail_user):
    inbox, mailbox = support
    customer_writes(dovecot, mail_user, mailbox)
    message, item = reply(admin, Conversation.objects.get(inbox=inbox))
    smtp_server.fail_next(550, "5.7.1 Relaying denied")

    assert send_due(item) == "failed"
    item.refresh_from_db()
    assert item.state == "failed" and "550 5.7.1 Relaying denied" in item.detail
    assert send_due(item) == "failed"
    assert received_with(smtp_server, message.message_id) == []


def test_the_sent_copy_is_recognised_not_imported_twice(admin, dovecot, smtp_server, mail_user):
    # a personal mailbox syncs INBOX and Sent
    mailbox = connect_imap_mailbox(
        actor=admin,
        dovecot=dovecot,
        smtp_server=smtp_server,
        user=mail_user,
        address="ann@acme.example.com",
        kind="personal",
    )
    mailbox_sync(mailbox.pk)
    from inboxes.outbox import Recipient, outbox_create

    with transaction.atomic():
        item = outbox_create(
            mailbox=mailbox,
            from_name="Ann Smith",
            to=[Recipient("dan@customer.example.com")],
            subject="Offer",
            text="Here is our offer.",
        )
    assert send_due(item) == "sent"
    before = Message.objects.count()
    mailbox_sync(mailbox.pk)
    assert Message.objects.count() == before
    link = MailboxMessage.objects.get(folder__role="sent")
    assert link.message_id == item.message_id
