"""The questions asked before the meetings tool's destructive actions (core/confirm.py):
removing the connection, deleting a scheduling link, the owner cancelling a booking.
Each says what will be lost, counted at the moment it is asked."""

from __future__ import annotations

import uuid
from datetime import datetime
from zoneinfo import ZoneInfo

from django.conf import settings
from django.urls import reverse
from django.utils import timezone
from django.utils.dateformat import format as date_format

from core.confirm import Confirmation
from meetings.models import Booking, BookingState, MeetingsConnection, SchedulingLink


def _plural(count: int, one: str, many: str) -> str:
    return one if count == 1 else many


def _upcoming(owner_id: uuid.UUID, now: datetime | None) -> int:
    return Booking.objects.filter(
        owner_id=owner_id, state=BookingState.CONFIRMED, end__gte=now or timezone.now()
    ).count()


def remove_question(connection: MeetingsConnection, now: datetime | None = None) -> Confirmation:
    calendar = (
        " and stops reading your calendar"
        if connection.calendar and connection.calendar != "none"
        else ""
    )
    active = SchedulingLink.objects.filter(owner_id=connection.user_id, is_active=True).count()
    if active:
        links = (
            f" Your {active} scheduling link{_plural(active, '', 's')} "
            f"stop{_plural(active, 's', '')} taking bookings: "
            f"{_plural(active, 'its page says', 'their pages say')} the link isn't available."
        )
    else:
        links = " You have no scheduling links taking bookings."
    upcoming = _upcoming(connection.user_id, now)
    if upcoming:
        bookings = (
            f" Your {upcoming} upcoming booking{_plural(upcoming, '', 's')} "
            f"stay{_plural(upcoming, 's', '')} in place, but without a connection no "
            "cancellation or new time can be emailed for "
            f"{_plural(upcoming, 'it', 'them')}: cancel first, on the Meetings page, any "
            "that should not happen."
        )
    else:
        bookings = " You have no upcoming bookings."
    return Confirmation(
        title="Remove the meetings connection?",
        lost=(
            f"The meetings tool stops sending invitations from {connection.address}{calendar}."
            f"{links}{bookings} Your links are kept: connect again later and they take "
            "bookings again."
        ),
        button="Remove meetings connection",
        cancel_url=reverse("settings-meetings"),
    )


def link_delete_question(link: SchedulingLink, now: datetime | None = None) -> Confirmation:
    upcoming = link.bookings.filter(
        state=BookingState.CONFIRMED, end__gte=now or timezone.now()
    ).count()
    if upcoming:
        meetings = (
            f" Its {upcoming} upcoming meeting{_plural(upcoming, '', 's')} "
            f"{_plural(upcoming, 'is', 'are')} cancelled: each guest gets a cancellation "
            "and the event leaves the calendars. To keep "
            f"{_plural(upcoming, 'it', 'them')}, pause the link instead (untick “Taking "
            "bookings”)."
        )
    else:
        meetings = " It has no upcoming meetings."
    return Confirmation(
        title=f"Delete “{link.name}”?",
        lost=(
            f"{settings.PUBLIC_URL}/meet/{link.slug}/ stops taking bookings; people who open "
            f"it see that the link isn't available.{meetings} Past meetings stay on the "
            "contacts' timelines."
        ),
        button="Delete link",
        cancel_url=reverse("settings-meetings"),
    )


def booking_cancel_question(booking: Booking) -> Confirmation:
    zone = booking.link.timezone
    start = booking.start.astimezone(ZoneInfo(zone))
    end = booking.end.astimezone(ZoneInfo(zone))
    when = f"{date_format(start, 'l j F Y, H:i')}–{date_format(end, 'H:i')} ({zone})"
    return Confirmation(
        title=f"Cancel the meeting with {booking.name}?",
        lost=(
            f"{when}, {booking.link.name}: {booking.name} <{booking.email}> gets a "
            "cancellation email that removes the meeting from their calendar, and the time "
            "is free again on your link."
        ),
        button="Cancel meeting",
        cancel_url=reverse("settings-meetings"),
        carry=("next", "reason"),
    )
