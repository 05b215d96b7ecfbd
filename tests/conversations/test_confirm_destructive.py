"""Destructive actions ask first (core/confirm.py), without JavaScript: through Django's
test client, as a browser without scripts (or a replayed request) sends them.
tests/browser/test_browser_confirm.py drives the dialog."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest

from accounts.models import Team
from audit.models import AuditEvent
from conversations.models import Conversation
from inboxes.models import Inbox, Mailbox
from tests.support.conversations_factory import make_conversation

pytestmark = pytest.mark.django_db


@pytest.fixture
def inbox(account):
    return Inbox.objects.create(account=account, name="Support desk")


def delete_url(inbox) -> str:
    return f"/settings/inboxes/{inbox.pk}/delete/"


def test_deleting_an_inbox_asks_for_its_name_and_says_what_will_be_lost(client, admin, inbox):
    make_conversation(inbox)
    make_conversation(inbox)
    client.force_login(admin)

    # The button leads to a page that asks (GET changes nothing)
    question = client.get(delete_url(inbox))
    text = question.content.decode()
    assert question.status_code == 200
    assert "Delete inbox Support desk?" in text
    assert "2 conversations and their messages will be deleted" in text
    assert 'name="confirm_text"' in text and 'data-confirm-match="Support desk"' in text
    assert f'action="{delete_url(inbox)}"' in text and 'name="confirm" value="yes"' in text
    assert Inbox.objects.filter(pk=inbox.pk).exists()

    # A plain POST without the confirmation only asks again
    unconfirmed = client.post(delete_url(inbox))
    assert unconfirmed.status_code == 200 and "Delete inbox Support desk?" in unconfirmed.text
    assert Inbox.objects.filter(pk=inbox.pk).exists()

    # A wrong name is refused by the server, and says what to type
    wrong = client.post(delete_url(inbox), {"confirm": "yes", "confirm_text": "Support"})
    assert wrong.status_code == 400
    assert "Type Support desk exactly as shown to confirm. Nothing was deleted." in wrong.text
    assert 'value="Support"' in wrong.text  # what was typed stays
    no_name = client.post(delete_url(inbox), {"confirm": "yes"})
    assert no_name.status_code == 400
    assert Inbox.objects.filter(pk=inbox.pk).exists()
    assert Conversation.objects.filter(inbox=inbox).count() == 2
    assert not AuditEvent.objects.filter(action="inbox.deleted").exists()

    # The right name deletes it, with its conversations
    done = client.post(
        delete_url(inbox), {"confirm": "yes", "confirm_text": " Support desk "}, follow=True
    )
    assert "Inbox Support desk is deleted." in done.text
    assert not Inbox.objects.filter(pk=inbox.pk).exists()
    assert not Conversation.objects.exists()
    assert AuditEvent.objects.filter(action="inbox.deleted").count() == 1


def test_the_dialog_gets_only_the_question_and_a_member_gets_nothing(client, admin, member, inbox):
    client.force_login(admin)
    fragment = client.get(delete_url(inbox), headers={"X-Confirm-Dialog": "1"})
    assert fragment.status_code == 200
    assert "<html" not in fragment.text and "<form" in fragment.text
    assert 'id="confirm-title"' in fragment.text and "data-confirm-cancel" in fragment.text
    assert "X-Confirm-Dialog" in fragment["Vary"]
    assert "<script" not in fragment.text  # the CSP allows no inline script

    client.force_login(member)
    assert client.get(delete_url(inbox)).status_code == 403
    assert (
        client.post(delete_url(inbox), {"confirm": "yes", "confirm_text": inbox.name}).status_code
        == 403
    )
    assert Inbox.objects.filter(pk=inbox.pk).exists()


def test_disconnect_deactivate_release_and_team_delete_ask_first(
    client, admin, member, other_member, account, connect_payload, member_api
):
    from accounts.services import user_deactivate

    mailbox_id = member_api.post(
        "/api/v1/mailboxes/", connect_payload("bo@acme.example.com"), format="json"
    ).json()["id"]
    team = Team.objects.create(account=account, name="Tier 1")

    # Disconnect (the owner): unconfirmed, nothing changes; confirmed, it is done
    client.force_login(member)
    disconnect = f"/settings/mailboxes/{mailbox_id}/disconnect/"
    asked = client.post(disconnect, {"next": "/settings/email/"})
    assert "Disconnect bo@acme.example.com?" in asked.text
    assert "New mail to bo@acme.example.com will no longer arrive here" in asked.text
    assert 'name="next" value="/settings/email/"' in asked.text
    assert Mailbox.objects.get(pk=mailbox_id).status != "disconnected"

    # Deactivate (an admin)
    client.force_login(admin)
    deactivate = f"/settings/users/{other_member.pk}/deactivate/"
    asked = client.post(deactivate)
    assert "Deactivate Cy" in asked.text and "can no longer sign in" in asked.text
    other_member.refresh_from_db()
    assert other_member.is_active
    client.post(deactivate, {"confirm": "yes"})
    other_member.refresh_from_db()
    assert not other_member.is_active

    # Release a deactivated user's address
    user_deactivate(actor=admin, user=member)
    release = f"/settings/mailboxes/{mailbox_id}/release/"
    asked = client.get(release)
    assert "Release bo@acme.example.com?" in asked.text
    assert Mailbox.objects.get(pk=mailbox_id).status != "disconnected"
    client.post(release, {"confirm": "yes"})
    assert Mailbox.objects.get(pk=mailbox_id).status == "disconnected"

    # Delete a team
    delete_team = f"/settings/teams/{team.pk}/delete/"
    asked = client.post(delete_team)
    assert "Delete team Tier 1?" in asked.text
    assert Team.objects.filter(pk=team.pk).exists()
    client.post(delete_team, {"confirm": "yes"})
    assert not Team.objects.filter(pk=team.pk).exists()


def test_transfer_asks_with_the_chosen_target(
    client, admin, member, other_member, connect_payload, member_api
):
    from accounts.services import user_deactivate

    mailbox_id = member_api.post(
        "/api/v1/mailboxes/", connect_payload("bo@acme.example.com"), format="json"
    ).json()["id"]
    user_deactivate(actor=admin, user=member)
    client.force_login(admin)
    transfer = f"/settings/mailboxes/{mailbox_id}/transfer/"
    target = f"user:{other_member.pk}"

    asked = client.get(transfer, {"target": target})
    assert f"Transfer bo@acme.example.com to {other_member.display_name}?" in asked.text
    assert f'name="target" value="{target}"' in asked.text
    assert Mailbox.objects.get(pk=mailbox_id).owner == member

    client.post(transfer, {"target": target, "confirm": "yes"})
    assert Mailbox.objects.get(pk=mailbox_id).owner == other_member


class _DangerButtons(HTMLParser):
    """Each ``class="danger"`` submit button with the form it is in."""

    def __init__(self) -> None:
        super().__init__()
        self.form: dict[str, str | None] | None = None
        self.found: list[dict[str, str | None]] = []

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if tag == "form":
            self.form = attributes
        elif tag == "button" and "danger" in (attributes.get("class") or "").split():
            self.found.append(self.form or {})

    def handle_endtag(self, tag):
        if tag == "form":
            self.form = None


def test_every_danger_button_on_the_settings_pages_asks_first(
    client, admin, member, other_member, inbox, connect_payload, admin_api, account
):
    from datetime import timedelta

    from django.utils import timezone

    from accounts.services import user_deactivate
    from meetings import links
    from meetings.models import Booking
    from meetings.services import meetings_connect

    admin_api.post("/api/v1/mailboxes/", connect_payload("ann@acme.example.com"), format="json")
    Team.objects.create(account=account, name="Tier 1")
    user_deactivate(actor=admin, user=member)
    # Settings > Meetings with a connection, a link and an upcoming booking
    meetings_connect(user=admin, address="ann@acme.example.com")
    link = links.link_create(
        owner=admin, data={"name": "Intro", "durations": [30], "availability": {}}
    )
    start = timezone.now() + timedelta(days=2)
    Booking.objects.create(
        account=account,
        link=link,
        owner=admin,
        start=start,
        end=start + timedelta(minutes=30),
        name="Pat Doe",
        email="pat@example.net",
        uid="confirm-test@postkamer",
        token="t" * 32,
    )
    client.force_login(admin)
    seen = 0
    pages = ("/settings/email/", "/settings/inboxes/", "/settings/users/", "/settings/teams/")
    for url in (*pages, "/settings/meetings/"):
        parser = _DangerButtons()
        parser.feed(client.get(url).text)
        for form in parser.found:
            seen += 1
            assert form.get("method") == "get" and "data-confirm" in form, (url, form)
            assert re.search(
                r"/(delete|disconnect|deactivate|release|transfer|remove|cancel)/$",
                form["action"] or "",
            )
    # disconnect, delete inbox, deactivate, delete team; remove meetings, delete link, cancel
    assert seen >= 7
