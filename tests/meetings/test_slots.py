"""Free slots: the weekly availability on the link zone's wall clock (daylight-saving
changes included), shown for the visitor's days, less bookings with their buffers,
calendar busy times, the minimum notice and what lies beyond days_ahead."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from core.errors import Invalid
from meetings import slots as slots_module
from meetings.bookings import booking_create
from meetings.calendars import Interval
from meetings.links import link_update
from meetings.slots import free_slots
from tests.meetings.conftest import NOW, make_link

AMS = ZoneInfo("Europe/Amsterdam")


def local(slots, tz=AMS):
    return [s.start.astimezone(tz).strftime("%Y-%m-%d %H:%M%z") for s in slots]


def wall(slots, tz=AMS):
    return [s.start.astimezone(tz).strftime("%H:%M") for s in slots]


def test_slots_step_through_the_weekly_availability_in_the_links_zone(link):
    # Monday 2 March 2026, 09:00-17:00 Amsterdam (UTC+1), 30 minutes every 15.
    slots = free_slots(link, start=date(2026, 3, 2), days=1, tz=AMS, duration=30, now=NOW)

    assert wall(slots)[:3] == ["09:00", "09:15", "09:30"]
    assert wall(slots)[-1] == "16:30"
    assert len(slots) == 31
    assert slots[0].start == datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
    assert all(s.end - s.start == timedelta(minutes=30) for s in slots)
    assert all(s.start.tzinfo == UTC for s in slots)


def test_a_weekend_without_availability_has_no_slots(link):
    assert free_slots(link, start=date(2026, 3, 7), days=2, tz=AMS, duration=30, now=NOW) == []


def test_the_spring_forward_gap_is_skipped_and_slots_end_in_real_minutes(member):
    # Sunday 29 March 2026: Amsterdam's clocks go from 02:00 to 03:00.
    link = make_link(member, availability={"sun": [["01:00", "04:00"]]}, durations=[30])

    slots = free_slots(link, start=date(2026, 3, 29), days=1, tz=AMS, duration=30, now=NOW)

    assert local(slots) == [
        "2026-03-29 01:00+0100",
        "2026-03-29 01:15+0100",
        "2026-03-29 01:30+0100",
        "2026-03-29 01:45+0100",
        "2026-03-29 03:00+0200",
        "2026-03-29 03:15+0200",
        "2026-03-29 03:30+0200",
    ]
    # 01:45 CET + 30 real minutes is 03:15 CEST.
    assert slots[3].end.astimezone(AMS).strftime("%H:%M%z") == "03:15+0200"


def test_the_repeated_fall_back_hour_is_offered_once(member):
    # Sunday 25 October 2026: Amsterdam's clocks go from 03:00 back to 02:00.
    link = make_link(member, availability={"sun": [["01:00", "04:00"]]}, durations=[30])

    slots = free_slots(link, start=date(2026, 10, 25), days=1, tz=AMS, duration=30, now=NOW)

    walls = wall(slots)
    assert walls == [f"{h:02d}:{m:02d}" for h in (1, 2, 3) for m in (0, 15, 30, 45)][:11]
    assert len(set(walls)) == len(walls)
    two = slots[walls.index("02:00")]
    assert two.start.astimezone(AMS).utcoffset() == timedelta(hours=2)  # the first 02:00


def test_the_same_wall_time_moves_in_utc_across_the_change(link):
    before = free_slots(link, start=date(2026, 3, 27), days=1, tz=AMS, duration=30, now=NOW)
    after = free_slots(link, start=date(2026, 3, 30), days=1, tz=AMS, duration=30, now=NOW)

    assert before[0].start == datetime(2026, 3, 27, 8, 0, tzinfo=UTC)  # 09:00 CET
    assert after[0].start == datetime(2026, 3, 30, 7, 0, tzinfo=UTC)  # 09:00 CEST


def test_a_visitor_in_tokyo_sees_the_amsterdam_day_that_falls_in_their_day(link):
    # Tokyo's Monday 2 March is Sunday 15:00 UTC to Monday 15:00 UTC: Amsterdam's
    # Monday slots that start before 16:00 there, none of Tuesday's.
    tokyo = ZoneInfo("Asia/Tokyo")
    slots = free_slots(link, start=date(2026, 3, 2), days=1, tz=tokyo, duration=30, now=NOW)

    assert local(slots, tokyo)[0] == "2026-03-02 17:00+0900"
    assert local(slots, tokyo)[-1] == "2026-03-02 23:45+0900"
    assert len(slots) == 28


def test_a_visitor_whose_zone_changed_earlier_sees_the_hours_shifted(link):
    # New York springs forward on 8 March, Amsterdam on 29 March: in between the
    # two are five hours apart, not six.
    ny = ZoneInfo("America/New_York")
    slots = free_slots(link, start=date(2026, 3, 10), days=1, tz=ny, duration=30, now=NOW)

    assert local(slots, ny)[0] == "2026-03-10 04:00-0400"
    assert local(slots, ny)[-1] == "2026-03-10 11:30-0400"


def test_a_booking_and_its_buffers_keep_the_time_around_it_free(member):
    link = make_link(member, buffer_before=15, buffer_after=15)
    booking_create(
        link=link,
        start=datetime(2026, 3, 2, 9, 0, tzinfo=UTC),  # 10:00 Amsterdam
        duration=30,
        name="Dana",
        email="dana@prospect.example.com",
        answers={},
        timezone="Europe/Amsterdam",
        now=NOW,
    )

    slots = free_slots(link, start=date(2026, 3, 2), days=1, tz=AMS, duration=30, now=NOW)

    walls = wall(slots)
    # Padded slots may touch the booking's padded 09:45-10:45 but not overlap it.
    assert "09:00" in walls and "11:00" in walls
    assert not {"09:15", "09:30", "09:45", "10:00", "10:15", "10:30", "10:45"} & set(walls)


def test_another_links_booking_of_the_same_owner_takes_the_time_too(member, link):
    other = make_link(member, name="Demo", slug="bo-demo")
    booking_create(
        link=other,
        start=datetime(2026, 3, 2, 9, 0, tzinfo=UTC),
        duration=60,
        name="Dana",
        email="dana@prospect.example.com",
        answers={},
        timezone="UTC",
        now=NOW,
    )

    walls = wall(free_slots(link, start=date(2026, 3, 2), days=1, tz=AMS, duration=30, now=NOW))

    assert "09:30" in walls and "11:00" in walls
    assert not {"09:45", "10:00", "10:30", "10:45"} & set(walls)


def test_no_slot_starts_inside_the_minimum_notice(member):
    link = make_link(member, min_notice_minutes=120)
    now = datetime(2026, 3, 2, 9, 7, tzinfo=UTC)  # 10:07 Amsterdam

    slots = free_slots(link, start=date(2026, 3, 2), days=1, tz=AMS, duration=30, now=now)

    assert wall(slots)[0] == "12:15"  # the first start at or after 12:07


def test_nothing_is_offered_beyond_days_ahead(member):
    link = make_link(member, days_ahead=2)
    now = datetime(2026, 3, 2, 7, 0, tzinfo=UTC)  # Monday 08:00 Amsterdam

    slots = free_slots(link, start=date(2026, 3, 2), days=7, tz=AMS, duration=30, now=now)

    days = {s.start.astimezone(AMS).date() for s in slots}
    assert days == {date(2026, 3, 2), date(2026, 3, 3)}  # Wednesday 09:00 is past now + 2 days


def test_calendar_busy_times_and_buffers_leave_out_the_slots_they_touch(member):
    link = make_link(member, buffer_after=10)
    busy = [
        Interval(datetime(2026, 3, 2, 11, 0, tzinfo=UTC), datetime(2026, 3, 2, 12, 0, tzinfo=UTC))
    ]

    walls = wall(
        free_slots(link, start=date(2026, 3, 2), days=1, tz=AMS, duration=30, now=NOW, busy=busy)
    )

    # Busy 12:00-13:00 Amsterdam; a 30-minute slot plus 10 minutes after must end by 12:00.
    assert "11:15" in walls and "11:30" not in walls
    assert "12:45" not in walls and "13:00" in walls


def test_the_connected_calendar_is_asked_for_the_range(member, link, connection, monkeypatch):
    asked = []

    def fake_busy(conn, start, end):
        asked.append((conn, start, end))
        return [
            Interval(datetime(2026, 3, 2, 8, 0, tzinfo=UTC), datetime(2026, 3, 2, 9, 0, tzinfo=UTC))
        ]

    monkeypatch.setattr(slots_module, "busy_times", fake_busy)

    walls = wall(free_slots(link, start=date(2026, 3, 2), days=1, tz=AMS, duration=30, now=NOW))

    assert asked and asked[0][0] == connection
    assert asked[0][1] <= datetime(2026, 3, 2, 8, 0, tzinfo=UTC) < asked[0][2]
    assert walls[0] == "10:00"


def test_a_duration_the_link_does_not_offer_is_invalid(link):
    with pytest.raises(Invalid) as error:
        free_slots(link, start=date(2026, 3, 2), days=1, tz=AMS, duration=45, now=NOW)
    assert "duration" in error.value.extra["errors"]


def test_too_many_days_is_invalid(link, settings):
    settings.MEETINGS_SLOTS_MAX_DAYS = 31
    with pytest.raises(Invalid) as error:
        free_slots(link, start=date(2026, 3, 2), days=32, tz=AMS, duration=30, now=NOW)
    assert "days" in error.value.extra["errors"]


def test_an_inactive_link_offers_nothing(link):
    link_update(link=link, data={"is_active": False})
    assert free_slots(link, start=date(2026, 3, 2), days=1, tz=AMS, duration=30, now=NOW) == []
