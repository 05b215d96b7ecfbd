"""The meetings tool in a real browser (Chromium, the strict CSP) against the live server.

A rep connects the meetings tool and creates a link on Settings > Meetings (1440x900);
a visitor on a phone (390 px wide, in New York) books from the public page, gets the
invitation through the outbox and aiosmtpd, and cancels from the link in that email.
The ``pages`` fixture fails a test on any console error, uncaught JavaScript error, CSP
violation or request that leaves 127.0.0.1. Set POSTKAMER_SCREENSHOTS=1 to keep
screenshots in /tmp.
"""

from __future__ import annotations

import email
import re
from datetime import timedelta
from email.message import Message
from email.policy import default as default_policy
from zoneinfo import ZoneInfo

import pytest
from django.utils import timezone
from icalendar import Calendar
from playwright.sync_api import Page, expect

from inboxes.outbox import outbox_send_run
from meetings import links
from meetings.models import Booking, BookingState, MeetingsConnection, SchedulingLink
from meetings.services import meetings_connect
from tests.support.mail import connect_imap_mailbox

pytest_plugins = ["tests.support.browser"]  # the browser and pages fixtures
pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1440, "height": 900}


def no_sideways_scroll(page: Page) -> None:
    width = page.evaluate("() => document.documentElement.scrollWidth")
    viewport = page.evaluate("() => window.innerWidth")
    assert width <= viewport, f"the page is {width} px wide in a {viewport} px window"


def parsed(raw: bytes) -> Message:
    return email.message_from_bytes(raw, policy=default_policy)


def calendar_of(message: Message) -> Calendar:
    [part] = [p for p in message.walk() if p.get_content_type() == "text/calendar"]
    return Calendar.from_ical(part.get_payload(decode=True))


def text_of(message: Message) -> str:
    return message.get_body(preferencelist=("plain",)).get_content()


@pytest.fixture
def bo_mailbox(member, dovecot, smtp_server, mail_user):
    return connect_imap_mailbox(
        actor=member,
        dovecot=dovecot,
        smtp_server=smtp_server,
        user=mail_user,
        address="bo@acme.example.com",
        kind="personal",
    )


def test_a_rep_sets_up_a_link_and_a_visitor_on_a_phone_books_and_cancels_from_the_email(
    pages, member, password, bo_mailbox, smtp_server, live_server, settings
):
    settings.PUBLIC_URL = live_server.url
    smtp_server.clear()

    # Given Bo on Settings > Meetings at 1440x900
    bo = pages.new(timezone_id="Europe/Berlin")
    bo.goto("/login/")
    bo.get_by_label("Email").fill(member.email)
    bo.get_by_label("Password").fill(password)
    bo.get_by_role("button", name="Log in").click()
    bo.wait_for_url("**/settings/email/")
    bo.set_viewport_size(DESKTOP)
    bo.get_by_role("navigation", name="Main").get_by_role("link", name="Settings").click()
    bo.get_by_role("navigation", name="Settings sections").get_by_role(
        "link", name="Meetings"
    ).click()
    expect(bo.get_by_role("heading", name="Meetings", level=1)).to_be_visible()

    # When he connects the meetings tool to his own email, without a calendar
    connect = bo.locator("#meetings-connect")
    connect.get_by_label("Book from").select_option(label="bo@acme.example.com (IMAP/SMTP)")
    expect(bo.locator("#caldav-fields")).to_be_hidden()
    connect.get_by_label("Calendar").select_option("caldav")
    expect(bo.locator("#caldav-fields")).to_be_visible()
    connect.get_by_label("Calendar").select_option("none")
    connect.get_by_role("button", name="Connect the meetings tool").click()
    expect(bo.locator("#messages")).to_contain_text("books from bo@acme.example.com")
    assert MeetingsConnection.objects.get().mailbox_id == bo_mailbox.pk

    # And creates a link open every day, with a required question
    bo.get_by_role("link", name="New scheduling link").click()
    form = bo.locator("#link-form")
    # (a first link starts in the browser's zone, here the context's Europe/Berlin)
    expect(form.get_by_label("Your time zone")).to_have_value("Europe/Berlin")
    form.get_by_label("Name").fill("Intro call")
    form.get_by_label("Link address").fill("bo-intro")
    form.get_by_label("Durations (minutes)").fill("30, 60")
    form.get_by_label("Your time zone").select_option("Europe/Amsterdam")
    for day in ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"):
        form.get_by_label(day, exact=True).fill("08:00-18:00")
    form.get_by_label("Minimum notice (minutes)").fill("60")
    form.get_by_label("Questions for the booker").fill("Company *")
    no_sideways_scroll(bo)
    pages.screenshot(bo, "meetings-link-form-1440")
    form.get_by_role("button", name="Create link").click()

    # Then the link is listed with its public address to copy
    expect(bo.locator("#messages")).to_contain_text("is ready")
    link = SchedulingLink.objects.get()
    row = bo.locator("#link-bo-intro")
    expect(row.locator("input.link-url")).to_have_value(f"{live_server.url}/meet/bo-intro/")
    expect(row.get_by_role("button", name="Copy")).to_be_visible()
    no_sideways_scroll(bo)
    pages.screenshot(bo, "meetings-settings-1440")
    # (and on a phone the settings page and the link form fit too)
    bo.set_viewport_size(PHONE)
    no_sideways_scroll(bo)
    pages.screenshot(bo, "meetings-settings-390")
    bo.goto(f"/settings/meetings/links/{link.pk}/")
    expect(bo.locator("#link-form")).to_be_visible()
    no_sideways_scroll(bo)
    bo.set_viewport_size(DESKTOP)

    # When a visitor in New York opens the link on a phone
    visitor = pages.new(viewport=PHONE, timezone_id="America/New_York")
    visitor.goto("/meet/bo-intro/")

    # Then the times are in her zone (detected by the page's script), and nothing scrolls sideways
    expect(visitor).to_have_url(re.compile(r"tz=America%2FNew_York"))
    expect(visitor.locator("#tz")).to_have_value("America/New_York")
    expect(visitor.get_by_role("heading", name="Intro call")).to_be_visible()
    expect(visitor.locator(".owner")).to_have_text("Bo Lee")
    no_sideways_scroll(visitor)
    pages.screenshot(visitor, "meetings-public-390")

    # When she picks 60 minutes, a day and a time, and fills in the form
    visitor.get_by_role("link", name="60 min").click()
    visitor.locator("a.day").first.click()
    expect(visitor.locator("a.slot").first).to_be_visible()
    no_sideways_scroll(visitor)
    pages.screenshot(visitor, "meetings-public-slots-390")
    visitor.locator("a.slot").first.click()
    details = visitor.locator("#booking-form")
    details.get_by_label("Your name").fill("Pat Doe")
    details.get_by_label("Your email").fill("pat@example.net")
    details.get_by_label("Company").fill("Globex")
    no_sideways_scroll(visitor)
    pages.screenshot(visitor, "meetings-public-form-390")
    details.get_by_role("button", name="Book 60 minutes").click()

    # Then she is booked, shown in her zone
    expect(visitor.get_by_role("heading", name="You're booked")).to_be_visible()
    booking = Booking.objects.get()
    assert booking.timezone == "America/New_York" and booking.link == link
    local = booking.start.astimezone(ZoneInfo("America/New_York"))
    expect(visitor.locator("#when")).to_contain_text(f"{local:%H:%M}")
    expect(visitor.locator("#when")).to_contain_text("America/New York")
    no_sideways_scroll(visitor)
    pages.screenshot(visitor, "meetings-public-booked-390")

    # And the invitation goes out through the outbox from Bo's address, with a REQUEST
    outbox_send_run(bo_mailbox.pk)
    [invitation] = smtp_server.wait_for_messages(1, timeout=10)
    assert "pat@example.net" in invitation.rcpt_tos
    message = parsed(invitation.data)
    assert "bo@acme.example.com" in message["From"]
    request = calendar_of(message)
    assert str(request["METHOD"]) == "REQUEST"
    [event] = request.walk("VEVENT")
    assert str(event["UID"]) == booking.uid

    # When she follows the cancel link in that email
    cancel_url = re.search(r"https?://\S+/meet/booking/\S+/cancel/", text_of(message)).group(0)
    assert cancel_url.startswith(live_server.url)
    visitor.goto(cancel_url)

    # Then opening it changed nothing; the button cancels
    expect(visitor.get_by_role("heading", name="Cancel this meeting?")).to_be_visible()
    booking.refresh_from_db()
    assert booking.state == BookingState.CONFIRMED
    no_sideways_scroll(visitor)
    pages.screenshot(visitor, "meetings-public-cancel-390")
    visitor.get_by_role("button", name="Cancel meeting").click()
    expect(visitor.get_by_role("heading", name="This meeting is cancelled")).to_be_visible()
    booking.refresh_from_db()
    assert booking.state == BookingState.CANCELLED

    # And a CANCEL with the same UID and a higher SEQUENCE goes out
    outbox_send_run(bo_mailbox.pk)
    messages = smtp_server.wait_for_messages(2, timeout=10)
    cancel = calendar_of(parsed(messages[1].data))
    assert str(cancel["METHOD"]) == "CANCEL"
    [cancelled_event] = cancel.walk("VEVENT")
    assert str(cancelled_event["UID"]) == booking.uid
    assert int(cancelled_event["SEQUENCE"]) > int(event.get("SEQUENCE", 0))

    # And Bo's page no longer lists it as upcoming
    bo.goto("/settings/meetings/")
    expect(bo.locator("#no-bookings")).to_be_visible()


def test_the_owner_cancels_a_booking_deletes_a_link_and_removes_the_connection_in_the_dialog(
    pages, member, password, bo_mailbox, account
):
    # Given Bo's meetings connection, two links and an upcoming booking on one of them
    meetings_connect(user=member, address="bo@acme.example.com")
    intro = links.link_create(
        owner=member,
        data={"name": "Intro call", "slug": "bo-intro", "durations": [30], "availability": {}},
    )
    links.link_create(
        owner=member,
        data={"name": "Demo", "slug": "bo-demo", "durations": [30], "availability": {}},
    )
    start = timezone.now() + timedelta(days=2)
    booking = Booking.objects.create(
        account=account,
        link=intro,
        owner=member,
        start=start,
        end=start + timedelta(minutes=30),
        name="Pat Doe",
        email="pat@example.net",
        uid="owner-dialog@postkamer",
        token="o" * 32,
    )
    bo = pages.log_in(member.email, password)
    bo.set_viewport_size(DESKTOP)
    bo.goto("/settings/meetings/")
    dialog = bo.locator("dialog#confirm-dialog")

    # When he presses Cancel on the booking, a dialog says who is told; Escape changes nothing
    cancel = bo.get_by_role("button", name="Cancel the meeting with Pat Doe")
    cancel.click()
    expect(dialog).to_be_visible()
    expect(dialog.get_by_role("heading", name="Cancel the meeting with Pat Doe?")).to_be_visible()
    expect(dialog).to_contain_text("Pat Doe <pat@example.net> gets a cancellation email")
    pages.screenshot(bo, "meetings-confirm-cancel-1440")
    bo.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    expect(cancel).to_be_focused()
    booking.refresh_from_db()
    assert booking.state == BookingState.CONFIRMED

    # And the dialog's button cancels it
    cancel.click()
    dialog.get_by_role("button", name="Cancel meeting").click()
    expect(bo.locator("#messages")).to_contain_text("The meeting with Pat Doe is cancelled")
    booking.refresh_from_db()
    assert booking.state == BookingState.CANCELLED
    expect(bo.locator("#no-bookings")).to_be_visible()

    # When he deletes the Demo link, the dialog says its address stops taking bookings
    bo.locator("#link-bo-demo").get_by_role("button", name="Delete Demo").click()
    expect(dialog).to_contain_text("/meet/bo-demo/ stops taking bookings")
    expect(dialog).to_contain_text("It has no upcoming meetings.")
    dialog.get_by_role("button", name="Delete link").click()
    expect(bo.locator("#messages")).to_contain_text("“Demo” is deleted")
    assert list(SchedulingLink.objects.values_list("slug", flat=True)) == ["bo-intro"]

    # When, on a phone, he removes the connection, the dialog fits and says what stops
    bo.set_viewport_size(PHONE)
    bo.get_by_role("button", name="Remove meetings connection").click()
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text("Your 1 scheduling link stops taking bookings")
    no_sideways_scroll(bo)
    box = dialog.bounding_box()
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"]
    pages.screenshot(bo, "meetings-confirm-remove-390")
    dialog.get_by_role("button", name="Remove meetings connection").click()
    expect(bo.locator("#messages")).to_contain_text("Your meetings connection is removed.")
    assert not MeetingsConnection.objects.exists()
