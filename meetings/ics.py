"""The iCalendar (RFC 5545/5546) part of a booking's invitation, written with icalendar.

One VEVENT per booking, its UID stable for the booking's life: a REQUEST when booked,
an updated REQUEST (SEQUENCE + 1) when rescheduled, a CANCEL (same UID, higher
SEQUENCE, STATUS:CANCELLED) when cancelled, so mail clients update the one event.
Times are written in UTC.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from django.utils import timezone as django_timezone

from core.text import one_line

if TYPE_CHECKING:
    from icalendar import vCalAddress

PRODID = "-//Postkamer//Meetings//EN"
REQUEST = "REQUEST"
CANCEL = "CANCEL"


@dataclass(frozen=True)
class Invite:
    """What the ICS says about a booking (bookings.py builds it)."""

    uid: str
    sequence: int
    start: datetime
    end: datetime
    summary: str
    description: str
    organizer_address: str
    organizer_name: str
    booker_address: str
    booker_name: str
    owner_address: str
    owner_name: str


def _address(address: str, name: str, **params: str) -> vCalAddress:
    from icalendar import vCalAddress, vText

    value = vCalAddress(f"mailto:{address}")
    if name:
        value.params["CN"] = vText(one_line(name))
    for key, param in params.items():
        value.params[key] = vText(param)
    return value


def ics_text(invite: Invite, *, method: str, now: datetime | None = None) -> str:
    """The VCALENDAR text (CRLF lines) for ``method`` REQUEST or CANCEL."""
    # Imported here: icalendar is 7 MiB that only a booking needs (not every process).
    from icalendar import Calendar, Event

    calendar = Calendar()
    calendar.add("prodid", PRODID)
    calendar.add("version", "2.0")
    calendar.add("calscale", "GREGORIAN")
    calendar.add("method", method)
    event = Event()
    event.add("uid", invite.uid)
    event.add("sequence", invite.sequence)
    event.add("dtstamp", (now or django_timezone.now()).astimezone(UTC))
    event.add("dtstart", invite.start.astimezone(UTC))
    event.add("dtend", invite.end.astimezone(UTC))
    event.add("summary", invite.summary)
    if invite.description:
        event.add("description", invite.description)
    event.add("organizer", _address(invite.organizer_address, invite.organizer_name))
    event.add(
        "attendee",
        _address(
            invite.booker_address,
            invite.booker_name,
            ROLE="REQ-PARTICIPANT",
            PARTSTAT="ACCEPTED",
            CUTYPE="INDIVIDUAL",
        ),
    )
    if invite.owner_address and invite.owner_address.lower() != invite.booker_address.lower():
        event.add(
            "attendee",
            _address(
                invite.owner_address,
                invite.owner_name,
                ROLE="CHAIR",
                PARTSTAT="ACCEPTED",
                CUTYPE="INDIVIDUAL",
            ),
        )
    event.add("status", "CANCELLED" if method == CANCEL else "CONFIRMED")
    event.add("transp", "OPAQUE")
    calendar.add_component(event)
    ical: bytes = calendar.to_ical()
    return ical.decode("utf-8")
