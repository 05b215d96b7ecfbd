"""Send limits on the web pages: the mailbox's page on Settings > Email shows them and
lets admins change them; a held email says in the conversation when it will go."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone

from inboxes.models import Inbox, Mailbox, OutboxItem
from tests.support.conversations_factory import make_conversation

pytestmark = pytest.mark.django_db


@pytest.fixture
def rep_mailbox(member) -> Mailbox:
    address = "bo.rep@acme.example.com"
    return Mailbox.objects.create(
        account=member.account,
        kind="personal",
        owner=member,
        address=address,
        canonical_address=address,
        imap_host="imap.acme.example.com",
    )


def test_the_mailbox_page_shows_the_limits_and_only_admins_get_the_form(
    client, member, admin, rep_mailbox
):
    client.force_login(member)
    body = client.get(f"/settings/mailboxes/{rep_mailbox.pk}/").content.decode()
    assert 'id="send-limits"' in body
    assert "<strong>250</strong> emails in any 24 hours" in body
    assert "<strong>10</strong> in any minute" in body
    assert 'id="send-limits-form"' not in body

    client.force_login(admin)
    body = client.get(f"/settings/mailboxes/{rep_mailbox.pk}/").content.decode()
    assert 'id="send-limits-form"' in body


def test_an_admin_changes_the_limits_on_the_page(client, admin, rep_mailbox):
    client.force_login(admin)

    response = client.post(
        f"/settings/mailboxes/{rep_mailbox.pk}/send-limits/",
        {"per_day": "1,500", "per_minute": ""},
        follow=True,
    )

    body = response.content.decode()
    assert "now sends at most 1,500 emails a day and 10 a minute" in body
    rep_mailbox.refresh_from_db()
    assert (rep_mailbox.send_limit_per_day, rep_mailbox.send_limit_per_minute) == (1500, None)


def test_a_bad_limit_on_the_page_says_what_to_do_and_changes_nothing(client, admin, rep_mailbox):
    client.force_login(admin)

    body = client.post(
        f"/settings/mailboxes/{rep_mailbox.pk}/send-limits/",
        {"per_day": "lots", "per_minute": "5"},
        follow=True,
    ).content.decode()

    assert "Per day: enter a whole number, or leave it empty for the default." in body
    rep_mailbox.refresh_from_db()
    assert (rep_mailbox.send_limit_per_day, rep_mailbox.send_limit_per_minute) == (None, None)


def test_a_member_posting_the_form_is_refused(client, member, rep_mailbox):
    client.force_login(member)

    body = client.post(
        f"/settings/mailboxes/{rep_mailbox.pk}/send-limits/", {"per_day": "9000"}, follow=True
    ).content.decode()

    assert "Only an account admin can change send limits." in body
    rep_mailbox.refresh_from_db()
    assert rep_mailbox.send_limit_per_day is None


def test_a_held_email_says_when_it_goes_in_the_conversation(client, member, admin, account):
    from conversations.handling import conversation_reply

    support = Mailbox.objects.create(
        account=account,
        kind="team",
        address="support@acme.example.com",
        canonical_address="support@acme.example.com",
    )
    inbox = Inbox.objects.create(account=account, name="Support", mailbox=support)
    conversation = make_conversation(inbox)
    with transaction.atomic():
        reply = conversation_reply(actor=admin, conversation=conversation, text="Done")
    goes = timezone.localtime(timezone.now() + timedelta(minutes=3)).replace(second=0)
    OutboxItem.objects.filter(message=reply).update(
        held_until=goes, next_attempt_at=goes, detail="Waiting for the send limit."
    )
    client.force_login(member)

    body = client.get(f"/inbox/c/{conversation.pk}/").content.decode()

    assert re.search(r"Waiting for the send limit: <time datetime=\"[^\"]+\">goes ", body)
    if goes.date() == timezone.localdate():
        assert f"goes at {goes:%H:%M}" in body
