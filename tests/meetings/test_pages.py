"""Settings > Meetings and the public booking pages, through Django's test client.

The public pages are driven as a browser without JavaScript drives them: follow the
links on the page (days, times), fill in the form, post. Times come from the page
itself, so the tests do not depend on the wall clock.
"""

from __future__ import annotations

import re
from html import unescape
from zoneinfo import ZoneInfo

import pytest
from django.test import Client
from icalendar import Calendar

from inboxes.models import Mailbox, OutboxItem
from meetings.models import Booking, BookingState, MeetingsConnection, SchedulingLink
from tests.support.api import api_client_for

pytestmark = pytest.mark.django_db

EVERY_DAY = {day: "08:00-18:00" for day in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}


def link_form(**overrides) -> dict:
    form = {
        "name": "Intro call",
        "slug": "bo-intro",
        "durations": "30, 60",
        "timezone": "Europe/Amsterdam",
        "buffer_before": "0",
        "buffer_after": "0",
        "min_notice_minutes": "60",
        "days_ahead": "30",
        "questions": "Company *\nWhat would you like to talk about?",
        "is_active": "on",
        **{f"day_{day}": hours for day, hours in EVERY_DAY.items()},
    }
    form.update(overrides)
    return form


@pytest.fixture
def bo_mailbox(member, member_api, connect_payload) -> Mailbox:
    response = member_api.post(
        "/api/v1/mailboxes/", connect_payload("bo@acme.example.com"), format="json"
    )
    assert response.status_code == 201, response.content
    return Mailbox.objects.get(pk=response.json()["id"])


@pytest.fixture
def bo(client, member) -> Client:
    client.force_login(member)
    return client


@pytest.fixture
def connected(bo, bo_mailbox) -> MeetingsConnection:
    response = bo.post("/settings/meetings/", {"mailbox": str(bo_mailbox.pk), "calendar": "none"})
    assert response.status_code == 302, response.content.decode()
    return MeetingsConnection.objects.get()


@pytest.fixture
def link(bo, connected) -> SchedulingLink:
    response = bo.post("/settings/meetings/links/new/", link_form())
    assert response.status_code == 302, response.content.decode()
    return SchedulingLink.objects.get(slug="bo-intro")


def text(response) -> str:
    return unescape(response.content.decode())


def hrefs(response, css_class: str) -> list[str]:
    html = response.content.decode()
    found = re.findall(rf'<a href="([^"]+)"[^>]*class="{css_class}[ "]', html)
    return [unescape(url) for url in found]


# --- Settings > Meetings ---------------------------------------------------------------


def test_the_settings_page_offers_my_own_personal_emails_to_book_from(bo, bo_mailbox):
    page = text(bo.get("/settings/meetings/"))
    assert f'value="{bo_mailbox.pk}"' in page and "bo@acme.example.com" in page
    assert "CalDAV URL" in page
    assert not MeetingsConnection.objects.exists()


def test_without_a_personal_email_the_page_says_to_connect_one_first(bo):
    page = text(bo.get("/settings/meetings/"))
    assert "Connect your email first" in page
    assert 'id="meetings-connect"' not in page


def test_connecting_the_meetings_tool_to_my_own_email(bo, connected):
    assert connected.address == "bo@acme.example.com"
    page = text(bo.get("/settings/meetings/"))
    assert re.search(
        r'id="connected-as">Invitations go out from <strong>bo@acme.example.com<', page
    )
    assert "Remove meetings connection" in page


def test_a_calendar_without_consent_shows_the_grant_calendar_access_link(bo, connected):
    assert "Grant calendar access" not in text(bo.get("/settings/meetings/"))
    # As h-mcal's service leaves a Gmail connection whose grant lacks the calendar scope:
    MeetingsConnection.objects.filter(pk=connected.pk).update(
        calendar="google", calendar_status="needs_consent"
    )
    page = text(bo.get("/settings/meetings/"))
    assert "Grant calendar access" in page
    assert 'href="/settings/meetings/calendar/consent/gmail/"' in page


def test_the_email_page_points_to_settings_meetings(bo, connected):
    page = text(bo.get("/settings/email/"))
    assert 'id="meetings-section"' in page and 'href="/settings/meetings/"' in page
    assert "book from <strong>bo@acme.example.com</strong>" in page


def test_a_caldav_calendar_needs_an_imap_address_and_its_fields(bo, bo_mailbox):
    response = bo.post("/settings/meetings/", {"mailbox": str(bo_mailbox.pk), "calendar": "google"})
    assert response.status_code == 400
    assert "Google Calendar goes with a Gmail connection" in text(response)
    response = bo.post("/settings/meetings/", {"mailbox": str(bo_mailbox.pk), "calendar": "caldav"})
    assert response.status_code == 400
    assert "Needed for a CalDAV calendar." in text(response)
    assert not MeetingsConnection.objects.exists()


def test_r4_a_team_email_of_a_conversations_inbox_is_refused_with_why_and_what_to_do(
    bo, bo_mailbox, support
):
    _inbox, team_mailbox = support
    response = bo.post("/settings/meetings/", {"mailbox": str(team_mailbox.pk), "calendar": "none"})
    assert response.status_code == 409
    page = text(response)
    assert "is a team email used by the conversations tool" in page
    assert "Pick one of your own personal emails" in page
    assert "Someone in your account already uses" not in page
    assert not MeetingsConnection.objects.exists()


def test_r1_someone_elses_email_is_refused_with_why_and_what_to_do(
    bo, bo_mailbox, other_member, connect_payload
):
    response = api_client_for(other_member).post(
        "/api/v1/mailboxes/", connect_payload("cy@acme.example.com"), format="json"
    )
    cy_mailbox = response.json()["id"]
    response = bo.post("/settings/meetings/", {"mailbox": cy_mailbox, "calendar": "none"})
    assert response.status_code == 409
    page = text(response)
    assert 'id="conflict"' in page and "cy@acme.example.com" in page
    assert "Ask" in page  # the way out: ask the holder or an admin
    assert not MeetingsConnection.objects.exists()


def test_removing_the_connection_asks_first_and_says_what_stops(bo, connected, link):
    bo.post("/settings/meetings/links/new/", link_form(slug="bo-demo", name="Demo"))
    bo.post("/settings/meetings/links/new/", link_form(slug="bo-deep", name="Deep dive"))
    settings_page = text(bo.get("/settings/meetings/"))
    assert re.search(
        r'<form method="get" action="/settings/meetings/remove/"[^>]*data-confirm>', settings_page
    )
    page = text(bo.get("/settings/meetings/remove/"))
    assert "Remove the meetings connection?" in page
    assert "stops sending invitations from bo@acme.example.com" in page
    assert "Your 3 scheduling links stop taking bookings" in page
    assert "You have no upcoming bookings." in page
    assert 'name="confirm" value="yes"' in page
    assert MeetingsConnection.objects.exists()


def test_removing_the_connection_acts_only_on_a_post_with_confirm(bo, connected):
    response = bo.post("/settings/meetings/remove/", {})
    assert response.status_code == 200
    assert "Remove the meetings connection?" in text(response)  # only asks again
    assert MeetingsConnection.objects.exists()
    response = bo.post("/settings/meetings/remove/", {"confirm": "yes"})
    assert response.status_code == 302
    assert not MeetingsConnection.objects.exists()


def test_creating_a_link_stores_durations_hours_and_questions(bo, link):
    assert link.durations == [30, 60]
    assert link.timezone == "Europe/Amsterdam"
    assert link.availability["mon"] == [["08:00", "18:00"]]
    assert link.questions == [
        {"label": "Company", "required": True},
        {"label": "What would you like to talk about?", "required": False},
    ]
    page = text(bo.get("/settings/meetings/"))
    assert "Intro call" in page and "/meet/bo-intro/" in page


def test_a_link_with_bad_hours_is_refused_with_what_to_write(bo, connected):
    response = bo.post("/settings/meetings/links/new/", link_form(day_mon="9 to 5"))
    assert response.status_code == 400
    assert "write it like 09:00-17:00" in text(response)
    response = bo.post("/settings/meetings/links/new/", link_form(durations="half an hour"))
    assert response.status_code == 400
    assert not SchedulingLink.objects.exists()


def test_editing_a_link_keeps_two_ranges_a_day_and_an_empty_day(bo, link):
    response = bo.post(
        f"/settings/meetings/links/{link.pk}/",
        link_form(day_mon="09:00-12:00, 13:00-17:00", day_sun="", name="Intro"),
    )
    assert response.status_code == 302, text(response)
    link.refresh_from_db()
    assert link.name == "Intro"
    assert link.availability["mon"] == [["09:00", "12:00"], ["13:00", "17:00"]]
    assert "sun" not in link.availability
    page = text(bo.get(f"/settings/meetings/links/{link.pk}/"))
    assert 'value="09:00-12:00, 13:00-17:00"' in page


def test_someone_elses_link_is_not_found(client, other_member, link):
    client.force_login(other_member)
    assert client.get(f"/settings/meetings/links/{link.pk}/").status_code == 404
    assert (
        client.post(f"/settings/meetings/links/{link.pk}/delete/", {"confirm": "yes"}).status_code
        == 404
    )
    assert SchedulingLink.objects.filter(pk=link.pk).exists()


def test_deleting_a_link_asks_first_and_acts_only_on_a_post_with_confirm(bo, link):
    url = f"/settings/meetings/links/{link.pk}/delete/"
    for page_url in ("/settings/meetings/", f"/settings/meetings/links/{link.pk}/"):
        assert re.search(rf'(action|href)="{url}"[^>]*data-confirm', text(bo.get(page_url)))
    visitor = Client()
    form_page, _ = pick_first_time(visitor, "/meet/bo-intro/")
    book(visitor, form_page)
    page = text(bo.get(url))
    assert "Delete “Intro call”?" in page
    assert "/meet/bo-intro/ stops taking bookings" in page
    assert "Its 1 upcoming meeting is cancelled: each guest gets a cancellation" in page
    response = bo.post(url, {})
    assert response.status_code == 200 and "Delete “Intro call”?" in text(response)
    assert SchedulingLink.objects.filter(pk=link.pk).exists()
    assert Booking.objects.get().state == BookingState.CONFIRMED
    queued = OutboxItem.objects.count()
    response = bo.post(url, {"confirm": "yes"})
    assert response.status_code == 302
    assert not SchedulingLink.objects.filter(pk=link.pk).exists()
    assert not Booking.objects.exists()
    assert OutboxItem.objects.count() == queued + 1  # the booker's cancellation


# --- The public page without JavaScript ------------------------------------------------


def pick_first_time(visitor: Client, url: str):
    """Open the page, follow the first day with times, then its first time."""
    page = visitor.get(url)
    assert page.status_code == 200, text(page)
    days = hrefs(page, "day")
    assert days, "no day with free times on the page"
    day_page = visitor.get(days[0])
    times = hrefs(day_page, "slot")
    assert times, "no free time on the chosen day"
    return visitor.get(times[0]), times


def book(visitor: Client, form_page, **fields):
    html = form_page.content.decode()
    hidden = dict(
        re.findall(r'<input type="hidden" name="(start|duration|tz)" value="([^"]+)"', html)
    )
    data = {
        **{k: unescape(v) for k, v in hidden.items()},
        "name": "Pat Doe",
        "email": "pat@example.net",
        "q0": "Globex",
        **fields,
    }
    action = re.search(r'<form method="post" action="([^"]+)" id="booking-form"', html).group(1)
    return visitor.post(action, data), data


def test_the_public_page_shows_the_link_owner_durations_and_utc_by_default(link):
    page = text(Client().get("/meet/bo-intro/"))
    assert "Intro call" in page and "Bo Lee" in page
    assert "30 min" in page and "60 min" in page
    assert '<option value="UTC" selected>' in page
    assert 'data-detect="browser"' in page  # the script may switch to the browser's zone
    chosen = text(Client().get("/meet/bo-intro/?tz=Asia/Tokyo"))
    assert '<option value="Asia/Tokyo" selected>' in chosen and "data-detect" not in chosen
    assert "<script>" not in page and "style=" not in page


def test_booking_without_javascript_picks_a_day_and_a_time_and_confirms_in_my_zone(link):
    visitor = Client()
    form_page, _times = pick_first_time(visitor, "/meet/bo-intro/?tz=America/New_York&duration=60")
    assert "Your details" in text(form_page)
    assert "Company" in text(form_page) and "(optional)" in text(form_page)
    response, data = book(visitor, form_page)
    assert response.status_code == 302, text(response)
    booking = Booking.objects.get()
    assert booking.email == "pat@example.net" and booking.timezone == "America/New_York"
    assert (booking.end - booking.start).total_seconds() == 3600
    assert booking.answers == {"Company": "Globex"}
    done = text(visitor.get(response["Location"]))
    local = booking.start.astimezone(ZoneInfo("America/New_York"))
    assert "You're booked" in done
    assert f"{local:%H:%M}" in done and "America/New York" in done
    assert f"/meet/booking/{booking.token}/cancel/" in done
    assert f"/meet/booking/{booking.token}/reschedule/" in done
    ics = visitor.get(f"/meet/booking/{booking.token}/invite.ics")
    assert ics["Content-Type"].startswith("text/calendar")
    [event] = Calendar.from_ical(ics.content).walk("VEVENT")
    assert str(event["UID"]) == booking.uid


def test_a_required_question_left_empty_says_so_and_books_nothing(link):
    visitor = Client()
    form_page, _ = pick_first_time(visitor, "/meet/bo-intro/")
    response, _ = book(visitor, form_page, q0="")
    assert response.status_code == 400
    assert "This field is required." in text(response)
    assert not Booking.objects.exists()


def test_a_taken_time_says_so_and_offers_alternatives(link):
    first, second = Client(), Client()
    form_page, _ = pick_first_time(first, "/meet/bo-intro/")
    form_page_2, _ = pick_first_time(second, "/meet/bo-intro/")
    assert book(first, form_page)[0].status_code == 302
    response, _ = book(second, form_page_2, email="sam@example.org")
    assert response.status_code == 409
    page = text(response)
    assert "That time was just taken" in page
    assert hrefs(response, "slot")
    assert Booking.objects.count() == 1


def test_an_unknown_or_paused_link_is_a_friendly_404(bo, link):
    response = Client().get("/meet/nobody-here/")
    assert response.status_code == 404
    assert "This booking page isn't available" in text(response)
    form = link_form()
    form.pop("is_active")
    bo.post(f"/settings/meetings/links/{link.pk}/", form)
    assert Client().get("/meet/bo-intro/").status_code == 404


def test_the_cancel_link_shows_the_booking_and_only_the_post_cancels(link):
    visitor = Client()
    form_page, _ = pick_first_time(visitor, "/meet/bo-intro/")
    book(visitor, form_page)
    booking = Booking.objects.get()
    scanner = Client()
    page = scanner.get(f"/meet/booking/{booking.token}/cancel/")
    assert page.status_code == 200 and "Cancel this meeting?" in text(page)
    booking.refresh_from_db()
    assert booking.state == BookingState.CONFIRMED
    response = visitor.post(f"/meet/booking/{booking.token}/cancel/", {"reason": "Clash"})
    assert response.status_code == 302
    booking.refresh_from_db()
    assert booking.state == BookingState.CANCELLED
    assert "This meeting is cancelled" in text(
        visitor.get(f"/meet/booking/{booking.token}/cancel/")
    )
    assert "This meeting is cancelled" in text(visitor.get(f"/meet/booking/{booking.token}/"))


def test_rescheduling_shows_free_times_and_the_post_moves_the_booking(link):
    visitor = Client()
    form_page, times = pick_first_time(visitor, "/meet/bo-intro/")
    book(visitor, form_page)
    booking = Booking.objects.get()
    old_start, old_sequence = booking.start, booking.sequence
    page = visitor.get(f"/meet/booking/{booking.token}/reschedule/")
    assert page.status_code == 200
    booking.refresh_from_db()
    assert booking.start == old_start
    day = visitor.get(hrefs(page, "day")[-1])
    chosen = visitor.get(hrefs(day, "slot")[-1])
    html = chosen.content.decode()
    start = unescape(re.search(r'name="start" value="([^"]+)"', html).group(1))
    response = visitor.post(
        f"/meet/booking/{booking.token}/reschedule/", {"start": start, "tz": "UTC"}
    )
    assert response.status_code == 302, text(response)
    booking.refresh_from_db()
    assert booking.start != old_start and booking.sequence == old_sequence + 1


def test_an_unknown_booking_token_is_a_friendly_404():
    for path in ("", "cancel/", "reschedule/"):
        response = Client().get(f"/meet/booking/not-a-token/{path}")
        assert response.status_code == 404
        assert "isn't available" in text(response)


def test_the_owner_cancels_an_upcoming_booking_after_confirming(bo, link):
    visitor = Client()
    form_page, _ = pick_first_time(visitor, "/meet/bo-intro/")
    book(visitor, form_page)
    booking = Booking.objects.get()
    listed = text(bo.get("/settings/meetings/"))
    assert "Pat Doe" in listed and "Company:</span> Globex" in listed
    assert f'href="/contacts/{booking.contact_id}/"' in listed
    url = f"/settings/meetings/bookings/{booking.pk}/cancel/"
    assert re.search(rf'<form method="get" action="{url}"[^>]*data-confirm>', listed)
    asked = text(bo.get(url, {"reason": "Ill"}))
    assert "Cancel the meeting with Pat Doe?" in asked
    assert "Pat Doe <pat@example.net> gets a cancellation email" in asked
    assert 'name="reason" value="Ill"' in asked  # a note sent along is carried to the POST
    response = bo.post(url, {"reason": "Ill"})
    assert response.status_code == 200 and "Cancel the meeting with Pat Doe?" in text(response)
    booking.refresh_from_db()
    assert booking.state == BookingState.CONFIRMED
    assert bo.post(url, {"confirm": "yes", "reason": "Ill"}).status_code == 302
    booking.refresh_from_db()
    assert booking.state == BookingState.CANCELLED and booking.cancel_reason == "Ill"
    again = bo.get(url, follow=True)
    assert "already cancelled" in text(again)


def test_public_booking_posts_are_throttled_per_ip_with_a_plain_message(link, settings):
    settings.MEETINGS_BOOKINGS_RATE = "1/hour"
    visitor = Client()
    form_page, _ = pick_first_time(visitor, "/meet/bo-intro/")
    assert book(visitor, form_page)[0].status_code == 302
    form_page, _ = pick_first_time(visitor, "/meet/bo-intro/")
    response, _ = book(visitor, form_page, email="again@example.net")
    assert response.status_code == 429
    assert "Too many requests" in text(response) and "try again" in text(response)
    assert "Retry-After" in response.headers
    assert Booking.objects.count() == 1


@pytest.mark.parametrize(
    "query",
    [
        "?week=not-a-date&day=2026-13-45&duration=abc&tz=Mars/Olympus_Mons",
        "?start=yesterday&tz=UTC",
        "?start=2001-01-01T09:00:00%2B00:00",
        "?week=1900-01-01",
        "?week=9999-12-31&duration=99999",
        "?tz=" + "A" * 5000,
    ],
)
def test_odd_query_parameters_on_the_public_page_never_give_a_500(link, query):
    response = Client().get(f"/meet/bo-intro/{query}")
    assert response.status_code in (200, 409), response.status_code
    assert "Intro call" in text(response)


def test_odd_posts_on_the_public_pages_never_give_a_500(link):
    visitor = Client()
    for data in (
        {},
        {"start": "garbage", "name": "x", "email": "x@example.net"},
        {"start": "2001-01-01T09:00:00+00:00", "name": "x", "email": "x@example.net", "q0": "y"},
        {"start": "2999-01-01T09:00:00+00:00", "name": "a\nb", "email": "nope", "duration": "7"},
    ):
        response = visitor.post("/meet/bo-intro/", data)
        assert response.status_code in (302, 400, 409), (data, response.status_code)
    assert not Booking.objects.exists()
    response = visitor.post("/meet/booking/nope/reschedule/", {"start": "2999-01-01T09:00:00Z"})
    assert response.status_code == 404


def test_settings_meetings_is_a_section_of_the_one_settings_navigation(bo, link):
    for url in (
        "/settings/meetings/",
        f"/settings/meetings/links/{link.pk}/",
    ):
        html = bo.get(url).content.decode()
        nav = html[
            html.index('id="settings-nav"') : html.index("</nav>", html.index('id="settings-nav"'))
        ]
        assert (
            'href="/settings/meetings/" class="active" aria-current="page">Meetings</a>' in nav
        ), url
