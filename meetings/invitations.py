"""Invitation emails of bookings, sent from the owner's connected address through the
outbox (RFC 6047: a text/calendar part with the same METHOD as the VCALENDAR).

One email per change, To the booker and Cc the owner: one Message-ID for both, the
booker's "reply" reaches the owner, and a send limit counts it once. The owner is Cc'd
at their login address unless that is the sending mailbox itself (their copy is the
sent copy in that mailbox, and the event in their connected calendar) or the
automatic-mail guard refuses it. Like every mail no person pressed Send for, it is
``automatic`` and each recipient passes inboxes/automail.py first; a refused booker
gets no email (the booking stands; the log says why).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from django.conf import settings
from django.template.loader import render_to_string

from inboxes.addresses import InvalidAddress, canonical_address
from inboxes.automail import automatic_send_refusal
from inboxes.models import Mailbox, OutboxItem
from inboxes.outbox.compose import CalendarPart, Recipient
from inboxes.outbox.enqueue import outbox_create
from inboxes.selectors import own_connected_mailboxes
from meetings.calendars import CalendarEvent
from meetings.ics import CANCEL, Invite, ics_text
from meetings.models import Booking, BookingState, MeetingsConnection

log = logging.getLogger(__name__)


def sending_mailbox(connection: MeetingsConnection) -> Mailbox | None:
    """The owner's personal mailbox of the connected address, if still connected."""
    mailboxes = own_connected_mailboxes(connection.user)
    if connection.mailbox_id is not None:
        return mailboxes.filter(pk=connection.mailbox_id).first()
    # Connected before connections named their mailbox: found by its address.
    return mailboxes.filter(canonical_address=connection.canonical_address).first()


def _zone(booking: Booking) -> ZoneInfo:
    try:
        return ZoneInfo(booking.timezone)
    except (ValueError, OSError, KeyError):
        return ZoneInfo("UTC")


def when_text(start: datetime, end: datetime, tz: ZoneInfo) -> str:
    """'Tuesday 3 March 2026, 09:00-09:30 (UTC+01:00)' in the booker's zone."""
    local_start, local_end = start.astimezone(tz), end.astimezone(tz)
    offset = local_start.strftime("%z")
    offset = f"UTC{offset[:3]}:{offset[3:]}" if offset else "UTC"
    day = f"{local_start:%A} {local_start.day} {local_start:%B %Y}"
    return f"{day}, {local_start:%H:%M}-{local_end:%H:%M} ({offset})"


def _description(booking: Booking) -> str:
    from meetings.bookings import booking_urls

    cancel_url, reschedule_url = booking_urls(booking)
    lines = [f"{label}: {answer}" for label, answer in (booking.answers or {}).items()]
    if booking.state == BookingState.CONFIRMED:
        lines += [f"Reschedule: {reschedule_url}", f"Cancel: {cancel_url}"]
    return "\n".join(lines)


def invite_of(booking: Booking, connection: MeetingsConnection | None) -> Invite:
    owner = booking.owner
    return Invite(
        uid=booking.uid,
        sequence=booking.sequence,
        start=booking.start,
        end=booking.end,
        summary=f"{booking.link.name}: {booking.name} and {owner.display_name}",
        description=_description(booking),
        organizer_address=connection.address if connection else owner.email,
        organizer_name=owner.display_name,
        booker_address=booking.email,
        booker_name=booking.name,
        owner_address=connection.address if connection else owner.email,
        owner_name=owner.display_name,
    )


def calendar_event_of(booking: Booking, connection: MeetingsConnection) -> CalendarEvent:
    invite = invite_of(booking, connection)
    return CalendarEvent(
        uid=invite.uid,
        start=booking.start.astimezone(UTC),
        end=booking.end.astimezone(UTC),
        summary=invite.summary,
        description=invite.description,
        organizer=invite.organizer_address,
        attendees=[booking.email],
        sequence=booking.sequence,
    )


def _refused(account_id: object, address: str) -> str | None:
    return automatic_send_refusal(account_id, address)  # type: ignore[arg-type]


def invitation_send(
    booking: Booking, *, method: str, now: datetime | None = None
) -> OutboxItem | None:
    """Queue the invitation (REQUEST) or cancellation (CANCEL) of ``booking``; call it
    inside the booking's transaction. None when there is nothing to send from or no
    one to send to."""
    connection = MeetingsConnection.objects.filter(user_id=booking.owner_id).first()
    mailbox = sending_mailbox(connection) if connection else None
    if connection is None or mailbox is None:
        log.info("booking %s: no connected mailbox to send the invitation from", booking.pk)
        return None
    refusal = _refused(booking.account_id, booking.email)
    if refusal:
        log.warning("booking %s: no invitation to the booker: %s", booking.pk, refusal)
        return None
    owner = booking.owner
    cc: list[Recipient] = []
    try:
        owner_canonical = canonical_address(owner.email)
    except InvalidAddress:
        owner_canonical = ""
    if owner_canonical and owner_canonical != mailbox.canonical_address:
        owner_refusal = _refused(booking.account_id, owner.email)
        if owner_refusal:
            log.info("booking %s: owner not copied: %s", booking.pk, owner_refusal)
        else:
            cc.append(Recipient(owner.email, owner.display_name))
    ics = ics_text(invite_of(booking, connection), method=method, now=now)
    subject, text, html = _bodies(booking, method)
    return outbox_create(
        mailbox=mailbox,
        from_name=owner.display_name,
        to=[Recipient(booking.email, booking.name)],
        cc=cc,
        subject=subject,
        text=text,
        html=html,
        automatic=True,
        calendar=CalendarPart(ics=ics, method=method),
    )


def _bodies(booking: Booking, method: str) -> tuple[str, str, str]:
    from meetings.bookings import booking_urls

    cancel_url, reschedule_url = booking_urls(booking)
    tz = _zone(booking)
    cancelled = method == CANCEL
    rescheduled = not cancelled and booking.sequence > 0
    when = when_text(booking.start, booking.end, tz)
    context = {
        "booking": booking,
        "link": booking.link,
        "owner_name": booking.owner.display_name,
        "when": when,
        "zone_name": tz.key,
        "answers": list((booking.answers or {}).items()),
        "cancelled": cancelled,
        "rescheduled": rescheduled,
        "cancel_url": cancel_url,
        "reschedule_url": reschedule_url,
        "link_url": f"{settings.PUBLIC_URL}/meet/{booking.link.slug}/",
    }
    prefix = "Cancelled" if cancelled else "Updated" if rescheduled else "Invitation"
    subject = f"{prefix}: {booking.link.name} with {booking.owner.display_name}, {when}"
    text = render_to_string("emails/meeting.txt", context)
    html = render_to_string("emails/meeting.html", context)
    return subject, text, html
