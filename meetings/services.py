"""The meetings connection: which of the user's own addresses the meetings tool books
from, and which calendar it reads and writes.

Order of the checks (each refusal is audited): R4 (a team email used by the
conversations tool) and R1/R6 (another user's email) first, exactly as before the
tool existed; then the address must be one of the user's own connected personal
mailboxes (the invitations go out through it); then the calendar must fit that
mailbox (Google Calendar needs a Gmail connection, Microsoft 365 a Graph one,
CalDAV an IMAP/SMTP one) and a CalDAV calendar must answer with the user and
password given. A Gmail or Microsoft grant without the calendar permission is
saved with ``calendar_status = needs_consent``: the settings page sends the user
through the provider's consent again (meetings/connection_views.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db import IntegrityError, transaction

from accounts.models import User
from accounts.services import account_lock
from audit.services import audit_record, audit_refusals
from core.errors import AddressInUse, ConnectionFailed, Invalid
from inboxes import rules
from inboxes.addresses import canonical_address
from inboxes.models import Mailbox, Provider
from inboxes.selectors import own_connected_mailboxes
from meetings.calendars import calendar_forget
from meetings.calendars.caldav import CaldavAccount, caldav_account, caldav_probe, caldav_seal
from meetings.calendars.consent import calendar_needs_consent
from meetings.models import CalendarKind, CalendarStatus, MeetingsConnection

# The mailbox provider each calendar works with.
CALENDAR_PROVIDER = {
    CalendarKind.GOOGLE: Provider.GMAIL,
    CalendarKind.MICROSOFT: Provider.MICROSOFT,
    CalendarKind.CALDAV: Provider.IMAP,
}
CALENDAR_NEEDS = {
    CalendarKind.GOOGLE: "Google Calendar works with an address connected with Gmail.",
    CalendarKind.MICROSOFT: "The Microsoft 365 calendar works with an address connected with "
    "Microsoft 365.",
    CalendarKind.CALDAV: "A CalDAV calendar goes with an address connected by IMAP/SMTP; Gmail "
    "and Microsoft 365 addresses use their own calendar.",
}


@dataclass(frozen=True)
class CaldavInput:
    url: str
    username: str
    password: str


def own_mailbox(*, user: User, canonical: str) -> Mailbox | None:
    """The user's own connected personal mailbox with this address, if any."""
    return own_connected_mailboxes(user).filter(canonical_address=canonical).first()


def _check_calendar(*, mailbox: Mailbox, calendar: str, caldav: CaldavInput | None) -> None:
    if calendar not in CalendarKind.values:
        raise Invalid(
            "Unknown calendar.",
            errors={"calendar": ['Use "none", "google", "microsoft" or "caldav".']},
        )
    if calendar == CalendarKind.NONE:
        return
    if mailbox.provider != CALENDAR_PROVIDER[CalendarKind(calendar)]:
        raise Invalid(
            CALENDAR_NEEDS[CalendarKind(calendar)],
            errors={"calendar": [CALENDAR_NEEDS[CalendarKind(calendar)]]},
        )
    if calendar == CalendarKind.CALDAV:
        missing = [
            name
            for name, value in (
                ("url", caldav.url if caldav else ""),
                ("username", caldav.username if caldav else ""),
                ("password", caldav.password if caldav else ""),
            )
            if not value
        ]
        if missing:
            raise Invalid(
                "A CalDAV calendar needs its URL, user name and password.",
                errors={"caldav": {name: ["This field is required."] for name in missing}},
            )


def _keep_password(*, user: User, caldav: CaldavInput) -> CaldavInput:
    """A blank password keeps the stored one when the URL and user stay the same (a
    settings form does not show the password again)."""
    current = MeetingsConnection.objects.filter(
        user=user, calendar=CalendarKind.CALDAV, caldav_url=caldav.url.strip()
    ).first()
    if current is None or current.caldav_username != caldav.username:
        return caldav
    try:
        password = caldav_account(current).password
    except ConnectionFailed:
        return caldav
    return CaldavInput(url=caldav.url, username=caldav.username, password=password)


def meetings_connect(
    *,
    user: User,
    address: str,
    calendar: str = CalendarKind.NONE,
    caldav: CaldavInput | None = None,
    ip: str | None = None,
) -> MeetingsConnection:
    """Connect (or change) the user's meetings address and calendar; R1 and R4 apply."""
    address = (address or "").strip()
    canonical = canonical_address(address)
    calendar = calendar or CalendarKind.NONE
    if calendar == CalendarKind.CALDAV and caldav is not None and not caldav.password:
        caldav = _keep_password(user=user, caldav=caldav)
    with audit_refusals(actor=user, action="meetings.connect_refused", target_repr=address, ip=ip):
        # R4 and R1/R6 come first, before anything about the user's own mailboxes.
        rules.check_meetings_connect(user=user, canonical=canonical, address=address)
        mailbox = own_mailbox(user=user, canonical=canonical)
        if mailbox is None:
            raise Invalid(
                f"{address or 'This address'} is not one of your connected emails. Connect it "
                "under Settings > Your email first, then choose it here.",
                errors={"address": ["Connect this address under Your email first."]},
            )
        _check_calendar(mailbox=mailbox, calendar=calendar, caldav=caldav)
        calendar_url = ""
        if calendar == CalendarKind.CALDAV and caldav is not None:
            # Network: outside any transaction. Raises connection_failed with its step.
            calendar_url = caldav_probe(
                CaldavAccount(url=caldav.url, username=caldav.username, password=caldav.password)
            )
        status = CalendarStatus.OK
        if calendar_needs_consent(mailbox=mailbox, calendar=calendar):
            status = CalendarStatus.NEEDS_CONSENT
        try:
            with transaction.atomic():
                account_lock(user.account_id)
                rules.check_meetings_connect(user=user, canonical=canonical, address=address)
                connection = MeetingsConnection.objects.filter(user=user).first()
                if connection is None:
                    connection = MeetingsConnection(user=user, account_id=user.account_id)
                connection.address = address
                connection.canonical_address = canonical
                connection.mailbox = mailbox
                connection.calendar = calendar
                connection.calendar_status = status
                connection.calendar_error = ""
                connection.calendar_id = {
                    CalendarKind.GOOGLE: "primary",
                    CalendarKind.CALDAV: calendar_url,
                }.get(CalendarKind(calendar), "")
                if calendar == CalendarKind.CALDAV and caldav is not None:
                    connection.caldav_url = caldav.url.strip()
                    connection.caldav_username = caldav.username
                    connection.caldav_secret = caldav_seal(connection, caldav.password)
                else:
                    connection.caldav_url = connection.caldav_username = ""
                    connection.caldav_secret = None
                connection.save()
                audit_record(
                    account=user.account,
                    actor=user,
                    action="meetings.connected",
                    target=connection,
                    ip=ip,
                    data={"calendar": calendar},
                )
        except IntegrityError:
            rules.check_meetings_connect(user=user, canonical=canonical, address=address)
            raise AddressInUse(
                f"{address} was connected by someone else a moment ago.",
                conflict={"address": address, "held_as": "meetings"},
            ) from None
    calendar_forget(connection)
    return connection


def meetings_disconnect(*, user: User, ip: str | None = None) -> None:
    connection = MeetingsConnection.objects.filter(user=user).first()
    if connection is None:
        return
    calendar_forget(connection)
    connection.delete()
    audit_record(
        account=user.account,
        actor=user,
        action="meetings.disconnected",
        target_repr=user.email,
        ip=ip,
    )


def meetings_release(*, user: User, canonical: str, actor: User, ip: str | None = None) -> bool:
    """R7: free the address a deactivated user's meetings tool books from.

    Called by the engine (through ``inboxes.holds``) when an admin releases or transfers
    that user's address, inside the same transaction; the engine has checked that the
    actor is an admin and ``user`` is deactivated.
    """
    connection = MeetingsConnection.objects.filter(user=user, canonical_address=canonical).first()
    if connection is None:
        return False
    connection.delete()
    audit_record(
        account=user.account,
        actor=actor,
        action="meetings.released",
        target_repr=connection.address,
        ip=ip,
        data={"address": connection.address, "user": user.email},
    )
    return True
