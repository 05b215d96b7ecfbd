"""Send windows: business days, and daylight-saving changes both ways (zoneinfo)."""

from __future__ import annotations

from datetime import UTC, datetime, time
from zoneinfo import ZoneInfo

from crm.windows import Window, delay_then_window, next_send_moment, valid_timezone

AMS = ZoneInfo("Europe/Amsterdam")
NY = ZoneInfo("America/New_York")


def local(zone, *args, fold=0):
    return datetime(*args, tzinfo=zone, fold=fold)


def test_inside_the_window_is_now():
    window = Window(time(9), time(17), "Europe/Amsterdam")
    at = local(AMS, 2026, 3, 4, 10, 30)  # a Wednesday
    assert next_send_moment(window, at) == at.astimezone(UTC)


def test_before_and_after_the_window():
    window = Window(time(9), time(17), "Europe/Amsterdam")
    assert next_send_moment(window, local(AMS, 2026, 3, 4, 7)) == local(AMS, 2026, 3, 4, 9)
    assert next_send_moment(window, local(AMS, 2026, 3, 4, 17)) == local(AMS, 2026, 3, 5, 9)


def test_business_days_only_skips_the_weekend():
    window = Window(time(9), time(17), "Europe/Amsterdam")
    friday_evening = local(AMS, 2026, 3, 6, 18)
    assert next_send_moment(window, friday_evening) == local(AMS, 2026, 3, 9, 9)  # Monday
    every_day = Window(time(9), time(17), "Europe/Amsterdam", business_days_only=False)
    assert next_send_moment(every_day, friday_evening) == local(AMS, 2026, 3, 7, 9)


def test_spring_forward_keeps_the_local_time():
    # Europe/Amsterdam: 2026-03-29 02:00 CET -> 03:00 CEST (a Sunday); use every day.
    window = Window(time(9), time(17), "Europe/Amsterdam", business_days_only=False)
    opens = next_send_moment(window, local(AMS, 2026, 3, 29, 1))
    assert opens == datetime(2026, 3, 29, 7, tzinfo=UTC)  # 09:00 CEST
    before = next_send_moment(window, local(AMS, 2026, 3, 28, 1))
    assert before == datetime(2026, 3, 28, 8, tzinfo=UTC)  # 09:00 CET


def test_spring_forward_window_edge_in_the_gap():
    # America/New_York: 2026-03-08 02:00 -> 03:00; 02:30 does not exist that day.
    window = Window(time(2, 30), time(4), "America/New_York", business_days_only=False)
    opens = next_send_moment(window, local(NY, 2026, 3, 8, 0, 0))
    # Read with the offset before the change (EST, -5): 07:30 UTC = 03:30 EDT.
    assert opens == datetime(2026, 3, 8, 7, 30, tzinfo=UTC)
    assert opens.astimezone(NY).hour == 3
    # Still inside the window until 04:00 EDT.
    assert next_send_moment(window, local(NY, 2026, 3, 8, 3, 45)) == local(NY, 2026, 3, 8, 3, 45)
    # After it closes: the next day's 02:30 EDT.
    assert next_send_moment(window, local(NY, 2026, 3, 8, 4, 0)) == local(NY, 2026, 3, 9, 2, 30)


def test_fall_back_repeated_hour_is_inside():
    # America/New_York: 2026-11-01 02:00 EDT -> 01:00 EST; 01:00-02:00 happens twice.
    window = Window(time(0), time(1, 30), "America/New_York", business_days_only=False)
    first = local(NY, 2026, 11, 1, 1, 15, fold=0)
    second = local(NY, 2026, 11, 1, 1, 15, fold=1)
    assert next_send_moment(window, first) == first.astimezone(UTC)
    # The second 01:15 is still before the (second) 01:30: inside.
    assert next_send_moment(window, second) == second.astimezone(UTC)
    after = local(NY, 2026, 11, 1, 1, 45, fold=1)
    assert next_send_moment(window, after) == local(NY, 2026, 11, 2, 0, 0)


def test_window_opening_in_the_repeated_hour_opens_at_the_first():
    window = Window(time(1, 30), time(9), "America/New_York", business_days_only=False)
    opens = next_send_moment(window, local(NY, 2026, 11, 1, 0, 0))
    assert opens == datetime(2026, 11, 1, 5, 30, tzinfo=UTC)  # 01:30 EDT, the first


def test_delay_in_days_keeps_the_wall_time_across_a_change():
    window = Window(time(9), time(17), "Europe/Amsterdam", business_days_only=False)
    sent = local(AMS, 2026, 10, 23, 10)  # Friday, CEST; 25 Oct falls back
    later = delay_then_window(window, after=sent, days=3)
    assert later == local(AMS, 2026, 10, 26, 10)
    assert later.astimezone(AMS).hour == 10


def test_timezone_validation():
    assert valid_timezone("Europe/Amsterdam")
    assert not valid_timezone("Mars/Olympus")
    assert not valid_timezone("")
    assert not valid_timezone("../etc/passwd")
