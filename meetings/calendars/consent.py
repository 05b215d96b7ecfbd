"""Which calendar permission each provider needs, and whether a mailbox's grant has it.

Gmail and Microsoft 365 mailboxes are connected with mail permissions only
(inboxes/providers/*/signin.py). The calendar needs more; the user grants it in an
incremental consent started from Settings > Meetings (meetings/connection_views.py),
which stores the wider grant on the same mailbox. The status is re-read from the
mailbox's stored grant, so a consent that finished (or a reconnect that dropped the
calendar permission) shows without any hook from the engine.
"""

from __future__ import annotations

from inboxes.credentials import tokens_load
from inboxes.models import Mailbox
from inboxes.providers.base import ProviderError
from meetings.models import CalendarKind, CalendarStatus, MeetingsConnection

GOOGLE_CALENDAR_SCOPES = (
    "https://www.googleapis.com/auth/calendar.events",
    "https://www.googleapis.com/auth/calendar.freebusy",
)
MICROSOFT_CALENDAR_SCOPES = ("Calendars.ReadWrite",)

SCOPES_BY_CALENDAR = {
    CalendarKind.GOOGLE: GOOGLE_CALENDAR_SCOPES,
    CalendarKind.MICROSOFT: MICROSOFT_CALENDAR_SCOPES,
}
# The sign-in provider (oauth_views.PROVIDERS slug) each calendar consents through.
CONSENT_PROVIDER = {CalendarKind.GOOGLE: "gmail", CalendarKind.MICROSOFT: "microsoft"}


def _granted(mailbox: Mailbox) -> set[str] | None:
    """The scopes of the mailbox's stored grant, lower-cased; Graph's resource prefix
    (https://graph.microsoft.com/) dropped. None when there is no grant to read."""
    try:
        scope = tokens_load(mailbox).scope
    except ProviderError:
        return None
    names = set()
    for item in scope.split():
        item = item.lower()
        if item.startswith("https://graph.microsoft.com/"):
            item = item.rsplit("/", 1)[-1]
        names.add(item)
    return names


def calendar_needs_consent(*, mailbox: Mailbox, calendar: str) -> bool:
    wanted = (
        SCOPES_BY_CALENDAR.get(CalendarKind(calendar)) if calendar in CalendarKind.values else None
    )
    if not wanted:
        return False
    granted = _granted(mailbox)
    if granted is None:
        return False  # no grant at all: the mailbox needs a sign-in, not a consent
    return not all(scope.lower() in granted for scope in wanted)


def calendar_status_refresh(connection: MeetingsConnection) -> None:
    """Bring ``calendar_status`` in line with the mailbox's grant (consent given or lost)."""
    if connection.calendar not in SCOPES_BY_CALENDAR or connection.mailbox_id is None:
        return
    mailbox = Mailbox.objects.filter(pk=connection.mailbox_id).first()
    if mailbox is None:
        return
    needs = calendar_needs_consent(mailbox=mailbox, calendar=connection.calendar)
    if needs and connection.calendar_status != CalendarStatus.NEEDS_CONSENT:
        new = CalendarStatus.NEEDS_CONSENT
    elif not needs and connection.calendar_status == CalendarStatus.NEEDS_CONSENT:
        new = CalendarStatus.OK
    else:
        return
    MeetingsConnection.objects.filter(pk=connection.pk).update(
        calendar_status=new, calendar_error=""
    )
    connection.calendar_status, connection.calendar_error = new, ""
