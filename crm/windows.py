"""A sequence's send window: the next moment inside it at or after a given instant.

The window is a wall-clock range (``start`` to ``end``) in the sequence's time zone,
on every day or on Monday to Friday only. Every day is computed from the local date
with zoneinfo, so daylight-saving changes are handled by the time zone database:

- spring forward: a window edge that does not exist that day (02:30 in a gap from
  02:00 to 03:00) is read as the same wall time with the offset before the change
  (PEP 495, ``fold=0``), which is the moment after the gap; the window still opens
  and closes in order;
- fall back: a wall time that happens twice (01:30) opens at its first occurrence
  (``fold=0``) and closes at its second (``fold=1``), so the repeated hour is inside.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

# Two weeks always hold a business day, whatever the window.
_SEARCH_DAYS = 14


@dataclass(frozen=True)
class Window:
    start: time
    end: time
    timezone: str
    business_days_only: bool = True


def valid_timezone(name: str) -> bool:
    if not name or name != name.strip():
        return False
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


def timezone_choices() -> list[str]:
    return sorted(available_timezones())


def _as_utc(local: datetime) -> datetime:
    """An aware local wall time to UTC: a wall time in a spring-forward gap becomes
    the moment just after the gap (its ``fold=0`` offset is the one before the change)."""
    return local.astimezone(UTC)


def _edges(day: date, window: Window, zone: ZoneInfo) -> tuple[datetime, datetime]:
    """The window of ``day`` as a UTC interval [opens, closes)."""
    opens = _as_utc(datetime.combine(day, window.start, tzinfo=zone))
    # fold=1: the later of a repeated wall time, so the repeated hour is inside.
    closes = _as_utc(datetime.combine(day, window.end, tzinfo=zone).replace(fold=1))
    return opens, closes


def next_send_moment(window: Window, at: datetime) -> datetime:
    """The first instant at or after ``at`` (aware) inside the window, in UTC."""
    zone = ZoneInfo(window.timezone)
    at = at.astimezone(UTC)
    local_day = at.astimezone(zone).date()
    # Start a day earlier: a window may still be open from the previous local day's
    # point of view only if it spans midnight, which the validation refuses; one day
    # back costs nothing and keeps the loop honest at day boundaries.
    for offset in range(-1, _SEARCH_DAYS):
        day = local_day + timedelta(days=offset)
        if window.business_days_only and day.weekday() >= 5:
            continue
        opens, closes = _edges(day, window, zone)
        if closes <= opens or at >= closes:
            continue
        return max(at, opens)
    raise ValueError("This window has no moment to send in.")  # pragma: no cover


def delay_then_window(window: Window, *, after: datetime, days: int) -> datetime:
    """``days`` calendar days after ``after`` at the same wall time in the window's
    zone (not ``days`` * 24 hours, which a DST change would shift by an hour), moved
    into the window."""
    zone = ZoneInfo(window.timezone)
    local = after.astimezone(zone)
    later = datetime.combine(local.date() + timedelta(days=days), local.time(), tzinfo=zone)
    return next_send_moment(window, later)
