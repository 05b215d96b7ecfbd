"""Google Calendar for a Gmail connection: ``freeBusy.query`` on the primary calendar,
one event per booking (``iCalUID`` = the booking's uid: found again by it, updated
in place on a reschedule), deleted on a cancel.

The requests go through the mailbox's ``GmailApi`` (inboxes/providers/gmail/api.py):
the same token refresh under its lease, one renewal on a 401 and needs_reauth after
a second, the same backoff on rate limits and 5xx.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from googleapiclient.discovery import build
from googleapiclient.errors import HttpError

from inboxes.providers.base import ProviderError
from inboxes.providers.gmail.api import GmailApi
from inboxes.providers.gmail.http import NETWORK_ERRORS, status_of
from inboxes.providers.gmail.signin import GoogleOAuthClient
from meetings.models import MeetingsConnection


@contextlib.contextmanager
def _calendar(connection: MeetingsConnection) -> Iterator[tuple[GmailApi, Any]]:
    if connection.mailbox is None:
        raise ProviderError("The meetings address has no connected mailbox.", permanent=True)
    api = GmailApi(connection.mailbox, client=GoogleOAuthClient())
    try:
        service = build(
            "calendar",
            "v3",
            http=api._read_http,
            static_discovery=True,
            cache_discovery=False,
            client_options={"api_endpoint": settings.GOOGLE_CALENDAR_API_ENDPOINT},
        )
        yield api, service
    except HttpError as exc:
        reason = exc.reason if hasattr(exc, "reason") else str(exc)
        if status_of(exc) == 403:
            raise ProviderError(
                f"Google Calendar refused the request ({reason}); allow the calendar again "
                "under Settings > Meetings.",
                permanent=True,
            ) from exc
        raise ProviderError(f"Google Calendar answered {status_of(exc)}: {reason}") from exc
    except NETWORK_ERRORS as exc:
        raise ProviderError(f"Google Calendar could not be reached: {exc}") from exc
    finally:
        api.close()


def _calendar_id(connection: MeetingsConnection) -> str:
    return connection.calendar_id or "primary"


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse(value: str) -> datetime:
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def busy(connection: MeetingsConnection, start: datetime, end: datetime) -> list:
    from meetings.calendars import Interval

    calendar_id = _calendar_id(connection)
    with _calendar(connection) as (api, service):
        answer = api.read(
            service.freebusy().query(
                body={
                    "timeMin": _rfc3339(start),
                    "timeMax": _rfc3339(end),
                    "timeZone": "UTC",
                    "items": [{"id": calendar_id}],
                }
            )
        )
    calendars = answer.get("calendars") or {}
    entry: dict = calendars.get(calendar_id) or next(iter(calendars.values()), {})
    if entry.get("errors"):
        reasons = ", ".join(str(e.get("reason")) for e in entry["errors"])
        raise ProviderError(f"Google Calendar could not tell the busy times ({reasons}).")
    return [Interval(_parse(b["start"]), _parse(b["end"])) for b in entry.get("busy") or []]


def _body(event: Any) -> dict:
    body: dict[str, Any] = {
        "iCalUID": event.uid,
        "summary": event.summary,
        "description": event.description,
        "start": {"dateTime": _rfc3339(event.start), "timeZone": "UTC"},
        "end": {"dateTime": _rfc3339(event.end), "timeZone": "UTC"},
        "sequence": event.sequence,
        "attendees": [{"email": address} for address in event.attendees],
    }
    return body


def _find(api: GmailApi, service: Any, calendar_id: str, uid: str) -> str:
    found = api.read(service.events().list(calendarId=calendar_id, iCalUID=uid))
    items = [item for item in found.get("items") or [] if item.get("status") != "cancelled"]
    return str(items[0]["id"]) if items else ""


def write(connection: MeetingsConnection, event: Any, event_id: str) -> str:
    """Update the event with this uid (or ``event_id``) if there is one, else insert.
    ``sendUpdates=none``: Postkamer sends the invitations itself."""
    calendar_id = _calendar_id(connection)
    with _calendar(connection) as (api, service):
        existing = event_id or _find(api, service, calendar_id, event.uid)
        events = service.events()
        if existing:
            try:
                written = api.read(
                    events.update(
                        calendarId=calendar_id,
                        eventId=existing,
                        body=_body(event),
                        sendUpdates="none",
                    )
                )
                return str(written["id"])
            except HttpError as exc:
                if status_of(exc) not in (404, 410):
                    raise
        written = api.read(
            events.insert(calendarId=calendar_id, body=_body(event), sendUpdates="none")
        )
        return str(written["id"])


def remove(connection: MeetingsConnection, event_id: str, event: Any) -> None:
    calendar_id = _calendar_id(connection)
    with _calendar(connection) as (api, service):
        target = event_id or _find(api, service, calendar_id, event.uid)
        if not target:
            return
        try:
            api.read(
                service.events().delete(calendarId=calendar_id, eventId=target, sendUpdates="none")
            )
        except HttpError as exc:
            if status_of(exc) not in (404, 410):  # already gone
                raise
