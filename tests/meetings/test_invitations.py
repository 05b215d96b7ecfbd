"""Invitations end to end: a booking's invitation and then its cancellation leave the
owner's connected IMAP/SMTP mailbox through a real Celery worker and arrive at
aiosmtpd, To the booker and Cc the owner, with a text/calendar part (REQUEST, then
CANCEL with the same UID and a higher SEQUENCE) parsed back with icalendar."""

from __future__ import annotations

import email as email_lib
from datetime import UTC, datetime, timedelta
from email import policy

import pytest
from icalendar import Calendar

from meetings.bookings import booking_cancel, booking_create, booking_urls
from meetings.models import MeetingsConnection
from tests.meetings.conftest import NOW, make_link
from tests.support.mail import connect_imap_mailbox

pytest.register_assert_rewrite("tests.support.workers")

pytest_plugins = ["tests.support.workers"]

SALES = "bo.sales@acme.example.com"
TEN = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def calendar_part(raw: bytes) -> tuple[email_lib.message.EmailMessage, str, Calendar]:
    mime = email_lib.message_from_bytes(raw, policy=policy.default)
    [part] = [
        p
        for p in mime.walk()
        if p.get_content_type() == "text/calendar" and p.get_content_disposition() != "attachment"
    ]
    return mime, part.get_param("method"), Calendar.from_ical(part.get_content())


@pytest.mark.django_db(transaction=True)
def test_the_invitation_and_the_cancellation_arrive_with_their_calendar_parts(
    engine, member, dovecot, smtp_server, mail_user
):
    engine.worker()
    connect_imap_mailbox(
        actor=member,
        dovecot=dovecot,
        smtp_server=smtp_server,
        user=mail_user,
        address=SALES,
        kind="personal",
    )
    MeetingsConnection.objects.create(
        account=member.account, user=member, address=SALES, canonical_address=SALES
    )
    link = make_link(member, slug="bo-intro")
    smtp_server.clear()

    booking = booking_create(
        link=link,
        start=TEN,
        duration=30,
        name="Dana Prospect",
        email="dana@prospect.example.com",
        answers={},
        timezone="Europe/Amsterdam",
        now=NOW,
    )

    [invitation] = smtp_server.wait_for_messages(1, timeout=30)
    assert sorted(invitation.rcpt_tos) == ["bo@acme.example.com", "dana@prospect.example.com"]
    mime, method, calendar = calendar_part(invitation.data)
    assert mime["From"] == f"Bo Lee <{SALES}>"
    assert mime["To"] == "Dana Prospect <dana@prospect.example.com>"
    assert mime["Cc"] == "Bo Lee <bo@acme.example.com>"
    text = mime.get_body(("plain",)).get_content()
    assert "Monday 2 March 2026, 10:00-10:30 (UTC+01:00)" in text
    cancel_url, _ = booking_urls(booking)
    assert cancel_url in text
    [event] = calendar.walk("VEVENT")
    assert method == "REQUEST" and str(calendar["METHOD"]) == "REQUEST"
    assert str(event["UID"]) == booking.uid and int(event["SEQUENCE"]) == 0
    assert str(event["ORGANIZER"]) == f"mailto:{SALES}"
    assert event["DTSTART"].dt == TEN and event["DTEND"].dt == TEN + timedelta(minutes=30)

    smtp_server.clear()
    booking_cancel(booking=booking, by_owner=False)

    [cancellation] = smtp_server.wait_for_messages(1, timeout=30)
    _, method, calendar = calendar_part(cancellation.data)
    [event] = calendar.walk("VEVENT")
    assert method == "CANCEL" and str(calendar["METHOD"]) == "CANCEL"
    assert str(event["UID"]) == booking.uid and int(event["SEQUENCE"]) == 1
    assert str(event["STATUS"]) == "CANCELLED"
