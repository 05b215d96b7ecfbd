"""/api/v1/meetings/links/ and /api/v1/meetings/bookings/: the caller's own links and
bookings (another user's are 404), validation as field errors, cancel by the owner."""

from __future__ import annotations

from datetime import UTC, datetime
from unittest import mock

import pytest

from meetings.bookings import booking_create
from meetings.models import Booking, BookingClaim, SchedulingLink
from tests.meetings.conftest import NOW, make_link

LINK = {
    "name": "Intro call",
    "slug": "bo-intro",
    "durations": [30, 15],
    "timezone": "Europe/Amsterdam",
    "availability": {"mon": [["09:00", "12:00"], ["13:00", "17:00"]], "fri": [["09:00", "12:00"]]},
    "buffer_before": 5,
    "buffer_after": 10,
    "min_notice_minutes": 120,
    "days_ahead": 30,
    "questions": [{"label": "Company", "required": True}],
}


def test_a_member_creates_reads_changes_and_deletes_a_link(member_api, member, settings):
    created = member_api.post("/api/v1/meetings/links/", LINK, format="json")

    assert created.status_code == 201, created.json()
    body = created.json()
    assert body["url"] == f"{settings.PUBLIC_URL}/meet/bo-intro/"
    assert body["durations"] == [15, 30]
    assert body["availability"]["mon"] == [["09:00", "12:00"], ["13:00", "17:00"]]
    assert body["questions"] == [{"label": "Company", "required": True}]
    assert {k: body[k] for k in ("buffer_before", "buffer_after", "min_notice_minutes")} == {
        "buffer_before": 5,
        "buffer_after": 10,
        "min_notice_minutes": 120,
    }
    link_id = body["id"]

    listed = member_api.get("/api/v1/meetings/links/").json()
    assert [item["id"] for item in listed["results"]] == [link_id] and listed["next"] is None

    changed = member_api.patch(
        f"/api/v1/meetings/links/{link_id}/", {"name": "Demo", "days_ahead": 14}, format="json"
    )
    assert changed.status_code == 200
    assert changed.json()["name"] == "Demo" and changed.json()["slug"] == "bo-intro"
    assert member_api.get(f"/api/v1/meetings/links/{link_id}/").json()["days_ahead"] == 14

    assert member_api.delete(f"/api/v1/meetings/links/{link_id}/").status_code == 204
    assert not SchedulingLink.objects.exists()


def test_a_slug_is_made_from_the_name_when_none_is_given(member_api):
    body = member_api.post("/api/v1/meetings/links/", {"name": "Quick Chat!"}, format="json").json()
    assert body["slug"] == "quick-chat"
    again = member_api.post("/api/v1/meetings/links/", {"name": "Quick chat"}, format="json")
    assert again.status_code == 201 and again.json()["slug"].startswith("quick-chat-")


def test_another_users_link_is_404(member, admin_api, outsider_api):
    link = make_link(member, slug="bo-intro")
    for client in (admin_api, outsider_api):
        assert client.get(f"/api/v1/meetings/links/{link.pk}/").status_code == 404
        assert (
            client.patch(
                f"/api/v1/meetings/links/{link.pk}/", {"name": "Mine"}, format="json"
            ).json()["code"]
            == "not_found"
        )
        assert client.delete(f"/api/v1/meetings/links/{link.pk}/").status_code == 404
        assert client.get("/api/v1/meetings/links/").json()["results"] == []
    link.refresh_from_db()
    assert link.name == "Intro call"


def test_a_taken_slug_is_refused(member, admin_api):
    make_link(member, slug="bo-intro")
    answer = admin_api.post(
        "/api/v1/meetings/links/", {"name": "Mine", "slug": "bo-intro"}, format="json"
    )
    assert answer.status_code == 400
    assert answer.json()["code"] == "invalid" and "slug" in answer.json()["errors"]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"durations": [7]}, "durations"),
        ({"durations": []}, "durations"),
        ({"durations": ["x"]}, "durations"),
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"availability": {"mon": [["17:00", "09:00"]]}}, "availability"),
        ({"availability": {"funday": [["09:00", "10:00"]]}}, "availability"),
        ({"availability": {"mon": [["09:00", "25:00"]]}}, "availability"),
        ({"availability": {"mon": [["09:02", "10:00"]]}}, "availability"),
        ({"availability": {"mon": [["09:00", "12:00"], ["11:00", "13:00"]]}}, "availability"),
        ({"availability": {"mon": "09-17"}}, "availability"),
        ({"buffer_before": 3}, "buffer_before"),
        ({"buffer_after": -5}, "buffer_after"),
        ({"days_ahead": 0}, "days_ahead"),
        ({"questions": [{"label": "A"}, {"label": "a"}]}, "questions"),
        ({"questions": [{"label": ""}]}, "questions"),
        ({"slug": "Not A Slug"}, "slug"),
        ({"name": "a\nb"}, "name"),
    ],
)
def test_invalid_link_fields_are_named(member_api, change, field):
    answer = member_api.post("/api/v1/meetings/links/", {**LINK, **change}, format="json")

    assert answer.status_code == 400, answer.json()
    assert answer.json()["code"] == "invalid"
    assert field in answer.json()["errors"]
    assert not SchedulingLink.objects.exists()


def book(link, start, email="dana@prospect.example.com"):
    return booking_create(
        link=link,
        start=start,
        duration=30,
        name="Dana",
        email=email,
        answers={},
        timezone="UTC",
        now=NOW,
    )


def test_the_caller_lists_their_own_bookings_newest_first_and_cancels_one(
    member, member_api, admin_api, admin
):
    link = make_link(member, slug="bo-intro")
    first = book(link, datetime(2026, 3, 2, 9, 0, tzinfo=UTC))
    second = book(link, datetime(2026, 3, 3, 9, 0, tzinfo=UTC), email="eve@other.example.com")
    book(make_link(admin, slug="ann-intro"), datetime(2026, 3, 2, 9, 0, tzinfo=UTC))

    page = member_api.get("/api/v1/meetings/bookings/").json()

    assert [b["id"] for b in page["results"]] == [str(second.pk), str(first.pk)]
    assert page["next"] is None
    assert page["results"][0]["link"] == {"id": str(link.pk), "name": "Intro call"}
    assert page["results"][0]["state"] == "confirmed"

    assert admin_api.post(f"/api/v1/meetings/bookings/{first.pk}/cancel/").status_code == 404
    answer = member_api.post(
        f"/api/v1/meetings/bookings/{first.pk}/cancel/", {"reason": "Travel"}, format="json"
    )
    assert answer.status_code == 200
    assert answer.json()["state"] == "cancelled" and answer.json()["cancel_reason"] == "Travel"
    assert not BookingClaim.objects.filter(booking=first).exists()
    assert Booking.objects.get(pk=second.pk).state == "confirmed"


def test_bookings_are_paged(member, member_api):
    link = make_link(member, slug="bo-intro")
    for hour in range(8, 11):
        book(link, datetime(2026, 3, 2, hour, 0, tzinfo=UTC), email=f"p{hour}@example.com")

    first = member_api.get("/api/v1/meetings/bookings/?page_size=2").json()
    second = member_api.get(first["next"]).json()

    assert len(first["results"]) == 2 and len(second["results"]) == 1
    assert member_api.get("/api/v1/meetings/bookings/?cursor=garbage").json()["code"] == "invalid"


def test_links_need_a_login(client):
    assert client.get("/api/v1/meetings/links/").status_code == 401
    assert client.get("/api/v1/meetings/bookings/").json()["code"] == "not_authenticated"


def test_deleting_a_link_cancels_its_upcoming_meetings_first(member, member_api):
    from crm.models import TimelineEvent

    link = make_link(member, slug="bo-intro")
    booking = book(link, datetime(2026, 3, 2, 9, 0, tzinfo=UTC))
    contact = booking.contact

    with mock.patch("django.utils.timezone.now", return_value=NOW):
        assert member_api.delete(f"/api/v1/meetings/links/{link.pk}/").status_code == 204

    assert not Booking.objects.exists() and not BookingClaim.objects.exists()
    states = [e.detail["state"] for e in TimelineEvent.objects.filter(contact=contact)]
    assert sorted(states) == ["booked", "cancelled"]
