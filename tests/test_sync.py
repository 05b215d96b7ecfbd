"""The IMAP sync against a real Dovecot: cursor, idempotency, faults, ledger."""

from __future__ import annotations

import pytest

from conversations.models import Conversation, ConversationMessage, Message
from inboxes.sync import mailbox_sync
from tests.mail import connect_imap_mailbox, make_email, team_inbox

pytestmark = pytest.mark.django_db


@pytest.fixture
def support(admin, dovecot, smtp_server, mail_user):
    inbox = team_inbox(admin.account)
    mailbox = connect_imap_mailbox(
        actor=admin,
        dovecot=dovecot,
        smtp_server=smtp_server,
        user=mail_user,
        address="support@acme.example.com",
        inbox=inbox,
    )
    return inbox, mailbox


def test_delivered_mail_becomes_conversations_and_a_rerun_changes_nothing(
    support, dovecot, mail_user
):
    inbox, mailbox = support
    for n in range(3):
        dovecot.deliver(mail_user[0], make_email(subject=f"Help {n}"))
    result = mailbox_sync(mailbox.pk)
    assert result.imported == 3
    assert Conversation.objects.filter(inbox=inbox).count() == 3
    mailbox.refresh_from_db()
    assert (mailbox.sync_done, mailbox.sync_total, mailbox.status) == (3, 3, "connected")
    again = mailbox_sync(mailbox.pk)
    assert again.imported == 0
    assert Message.objects.count() == 3 and ConversationMessage.objects.count() == 3
