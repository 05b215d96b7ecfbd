"""A CalDAV calendar on an IMAP/SMTP connection, against a real Radicale server
(tests/support/radicale.py): checked when connecting (wrong password, wrong URL,
private addresses), busy times, events written and removed, the password sealed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import caldav
import pytest

from meetings.calendars import CalendarEvent, Interval, busy_times, event_remove, event_write
from meetings.calendars.caldav import caldav_account
from meetings.models import MeetingsConnection

pytest_plugins = ["tests.support.radicale"]
pytestmark = pytest.mark.django_db

BO = "bo@acme.example.com"
URL = "/api/v1/meetings/connection/"
DAY = datetime(2030, 3, 4, tzinfo=UTC)


def at(hour: int, minute: int = 0) -> datetime:
    return DAY + timedelta(hours=hour, minutes=minute)


@pytest.fixture
def bo_imap(member_api, connect_payload):
    response = member_api.post("/api/v1/mailboxes/", connect_payload(BO), format="json")
    assert response.status_code == 201, response.json()
    return response.json()


@pytest.fixture
def dav_user(radicale):
    user = radicale.add_user()
    radicale.make_calendar(user)
    return user


def put_caldav(client, user, **changes):
    caldav_body = {"url": user.url, "username": user.username, "password": user.password}
    caldav_body.update(changes)
    return client.put(
        URL, {"address": BO, "calendar": "caldav", "caldav": caldav_body}, format="json"
    )


def add_event(user, start: datetime, end: datetime, uid: str, transparent: bool = False) -> None:
    extra = "TRANSP:TRANSPARENT\r\n" if transparent else ""
    ics = (
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//test//EN\r\nBEGIN:VEVENT\r\n"
        f"UID:{uid}\r\nDTSTAMP:20300101T000000Z\r\n"
        f"DTSTART:{start:%Y%m%dT%H%M%SZ}\r\nDTEND:{end:%Y%m%dT%H%M%SZ}\r\n{extra}"
        "SUMMARY:Dentist\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
    )
    with caldav.DAVClient(url=user.url, username=user.username, password=user.password) as c:
        c.principal().calendars()[0].save_event(ics)


def test_an_imap_address_connects_a_caldav_calendar(member_api, bo_imap, dav_user):
    response = put_caldav(member_api, dav_user)

    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["calendar"] == "caldav" and body["calendar_status"] == "ok"
    assert body["caldav_username"] == dav_user.username
    assert dav_user.password not in response.content.decode()
    connection = MeetingsConnection.objects.get()
    assert connection.calendar_id.endswith(f"/{dav_user.username}/calendar/")
    # sealed at rest, readable by the connection only
    assert dav_user.password.encode() not in bytes(connection.caldav_secret)
    assert caldav_account(connection).password == dav_user.password


def test_a_wrong_caldav_password_is_connection_failed_at_auth(member_api, bo_imap, dav_user):
    response = put_caldav(member_api, dav_user, password="not-the-password")

    assert response.status_code == 422
    body = response.json()
    assert body["code"] == "connection_failed" and body["step"] == "auth"
    assert "user name or password" in body["detail"]
    assert not MeetingsConnection.objects.exists()


def test_a_closed_port_is_connection_failed_at_tcp(member_api, bo_imap, dav_user):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    response = put_caldav(member_api, dav_user, url=f"http://127.0.0.1:{port}/")

    assert response.status_code == 422
    assert response.json()["step"] == "tcp"


def test_a_url_that_is_no_calendar_server_is_refused(member_api, bo_imap, dav_user):
    response = put_caldav(member_api, dav_user, url="ftp://127.0.0.1/")
    assert response.status_code == 422 and response.json()["code"] == "connection_failed"


def test_private_addresses_are_refused_outside_the_tests_allowance(
    member_api, bo_imap, dav_user, radicale, settings
):
    settings.ALLOW_PRIVATE_MAIL_HOSTS = False
    before = (radicale.folder / "radicale.log").read_bytes()

    response = put_caldav(member_api, dav_user)

    assert response.status_code == 422
    assert response.json()["detail"] == "This calendar server address can't be used."
    assert (radicale.folder / "radicale.log").read_bytes() == before  # never reached


def test_caldav_needs_its_url_user_and_password(member_api, bo_imap):
    response = member_api.put(URL, {"address": BO, "calendar": "caldav"}, format="json")
    assert response.status_code == 400
    assert set(response.json()["errors"]["caldav"]) == {"url", "username", "password"}


def test_caldav_busy_times_and_events_against_radicale(member_api, bo_imap, dav_user):
    assert put_caldav(member_api, dav_user).status_code == 200
    connection = MeetingsConnection.objects.get()
    add_event(dav_user, at(9), at(10), "dentist@test")
    add_event(dav_user, at(11), at(12), "reminder@test", transparent=True)

    assert busy_times(connection, at(0), at(24)) == [Interval(at(9), at(10))]

    event = CalendarEvent(
        uid="b-7@postkamer",
        start=at(14),
        end=at(14, 30),
        summary="Intro call",
        attendees=["d@x.org"],
    )
    event_id = event_write(connection, event)
    assert event_id.endswith(".ics")
    # the write invalidated the cached range
    assert busy_times(connection, at(0), at(24)) == [
        Interval(at(9), at(10)),
        Interval(at(14), at(14, 30)),
    ]
    moved = CalendarEvent(
        uid="b-7@postkamer", start=at(16), end=at(16, 30), summary="Intro call", sequence=1
    )
    assert event_write(connection, moved, event_id) == event_id
    assert busy_times(connection, at(0), at(24))[-1] == Interval(at(16), at(16, 30))

    event_remove(connection, event_id, moved)
    assert busy_times(connection, at(0), at(24)) == [Interval(at(9), at(10))]
    event_remove(connection, event_id, moved)  # already gone


def test_a_changed_caldav_password_refuses_busy_times(member_api, bo_imap, dav_user, radicale):
    from meetings.calendars import CalendarUnavailable
    from meetings.models import CalendarStatus

    assert put_caldav(member_api, dav_user).status_code == 200
    connection = MeetingsConnection.objects.get()
    radicale.add_user(dav_user.username, "changed-elsewhere")

    with pytest.raises(CalendarUnavailable) as refused:
        busy_times(connection, at(0), at(24))
    assert refused.value.extra["step"] == "auth"
    connection.refresh_from_db()
    assert connection.calendar_status == CalendarStatus.ERROR


def test_key_rotation_re_encrypts_the_caldav_password(
    member_api, bo_imap, dav_user, settings, capsys
):
    import base64
    import os

    from django.core.management import call_command

    assert put_caldav(member_api, dav_user).status_code == 200
    before = bytes(MeetingsConnection.objects.get().caldav_secret)
    settings.FIELD_ENCRYPTION_KEYS = [
        base64.urlsafe_b64encode(os.urandom(32)).decode(),
        *settings.FIELD_ENCRYPTION_KEYS,
    ]

    call_command("rotate_encryption_keys")
    capsys.readouterr()
    settings.FIELD_ENCRYPTION_KEYS = settings.FIELD_ENCRYPTION_KEYS[:1]

    connection = MeetingsConnection.objects.get()
    assert bytes(connection.caldav_secret) != before
    assert caldav_account(connection).password == dav_user.password


def test_a_blank_password_keeps_the_stored_one_for_the_same_server_and_user(
    member_api, bo_imap, dav_user
):
    assert put_caldav(member_api, dav_user).status_code == 200

    assert put_caldav(member_api, dav_user, password="").status_code == 200
    assert caldav_account(MeetingsConnection.objects.get()).password == dav_user.password

    # another user name: the password must be given again
    response = put_caldav(member_api, dav_user, username="someone-else", password="")
    assert response.status_code == 400
    assert set(response.json()["errors"]["caldav"]) == {"password"}
    assert MeetingsConnection.objects.get().caldav_username == dav_user.username


def test_the_url_of_one_calendar_picks_that_calendar(member_api, bo_imap, dav_user, radicale):
    work = radicale.make_calendar(dav_user, "work")

    response = put_caldav(member_api, dav_user, url=work)

    assert response.status_code == 200, response.json()
    connection = MeetingsConnection.objects.get()
    assert connection.calendar_id == work
    event_id = event_write(
        connection, CalendarEvent(uid="w-1@postkamer", start=at(9), end=at(10), summary="Call")
    )
    assert event_id.startswith(work)
