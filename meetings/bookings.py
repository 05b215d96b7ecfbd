"""Bookings: made, cancelled and moved here (public API, booking pages, the owner).

The race: a booking claims every ``BookingClaim.CLAIM_MINUTES`` unit of its padded
interval ``[start - buffer_before, end + buffer_after)`` in the same transaction that
inserts it, and ``(owner, unit)`` is unique. Of two visitors asking for overlapping
times, the database lets exactly one insert commit; the other's insert fails with
IntegrityError (on PostgreSQL it waits for the first to commit, then fails), which is
answered as ``slot_unavailable`` with nearby free slots. The check against
``free_slots`` beforehand only refuses times that were never offered: it decides no
race.

Order inside the transaction: claims first (they decide), then the contact, the
timeline and the invitation (queued in the outbox, sent after commit). The calendar
event is written after the commit: no network I/O inside a transaction, and a
calendar that is down does not undo a booking the visitor was told about.
"""

from __future__ import annotations

import logging
import secrets
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone as django_timezone

from core.errors import Invalid
from core.text import check_single_line
from crm.contacts import contact_create, contact_existing
from crm.errors import ContactExists
from crm.models import Contact, TimelineType
from crm.timeline import timeline_add
from inboxes.addresses import canonical_address
from meetings import calendars
from meetings.calendars import CalendarUnavailable
from meetings.errors import SlotUnavailable
from meetings.ics import CANCEL, REQUEST
from meetings.invitations import calendar_event_of, invitation_send
from meetings.models import (
    Booking,
    BookingClaim,
    BookingState,
    MeetingsConnection,
    SchedulingLink,
)
from meetings.slots import Slot, check_duration, free_slots, max_days, zone

log = logging.getLogger(__name__)

ALTERNATIVES = 4
MAX_ANSWER = 2000
_UNIT = timedelta(minutes=BookingClaim.CLAIM_MINUTES)


class _Taken(Exception):
    """A claim's unique constraint refused: someone else holds part of that time."""


def booking_urls(booking: Booking) -> tuple[str, str]:
    base = f"{settings.PUBLIC_URL}/meet/booking/{booking.token}"
    return f"{base}/cancel/", f"{base}/reschedule/"


def booking_by_token(token: str) -> Booking | None:
    if not isinstance(token, str) or not 20 <= len(token) <= 64:
        return None
    return Booking.objects.select_related("link", "owner").filter(token=token).first()


def _claims(booking: Booking, link: SchedulingLink) -> list[BookingClaim]:
    unit = booking.start - timedelta(minutes=link.buffer_before)
    until = booking.end + timedelta(minutes=link.buffer_after)
    claims = []
    while unit < until:
        claims.append(BookingClaim(booking=booking, owner_id=booking.owner_id, unit=unit))
        unit += _UNIT
    return claims


def _claim(booking: Booking, link: SchedulingLink) -> None:
    try:
        with transaction.atomic():  # a savepoint: the caller's transaction stays usable
            BookingClaim.objects.bulk_create(_claims(booking, link))
    except IntegrityError:
        raise _Taken from None


def nearby_slots(
    link: SchedulingLink,
    *,
    around: datetime,
    duration: int,
    now: datetime | None = None,
    ignore_booking_id: Any = None,
    count: int = ALTERNATIVES,
) -> list[Slot]:
    """The ``count`` free slots nearest to ``around`` (a few days either side)."""
    try:
        first = (around.astimezone(UTC) - timedelta(days=3)).date()
        slots = free_slots(
            link,
            start=first,
            days=min(10, max_days()),
            tz=ZoneInfo("UTC"),
            duration=duration,
            now=now,
            ignore_booking_id=ignore_booking_id,
        )
    except (Invalid, OverflowError, CalendarUnavailable):
        return []  # no alternatives rather than no answer
    nearest = sorted(slots, key=lambda slot: abs((slot.start - around).total_seconds()))
    return sorted(nearest[:count], key=lambda slot: slot.start)


def _offered(
    link: SchedulingLink,
    start: datetime,
    duration: int,
    now: datetime | None,
    ignore_booking_id: Any = None,
) -> bool:
    day: date = start.astimezone(UTC).date()
    slots = free_slots(
        link,
        start=day,
        days=1,
        tz=ZoneInfo("UTC"),
        duration=duration,
        now=now,
        ignore_booking_id=ignore_booking_id,
    )
    return any(slot.start == start for slot in slots)


def _unavailable(
    link: SchedulingLink,
    start: datetime,
    duration: int,
    now: datetime | None,
    tz: ZoneInfo,
    *,
    taken: bool,
    ignore_booking_id: Any = None,
) -> SlotUnavailable:
    detail = (
        "Someone booked that time a moment ago: pick another."
        if taken
        else "That time is not open for booking: pick one of the free times."
    )
    alternatives = nearby_slots(
        link, around=start, duration=duration, now=now, ignore_booking_id=ignore_booking_id
    )
    return SlotUnavailable(detail, alternatives, tz=tz)


def _check_start(start: Any) -> datetime:
    if not isinstance(start, datetime) or start.tzinfo is None:
        raise Invalid(
            "Give the start with its UTC offset, e.g. 2026-03-02T09:00:00+01:00.",
            errors={"start": ["Give a date and time with its UTC offset."]},
        )
    try:
        return start.astimezone(UTC)
    except OverflowError:
        raise Invalid(
            "That date is out of range.", errors={"start": ["Pick a date in the coming weeks."]}
        ) from None


def _check_booker(
    link: SchedulingLink, name: Any, email: Any, answers: Any
) -> tuple[str, str, str, dict[str, str]]:
    errors: dict[str, list[str]] = {}
    if not isinstance(name, str) or not name.strip() or len(name.strip()) > 200:
        errors["name"] = ["Enter your name (up to 200 characters)."]
    else:
        name = check_single_line(name.strip(), field="name", label="name")
    canonical = ""
    if not isinstance(email, str) or not email.strip():
        errors["email"] = ["Enter your email address."]
    else:
        email = email.strip()
        try:
            canonical = canonical_address(email)
        except Invalid:
            errors["email"] = ["Enter a valid email address, like ann@example.com."]
    cleaned: dict[str, str] = {}
    if not isinstance(answers, dict) or not all(
        isinstance(key, str) and isinstance(value, str) for key, value in answers.items()
    ):
        errors["answers"] = ['Give answers as {"question": "answer"}.']
    else:
        labels = {str(q.get("label")): q for q in link.questions or [] if isinstance(q, dict)}
        unknown = [key for key in answers if key not in labels]
        missing = [
            label
            for label, question in labels.items()
            if question.get("required") and not str(answers.get(label, "")).strip()
        ]
        if unknown:
            errors["answers"] = [f"Not a question of this link: {', '.join(unknown)[:200]}."]
        elif missing:
            errors["answers"] = [f"Please answer: {', '.join(missing)}."]
        elif any(len(value) > MAX_ANSWER for value in answers.values()):
            errors["answers"] = [f"Keep each answer under {MAX_ANSWER} characters."]
        else:
            cleaned = {label: answers[label].strip() for label in labels if label in answers}
    if errors:
        raise Invalid("Some fields are invalid.", errors=errors)
    return name, email, canonical, cleaned


def _contact_for(link: SchedulingLink, *, email: str, canonical: str, name: str) -> Contact:
    """The booker's contact in the owner's account, made (owned by the link's owner)
    when new. A contact made at the same moment by another booking is reused."""
    found = contact_existing(link.account, canonical)
    if found is not None:
        return found
    try:
        return contact_create(account=link.account, email=email, name=name, owner=link.owner)
    except ContactExists:
        found = contact_existing(link.account, canonical)
        if found is None:  # pragma: no cover - the error names an existing contact
            raise
        return found


def _timeline(booking: Booking, what: str, *, at: datetime, by: str = "") -> None:
    if booking.contact_id is None:
        return
    assert booking.contact is not None
    detail: dict[str, Any] = {
        "booking": str(booking.pk),
        "state": what,
        "start": booking.start.astimezone(UTC).isoformat(),
        "end": booking.end.astimezone(UTC).isoformat(),
        "link": {"id": str(booking.link_id), "name": booking.link.name},
    }
    if by:
        detail["by"] = by
    if booking.cancel_reason and what == "cancelled":
        detail["reason"] = booking.cancel_reason
    timeline_add(booking.contact, TimelineType.MEETING, at=at, detail=detail)


def _uid() -> str:
    host = urlsplit(settings.PUBLIC_URL).hostname or "postkamer"
    return f"{uuid.uuid4().hex}@{host}"


def _connection(booking: Booking) -> MeetingsConnection | None:
    return MeetingsConnection.objects.filter(user_id=booking.owner_id).first()


def _calendar_write(booking: Booking) -> None:
    """Outside any transaction: the provider may be slow or down."""
    connection = _connection(booking)
    if connection is None:
        return
    try:
        event_id = calendars.event_write(
            connection, calendar_event_of(booking, connection), booking.calendar_event_id
        )
    except Exception:
        log.exception("booking %s: the calendar event could not be written", booking.pk)
        return
    if event_id and event_id != booking.calendar_event_id:
        booking.calendar_event_id = event_id
        Booking.objects.filter(pk=booking.pk).update(calendar_event_id=event_id)


def _calendar_remove(booking: Booking) -> None:
    connection = _connection(booking)
    if connection is None:
        return
    try:
        calendars.event_remove(
            connection, booking.calendar_event_id, calendar_event_of(booking, connection)
        )
    except Exception:
        log.exception("booking %s: the calendar event could not be removed", booking.pk)


def booking_create(
    *,
    link: SchedulingLink,
    start: datetime,
    duration: int,
    name: str,
    email: str,
    answers: dict[str, str],
    timezone: str,
    now: datetime | None = None,
) -> Booking:
    """Book ``start`` for ``duration`` minutes; ``slot_unavailable`` when that time is
    taken (now or in a race) or not offered."""
    now = now or django_timezone.now()
    start = _check_start(start)
    check_duration(link, duration)
    booker_zone = zone(timezone)
    name, email, canonical, answers = _check_booker(link, name, email, answers)
    if not _offered(link, start, duration, now):
        raise _unavailable(link, start, duration, now, booker_zone, taken=False)
    booking = Booking(
        account_id=link.account_id,
        link=link,
        owner_id=link.owner_id,
        start=start,
        end=start + timedelta(minutes=duration),
        name=name,
        email=email,
        answers=answers,
        timezone=booker_zone.key,
        uid=_uid(),
        token=secrets.token_urlsafe(32),
    )
    try:
        with transaction.atomic():
            booking.save()
            _claim(booking, link)
            booking.contact = _contact_for(link, email=email, canonical=canonical, name=name)
            booking.save(update_fields=["contact", "updated_at"])
            _timeline(booking, "booked", at=now, by="booker")
            invitation_send(booking, method=REQUEST)
    except _Taken:
        raise _unavailable(link, start, duration, now, booker_zone, taken=True) from None
    _calendar_write(booking)
    return booking


def booking_cancel(
    *, booking: Booking, by_owner: bool, reason: str = "", now: datetime | None = None
) -> Booking:
    """Cancel: the time is free again at once, both sides get a METHOD:CANCEL with the
    same UID and a higher SEQUENCE, the calendar event goes. Cancelling twice is one
    cancellation."""
    now = now or django_timezone.now()
    reason = check_single_line((reason or "").strip()[:500], field="reason", label="reason")
    with transaction.atomic():
        # The row lock makes a cancel racing a reschedule (or a second cancel) wait,
        # then see the state the first one left.
        locked = Booking.objects.select_for_update().get(pk=booking.pk)
        if locked.state == BookingState.CANCELLED:
            return locked
        BookingClaim.objects.filter(booking=locked).delete()
        locked.state = BookingState.CANCELLED
        locked.cancelled_at = now
        locked.cancel_reason = reason
        locked.sequence += 1
        locked.save()
        _timeline(locked, "cancelled", at=now, by="owner" if by_owner else "booker")
        invitation_send(locked, method=CANCEL)
    _calendar_remove(locked)
    return locked


def booking_reschedule(
    *,
    booking: Booking,
    start: datetime,
    duration: int | None = None,
    now: datetime | None = None,
) -> Booking:
    """Move a confirmed booking: same UID, SEQUENCE + 1, the old time's claims freed
    and the new one's taken in one transaction (a lost race leaves the booking where
    it was), an updated REQUEST to both."""
    now = now or django_timezone.now()
    start = _check_start(start)
    link = booking.link
    if duration is None:
        duration = int((booking.end - booking.start).total_seconds() // 60)
    check_duration(link, duration)
    try:
        booker_zone = zone(booking.timezone)
    except Invalid:
        booker_zone = ZoneInfo("UTC")
    if booking.state != BookingState.CONFIRMED:
        raise Invalid(
            "This booking was cancelled: book a new time from the link instead.",
            errors={"start": ["The booking is cancelled."]},
        )
    if not _offered(link, start, duration, now, ignore_booking_id=booking.pk):
        raise _unavailable(
            link, start, duration, now, booker_zone, taken=False, ignore_booking_id=booking.pk
        )
    try:
        with transaction.atomic():
            locked = Booking.objects.select_for_update().select_related("link").get(pk=booking.pk)
            if locked.state != BookingState.CONFIRMED:
                raise Invalid(
                    "This booking was cancelled: book a new time from the link instead.",
                    errors={"start": ["The booking is cancelled."]},
                )
            BookingClaim.objects.filter(booking=locked).delete()
            locked.start = start
            locked.end = start + timedelta(minutes=duration)
            locked.sequence += 1
            _claim(locked, link)
            locked.save()
            _timeline(locked, "rescheduled", at=now)
            invitation_send(locked, method=REQUEST)
    except _Taken:
        raise _unavailable(
            link, start, duration, now, booker_zone, taken=True, ignore_booking_id=booking.pk
        ) from None
    _calendar_write(locked)
    return locked
