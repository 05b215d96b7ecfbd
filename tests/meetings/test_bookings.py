"""Bookings: claims for the padded time, the booker's contact and timeline, refusals
with nearby alternatives, cancel and reschedule (claims freed and taken atomically)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from core.errors import Invalid
from crm.contacts import contact_create
from crm.models import Contact, TimelineEvent
from meetings.bookings import (
    booking_by_token,
    booking_cancel,
    booking_create,
    booking_reschedule,
    booking_urls,
)
from meetings.calendars import CalendarUnavailable
from meetings.errors import SlotUnavailable
from meetings.models import Booking, BookingClaim, BookingState
from meetings.slots import free_slots
from tests.meetings.conftest import NOW, make_link

AMS = ZoneInfo("Europe/Amsterdam")
TEN = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)  # Monday 10:00 Amsterdam


def book(link, start=TEN, duration=30, email="dana@prospect.example.com", **kwargs):
    values = {
        "link": link,
        "start": start,
        "duration": duration,
        "name": "Dana Prospect",
        "email": email,
        "answers": {},
        "timezone": "America/New_York",
        "now": NOW,
    }
    values.update(kwargs)
    return booking_create(**values)


def starts(link, day=date(2026, 3, 2), duration=30):
    return {
        s.start for s in free_slots(link, start=day, days=1, tz=AMS, duration=duration, now=NOW)
    }


def test_a_booking_claims_every_unit_of_its_padded_time(member):
    link = make_link(member, buffer_before=10, buffer_after=5)

    booking = book(link)

    units = sorted(BookingClaim.objects.filter(booking=booking).values_list("unit", flat=True))
    assert units[0] == TEN - timedelta(minutes=10)
    assert units[-1] == TEN + timedelta(minutes=30)  # the last unit starts at the end
    assert len(units) == (10 + 30 + 5) // 5
    assert booking.state == BookingState.CONFIRMED
    assert booking.end == TEN + timedelta(minutes=30)
    assert booking.sequence == 0 and "@" in booking.uid
    assert TEN not in starts(link)


def test_the_booker_becomes_a_contact_of_the_owner_with_a_meeting_on_the_timeline(member, link):
    booking = book(link, email="  Dana@Prospect.Example.com ")

    contact = Contact.objects.get(account=member.account)
    assert booking.contact == contact
    assert contact.canonical_email == "dana@prospect.example.com"
    assert contact.owner == member and contact.name == "Dana Prospect"
    event = TimelineEvent.objects.get(contact=contact)
    assert event.type == "meeting"
    assert event.detail["state"] == "booked"
    assert event.detail["start"] == "2026-03-02T09:00:00+00:00"
    assert event.detail["end"] == "2026-03-02T09:30:00+00:00"
    assert event.detail["link"] == {"id": str(link.pk), "name": "Intro call"}


def test_an_existing_contact_is_reused(member, link):
    existing = contact_create(account=member.account, email="dana@prospect.example.com")

    booking = book(link)

    assert booking.contact == existing
    assert Contact.objects.filter(account=member.account).count() == 1


def test_a_taken_time_is_refused_with_free_alternatives_nearby(link):
    book(link)

    with pytest.raises(SlotUnavailable) as error:
        book(link, start=TEN + timedelta(minutes=15), email="eve@other.example.com")

    alternatives = error.value.alternatives
    assert 1 <= len(alternatives) <= 4
    free = starts(link)
    assert all(slot.start in free for slot in alternatives)
    assert all(abs(slot.start - TEN) <= timedelta(hours=2) for slot in alternatives)
    body = error.value.as_dict()
    assert body["code"] == "slot_unavailable"
    assert body["alternatives"][0]["start"].endswith("-05:00")  # the booker's New York
    assert Booking.objects.count() == 1


def test_a_time_not_offered_is_refused_like_a_taken_one(link):
    for start in (
        datetime(2026, 3, 2, 9, 7, tzinfo=UTC),  # off the 15-minute steps
        datetime(2026, 3, 2, 5, 0, tzinfo=UTC),  # before the day's availability
        datetime(2026, 3, 7, 10, 0, tzinfo=UTC),  # a Saturday
        datetime(2026, 2, 20, 10, 0, tzinfo=UTC),  # before now
    ):
        with pytest.raises(SlotUnavailable):
            book(link, start=start)
    assert not Booking.objects.exists() and not BookingClaim.objects.exists()


def test_required_answers_and_a_valid_email_are_enforced(member):
    link = make_link(
        member,
        questions=[{"label": "Company", "required": True}, {"label": "Topic", "required": False}],
    )
    with pytest.raises(Invalid) as error:
        book(link, email="not an address", answers={"Topic": "pricing"})
    assert set(error.value.extra["errors"]) == {"email", "answers"}
    with pytest.raises(Invalid):
        book(link, answers={"Company": "Acme", "Shoe size": "42"})
    with pytest.raises(Invalid) as error:
        book(link, answers={"Company": "Acme"}, timezone="Mars/Olympus")
    assert "timezone" in error.value.extra["errors"]
    assert not Booking.objects.exists()

    booking = book(link, answers={"Company": " Acme "})
    assert booking.answers == {"Company": "Acme"}


def test_cancelling_frees_the_time_and_raises_the_sequence(link):
    booking = book(link)
    cancelled_at = NOW + timedelta(hours=1)

    booking = booking_cancel(booking=booking, by_owner=False, reason="Ill", now=cancelled_at)

    assert booking.state == BookingState.CANCELLED
    assert booking.cancelled_at == cancelled_at and booking.cancel_reason == "Ill"
    assert booking.sequence == 1
    assert not BookingClaim.objects.filter(booking=booking).exists()
    assert TEN in starts(link)
    events = TimelineEvent.objects.filter(contact=booking.contact).order_by("at")
    assert [e.detail["state"] for e in events] == ["booked", "cancelled"]
    assert events[1].detail["by"] == "booker" and events[1].detail["reason"] == "Ill"

    again = booking_cancel(booking=booking, by_owner=True)
    assert (
        again.sequence == 1 and TimelineEvent.objects.filter(contact=booking.contact).count() == 2
    )


def test_rescheduling_keeps_the_uid_and_moves_the_claims(link):
    booking = book(link)
    uid = booking.uid
    later = TEN + timedelta(hours=3)

    moved = booking_reschedule(booking=booking, start=later, now=NOW)

    assert moved.uid == uid and moved.sequence == 1
    assert (moved.start, moved.end) == (later, later + timedelta(minutes=30))
    assert TEN in starts(link) and later not in starts(link)
    units = set(BookingClaim.objects.filter(booking=moved).values_list("unit", flat=True))
    assert min(units) == later
    states = TimelineEvent.objects.filter(contact=moved.contact).values_list("detail", flat=True)
    assert sorted(d["state"] for d in states) == ["booked", "rescheduled"]


def test_rescheduling_overlapping_its_own_time_is_allowed(link):
    booking = book(link)

    moved = booking_reschedule(booking=booking, start=TEN + timedelta(minutes=15), now=NOW)

    assert moved.start == TEN + timedelta(minutes=15)


def test_rescheduling_onto_a_taken_time_leaves_the_booking_where_it_was(link):
    booking = book(link)
    other = book(link, start=TEN + timedelta(hours=2), email="eve@other.example.com")

    with pytest.raises(SlotUnavailable):
        booking_reschedule(booking=booking, start=other.start, now=NOW)

    booking.refresh_from_db()
    assert booking.start == TEN and booking.sequence == 0
    assert BookingClaim.objects.filter(booking=booking, unit=TEN).exists()


def test_a_cancelled_booking_cannot_be_rescheduled(link):
    booking = booking_cancel(booking=book(link), by_owner=True)
    with pytest.raises(Invalid):
        booking_reschedule(booking=booking, start=TEN + timedelta(hours=1), now=NOW)


def test_the_token_finds_the_booking_and_names_its_pages(link, settings):
    booking = book(link)

    assert booking_by_token(booking.token) == booking
    assert booking_by_token("x" * 40) is None and booking_by_token("") is None
    cancel_url, reschedule_url = booking_urls(booking)
    assert cancel_url == f"{settings.PUBLIC_URL}/meet/booking/{booking.token}/cancel/"
    assert reschedule_url == f"{settings.PUBLIC_URL}/meet/booking/{booking.token}/reschedule/"


@pytest.mark.django_db(transaction=True)
def test_the_calendar_event_is_written_after_commit_and_removed_on_cancel(
    member, connection, monkeypatch
):
    from django.db import connection as db

    from meetings import calendars

    link = make_link(member, slug="bo-intro")
    calls = []

    def event_write(conn, event, event_id=""):
        calls.append(("write", conn, event, db.in_atomic_block, event_id))
        return "event-42"

    def event_remove(conn, event_id, event):
        calls.append(("remove", conn, event_id, db.in_atomic_block))

    monkeypatch.setattr(calendars, "event_write", event_write)
    monkeypatch.setattr(calendars, "event_remove", event_remove)

    booking = book(link)

    [(what, conn, event, in_transaction, event_id)] = calls
    assert what == "write" and conn == connection and not in_transaction and event_id == ""
    assert event.uid == booking.uid and (event.start, event.end) == (booking.start, booking.end)
    assert event.organizer == "bo@acme.example.com"
    assert event.attendees == ["dana@prospect.example.com"]
    booking.refresh_from_db()
    assert booking.calendar_event_id == "event-42"

    booking = booking_reschedule(booking=booking, start=TEN + timedelta(hours=1), now=NOW)

    what, _, event, in_transaction, event_id = calls[1]
    assert what == "write" and event_id == "event-42" and not in_transaction
    assert event.start == TEN + timedelta(hours=1) and event.sequence == 1

    booking_cancel(booking=booking, by_owner=True)

    assert calls[2][0] == "remove" and calls[2][2] == "event-42" and not calls[2][3]


def test_a_calendar_that_fails_does_not_undo_the_booking(member, connection, monkeypatch):
    from meetings import calendars

    def broken(conn, event, event_id=""):
        raise CalendarUnavailable("The calendar could not take the meeting.")

    monkeypatch.setattr(calendars, "event_write", broken)

    booking = book(make_link(member, slug="bo-intro"))

    assert Booking.objects.filter(pk=booking.pk, state="confirmed").exists()
    assert booking.calendar_event_id == ""
