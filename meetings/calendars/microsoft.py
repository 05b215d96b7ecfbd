"""The Microsoft 365 calendar for a Graph connection: ``calendarView`` over the range
for busy times, ``POST /me/events`` for a booking (``PATCH`` on a reschedule when the
event id is known), ``DELETE /me/events/{id}`` on a cancel.

Requests go through the engine's Graph client for the mailbox (``GraphMailbox``):
the same token refresh, throttling (429/503 with Retry-After) and one 401 retry
before needs_reauth. Events carry no attendees: Exchange would mail its own
invitations, and Postkamer sends them itself (meetings/invitations.py).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import quote, urlencode

import requests

from inboxes.providers.base import ProviderError
from inboxes.providers.graph.client import GraphMailbox
from inboxes.providers.graph.http import failure, iso, json_of, parse_time, same_origin
from meetings.models import MeetingsConnection

PAGE_SIZE = 200
MAX_PAGES = 50
FREE = frozenset({"free", "workingelsewhere"})


class _Calendar(GraphMailbox):
    def __enter__(self) -> _Calendar:
        self._open()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._close()

    def call(self, method: str, url: str, doing: str, **kwargs: Any) -> requests.Response:
        return self._request(method, url, doing, **kwargs)


def _open(connection: MeetingsConnection) -> _Calendar:
    if connection.mailbox is None:
        raise ProviderError("The meetings address has no connected mailbox.", permanent=True)
    return _Calendar(connection.mailbox)


def _check(response: requests.Response, doing: str, ok: tuple[int, ...] = (200, 201)) -> dict:
    if response.status_code not in ok:
        raise failure(response, doing)
    return json_of(response) if response.content else {}


def busy(connection: MeetingsConnection, start: datetime, end: datetime) -> list:
    from meetings.calendars import Interval

    found = []
    with _open(connection) as graph:
        query = urlencode(
            {
                "startDateTime": iso(start),
                "endDateTime": iso(end),
                "$select": "start,end,showAs,isCancelled",
                "$top": str(PAGE_SIZE),
            }
        )
        url = f"{graph.base}/calendarView?{query}"
        for _page in range(MAX_PAGES):
            page = _check(
                graph.call(
                    "GET",
                    url,
                    "read the calendar",
                    headers={"Prefer": 'outlook.timezone="UTC"'},
                ),
                "read the calendar",
            )
            for item in page.get("value") or []:
                if item.get("isCancelled") or str(item.get("showAs", "")).lower() in FREE:
                    continue
                first = parse_time((item.get("start") or {}).get("dateTime"))
                last = parse_time((item.get("end") or {}).get("dateTime"))
                if first and last and last > first:
                    found.append(Interval(first, last))
            link = page.get("@odata.nextLink")
            if not link:
                break
            if not same_origin(str(link)):
                raise ProviderError("Microsoft Graph handed back a link to another server.")
            url = str(link)
    return found


def _body(event: Any) -> dict:
    text = event.description
    if event.attendees:
        text = (text + "\n\n" if text else "") + "With: " + ", ".join(event.attendees)
    return {
        "subject": event.summary,
        "body": {"contentType": "text", "content": text},
        "start": {"dateTime": iso(event.start).rstrip("Z"), "timeZone": "UTC"},
        "end": {"dateTime": iso(event.end).rstrip("Z"), "timeZone": "UTC"},
        "showAs": "busy",
    }


def write(connection: MeetingsConnection, event: Any, event_id: str) -> str:
    with _open(connection) as graph:
        if event_id:
            response = graph.call(
                "PATCH",
                f"{graph.base}/events/{quote(event_id, safe='')}",
                "update the meeting",
                json=_body(event),
            )
            if response.status_code != 404:
                return str(_check(response, "update the meeting")["id"])
        # transactionId: a repeated POST (a retry) does not make a second event.
        body = {**_body(event), "transactionId": f"{event.uid}:{event.sequence}"[:200]}
        response = graph.call("POST", f"{graph.base}/events", "add the meeting", json=body)
        return str(_check(response, "add the meeting")["id"])


def remove(connection: MeetingsConnection, event_id: str, event: Any) -> None:
    if not event_id:
        return  # never written (no calendar then, or the write failed)
    with _open(connection) as graph:
        response = graph.call(
            "DELETE", f"{graph.base}/events/{quote(event_id, safe='')}", "remove the meeting"
        )
        _check(response, "remove the meeting", ok=(200, 204, 404))
