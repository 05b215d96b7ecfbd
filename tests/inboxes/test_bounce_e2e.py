"""A bounce end to end: a reply from the shared inbox goes out through aiosmtpd, whose
next hop refuses the recipient; the MTA's delivery report lands in the support
mailbox in Dovecot; the real worker syncs it in. The reply ends "bounced" in its
conversation, with the report as a system line, and no conversation is opened."""

from __future__ import annotations

import pytest
from django.db import transaction

from conversations.handling import conversation_reply
from conversations.models import Conversation
from inboxes.delivery import delivery_of
from inboxes.models import Message, OutboxItem
from tests.support.api import api_client_for
from tests.support.mail import make_email

pytest.register_assert_rewrite("tests.support.workers")
from tests.inboxes.test_engine_e2e import (  # noqa: E402
    connect_support,
    start_worker_and_watcher,
    watching,
)
from tests.support.workers import wait_until  # noqa: E402

pytest_plugins = ["tests.support.workers"]
pytestmark = pytest.mark.django_db(transaction=True)


def test_a_reply_refused_by_the_recipients_server_ends_bounced_in_its_conversation(
    engine, admin, dovecot, smtp_server, mail_user
):
    worker, watcher = start_worker_and_watcher(engine)
    inbox, mailbox = connect_support(admin, dovecot, smtp_server, mail_user)
    watching(worker, watcher, mailbox)
    smtp_server.refuse_later(
        "gone@customer.example.com",
        status="5.1.1",
        text="550 5.1.1 <gone@customer.example.com>: Recipient address rejected: User unknown",
        report_to=lambda report: dovecot.deliver(mail_user[0], report),
    )

    dovecot.deliver(
        mail_user[0], make_email(sender="gone@customer.example.com", subject="Cancel my order")
    )
    conversation = wait_until(
        lambda: Conversation.objects.filter(inbox=inbox).first(), 10, "the customer's email"
    )
    with transaction.atomic():
        reply = conversation_reply(actor=admin, conversation=conversation, text="Cancelled.")

    # The reply leaves; the report comes back by IMAP and is tied to it.
    wait_until(
        lambda: OutboxItem.objects.filter(message=reply, state="sent").exists(), 15, "the send"
    )
    report = wait_until(
        lambda: Message.objects.filter(kind="bounce", bounce_of=reply).first(),
        20,
        "the delivery report, tied to the reply",
    )

    assert Conversation.objects.filter(inbox=inbox).count() == 1
    assert set(conversation.messages.all()) >= {reply, report}
    delivery = delivery_of(Message.objects.get(pk=reply.pk))
    assert delivery["state"] == "bounced"
    assert (
        delivery["detail"] == "Not delivered to gone@customer.example.com: mailbox does not exist"
    )
    assert [b["status"] for b in delivery["bounces"]] == ["5.1.1"]
    conversation.refresh_from_db()
    # Replying took it (assign_on_reply); the report re-routed nothing.
    assert conversation.assignee_id == admin.pk and not conversation.is_bounce
    # The API's conversation says the same: the reply bounced, the report points at it.
    data = api_client_for(admin).get(f"/api/v1/conversations/{conversation.pk}/").json()
    shown = {m["id"]: m for m in data["messages"]}
    assert shown[str(reply.pk)]["delivery"]["state"] == "bounced"
    assert shown[str(report.pk)]["kind"] == "bounce"
    assert shown[str(report.pk)]["bounce"]["original"] == str(reply.pk)
    # The agent who sent the reply hears of it (notifications' email_bounced), once.
    from notifications.models import Notification

    notice = wait_until(
        lambda: Notification.objects.filter(user=admin, kind="email_bounced").first(),
        10,
        "the sender's notification",
    )
    assert "gone@customer.example.com: mailbox does not exist" in notice.text
    assert notice.url == f"/inbox/c/{conversation.pk}/"
    assert Notification.objects.filter(kind="email_bounced").count() == 1
