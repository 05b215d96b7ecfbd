"""No loops (issue 21, point 5): the team address is also a person's login (so its own
notifications would be mailed to it) and the customer's server answers every email
with an out-of-office. Mail goes round the real parts (Dovecot, the sync, routing,
notifications, the outbox, aiosmtpd) for many rounds: a bounded handful of emails,
never a loop."""

from __future__ import annotations

import email as email_lib
from email import policy

import pytest
from django.core import mail

from accounts.models import Role
from conversations.handling import conversation_reply
from conversations.models import Conversation, RoutingMode, RoutingRule
from inboxes.models import Message
from inboxes.outbox import outbox_send_run
from inboxes.sync import mailbox_sync
from notifications.mailing import digest_send
from notifications.models import Notification
from tests.support.factories import UserFactory
from tests.support.mail import make_email

pytestmark = pytest.mark.django_db(transaction=True)

SUPPORT = "support@acme.example.com"
AWAY = "away@customer.example.com"


def out_of_office(to_raw: bytes) -> bytes:
    original = email_lib.message_from_bytes(to_raw, policy=policy.default)
    return make_email(
        sender=AWAY,
        to=SUPPORT,
        subject=f"Out of office: {original['Subject']}",
        body="I am away until Monday.",
        in_reply_to=original["Message-ID"],
        extra_headers={"Auto-Submitted": "auto-replied"},
    )


def test_a_team_address_as_login_and_a_customer_who_auto_replies_never_loop(
    account, admin, support, dovecot, smtp_server, mail_user, settings
):
    settings.NOTIFICATION_EMAIL_MINUTES = 0  # no batching: every chance to loop is taken
    inbox, mailbox = support
    team_login = UserFactory(account=account, email=SUPPORT, full_name="Support", role=Role.ADMIN)
    rule, _ = RoutingRule.objects.get_or_create(inbox=inbox)
    rule.mode = RoutingMode.ROUND_ROBIN
    rule.save()
    rule.users.set([team_login])
    mailbox_sync(mailbox.pk)  # the first import: later mail is new, and routed
    smtp_server.clear()

    dovecot.deliver(mail_user[0], make_email(sender=AWAY, subject="Where is my order?"))
    answered = 0
    for _ in range(6):  # rounds of: sync, notify, send, the customer's server answers
        mailbox_sync(mailbox.pk)
        for person in (admin, team_login):
            digest_send(person.pk)
        conversation = Conversation.objects.get(inbox=inbox)
        if not conversation.messages.filter(direction="outbound").exists():
            conversation_reply(actor=admin, conversation=conversation, text="Looking into it.")
        outbox_send_run(mailbox.pk)
        for received in smtp_server.messages[answered:]:
            if AWAY in received.rcpt_tos:
                dovecot.deliver(mail_user[0], out_of_office(received.data))
        answered = len(smtp_server.messages)

    # One reply went to the customer; their out-of-office came back once and was shown,
    # answered by nothing; the team login's notice stayed in the app.
    assert [m.rcpt_tos for m in smtp_server.messages] == [(AWAY,)], [
        (m.rcpt_tos, email_lib.message_from_bytes(m.data)["Subject"]) for m in smtp_server.messages
    ]
    assert Message.objects.filter(kind="auto_reply").count() == 1
    assert Conversation.objects.filter(inbox=inbox).count() == 1
    assert Notification.objects.filter(user=team_login, kind="assigned").count() == 1
    assert not Notification.objects.filter(user=team_login, email_pending=True).exists()
    assert all(SUPPORT not in sent.to for sent in mail.outbox)
    assert len(mail.outbox) <= 2  # the admin's notices, if any: bounded
