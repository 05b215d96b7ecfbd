"""Microsoft Graph's calendar for the fake (tests/support/fakes/microsoft.py): what
the meetings tool calls, in Graph's documented shapes.

- ``GET /me/calendarView?startDateTime=&endDateTime=`` (``Calendars.Read`` or
  ``Calendars.ReadWrite``): events overlapping the range, in UTC
  (``Prefer: outlook.timezone="UTC"``), paged by ``$top`` with ``@odata.nextLink``;
- ``POST /me/events`` (201; a repeated ``transactionId`` answers the first event),
  ``GET``/``PATCH``/``DELETE /me/events/{id}`` (``Calendars.ReadWrite``; 404 once gone).

``add_busy`` puts an event on a user's calendar from the test side.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

READ = {"Calendars.Read", "Calendars.ReadWrite"}
WRITE = {"Calendars.ReadWrite"}


def _time(value: dict) -> datetime:
    parsed = datetime.fromisoformat(value["dateTime"].replace("Z", ""))
    return parsed.replace(tzinfo=UTC)  # the product always writes UTC


def _graph_time(moment: datetime) -> dict:
    text = moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S") + ".0000000"
    return {"dateTime": text, "timeZone": "UTC"}


def add_busy(fake: Any, address: str, start: datetime, end: datetime, show_as: str = "busy") -> str:
    event_id = "AAMk" + uuid.uuid4().hex
    with fake.lock:
        fake.calendar_events.setdefault(address.lower(), {})[event_id] = {
            "id": event_id,
            "subject": "Busy",
            "start": _graph_time(start),
            "end": _graph_time(end),
            "showAs": show_as,
            "isCancelled": False,
        }
    return event_id


def calendar_route(
    fake: Any,
    method: str,
    owner: Any,
    grant: Any,
    rest: list[str],
    query: dict[str, str],
    body: bytes,
) -> Any:
    from tests.support.fakes.microsoft import Answer

    denied = Answer.graph_error(403, "ErrorAccessDenied", "Access is denied. Check credentials.")
    with fake.lock:
        events = fake.calendar_events.setdefault(owner.address.lower(), {})
        if rest == ["calendarView"] and method == "GET":
            if not grant.scopes & READ:
                return denied
            try:
                low = datetime.fromisoformat(query["startDateTime"].replace("Z", "+00:00"))
                high = datetime.fromisoformat(query["endDateTime"].replace("Z", "+00:00"))
            except (KeyError, ValueError):
                return Answer.graph_error(
                    400, "ErrorInvalidParameter", "startDateTime and endDateTime are required."
                )
            found = sorted(
                (e for e in events.values() if _time(e["start"]) < high and _time(e["end"]) > low),
                key=lambda e: e["start"]["dateTime"],
            )
            top = int(query.get("$top") or 10)
            skip = int(query.get("$skip") or 0)
            page: dict[str, Any] = {"value": found[skip : skip + top]}
            if skip + top < len(found):
                more = {**query, "$skip": str(skip + top)}
                page["@odata.nextLink"] = f"{fake.graph_endpoint}/me/calendarView?{urlencode(more)}"
            return Answer.json(200, page)
        if rest[:1] != ["events"]:
            return Answer.graph_error(400, "BadRequest", "Unsupported calendar call")
        if not grant.scopes & WRITE:
            return denied
        if rest == ["events"] and method == "POST":
            data = json.loads(body or b"{}")
            transaction = data.get("transactionId")
            for event in events.values():
                if transaction and event.get("transactionId") == transaction:
                    return Answer.json(201, event)
            event_id = "AAMk" + uuid.uuid4().hex
            events[event_id] = {
                "showAs": "busy",
                **data,
                "id": event_id,
                "isCancelled": False,
                "iCalUId": "040000008200E0" + uuid.uuid4().hex,
            }
            return Answer.json(201, events[event_id])
        if len(rest) == 2:
            event = events.get(rest[1])
            if event is None:
                return Answer.graph_error(
                    404, "ErrorItemNotFound", "The specified object was not found in the store."
                )
            if method == "GET":
                return Answer.json(200, event)
            if method == "PATCH":
                event.update(json.loads(body or b"{}"))
                return Answer.json(200, event)
            if method == "DELETE":
                del events[rest[1]]
                return Answer(204)
    return Answer.graph_error(400, "BadRequest", f"Unsupported {method} {'/'.join(rest)}")
