"""Busy times, events written and removed, through the Google and Graph fakes; the
short cache and its invalidation; a dead grant refuses slots instead of answering
"free"."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from inboxes.models import MailboxStatus
from meetings.calendars import (
    CalendarEvent,
    CalendarUnavailable,
    Interval,
    busy_times,
    event_remove,
    event_write,
)
from meetings.models import CalendarStatus, MeetingsConnection
from meetings.services import meetings_connect
from tests.meetings.calendar_setup import gmail_mailbox, graph_mailbox
from tests.support.fakes import google_calendar, microsoft_calendar

pytest_plugins = ["tests.support.fakes.google", "tests.support.fakes.microsoft"]
pytestmark = pytest.mark.django_db

BO = "bo@acme.example.com"
DAY = datetime(2030, 3, 4, tzinfo=UTC)


def at(hour: int, minute: int = 0) -> datetime:
    return DAY + timedelta(hours=hour, minutes=minute)


def meeting(uid: str = "b-1@postkamer", hour: int = 14, sequence: int = 0) -> CalendarEvent:
    return CalendarEvent(
        uid=uid,
        start=at(hour),
        end=at(hour, 30),
        summary="Intro call with Dee",
        description="Booked through Postkamer",
        organizer=BO,
        attendees=["dee@example.org"],
        sequence=sequence,
    )


@pytest.fixture
def google(member, fake_google) -> MeetingsConnection:
    gmail_mailbox(fake_google, member, BO, calendar=True)
    return meetings_connect(user=member, address=BO, calendar="google")


@pytest.fixture
def microsoft(member, fake_microsoft) -> MeetingsConnection:
    graph_mailbox(fake_microsoft, member, BO, calendar=True)
    return meetings_connect(user=member, address=BO, calendar="microsoft")


# --- Google Calendar ---------------------------------------------------------------------------


def test_google_busy_times_come_from_freebusy(google, fake_google):
    google_calendar.add_busy(fake_google, BO, at(9), at(10))
    google_calendar.add_busy(fake_google, BO, at(12), at(13), transparency="transparent")
    google_calendar.add_busy(fake_google, BO, at(23), at(25))  # into the next day

    assert busy_times(google, at(0), at(24)) == [
        Interval(at(9), at(10)),
        Interval(at(23), at(24)),
    ]
    assert google.calendar_status == CalendarStatus.OK


def test_google_event_is_written_once_per_uid_and_removed(google, fake_google):
    event_id = event_write(google, meeting())
    events = fake_google.calendar_events[BO]
    assert events[event_id]["iCalUID"] == "b-1@postkamer"
    assert events[event_id]["start"]["dateTime"] == "2030-03-04T14:00:00Z"

    # a reschedule: same uid, found again and updated, not a second event
    assert event_write(google, meeting(hour=16, sequence=1)) == event_id
    assert [e["start"]["dateTime"] for e in events.values()] == ["2030-03-04T16:00:00Z"]
    assert busy_times(google, at(0), at(24)) == [Interval(at(16), at(16, 30))]

    event_remove(google, event_id, meeting())
    assert events[event_id]["status"] == "cancelled"
    assert busy_times(google, at(0), at(24)) == []
    event_remove(google, event_id, meeting())  # already gone: no error


def test_busy_times_are_cached_and_a_write_invalidates_them(google, fake_google):
    google_calendar.add_busy(fake_google, BO, at(9), at(10))
    assert busy_times(google, at(0), at(24)) == [Interval(at(9), at(10))]
    google_calendar.add_busy(fake_google, BO, at(11), at(12))  # not seen: cached

    assert busy_times(google, at(0), at(24)) == [Interval(at(9), at(10))]
    assert len(fake_google.calls_to("/freeBusy")) == 1

    event_write(google, meeting())
    assert busy_times(google, at(0), at(24)) == [
        Interval(at(9), at(10)),
        Interval(at(11), at(12)),
        Interval(at(14), at(14, 30)),
    ]
    assert len(fake_google.calls_to("/freeBusy")) == 2


def test_a_revoked_google_grant_refuses_busy_times_and_marks_the_connection(google, fake_google):
    fake_google.revoke(BO)

    with pytest.raises(CalendarUnavailable) as refused:
        busy_times(google, at(0), at(24))

    assert refused.value.status == 503 and refused.value.code == "calendar_unavailable"
    assert "sign in again" in refused.value.detail
    google.refresh_from_db()
    assert google.calendar_status == CalendarStatus.ERROR and google.calendar_error
    assert google.mailbox.status == MailboxStatus.NEEDS_REAUTH


def test_a_grant_that_lost_the_calendar_is_flagged_again(member, fake_google, google):
    # Bo reconnected his Gmail with mail permissions only: the calendar needs consent again.
    gmail_mailbox(fake_google, member, BO, calendar=False, reconnect=google.mailbox)
    with pytest.raises(CalendarUnavailable):
        busy_times(google, at(0), at(24))
    google.refresh_from_db()
    assert google.calendar_status == CalendarStatus.NEEDS_CONSENT


# --- Microsoft 365 -----------------------------------------------------------------------------


def test_graph_busy_times_come_from_the_calendar_view(microsoft, fake_microsoft):
    microsoft_calendar.add_busy(fake_microsoft, BO, at(9), at(10))
    microsoft_calendar.add_busy(fake_microsoft, BO, at(10), at(11), show_as="free")
    microsoft_calendar.add_busy(fake_microsoft, BO, at(15), at(16), show_as="oof")

    assert busy_times(microsoft, at(0), at(24)) == [
        Interval(at(9), at(10)),
        Interval(at(15), at(16)),
    ]
    seen = fake_microsoft.graph_requests("GET", "/me/calendarView")
    assert seen and seen[0].headers["prefer"] == 'outlook.timezone="UTC"'


def test_graph_busy_times_follow_the_next_links(microsoft, fake_microsoft, monkeypatch):
    from meetings.calendars import microsoft as graph_calendar

    monkeypatch.setattr(graph_calendar, "PAGE_SIZE", 2)
    for hour in range(8, 13):
        microsoft_calendar.add_busy(fake_microsoft, BO, at(hour), at(hour, 30))

    assert len(busy_times(microsoft, at(0), at(24))) == 5
    assert len(fake_microsoft.graph_requests("GET", "calendarView")) == 3


def test_graph_event_is_written_updated_and_removed(microsoft, fake_microsoft):
    event_id = event_write(microsoft, meeting())
    events = fake_microsoft.calendar_events[BO]
    assert events[event_id]["subject"] == "Intro call with Dee"
    assert events[event_id]["start"] == {"dateTime": "2030-03-04T14:00:00", "timeZone": "UTC"}
    assert "attendees" not in events[event_id]  # Postkamer sends the invitations itself

    assert event_write(microsoft, meeting(hour=16, sequence=1), event_id) == event_id
    assert busy_times(microsoft, at(0), at(24)) == [Interval(at(16), at(16, 30))]

    event_remove(microsoft, event_id, meeting())
    assert events == {}
    assert busy_times(microsoft, at(0), at(24)) == []


def test_graph_without_the_calendar_permission_refuses(member, fake_microsoft):
    graph_mailbox(fake_microsoft, member, BO, calendar=False)
    connection = meetings_connect(user=member, address=BO, calendar="microsoft")
    assert connection.calendar_status == CalendarStatus.NEEDS_CONSENT

    with pytest.raises(CalendarUnavailable):
        busy_times(connection, at(0), at(24))
    assert not fake_microsoft.graph_requests("GET", "calendarView")


def test_no_calendar_means_no_busy_times_and_nothing_written(member, fake_google):
    gmail_mailbox(fake_google, member, BO, calendar=True)
    connection = meetings_connect(user=member, address=BO)

    assert busy_times(connection, at(0), at(24)) == []
    assert event_write(connection, meeting()) == ""
    event_remove(connection, "", meeting())
    assert not fake_google.calls_to("/calendar/")
