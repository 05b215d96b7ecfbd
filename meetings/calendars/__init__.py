"""The connected calendar of a meetings connection: busy times to leave out of the
free slots, and an event written for each booking.

One small interface over the providers (Google Calendar, Microsoft Graph, CalDAV);
a connection without a calendar has no busy times and writes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from meetings.models import MeetingsConnection


@dataclass(frozen=True)
class Interval:
    """[start, end), aware datetimes in UTC."""

    start: datetime
    end: datetime


@dataclass(frozen=True)
class CalendarEvent:
    uid: str
    start: datetime
    end: datetime
    summary: str
    description: str = ""
    organizer: str = ""
    attendees: list[str] = field(default_factory=list)


def busy_times(connection: MeetingsConnection, start: datetime, end: datetime) -> list[Interval]:
    """The calendar's busy intervals overlapping [start, end)."""
    return []


def event_write(connection: MeetingsConnection, event: CalendarEvent) -> str:
    """Write (or update, same uid) the booking's event; its id in the calendar, or ""."""
    return ""


def event_remove(connection: MeetingsConnection, event_id: str, event: CalendarEvent) -> None:
    """Remove the booking's event (cancelled); nothing without a calendar."""
