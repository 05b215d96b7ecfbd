"""The send run for a Microsoft 365 mailbox: each item goes out as a sent draft
through Graph, once, over one client for the run."""

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
from inboxes.sync import mailbox_sync
from tests.support.mail import make_email, team_inbox

pytest_plugins = ["tests.support.fakes.microsoft"]  # fake_microsoft, loopback_only
pytestmark = [
    pytest.mark.django_db,
    pytest.mark.usefixtures("loopback_only"),
    pytest.mark.filterwarnings("ignore:response_mode=.form_post. is recommended:UserWarning"),
]

SUPPORT = "support@acme.example.com"


def test_a_run_sends_every_reply_as_a_graph_draft_once(admin, fake_microsoft):
    fake = fake_microsoft
    inbox = team_inbox(admin.account)
    fake.add_user(SUPPORT, "Acme Support")
    mailbox = oauth_mailbox_connect(
        actor=admin,
        provider=Provider.MICROSOFT,
        grant=fake.grant(SUPPORT),
        kind="team",
        inbox=inbox,
        acknowledge_team_visibility=True,
    )
    fake.deliver(SUPPORT, make_email(subject="Broken widget", to=SUPPORT))
    mailbox_sync(mailbox.pk)
    conversation = Conversation.objects.get(inbox=inbox)
    items = []
    for n in range(3):
        with transaction.atomic():
            message = conversation_reply(actor=admin, conversation=conversation, text=f"Answer {n}")
        items.append(OutboxItem.objects.get(message=message))

    result = outbox_send_run(mailbox.pk)

    assert (result.claimed, result.sent, result.connections) == (3, 3, 1)
    sent_ids = [
        email.message_from_bytes(s.raw, policy=policy.default)["Message-ID"] for s in fake.sent
    ]
    assert sent_ids == [i.message.message_id for i in items]
    for item in OutboxItem.objects.filter(pk__in=[i.pk for i in items]):
        assert item.state == "sent" and item.attempts == 1 and not item.sent_copy_stored
    assert outbox_send_run(mailbox.pk).claimed == 0
    assert len(fake.sent) == 3
