"""The connected calendar of a meetings connection: busy times to leave out of the
free slots, and an event written for each booking.

One small interface over the providers (Google Calendar in ``google.py``, Microsoft
Graph in ``microsoft.py``, CalDAV in ``caldav.py``), chosen by
``connection.calendar``; a connection without a calendar has no busy times and
writes nothing.

Busy times are cached for ``BUSY_CACHE_SECONDS`` per connection and range (the
Django cache); writing or removing an event, and any change of the connection,
invalidates every range of that connection at once (a generation token in the key).

When the calendar cannot be read (the grant lacks the calendar permission, the
mailbox needs a new sign-in, the CalDAV server refuses or is down) ``busy_times``
raises ``CalendarUnavailable`` (503 ``calendar_unavailable``) and marks the
connection (``calendar_status = error`` and ``calendar_error``) instead of
answering "no busy times": offering no slots is better than double-booking the
user. Writes and removals fail the same way; the caller decides whether the
booking stands without its calendar event.
"""

from __future__ import annotations

import importlib
import logging
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from types import ModuleType

from django.core.cache import cache

from core.errors import DomainError
from inboxes.providers.base import ProviderError
from meetings.models import CalendarKind, CalendarStatus, MeetingsConnection

log = logging.getLogger(__name__)

BUSY_CACHE_SECONDS = 60


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
    sequence: int = 0


class CalendarUnavailable(DomainError):
    """The connected calendar cannot be read or written right now."""

    code = "calendar_unavailable"
    status = 503


# --- the cache -------------------------------------------------------------------------------


def _generation_key(connection: MeetingsConnection) -> str:
    return f"meetings:busy-gen:{connection.pk}"


def _busy_key(connection: MeetingsConnection, start: datetime, end: datetime) -> str:
    generation = cache.get(_generation_key(connection))
    if generation is None:
        generation = uuid.uuid4().hex
        cache.add(_generation_key(connection), generation, None)
        generation = cache.get(_generation_key(connection)) or generation
    return (
        f"meetings:busy:{connection.pk}:{generation}:"
        f"{int(start.timestamp())}:{int(end.timestamp())}"
    )


def calendar_forget(connection: MeetingsConnection) -> None:
    """Drop every cached busy range of ``connection`` (a new generation)."""
    cache.set(_generation_key(connection), uuid.uuid4().hex, None)


# --- dispatch --------------------------------------------------------------------------------


_BACKENDS = {
    CalendarKind.GOOGLE: "meetings.calendars.google",
    CalendarKind.MICROSOFT: "meetings.calendars.microsoft",
    CalendarKind.CALDAV: "meetings.calendars.caldav",
}


def _backend(connection: MeetingsConnection) -> ModuleType | None:
    """The provider module (busy, write, remove), imported on first use."""
    name = _BACKENDS.get(CalendarKind(connection.calendar)) if connection.calendar else None
    return importlib.import_module(name) if name else None


def _usable(connection: MeetingsConnection) -> None:
    """Refuse early when the calendar is known not to work (consent missing)."""
    from meetings.calendars.consent import calendar_status_refresh

    calendar_status_refresh(connection)
    if connection.calendar_status == CalendarStatus.NEEDS_CONSENT:
        raise CalendarUnavailable(
            f"The calendar of {connection.address} has not been allowed yet: open Settings > "
            "Meetings and give Postkamer access to the calendar.",
            step="consent",
        )
    if connection.mailbox_id is None or (
        connection.mailbox is not None and not connection.mailbox.is_connected
    ):
        raise CalendarUnavailable(
            f"{connection.address} is no longer a connected email; connect it again under "
            "Your email, then choose it under Meetings."
        )


def _failed(connection: MeetingsConnection, exc: Exception, doing: str) -> CalendarUnavailable:
    reason = str(getattr(exc, "detail", "") or exc) or type(exc).__name__
    log.warning("meetings calendar of %s could not %s: %s", connection.pk, doing, reason)
    MeetingsConnection.objects.filter(pk=connection.pk).update(
        calendar_status=CalendarStatus.ERROR, calendar_error=reason[:1000]
    )
    connection.calendar_status, connection.calendar_error = CalendarStatus.ERROR, reason[:1000]
    hint = "sign in again under Your email" if getattr(exc, "reauth", False) else "try again"
    return CalendarUnavailable(
        f"The calendar of {connection.address} could not {doing}: {reason} ({hint}).",
        step=getattr(exc, "extra", {}).get("step", "calendar"),
    )


def _succeeded(connection: MeetingsConnection) -> None:
    if connection.calendar_status == CalendarStatus.ERROR:
        MeetingsConnection.objects.filter(pk=connection.pk).update(
            calendar_status=CalendarStatus.OK, calendar_error=""
        )
        connection.calendar_status, connection.calendar_error = CalendarStatus.OK, ""


def busy_times(connection: MeetingsConnection, start: datetime, end: datetime) -> list[Interval]:
    """The calendar's busy intervals overlapping [start, end), cached briefly.

    Raises CalendarUnavailable when the calendar cannot be read (see the module)."""
    backend = _backend(connection)
    if backend is None:
        return []
    key = _busy_key(connection, start, end)
    cached = cache.get(key)
    if cached is not None:
        return [Interval(a, b) for a, b in cached]
    _usable(connection)
    try:
        found = backend.busy(connection, start, end)
    except (ProviderError, DomainError, OSError) as exc:
        raise _failed(connection, exc, "be read") from exc
    _succeeded(connection)
    intervals = sorted(
        (i for i in found if i.end > start and i.start < end), key=lambda i: (i.start, i.end)
    )
    cache.set(key, [(i.start, i.end) for i in intervals], BUSY_CACHE_SECONDS)
    return intervals


def event_write(connection: MeetingsConnection, event: CalendarEvent, event_id: str = "") -> str:
    """Write the booking's event (``event_id``: update that one, e.g. on a reschedule);
    its id in the calendar, or "" without a calendar."""
    backend = _backend(connection)
    if backend is None:
        return ""
    _usable(connection)
    try:
        written = str(backend.write(connection, event, event_id))
    except (ProviderError, DomainError, OSError) as exc:
        raise _failed(connection, exc, "take the meeting") from exc
    finally:
        calendar_forget(connection)
    _succeeded(connection)
    return written


def event_remove(connection: MeetingsConnection, event_id: str, event: CalendarEvent) -> None:
    """Remove the booking's event (cancelled); nothing without a calendar. An event
    already gone is not an error."""
    backend = _backend(connection)
    if backend is None:
        return
    _usable(connection)
    try:
        backend.remove(connection, event_id, event)
    except (ProviderError, DomainError, OSError) as exc:
        raise _failed(connection, exc, "remove the meeting") from exc
    finally:
        calendar_forget(connection)
    _succeeded(connection)
