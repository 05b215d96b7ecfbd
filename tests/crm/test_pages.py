"""The compose page and Settings > Email preferences, through the Django test client."""

from __future__ import annotations

import pytest

from crm.models import Email, Preferences, TimelineEvent
from inboxes.models import OutboxItem
from tests.crm.send_support import dana, personal_mailbox

pytestmark = pytest.mark.django_db


@pytest.fixture
def contact(member):
    return dana(member.account)


def compose_url(contact):
    return f"/contacts/{contact.pk}/email/"


def test_the_compose_page_preselects_the_last_mailbox_and_starts_from_the_preferences(
    client, member, contact
):
    first = personal_mailbox(member, "bo.a@acme.example.com")
    last = personal_mailbox(member, "bo.b@acme.example.com")
    Preferences.objects.create(user=member, last_mailbox=last, track_opens=False)
    client.force_login(member)

    page = client.get(compose_url(contact)).content.decode()

    assert f'<option value="{last.pk}" selected>' in page
    assert f'<option value="{first.pk}">' in page
    assert 'name="log" id="id_log" checked' in page
    assert 'name="track_opens" id="id_track_opens">' in page  # off, as preferred
    assert 'name="track_clicks" id="id_track_clicks" checked' in page
    assert "Dana Prospect &lt;dana@prospect.example.com&gt;" in page


def test_only_your_own_connected_personal_mailboxes_are_offered(
    client, member, other_member, contact
):
    personal_mailbox(other_member, "cy@acme.example.com")
    personal_mailbox(member, "bo.gone@acme.example.com", status="disconnected")
    personal_mailbox(member, "bo.expired@acme.example.com", status="needs_reauth")
    mine = personal_mailbox(member)
    client.force_login(member)
    page = client.get(compose_url(contact)).content.decode()
    assert str(mine.pk) in page and "cy@acme.example.com" not in page
    assert "bo.gone@" not in page
    # It can be picked (the email waits in the outbox), and says why it may wait.
    assert "bo.expired@acme.example.com (sign in again in Settings › Email;" in page


def test_without_a_mailbox_the_page_says_where_to_connect_one(client, member, contact):
    client.force_login(member)
    page = client.get(compose_url(contact)).content.decode()
    assert 'id="no-send-mailbox"' in page and 'href="/settings/email/"' in page
    assert "compose-form" not in page


def test_sending_queues_the_email_and_goes_back_to_the_contact(client, member, contact):
    mailbox = personal_mailbox(member)
    client.force_login(member)

    response = client.post(
        compose_url(contact),
        {
            "mailbox": str(mailbox.pk),
            "subject": "Hello",
            "body": "Hi Dana,\n\nSee https://acme.example.com/x",
            "log": "on",
            "track_clicks": "on",
        },
    )

    assert response.status_code == 302 and response["Location"] == f"/contacts/{contact.pk}/"
    email = Email.objects.get(contact=contact)
    assert (email.logged, email.track_opens, email.track_clicks) == (True, False, True)
    assert "/t/c/" in email.message.html and "font-family:Arial" in email.message.html
    assert email.message.text.startswith("Hi Dana,")
    assert TimelineEvent.objects.filter(contact=contact, type="email").count() == 1
    assert Preferences.objects.get(user=member).last_mailbox == mailbox


def test_a_missing_subject_says_what_to_do_and_keeps_the_text(client, member, contact):
    mailbox = personal_mailbox(member)
    client.force_login(member)
    response = client.post(
        compose_url(contact), {"mailbox": str(mailbox.pk), "subject": "", "body": "Draft"}
    )
    assert response.status_code == 400
    page = response.content.decode()
    assert "Write a subject" in page and ">Draft</textarea>" in page
    assert not OutboxItem.objects.exists()


def test_another_accounts_contact_is_404(client, outsider, contact):
    personal_mailbox(outsider)
    client.force_login(outsider)
    assert client.get(compose_url(contact)).status_code == 404
    assert client.post(compose_url(contact), {"subject": "x", "body": "y"}).status_code == 404


def test_the_compose_page_needs_a_login(client, contact):
    response = client.get(compose_url(contact))
    assert response.status_code == 302 and "/login/" in response["Location"]


def test_the_preferences_page_shows_and_saves_the_preferences(client, member):
    client.force_login(member)
    page = client.get("/settings/preferences/").content.decode()
    assert 'href="/settings/preferences/" class="active"' in page
    assert 'class="sample-body font-arial fs-14"' in page

    response = client.post(
        "/settings/preferences/",
        {
            "track_opens": "on",
            "never_log": "Ann@X.com\n\n@Example.ORG\n",
            "font_family": "Georgia",
            "font_size": "18",
        },
    )

    assert response.status_code == 302
    preferences = Preferences.objects.get(user=member)
    assert (preferences.log_sent_email, preferences.track_opens, preferences.track_clicks) == (
        False,
        True,
        False,
    )
    assert preferences.never_log == ["ann@x.com", "@example.org"]
    assert (preferences.font_family, preferences.font_size) == ("Georgia", 18)
    page = client.get("/settings/preferences/").content.decode()
    assert 'class="sample-body font-georgia fs-18"' in page
    assert "ann@x.com\n@example.org</textarea>" in page


def test_bad_never_log_lines_are_named_and_nothing_is_saved(client, member):
    client.force_login(member)
    response = client.post(
        "/settings/preferences/",
        {"never_log": "ok@x.com\nnot an address\n", "font_family": "Arial", "font_size": "14"},
    )
    assert response.status_code == 400
    page = response.content.decode()
    assert "&#x27;not an address&#x27; is not an email address or an @domain." in page
    assert "Correct these lines or remove them" in page
    assert "ok@x.com\nnot an address\n</textarea>" in page  # what was typed stays
    assert Preferences.objects.get(user=member).never_log == []


def test_a_size_out_of_range_is_refused(client, member):
    client.force_login(member)
    response = client.post("/settings/preferences/", {"font_family": "Arial", "font_size": "40"})
    assert response.status_code == 400
    assert "Pick a size from 8 to 32" in response.content.decode()
