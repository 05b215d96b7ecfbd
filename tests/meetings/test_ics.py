"""The invitation queued in the outbox for a booking, its cancellation and its move:
one email from the connected address, To the booker and Cc the owner, whose
text/calendar part (parsed back with icalendar) has the METHOD, the stable UID, a
rising SEQUENCE, ORGANIZER, ATTENDEEs and UTC times."""

from __future__ import annotations

import email as email_lib
from datetime import UTC, datetime, timedelta
from email import policy

import pytest
from icalendar import Calendar

from inboxes.models import MailboxStatus, OutboxItem
from inboxes.outbox.claims import raw_of
from meetings.bookings import booking_cancel, booking_create, booking_reschedule, booking_urls
from meetings.ics import REQUEST, Invite, ics_text
from tests.crm.conftest import personal_mailbox
from tests.meetings.conftest import NOW, make_link

TEN = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


@pytest.fixture
def bo_mailbox(member, connection):
    return personal_mailbox(member, "bo@acme.example.com")


@pytest.fixture
def link(member):
    return make_link(member, slug="bo-intro", questions=[{"label": "Company", "required": True}])


def book(link, **kwargs):
    values = {
        "link": link,
        "start": TEN,
        "duration": 30,
        "name": "Dana Prospect",
        "email": "dana@prospect.example.com",
        "answers": {"Company": "Prospect BV"},
        "timezone": "America/New_York",
        "now": NOW,
    }
    values.update(kwargs)
    return booking_create(**values)


def queued() -> list[email_lib.message.EmailMessage]:
    items = OutboxItem.objects.select_related("message").order_by("created_at")
    return [email_lib.message_from_bytes(raw_of(i), policy=policy.default) for i in items]


def calendar_of(mime) -> tuple[str, Calendar]:
    parts = [p for p in mime.walk() if p.get_content_type() == "text/calendar"]
    assert parts, "no text/calendar part"
    part = parts[0]
    return part.get_param("method"), Calendar.from_ical(part.get_content())


def vevent(calendar: Calendar):
    events = calendar.walk("VEVENT")
    assert len(events) == 1
    return events[0]


def test_a_booking_queues_one_invitation_to_the_booker_and_the_owner(
    member, link, bo_mailbox, settings
):
    member.email = "bo.lee@acme-login.example.com"  # the owner's login differs from the mailbox
    member.save()

    booking = book(link)

    [mime] = queued()
    assert mime["From"] == "Bo Lee <bo@acme.example.com>"
    assert mime["To"] == "Dana Prospect <dana@prospect.example.com>"
    assert mime["Cc"] == "Bo Lee <bo.lee@acme-login.example.com>"
    assert mime["Auto-Submitted"] == "auto-generated"
    assert mime["Subject"].startswith("Invitation: Intro call with Bo Lee")
    text = mime.get_body(("plain",)).get_content()
    html = mime.get_body(("html",)).get_content()
    cancel_url, reschedule_url = booking_urls(booking)
    # The time in the booker's zone (New York is UTC-5 on 2 March).
    assert "Monday 2 March 2026, 04:00-04:30 (UTC-05:00)" in text
    assert "America/New_York" in text
    assert cancel_url in text and reschedule_url in text
    assert cancel_url in html and "Company: Prospect BV" in html

    method, calendar = calendar_of(mime)
    assert method == "REQUEST" and str(calendar["METHOD"]) == "REQUEST"
    assert str(calendar["VERSION"]) == "2.0" and "Postkamer" in str(calendar["PRODID"])
    event = vevent(calendar)
    assert str(event["UID"]) == booking.uid
    assert int(event["SEQUENCE"]) == 0
    assert event["DTSTART"].dt == TEN and event["DTSTART"].dt.tzinfo is not None
    assert event["DTSTART"].dt.utcoffset() == timedelta(0)
    assert event["DTEND"].dt == TEN + timedelta(minutes=30)
    assert event["DTSTART"].to_ical().endswith(b"Z")
    assert str(event["ORGANIZER"]) == "mailto:bo@acme.example.com"
    assert event["ORGANIZER"].params["CN"] == "Bo Lee"
    attendees = event["ATTENDEE"]
    attendees = attendees if isinstance(attendees, list) else [attendees]
    assert "mailto:dana@prospect.example.com" in [str(a) for a in attendees]
    assert str(event["STATUS"]) == "CONFIRMED"
    assert "Company: Prospect BV" in str(event["DESCRIPTION"])
    assert reschedule_url in str(event["DESCRIPTION"])


def test_the_owner_whose_login_is_the_sending_mailbox_is_not_copied_twice(link, bo_mailbox):
    book(link)

    [mime] = queued()
    assert mime["Cc"] is None  # their copy is the sent copy in bo@acme.example.com


def test_cancelling_sends_method_cancel_with_the_same_uid_and_a_higher_sequence(link, bo_mailbox):
    booking = book(link)

    booking_cancel(booking=booking, by_owner=True, reason="Travelling")

    first, cancel = queued()
    assert cancel["Subject"].startswith("Cancelled: Intro call")
    method, calendar = calendar_of(cancel)
    assert method == "CANCEL" and str(calendar["METHOD"]) == "CANCEL"
    event = vevent(calendar)
    assert str(event["UID"]) == booking.uid == str(vevent(calendar_of(first)[1])["UID"])
    assert int(event["SEQUENCE"]) == 1
    assert str(event["STATUS"]) == "CANCELLED"
    assert event["DTSTART"].dt == TEN
    assert "Travelling" in cancel.get_body(("plain",)).get_content()


def test_rescheduling_sends_an_updated_request(link, bo_mailbox):
    booking = book(link)
    later = TEN + timedelta(days=1)

    booking_reschedule(booking=booking, start=later, now=NOW)

    _, update = queued()
    assert update["Subject"].startswith("Updated: Intro call")
    method, calendar = calendar_of(update)
    event = vevent(calendar)
    assert method == "REQUEST"
    assert str(event["UID"]) == booking.uid and int(event["SEQUENCE"]) == 1
    assert event["DTSTART"].dt == later and event["DTEND"].dt == later + timedelta(minutes=30)


def test_no_invitation_without_a_connected_mailbox_and_the_booking_stands(link, connection):
    booking = book(link)

    assert booking.pk and not OutboxItem.objects.exists()


def test_a_disconnected_mailbox_sends_nothing(link, bo_mailbox):
    bo_mailbox.status = MailboxStatus.DISCONNECTED
    bo_mailbox.save()

    book(link)

    assert not OutboxItem.objects.exists()


def test_a_booker_no_one_reads_gets_no_invitation(link, bo_mailbox):
    book(link, email="noreply@prospect.example.com")

    assert not OutboxItem.objects.exists()


def test_the_ics_text_is_crlf_and_writes_names_safely():
    invite = Invite(
        uid="abc@postkamer",
        sequence=3,
        start=TEN,
        end=TEN + timedelta(minutes=30),
        summary="Intro, call; with Bo",
        description="line one\nline two",
        organizer_address="bo@acme.example.com",
        organizer_name='Bo "The" Lee\r\nX-Evil: 1',
        booker_address="dana@prospect.example.com",
        booker_name="Dana",
        owner_address="bo@acme.example.com",
        owner_name="Bo",
    )

    text = ics_text(invite, method=REQUEST, now=NOW)

    assert "\r\n" in text and "\nX-Evil" not in text
    event = vevent(Calendar.from_ical(text))
    assert str(event["SUMMARY"]) == "Intro, call; with Bo"
    assert str(event["DESCRIPTION"]) == "line one\nline two"
    assert int(event["SEQUENCE"]) == 3
    assert event["DTSTAMP"].dt == NOW
