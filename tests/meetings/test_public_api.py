"""The public booking API (no login): free slots in the visitor's zone, booking,
409 slot_unavailable with alternatives, required answers, per-IP throttling with
Retry-After, and garbage input answered 400/404, never 500."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from unittest import mock

import pytest
from rest_framework.test import APIClient

from crm.models import Contact, TimelineEvent
from meetings.models import Booking
from tests.meetings.conftest import NOW, make_link

SLOTS = "/api/v1/public/links/bo-intro/slots/"
BOOK = "/api/v1/public/links/bo-intro/bookings/"


@pytest.fixture
def api():
    return APIClient()


@pytest.fixture
def link(member):
    return make_link(member, slug="bo-intro", questions=[{"label": "Company", "required": True}])


@pytest.fixture(autouse=True)
def _fixed_now():
    # The public views read the clock; the tests' weeks lie after NOW.
    with mock.patch("django.utils.timezone.now", return_value=NOW):
        yield


def booking_body(**overrides):
    body = {
        "start": "2026-03-02T10:00:00+01:00",
        "duration": 30,
        "name": "Dana Prospect",
        "email": "dana@prospect.example.com",
        "answers": {"Company": "Prospect BV"},
        "timezone": "Europe/London",
    }
    body.update(overrides)
    return body


def test_slots_are_listed_with_the_visitors_offset(api, link):
    answer = api.get(SLOTS, {"start": "2026-03-02", "days": 1, "tz": "America/New_York"})

    assert answer.status_code == 200, answer.json()
    body = answer.json()
    assert body["timezone"] == "America/New_York"
    assert body["slots"][0] == {
        "start": "2026-03-02T03:00:00-05:00",
        "end": "2026-03-02T03:30:00-05:00",
    }
    assert len(body["slots"]) == 31
    longer = api.get(SLOTS, {"start": "2026-03-02", "days": 1, "tz": "UTC", "duration": 60})
    assert longer.json()["slots"][0] == {
        "start": "2026-03-02T08:00:00+00:00",
        "end": "2026-03-02T09:00:00+00:00",
    }


def test_booking_answers_201_with_the_pages_and_takes_the_slot(api, link, member):
    answer = api.post(BOOK, booking_body(), format="json")

    assert answer.status_code == 201, answer.json()
    body = answer.json()
    booking = Booking.objects.get()
    assert body["id"] == str(booking.pk)
    assert body["start"] == "2026-03-02T09:00:00+00:00"  # London in winter
    assert body["end"] == "2026-03-02T09:30:00+00:00"
    assert body["cancel_url"].endswith(f"/meet/booking/{booking.token}/cancel/")
    assert body["reschedule_url"].endswith(f"/meet/booking/{booking.token}/reschedule/")
    assert booking.start == datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    assert booking.answers == {"Company": "Prospect BV"}
    contact = Contact.objects.get(account=member.account)
    assert TimelineEvent.objects.filter(contact=contact, type="meeting").count() == 1
    slots = api.get(SLOTS, {"start": "2026-03-02", "days": 1, "tz": "UTC"}).json()["slots"]
    assert "2026-03-02T09:00:00+00:00" not in [s["start"] for s in slots]


def test_a_taken_slot_is_409_with_alternatives_in_the_visitors_zone(api, link):
    api.post(BOOK, booking_body(), format="json")

    answer = api.post(
        BOOK, booking_body(email="eve@other.example.com", timezone="Asia/Tokyo"), format="json"
    )

    assert answer.status_code == 409
    body = answer.json()
    assert body["code"] == "slot_unavailable" and body["detail"]
    assert body["alternatives"]
    assert all(a["start"].endswith("+09:00") for a in body["alternatives"])
    assert "2026-03-02T18:00:00+09:00" not in [a["start"] for a in body["alternatives"]]
    assert Booking.objects.count() == 1


def test_a_time_not_offered_is_409_too(api, link):
    answer = api.post(BOOK, booking_body(start="2026-03-07T10:00:00+01:00"), format="json")

    assert answer.status_code == 409 and answer.json()["code"] == "slot_unavailable"
    assert not Booking.objects.exists()


def test_a_required_question_left_empty_is_invalid(api, link):
    answer = api.post(BOOK, booking_body(answers={"Company": " "}), format="json")

    assert answer.status_code == 400
    assert answer.json()["code"] == "invalid" and "answers" in answer.json()["errors"]
    assert not Booking.objects.exists()


@pytest.mark.parametrize(
    "query",
    [
        {"tz": "Mars/Olympus"},
        {"tz": "../../etc/passwd"},
        {"tz": "Etc/GMT+99"},
        {"start": "2026-02-30"},
        {"start": "yesterday"},
        {"days": "0"},
        {"days": "9999"},
        {"days": "x"},
        {"duration": "45"},
        {"duration": "-1"},
        {"duration": "99999999999999999999"},
    ],
)
def test_bad_slot_queries_are_400_invalid(api, link, query):
    answer = api.get(SLOTS, {"start": "2026-03-02", "days": 1, **query})

    assert answer.status_code == 400, (query, answer.content)
    assert answer.json()["code"] == "invalid" and answer.json()["detail"]


@pytest.mark.parametrize(
    "body",
    [
        booking_body(start="not a time"),
        booking_body(start="0001-01-01T00:30:00+01:00"),
        booking_body(start="9999-12-31T23:59:00-01:00"),
        booking_body(start="2026-03-02T10:00:00+01:00", duration=45),
        booking_body(email="nope"),
        booking_body(name=""),
        booking_body(timezone="Nowhere/Land"),
        booking_body(answers=["Company"]),
        booking_body(answers={"Company": {"nested": 1}}),
        booking_body(name="x" * 5000),
        {"start": None},
        [],
        "text",
    ],
)
def test_bad_bookings_are_400_never_500(api, link, body):
    answer = api.post(BOOK, body, format="json")

    assert answer.status_code == 400, answer.content
    assert answer.json()["code"] == "invalid"
    assert not Booking.objects.exists()


@pytest.mark.parametrize("start", ["9999-12-31", "0001-01-01", "2020-01-01"])
def test_days_far_away_have_no_slots(api, link, start):
    answer = api.get(SLOTS, {"start": start, "days": 62})

    assert answer.status_code == 200 and answer.json()["slots"] == []


def test_an_unknown_or_inactive_link_is_404(api, link):
    assert api.get("/api/v1/public/links/nobody/slots/").json()["code"] == "not_found"
    link.is_active = False
    link.save()
    assert api.get(SLOTS).status_code == 404
    assert api.post(BOOK, booking_body(), format="json").status_code == 404


def test_slot_listing_is_throttled_per_ip_with_retry_after(api, link, settings):
    settings.MEETINGS_SLOTS_RATE = "3/min"
    query = {"start": "2026-03-02", "days": 1}
    for _ in range(3):
        assert api.get(SLOTS, query).status_code == 200

    limited = api.get(SLOTS, query)

    assert limited.status_code == 429
    assert limited.json()["code"] == "rate_limited" and limited.json()["detail"]
    assert 0 < int(limited["Retry-After"]) <= 60
    # Another address is not held back, and booking has its own budget.
    assert api.get(SLOTS, query, REMOTE_ADDR="10.0.0.9").status_code == 200
    assert api.post(BOOK, booking_body(), format="json").status_code == 201


def test_booking_is_throttled_per_ip_with_its_own_rate(api, link, settings):
    settings.MEETINGS_BOOKINGS_RATE = "2/hour"
    api.post(BOOK, booking_body(), format="json")
    api.post(BOOK, booking_body(start="2026-03-02T11:00:00+01:00"), format="json")

    limited = api.post(BOOK, booking_body(start="2026-03-02T12:00:00+01:00"), format="json")

    assert limited.status_code == 429 and limited.json()["code"] == "rate_limited"
    assert 0 < int(limited["Retry-After"]) <= 3600
    assert Booking.objects.count() == 2
    forwarded = api.post(
        BOOK,
        booking_body(start="2026-03-02T12:00:00+01:00"),
        format="json",
        HTTP_X_FORWARDED_FOR="203.0.113.7",
    )
    assert forwarded.status_code == 429  # a forged forwarded-for does not reset the count
    assert api.get(SLOTS, {"start": "2026-03-02"}).status_code == 200


def test_the_slot_default_is_today_in_the_visitors_zone_for_a_week(api, link):
    body = api.get(SLOTS, {"tz": "Europe/Amsterdam"}).json()

    days = {s["start"][:10] for s in body["slots"]}
    first_day = NOW.date()
    assert days <= {str(first_day + timedelta(days=n)) for n in range(7)}
    assert "2026-02-23" in days and "2026-02-28" not in days
