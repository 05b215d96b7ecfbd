"""Free slots of a scheduling link: the weekly availability in the link's zone, less
what is taken, shown for a range of days in the visitor's zone.

How a slot is made:

* **Wall times in the link's zone.** Each availability window ("mon": [["09:00",
  "17:00"]]) is stepped through on the wall clock of ``link.timezone`` by
  ``slot_step(duration)`` minutes: 15, or the duration when it is shorter. On a
  daylight-saving change a wall time that does not exist (02:30 on the spring-forward
  Sunday in Europe/Amsterdam) is skipped, and one that happens twice (02:30 on the
  fall-back Sunday) is offered once, its first occurrence (``fold=0``). A slot ends
  ``duration`` real minutes after it starts, and must end inside its window.
* **Aligned to claims.** Window times, durations and buffers are multiples of
  ``BookingClaim.CLAIM_MINUTES`` (links.py validates), and so is every zone offset in
  use today, so every slot boundary is a claim-unit boundary in UTC.
* **Buffers.** A slot is free when its padded interval ``[start - buffer_before,
  end + buffer_after)`` overlaps nothing busy. A confirmed booking holds (claims) its
  own padded interval, so *padded intervals never overlap*: two meetings are at least
  one booking's ``buffer_after`` plus the next one's ``buffer_before`` apart (each
  side's own buffers, also between bookings of two links of one owner). The claims are
  exactly what the database's unique constraint decides races on, so a slot shown free
  is one the constraint would accept. Calendar busy times get the slot's buffers too:
  a buffer is time kept free around the meeting, whatever the neighbour is.
* **Notice and horizon.** A slot starts at least ``min_notice_minutes`` after ``now``
  and less than ``days_ahead`` days after it.
* **Visitor's days.** ``start`` and ``days`` are dates in the visitor's zone ``tz``:
  slots starting in ``[start 00:00, start + days 00:00)`` there.

Speed: busy times (claims, one interval per booking, and calendar) are merged once
into sorted disjoint UTC intervals; each candidate is one binary search (bench/meetings.py).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.conf import settings
from django.db.models import Max, Min
from django.utils import timezone as django_timezone

from core.errors import Invalid
from meetings.calendars import Interval, busy_times
from meetings.models import BookingClaim, MeetingsConnection, SchedulingLink

STEP_MINUTES = 15
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True)
class Slot:
    """[start, end), aware datetimes in UTC."""

    start: datetime
    end: datetime


def max_days() -> int:
    return int(getattr(settings, "MEETINGS_SLOTS_MAX_DAYS", 62))


def slot_step(duration: int) -> int:
    """Minutes between slot starts: 15, or the duration when shorter, rounded up to
    a whole number of claim units."""
    unit = BookingClaim.CLAIM_MINUTES
    step = min(STEP_MINUTES, duration)
    return max(unit, -(-step // unit) * unit)


def zone(name: str) -> ZoneInfo:
    """A zone by IANA name; Invalid (field ``timezone``) for anything else."""
    try:
        if not isinstance(name, str) or not name or len(name) > 64 or name.startswith("/"):
            raise ValueError(name)
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise Invalid(
            "Choose a time zone such as Europe/Amsterdam.",
            errors={"timezone": ["Not a known time zone."]},
        ) from None


def wall_minutes(text: str) -> int:
    """ "HH:MM" -> minutes after midnight; "24:00" is the end of the day."""
    hours, _, minutes = text.partition(":")
    value = int(hours) * 60 + int(minutes)
    if not (hours.isdigit() and minutes.isdigit() and len(minutes) == 2 and 0 <= value <= 1440):
        raise ValueError(text)
    if int(minutes) >= 60:
        raise ValueError(text)
    return value


def _aware(day: date, minutes: int, tz: tzinfo) -> tuple[datetime, bool]:
    """The first occurrence of wall time ``minutes`` on ``day`` in ``tz``, as UTC,
    and whether that wall time exists at all (not in a spring-forward gap)."""
    if minutes >= 1440:
        day, minutes = day + timedelta(days=1), minutes - 1440
    naive = datetime.combine(day, time(minutes // 60, minutes % 60))
    local = naive.replace(tzinfo=tz, fold=0)
    utc = local.astimezone(UTC)
    exists = utc.astimezone(tz).replace(tzinfo=None) == naive
    return utc, exists


def _midnight(day: date, tz: tzinfo) -> datetime:
    # A zone whose clocks jump at midnight has no 00:00 that day: the day then starts
    # at the first instant after the gap, which is where a gap's wall time lands.
    utc, exists = _aware(day, 0, tz)
    if exists:
        return utc
    return datetime.combine(day, time(0), tzinfo=tz).astimezone(UTC)


class _Busy:
    """Sorted, merged, disjoint [start, end) intervals (aware datetimes, all in UTC:
    comparing datetimes that share one tzinfo is a plain field comparison)."""

    def __init__(self, intervals: Iterable[tuple[datetime, datetime]]) -> None:
        starts: list[datetime] = []
        ends: list[datetime] = []
        for start, end in sorted(intervals):
            if end <= start:
                continue
            if ends and start <= ends[-1]:
                if end > ends[-1]:
                    ends[-1] = end
                continue
            starts.append(start)
            ends.append(end)
        self.starts = starts
        self.ends = ends

    def overlaps(self, start: datetime, end: datetime) -> bool:
        index = bisect_right(self.ends, start)  # first interval ending after ``start``
        return index < len(self.starts) and self.starts[index] < end


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo is UTC else moment.astimezone(UTC)


def _calendar_busy(link: SchedulingLink, start: datetime, end: datetime) -> list[Interval]:
    connection = MeetingsConnection.objects.filter(user_id=link.owner_id).first()
    if connection is None:
        return []
    return busy_times(connection, start, end)


def check_duration(link: SchedulingLink, duration: Any) -> int:
    offered = [int(d) for d in link.durations or []]
    if not isinstance(duration, int) or isinstance(duration, bool) or duration not in offered:
        choices = ", ".join(str(d) for d in offered) or "none"
        raise Invalid(
            f"This link offers meetings of {choices} minutes.",
            errors={"duration": [f"Choose one of: {choices}."]},
        )
    return duration


def free_slots(
    link: SchedulingLink,
    *,
    start: date,
    days: int,
    tz: ZoneInfo,
    duration: int,
    now: datetime | None = None,
    busy: list[Interval] | None = None,
    ignore_booking_id: Any = None,
) -> list[Slot]:
    """The free slots starting on the visitor's days ``[start, start + days)`` in ``tz``.

    ``busy``: the calendar's busy intervals, when the caller has them (the bench);
    otherwise they are read from the owner's connected calendar. ``ignore_booking_id``:
    a booking being rescheduled, whose own time counts as free.
    """
    check_duration(link, duration)
    if not isinstance(days, int) or not 1 <= days <= max_days():
        raise Invalid(
            f"Ask for 1 to {max_days()} days.",
            errors={"days": [f"Must be between 1 and {max_days()}."]},
        )
    if not link.is_active:
        return []
    now = now or django_timezone.now()
    today = now.date()
    if (
        start > today + timedelta(days=link.days_ahead + 1)
        or start + timedelta(days=days + 1) < today
    ):
        return []  # wholly past or beyond the horizon (and no date arithmetic near year 9999)
    link_tz = zone(link.timezone) if link.timezone else ZoneInfo("UTC")
    first = max(_midnight(start, tz), now + timedelta(minutes=link.min_notice_minutes))
    last = min(_midnight(start + timedelta(days=days), tz), now + timedelta(days=link.days_ahead))
    if first >= last:
        return []
    length = timedelta(minutes=duration)
    before = timedelta(minutes=link.buffer_before)
    after = timedelta(minutes=link.buffer_after)
    lo, hi = first - before, last + length + after

    # Each booking's claims are one contiguous run of units: its padded interval.
    claims = BookingClaim.objects.filter(owner_id=link.owner_id, unit__gte=lo - _UNIT, unit__lt=hi)
    ignored: tuple[datetime, datetime] | None = None
    if ignore_booking_id is not None:
        claims = claims.exclude(booking_id=ignore_booking_id)
        ignored = _booking_times(ignore_booking_id)
    held = claims.values("booking_id").annotate(first=Min("unit"), last=Max("unit"))
    intervals: list[tuple[datetime, datetime]] = [
        (_utc(row["first"]), _utc(row["last"]) + _UNIT) for row in held
    ]
    calendar = busy if busy is not None else _calendar_busy(link, lo, hi)
    intervals.extend(
        (_utc(item.start), _utc(item.end))
        for item in calendar
        # The rescheduled booking's own event is still in the calendar.
        if ignored is None or (item.start, item.end) != ignored
    )
    taken = _Busy(intervals)

    step = slot_step(duration)
    found: dict[datetime, Slot] = {}
    day = first.astimezone(link_tz).date() - timedelta(days=1)
    end_day = last.astimezone(link_tz).date()
    while day <= end_day:
        for window_start, window_end in _windows(link.availability, day):
            for slot_start in _starts(day, window_start, window_end, duration, step, link_tz):
                if not first <= slot_start < last:
                    continue
                slot_end = slot_start + length
                if taken.overlaps(slot_start - before, slot_end + after):
                    continue
                found.setdefault(slot_start, Slot(slot_start, slot_end))
        day += timedelta(days=1)
    return [found[key] for key in sorted(found)]


_UNIT = timedelta(minutes=BookingClaim.CLAIM_MINUTES)


def _booking_times(booking_id: Any) -> tuple[datetime, datetime] | None:
    from meetings.models import Booking

    row = Booking.objects.filter(pk=booking_id).values_list("start", "end").first()
    return (row[0], row[1]) if row else None


def _windows(availability: Any, day: date) -> list[tuple[int, int]]:
    """The day's windows as wall minutes; malformed entries (links.py refuses them on
    save) are skipped rather than failing a public page."""
    windows = []
    entries = (
        availability.get(WEEKDAYS[day.weekday()], []) if isinstance(availability, dict) else []
    )
    for entry in entries if isinstance(entries, list) else []:
        try:
            begin, end = wall_minutes(entry[0]), wall_minutes(entry[1])
        except (ValueError, TypeError, IndexError, AttributeError):
            continue
        if begin < end:
            windows.append((begin, end))
    return windows


def _starts(
    day: date, begin: int, end: int, duration: int, step: int, tz: tzinfo
) -> Iterable[datetime]:
    """Slot starts (UTC) in one window of ``day``'s wall clock."""
    window_start, _ = _aware(day, begin, tz)
    window_end, _ = _aware(day, end, tz)
    if (
        window_start.astimezone(tz).utcoffset() == window_end.astimezone(tz).utcoffset()
        and (_aware(day, begin, tz)[1])
    ):
        # No offset change inside the window (nearly every day): plain arithmetic.
        moment = window_start
        length = timedelta(minutes=duration)
        while moment + length <= window_end:
            yield moment
            moment += timedelta(minutes=step)
        return
    # A daylight-saving change inside the window: each wall time on its own.
    seen: set[datetime] = set()
    for minutes in range(begin, end - duration + 1, step):
        moment, exists = _aware(day, minutes, tz)
        if not exists or moment in seen:
            continue  # in the spring-forward gap
        if moment + timedelta(minutes=duration) > window_end:
            continue
        seen.add(moment)
        yield moment
