"""The meetings connection over the API: it books from one of the user's own connected
emails; R4 and R1/R6 refusals come first; the calendar must fit the mailbox; a grant
without the calendar permission is flagged and the incremental consent fixes it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest

from audit.models import AuditEvent
from inboxes.credentials import tokens_load
from meetings.calendars import CalendarUnavailable, busy_times
from meetings.models import MeetingsConnection
from meetings.services import meetings_connect
from tests.meetings.calendar_setup import gmail_mailbox, graph_mailbox
from tests.support.api import api_client_for
from tests.support.fakes.google_calendar import EVENTS_SCOPE, FREEBUSY_SCOPE
from tests.support.mail import team_inbox

pytest_plugins = ["tests.support.fakes.google", "tests.support.fakes.microsoft"]
pytestmark = pytest.mark.django_db

BO = "bo@acme.example.com"
URL = "/api/v1/meetings/connection/"
START = datetime(2030, 3, 4, tzinfo=UTC)


def put(client, body):
    return client.put(URL, body, format="json")


# --- whose address -----------------------------------------------------------------------------


def test_the_address_must_be_one_of_the_users_own_connected_emails(member_api):
    response = put(member_api, {"address": BO})

    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "invalid"
    assert "Your email first" in body["detail"]
    assert not MeetingsConnection.objects.exists()


def test_a_gmail_address_without_a_calendar_connects_and_reads_back(
    member_api, member, fake_google
):
    mailbox = gmail_mailbox(fake_google, member, BO, calendar=False)

    response = put(member_api, {"address": BO})

    assert response.status_code == 200, response.json()
    body = member_api.get(URL).json()
    assert body["address"] == BO and body["calendar"] == "none"
    assert body["needs_calendar_consent"] is False
    assert MeetingsConnection.objects.get().mailbox == mailbox
    assert AuditEvent.objects.filter(action="meetings.connected").exists()


def test_r4_a_team_email_in_conversations_is_refused_before_anything_else(
    admin, admin_api, member_api, fake_google
):
    gmail_mailbox(
        fake_google,
        admin,
        "support@acme.example.com",
        calendar=True,
        kind="team",
        inbox=team_inbox(admin.account),
        acknowledge_team_visibility=True,
    )
    for client in (admin_api, member_api):
        response = put(client, {"address": "support@acme.example.com", "calendar": "google"})
        assert response.status_code == 409
        assert response.json()["code"] == "team_address_in_conversations"
        assert "conversations tool" in response.json()["detail"]
    assert not MeetingsConnection.objects.exists()
    assert AuditEvent.objects.filter(action="meetings.connect_refused").count() == 2


def test_r1_another_users_email_is_refused_with_address_in_use(member, other_member, fake_google):
    gmail_mailbox(fake_google, member, BO, calendar=True)

    response = put(api_client_for(other_member), {"address": BO, "calendar": "google"})

    assert response.status_code == 409
    assert response.json()["code"] == "address_in_use"
    assert response.json()["conflict"]["held_as"] == "personal"


def test_r1_through_the_service_too(member, other_member, fake_google):
    from core.errors import AddressInUse

    gmail_mailbox(fake_google, member, BO, calendar=False)
    with pytest.raises(AddressInUse):
        meetings_connect(user=other_member, address=BO)


# --- the calendar must fit the mailbox ---------------------------------------------------------


@pytest.mark.parametrize("calendar", ["microsoft", "caldav"])
def test_a_gmail_address_takes_google_calendar_only(member_api, member, fake_google, calendar):
    gmail_mailbox(fake_google, member, BO, calendar=True)
    body = {"address": BO, "calendar": calendar}
    if calendar == "caldav":
        body["caldav"] = {"url": "https://dav.example.com/", "username": "bo", "password": "x"}

    response = put(member_api, body)

    assert response.status_code == 400
    assert response.json()["code"] == "invalid"
    assert "calendar" in response.json()["errors"]


def test_an_unknown_calendar_is_invalid(member_api, member, fake_google):
    gmail_mailbox(fake_google, member, BO, calendar=True)
    response = put(member_api, {"address": BO, "calendar": "outlook.com"})
    assert response.status_code == 400
    assert response.json()["code"] == "invalid"


# --- incremental consent -----------------------------------------------------------------------


def test_google_without_the_calendar_grant_is_flagged_and_the_consent_fixes_it(
    client, member, member_api, fake_google
):
    mailbox = gmail_mailbox(fake_google, member, BO, calendar=False)

    body = put(member_api, {"address": BO, "calendar": "google"}).json()

    assert body["calendar"] == "google"
    assert body["calendar_status"] == "needs_consent" and body["needs_calendar_consent"] is True
    consent_url = body["calendar_consent_url"]
    assert consent_url == "/settings/meetings/calendar/consent/gmail/"
    connection = MeetingsConnection.objects.get()
    with pytest.raises(CalendarUnavailable) as refused:
        busy_times(connection, START, START + timedelta(days=1))
    assert refused.value.extra["step"] == "consent"
    assert not fake_google.calls_to("/freeBusy")

    # The settings page's link: Google's consent for mail and calendar, as Bo.
    client.force_login(member)
    started = client.get(consent_url)
    assert started.status_code == 302
    query = parse_qs(urlsplit(started["Location"]).query)
    assert set(query["scope"][0].split()) >= {EVENTS_SCOPE, FREEBUSY_SCOPE}
    assert query["include_granted_scopes"] == ["true"] and query["login_hint"] == [BO]
    callback = fake_google.consent(started["Location"])
    back = client.get(callback.replace("http://testserver", ""))
    assert back.status_code == 302 and back["Location"] == "/settings/email/"

    mailbox.refresh_from_db()
    granted = tokens_load(mailbox).scope.split()
    assert EVENTS_SCOPE in granted and "https://www.googleapis.com/auth/gmail.send" in granted
    assert member_api.get(URL).json()["calendar_status"] == "ok"
    assert busy_times(MeetingsConnection.objects.get(), START, START + timedelta(days=1)) == []


def test_microsoft_without_the_calendar_grant_is_flagged_and_the_consent_fixes_it(
    client, member, member_api, fake_microsoft
):
    graph_mailbox(fake_microsoft, member, BO, calendar=False)

    body = put(member_api, {"address": BO, "calendar": "microsoft"}).json()

    assert body["needs_calendar_consent"] is True
    assert body["calendar_consent_url"] == "/settings/meetings/calendar/consent/microsoft/"
    client.force_login(member)
    started = client.get(body["calendar_consent_url"])
    assert started.status_code == 302
    assert "Calendars.ReadWrite" in parse_qs(urlsplit(started["Location"]).query)["scope"][0]
    params = fake_microsoft.consent(started["Location"])
    back = client.get("/connect/microsoft/callback/", params)
    assert back.status_code == 302, back.content
    assert member_api.get(URL).json()["needs_calendar_consent"] is False


def test_the_consent_link_refuses_a_connection_without_that_calendar(client, member, fake_google):
    gmail_mailbox(fake_google, member, BO, calendar=False)
    meetings_connect(user=member, address=BO)
    client.force_login(member)

    response = client.get("/settings/meetings/calendar/consent/gmail/")

    assert response.status_code == 302 and response["Location"] == "/settings/email/"
    assert not fake_google.calls_to("/o/oauth2/auth")


def test_the_connection_can_be_removed(member_api, member, fake_google):
    gmail_mailbox(fake_google, member, BO, calendar=True)
    assert put(member_api, {"address": BO, "calendar": "google"}).status_code == 200
    assert member_api.delete(URL).status_code == 204
    assert member_api.get(URL).status_code == 404
    assert member_api.delete(URL).status_code == 404
